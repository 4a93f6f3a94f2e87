"""Start N local processes of a multi-process run, as on a pod, on loopback.

  python -m experiments.harness.launch --num-processes 2 --devices-per-process 4 \
    -- --mesh 2x4 --batch-size 16 --out runs/pod_rehearsal

Runs `python -m MODULE ARGS` (`--module`, default experiments.train_lm) N
times on this machine, each with `JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT`
(a free loopback port), `JAX_NUM_PROCESSES=N`, `JAX_PROCESS_ID=i`,
`JAX_PLATFORMS=cpu` and `--xla_force_host_platform_device_count` in
`XLA_FLAGS`: N jax.distributed processes with D CPU devices each, N*D global
devices, the way the hosts of a TPU pod see theirs. Every child runs in its
own process group. If one exits non-zero, or `--timeout` passes, or the
launcher is interrupted, the others get SIGTERM, then SIGKILL after
`--grace` seconds, and the launcher exits non-zero (the failed child's code,
124 on timeout); it returns only when no child is left. On Linux a child
also gets SIGKILL if the launcher itself is killed. With
`PYTHONFAULTHANDLER=1` in the environment, a timeout first makes every
child print its Python stacks (SIGABRT), to show where the run hung.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import signal
import socket
import subprocess
import sys
import time
from typing import Sequence

REPO = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT_EXIT = 124
POLL_S = 0.1


def free_port() -> int:
  """A TCP port that is free on 127.0.0.1 now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def child_env(port: int, num_processes: int, process_id: int,
              devices_per_process: int) -> dict[str, str]:
  """The environment of process `process_id`."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
  return dict(
      os.environ, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
      JAX_NUM_PROCESSES=str(num_processes), JAX_PROCESS_ID=str(process_id),
      JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags),
      PYTHONPATH=os.pathsep.join(
          p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))


def _die_with_parent() -> None:
  """In the child (Linux): SIGKILL when the launcher dies, even by SIGKILL.

  Also no core file: a SIGABRT from `dump_stacks` must not write one.
  """
  resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
  if sys.platform.startswith("linux"):
    import ctypes  # pylint: disable=g-import-not-at-top
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
  try:
    os.killpg(proc.pid, sig)  # the child's own group: it and its children
  except (ProcessLookupError, PermissionError):
    pass


def dump_stacks(procs: Sequence[subprocess.Popen], wait: float = 3.0) -> None:
  """Where a hang hangs: every live child prints its Python stacks, and dies.

  Only with `PYTHONFAULTHANDLER` set (the children inherit it): SIGABRT
  then makes each print the stack of every thread to its stderr. Without
  it, a no-op (SIGABRT would only abort).
  """
  if not os.environ.get("PYTHONFAULTHANDLER"):
    return
  live = [p for p in procs if p.poll() is None]
  for proc in live:
    try:
      os.kill(proc.pid, signal.SIGABRT)
    except ProcessLookupError:
      pass
  _wait_all(live, wait)


def _wait_all(procs: Sequence[subprocess.Popen], seconds: float) -> None:
  """Waits up to `seconds` in all for the processes to exit."""
  deadline = time.monotonic() + seconds
  for proc in procs:
    try:
      proc.wait(timeout=max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
      pass


def stop_all(procs: Sequence[subprocess.Popen], grace: float) -> None:
  """SIGTERM to every child's group, SIGKILL after `grace` s; reaps all."""
  for proc in procs:
    _signal_group(proc, signal.SIGTERM)
  _wait_all(procs, grace)
  for proc in procs:
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def _log(message: str) -> None:
  print(f"launch: {message}", file=sys.stderr, flush=True)


def launch(args: Sequence[str], *, num_processes: int,
           devices_per_process: int, module: str = "experiments.train_lm",
           timeout: float = 3600, grace: float = 5.0) -> int:
  """Runs the N processes to the end; returns the exit code (0: all ok)."""
  port = free_port()
  procs: list[subprocess.Popen] = []
  # SIGTERM to the launcher ends it like Ctrl-C: the finally below stops
  # the children.
  previous = signal.signal(signal.SIGTERM, _raise_interrupt)
  try:
    for i in range(num_processes):
      procs.append(subprocess.Popen(
          [sys.executable, "-m", module, *args], cwd=os.getcwd(),
          env=child_env(port, num_processes, i, devices_per_process),
          start_new_session=True, preexec_fn=_die_with_parent))
    _log(f"{num_processes} processes x {devices_per_process} devices,"
         f" coordinator 127.0.0.1:{port}, pids"
         f" {' '.join(str(p.pid) for p in procs)}")
    deadline = time.monotonic() + timeout
    while True:
      codes = [p.poll() for p in procs]
      failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        i, code = failed[0]
        _log(f"process {i} exited with {code}; stopping the others")
        return code if code > 0 else 128 - code  # -9 (SIGKILL) -> 137
      if all(c == 0 for c in codes):
        return 0
      if time.monotonic() > deadline:
        _log(f"timeout after {timeout:g} s; stopping every process")
        dump_stacks(procs)
        return TIMEOUT_EXIT
      time.sleep(POLL_S)
  except KeyboardInterrupt:
    _log("interrupted; stopping every process")
    return 130
  finally:
    stop_all(procs, grace)
    signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m experiments.harness.launch",
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--num-processes", type=int, default=2,
                      help="processes to start (the hosts of the pod)")
  parser.add_argument("--devices-per-process", type=int, default=4,
                      help="simulated CPU devices of each process")
  parser.add_argument("--module", default="experiments.train_lm",
                      help="python -m MODULE in each process")
  parser.add_argument("--timeout", type=float, default=3600,
                      help="seconds before every process is stopped")
  parser.add_argument("--grace", type=float, default=5.0,
                      help="seconds between SIGTERM and SIGKILL")
  parser.add_argument("args", nargs=argparse.REMAINDER,
                      help="-- then the arguments of MODULE")
  ns = parser.parse_args(argv)
  for flag, value in (("--num-processes", ns.num_processes),
                      ("--devices-per-process", ns.devices_per_process)):
    if value < 1:
      parser.error(f"{flag} must be >= 1, got {value}")
  for flag, value in (("--timeout", ns.timeout), ("--grace", ns.grace)):
    if not value > 0:
      parser.error(f"{flag} must be > 0, got {value}")
  args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
  return launch(args, num_processes=ns.num_processes,
                devices_per_process=ns.devices_per_process, module=ns.module,
                timeout=ns.timeout, grace=ns.grace)


if __name__ == "__main__":
  sys.exit(main())
