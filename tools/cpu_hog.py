"""Runs a command beside a CPU hog and prints both wall times.

  python tools/cpu_hog.py                       # hog every core until Ctrl-C
  python tools/cpu_hog.py -- make test          # make test, loaded
  python tools/cpu_hog.py --idle -- make test   # the same command, idle first

The hog is `stress-ng --cpu N` when stress-ng is installed, else N Python
processes spinning in a loop (N: `--workers`, default one per core), each in
the hog's own process group so that stopping it leaves nothing behind. With
`--idle` the command runs once without the hog first, then once beside it.
The exit code is the (last) command's: a test suite that fails under load
fails here. The tests' timeouts catch hangs, not slowness
(docs/reliability.md), so `make test` must pass loaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Sequence


def _spin() -> None:
  """One core's worth of busy loop (a hog worker)."""
  x = 0
  while True:
    x = (x * 1103515245 + 12345) & 0xFFFFFFFF


def start_hog(workers: int, use_stress_ng: bool = True) -> subprocess.Popen:
  """Starts `workers` busy processes in a new process group; returns it."""
  stress_ng = shutil.which("stress-ng") if use_stress_ng else None
  if stress_ng:
    cmd = [stress_ng, "--cpu", str(workers), "--quiet"]
  else:
    cmd = [sys.executable, __file__, "--spin", str(workers)]
  return subprocess.Popen(cmd, start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_hog(hog: subprocess.Popen) -> None:
  """SIGKILL to the hog's process group (every worker); reaps it."""
  try:
    os.killpg(hog.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  hog.wait()


def _spin_workers(n: int) -> None:
  """The Python hog: n - 1 forked spinners plus this process."""
  for _ in range(n - 1):
    if os.fork() == 0:
      _spin()
  _spin()


def _timed(cmd: Sequence[str]) -> tuple[int, float]:
  t0 = time.perf_counter()
  code = subprocess.call(list(cmd))
  return code, time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
  """The command line (see the module docstring); returns the exit code."""
  parser = argparse.ArgumentParser(
      prog="python tools/cpu_hog.py", description=__doc__.split("\n\n")[0])
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                      help="busy processes (default: one per core)")
  parser.add_argument("--idle", action="store_true",
                      help="run the command without the hog first")
  parser.add_argument("--python", action="store_true",
                      help="use the Python hog even if stress-ng exists")
  parser.add_argument("--spin", type=int, help=argparse.SUPPRESS)
  parser.add_argument("command", nargs=argparse.REMAINDER,
                      help="-- then the command to run beside the hog")
  ns = parser.parse_args(argv)
  if ns.spin:
    _spin_workers(ns.spin)
  if ns.workers < 1:
    parser.error(f"--workers must be >= 1, got {ns.workers}")
  cmd = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
  if ns.idle and not cmd:
    parser.error("--idle needs a command")
  walls = {}
  code = 0
  if ns.idle:
    code, walls["idle"] = _timed(cmd)
    print(f"cpu_hog: idle   exit {code}, {walls['idle']:.1f} s", flush=True)
  hog = start_hog(ns.workers, use_stress_ng=not ns.python)
  kind = "stress-ng" if shutil.which("stress-ng") and not ns.python else "python"
  print(f"cpu_hog: {ns.workers} {kind} workers, pgid {hog.pid}", flush=True)
  try:
    if not cmd:
      hog.wait()
      return 0
    code, walls["loaded"] = _timed(cmd)
  except KeyboardInterrupt:
    return 130
  finally:
    stop_hog(hog)
  print(f"cpu_hog: loaded exit {code}, {walls['loaded']:.1f} s", flush=True)
  if "idle" in walls:
    print(f"cpu_hog: loaded/idle {walls['loaded'] / walls['idle']:.2f}x")
  return code


if __name__ == "__main__":
  sys.exit(main())
