"""Two processes x 4 CPU devices, as the hosts of a pod: train_lm, resume, kill.

`experiments.harness.launch` starts the processes on loopback (jax.distributed, gloo);
they train the tiny Qwen3 on one (data 2, fsdp 4) mesh over the 8 devices of
both. The reference is one process with 8 simulated devices on the same mesh
shape. Every subprocess runs under a limit of several times its measured
time, so that a hang fails and a slow machine does not; a persistent
compilation cache shared by the runs compiles each program once.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments.harness import distributed
from experiments.harness import launch
from experiments.harness import reporting
from experiments import train_lm
from mimuon_optax import checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Limits catch hangs, not slowness (docs/reliability.md). One training run
# took 35-67 s on a busy 2-core CPU (load 3-4, 2026-11-30; the slowest is
# the first 2-process run, which compiles), the whole test 223 s; the
# launcher's limit is >= 6x the slowest run, and the subprocess around it
# waits longer still, so that the launcher stops its children first.
LAUNCH_TIMEOUT = 420  # seconds, per training run
RUN_TIMEOUT = LAUNCH_TIMEOUT + 60
# Like tests/test_sharding.py: bf16 Newton-Schulz on differently partitioned
# matmuls drifts at rounding level; tau=0.15 keeps the gates off the edge.
REL_TOL = 3e-3
TRAIN_ARGS = (
    "--preset", "tiny", "--scan-layers", "--mesh", "2x4", "--optimizer",
    "mimuon", "--tau", "0.15", "--steps", "6", "--seq-len", "32",
    "--batch-size", "8", "--eval-batches", "1", "--warmup-steps", "2",
    "--log-every", "1", "--eval-every", "6", "--checkpoint-every", "3",
    "--keep-checkpoints", "2", "--no-progress", "--no-plot")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """Token cache and compilation cache shared by this file's runs."""
  tmp = tmp_path_factory.mktemp("multihost")
  return {"cache_dir": str(tmp / "tokens"), "jit_cache": str(tmp / "jit")}


def _env(shared, **extra):
  # PYTHONFAULTHANDLER: a run stopped for a hang prints its stacks.
  return dict(
      os.environ, JAX_PLATFORMS="cpu", PYTHONFAULTHANDLER="1",
      JAX_COMPILATION_CACHE_DIR=shared["jit_cache"],
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", **extra)


def _run(cmd, timeout, env):
  """subprocess.run; past `timeout` (a hang), fails with the stacks.

  SIGABRT makes a process with PYTHONFAULTHANDLER print the stack of every
  thread (no core file: RLIMIT_CORE is 0).
  """
  proc = subprocess.Popen(
      cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, preexec_fn=lambda: resource.setrlimit(
          resource.RLIMIT_CORE, (0, 0)))
  try:
    stdout, stderr = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.send_signal(signal.SIGABRT)
    try:
      _, stderr = proc.communicate(timeout=30)
    finally:
      proc.kill()
      proc.wait()
    pytest.fail(f"no exit after {timeout} s (a hang); its stacks:\n"
                f"{stderr[-8000:]}")
  return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _check(proc):
  assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-6000:])


def _one_process(shared, out, *args):
  """train_lm in one process with 8 simulated devices; wall seconds."""
  t0 = time.perf_counter()
  proc = _run(
      [sys.executable, "-m", "experiments.train_lm", *TRAIN_ARGS, "--out",
       str(out), "--cache-dir", shared["cache_dir"], *args],
      LAUNCH_TIMEOUT,
      _env(shared, XLA_FLAGS="--xla_force_host_platform_device_count=8"))
  _check(proc)
  return time.perf_counter() - t0


def _launch_cmd(*args, timeout=LAUNCH_TIMEOUT):
  return [sys.executable, "-m", "experiments.harness.launch", "--num-processes", "2",
          "--devices-per-process", "4", "--timeout", str(timeout), "--", *args]


def _two_processes(shared, out, *args):
  """train_lm in 2 processes x 4 devices via the launcher; wall seconds."""
  t0 = time.perf_counter()
  proc = _run(_launch_cmd(*TRAIN_ARGS, "--out", str(out), "--cache-dir",
                          shared["cache_dir"], *args), RUN_TIMEOUT, _env(shared))
  _check(proc)
  # Only process 0 prints the result lines.
  assert proc.stdout.count("results: ") == 1, proc.stdout
  return time.perf_counter() - t0


def _losses(out):
  return np.array([r["train_loss"] for r in
                   reporting.read_jsonl(pathlib.Path(out) / "metrics.jsonl")])


def _rel_err(a, b):
  return float(np.max(np.abs(np.asarray(a) / np.asarray(b) - 1)))


def _copy_at_step(src, dst, step):
  """`src` with only the checkpoint of `step` (as if stopped there)."""
  shutil.copytree(src, dst)
  for path in (dst / "ckpt").iterdir():
    if path.name != str(step):
      shutil.rmtree(path)


def _mesh_of_every_leaf(ckpt):
  """{(mesh shape, device ids)} over every saved leaf of checkpoint `ckpt`."""
  import jax
  import orbax.checkpoint as ocp
  tree = ocp.StandardCheckpointer().metadata(
      str(ckpt / "default")).item_metadata.tree
  meshes = set()
  for leaf in jax.tree.leaves(tree):
    sharding = leaf.sharding
    assert type(sharding).__name__ == "NamedShardingMetadata", sharding
    ids = tuple(d.id for d in np.ravel(sharding.device_mesh.mesh))
    meshes.add((tuple(int(n) for n in sharding.shape), ids))
  return meshes


@pytest.mark.slow
def test_two_processes_match_one_and_resume_across_process_counts(
    tmp_path, shared):
  walls = {}
  # Reference: one process, 8 devices, uninterrupted (keeps steps 3 and 6).
  walls["one"] = _one_process(shared, tmp_path / "one")
  # Two processes, uninterrupted; then stopped at 3 and resumed.
  walls["two"] = _two_processes(shared, tmp_path / "two")
  walls["two_stop"] = _two_processes(shared, tmp_path / "resumed",
                                     "--stop-at", "3")
  shutil.copytree(tmp_path / "resumed", tmp_path / "one_from_two")
  walls["two_resume"] = _two_processes(shared, tmp_path / "resumed",
                                       "--resume")
  # Across process counts: 2-process step 3 -> 1 process, and back.
  _one_process(shared, tmp_path / "one_from_two", "--resume")
  _copy_at_step(tmp_path / "one", tmp_path / "two_from_one", 3)
  _two_processes(shared, tmp_path / "two_from_one", "--resume")

  one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
  print(json.dumps({"losses_one_process": one.tolist(),
                    "losses_two_processes": two.tolist(),
                    "wall_s": walls}))
  assert len(one) == len(two) == 6
  assert one[-1] < one[0] - 0.5  # it learns
  assert _rel_err(two, one) < REL_TOL, (one, two)
  summary = {n: json.loads((tmp_path / n / "summary.json").read_text())
             for n in ("one", "two")}
  assert _rel_err(summary["two"]["final"]["val_loss"],
                  summary["one"]["final"]["val_loss"]) < REL_TOL
  config = json.loads((tmp_path / "two" / "config.json").read_text())
  assert config["env"]["process_count"] == 2
  assert config["env"]["device_count"] == 8

  # Every leaf of params and optimizer state is on the 2x4 mesh over the
  # devices of both processes: in the trainer at the end ...
  placement = summary["two"]["placement"]
  assert placement["mesh"] == {"data": 2, "fsdp": 4}, placement
  assert placement["processes"] == 2 and placement["devices"] == 8
  assert placement["leaves"] > 50  # params, momenta, Adam moments, gates
  assert placement["leaves_on_mesh"] == placement["leaves"], placement
  assert placement["leaves_across_processes"] == placement["leaves"]
  # ... and as Orbax recorded them in the checkpoint.
  meshes = _mesh_of_every_leaf(tmp_path / "two" / "ckpt" / "6")
  assert len(meshes) == 1, meshes
  ((shape, ids),) = meshes
  assert shape == (2, 4) and len(set(ids)) == 8, (shape, ids)
  one_meshes = _mesh_of_every_leaf(tmp_path / "one" / "ckpt" / "6")
  assert {s for s, _ in one_meshes} == {(2, 4)}
  assert ids != next(iter(one_meshes))[1]  # other devices: other processes

  # A rerun of the 2-process run (its first 3 steps, in fresh processes)
  # gives the same params and state, bit for bit; and stop at 3 + resume ==
  # uninterrupted (losses and state).
  np.testing.assert_array_equal(_losses(tmp_path / "resumed"), two)
  for step in (3, 6):
    a = checkpoint.load_numpy(tmp_path / "two" / "ckpt", step)
    b = checkpoint.load_numpy(tmp_path / "resumed" / "ckpt", step)
    assert a.keys() == b.keys() and any(
        k.startswith("['opt_state']") for k in a)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=f"{step} {key}")

  # Written by 2 processes, resumed in 1; written by 1, resumed in 2.
  from_two = _losses(tmp_path / "one_from_two")
  from_one = _losses(tmp_path / "two_from_one")
  np.testing.assert_array_equal(from_two[:3], two[:3])  # kept records
  np.testing.assert_array_equal(from_one[:3], one[:3])
  assert _rel_err(from_two, one) < REL_TOL, (from_two, one)
  assert _rel_err(from_one, two) < REL_TOL, (from_one, two)


def _children(pid):
  """Pids whose parent is `pid` (from /proc)."""
  found = []
  for entry in pathlib.Path("/proc").iterdir():
    if entry.name.isdigit():
      try:
        stat = (entry / "stat").read_text()
      except OSError:
        continue
      if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
        found.append(int(entry.name))
  return found


def _alive_in_groups(groups):
  """Pids of live (non-zombie) processes in any of the process `groups`."""
  alive = []
  for entry in pathlib.Path("/proc").iterdir():
    if entry.name.isdigit():
      try:
        fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
      except OSError:
        continue
      if int(fields[2]) in groups and fields[0] != "Z":
        alive.append(int(entry.name))
  return alive


@pytest.mark.slow
def test_launcher_stops_everything_when_one_process_dies(tmp_path, shared):
  out = tmp_path / "killed"
  launcher = subprocess.Popen(
      _launch_cmd(*TRAIN_ARGS, "--steps", "500", "--no-checkpoint", "--out",
                  str(out), "--cache-dir", shared["cache_dir"]),
      cwd=ROOT, env=_env(shared), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  children = []
  try:
    # Training starts after 40-45 s on a busy 2-core CPU (start, compile).
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until it trains
      if len(children) < 2:
        children = _children(launcher.pid)
      metrics = out / "metrics.jsonl"
      if (len(children) == 2 and metrics.exists()
          and metrics.read_text().strip()):
        break
      assert launcher.poll() is None, launcher.stderr.read()
      time.sleep(0.2)
    else:
      pytest.fail("the two processes did not start training in 300 s")
    victim = max(children)  # the second process started
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = launcher.communicate(timeout=60)
  finally:
    if launcher.poll() is None:
      launcher.kill()
      launcher.wait()
    for child in children:  # only if the launcher failed to
      try:
        os.killpg(child, signal.SIGKILL)
      except ProcessLookupError:
        pass
  assert launcher.returncode != 0
  assert time.monotonic() - killed_at < 60
  assert "exited with -9; stopping the others" in stderr, stderr[-3000:]
  assert _alive_in_groups(set(children)) == [], "processes left behind"


@pytest.mark.slow
def test_launcher_timeout_kills_processes_that_ignore_sigterm(tmp_path):
  # The children are ready (SIGTERM ignored) after importing this file: 2 s
  # on a busy 2-core CPU, 6x within the launcher's 12 s.
  t0 = time.perf_counter()
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.harness.launch", "--num-processes", "2",
       "--timeout", "12", "--grace", "2", "--module", "tests.test_multihost",
       "--", "stubborn", str(tmp_path)], cwd=ROOT, stderr=subprocess.PIPE,
      text=True)
  try:
    _, stderr = proc.communicate(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  pids = [int(p.read_text()) for p in sorted(tmp_path.glob("ready_*"))]
  assert proc.returncode == launch.TIMEOUT_EXIT, stderr[-3000:]
  assert "timeout after 12 s" in stderr
  assert len(pids) == 2  # both ignored SIGTERM: SIGKILL ended them
  assert time.perf_counter() - t0 < 50
  assert _alive_in_groups(set(pids)) == [], "processes left behind"


@pytest.mark.slow
def test_launcher_timeout_prints_where_processes_hang(tmp_path):
  # As above (children ready in 2 s, 6x within 12 s), with faulthandler on.
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.harness.launch", "--num-processes", "2",
       "--timeout", "12", "--grace", "2", "--module", "tests.test_multihost",
       "--", "stubborn", str(tmp_path)], cwd=tmp_path, capture_output=True,
      text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT),
                                      PYTHONFAULTHANDLER="1"))
  pids = [int(p.read_text()) for p in sorted(tmp_path.glob("ready_*"))]
  assert proc.returncode == launch.TIMEOUT_EXIT, proc.stderr[-3000:]
  assert len(pids) == 2
  # Each child's Python stack, down to the function it waits in (the two
  # children write to one stderr at once: their lines may interleave).
  assert proc.stderr.count("case_stubborn") == 2, proc.stderr[-3000:]
  assert _alive_in_groups(set(pids)) == [], "processes left behind"
  assert not list(tmp_path.glob("core*"))  # SIGABRT wrote no core file


@pytest.mark.slow
def test_mesh_path_across_processes_has_no_gram_all_reduce(shared):
  """muon/mimuon mesh= on a mesh over two processes: no Gram all-reduce."""
  # 13 s on a busy 2-core CPU: the launcher's 200 s catch a hang only.
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.harness.launch", "--num-processes", "2",
       "--devices-per-process", "4", "--timeout", "200", "--module",
       "tests.test_multihost", "--", "hlo"], cwd=ROOT, capture_output=True,
      text=True, timeout=RUN_TIMEOUT, env=_env(shared))
  _check(proc)
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["process_count"] == 2
  assert result["distributed_gram_all_reduces"] == 0
  assert result["mimuon_distributed_gram_all_reduces"] == 0
  assert result["gspmd_gram_all_reduces"] >= 6  # >= one per NS iteration
  assert result["distributed_collectives_3"] == result[
      "distributed_collectives_6"]


def test_flags_are_checked(monkeypatch):
  for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES,
               distributed.ENV_PROCESS_ID):
    monkeypatch.delenv(name, raising=False)
  config = lambda **kw: train_lm.TrainLMConfig(mesh="2x4", **kw)
  cases = {  # fields -> error naming the flag
      (("coordinator", "127.0.0.1:1234"), ("num_processes", 2),
       ("process_id", 2)): "--process-id 2 is out of range",
      (("coordinator", "127.0.0.1:1234"), ("num_processes", 2)):
          "needs --process-id",
      (("coordinator", "127.0.0.1"), ("num_processes", 2),
       ("process_id", 0)): "HOST:PORT",
      (("num_processes", 2), ("process_id", 1)): "need --coordinator",
  }
  for fields, message in cases.items():
    with pytest.raises(ValueError, match=message):
      config(**dict(fields))
  with pytest.raises(ValueError, match="needs --mesh"):
    train_lm.TrainLMConfig(coordinator="127.0.0.1:1234", num_processes=2,
                           process_id=0)
  monkeypatch.setenv(distributed.ENV_COORDINATOR, "127.0.0.1:1234")
  monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "two")
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two'"):
    config()
  monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "2")
  monkeypatch.setenv(distributed.ENV_PROCESS_ID, "1")
  assert distributed.distributed_settings(config()) == ("127.0.0.1:1234", 2, 1)
  assert distributed.distributed_settings(config(process_id=0))[2] == 0  # flag wins
  # The command line: one-line errors naming the flag.
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train_lm", "--mesh", "2x4",
       "--coordinator", "127.0.0.1:1234", "--num-processes", "2",
       "--process-id", "5"], cwd=ROOT, capture_output=True, text=True,
      timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 2 and "--process-id 5 is out of range" in (
      proc.stderr), proc.stderr
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.harness.launch", "--num-processes", "0"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and "--num-processes" in proc.stderr


def test_process_rows_and_windows(tmp_path):
  from experiments.harness import data_text
  tokens = np.arange(1000, dtype=np.int32)
  sampler = data_text.WindowSampler(tokens, 16, 8, seed=3)
  for rows in (slice(None), slice(0, 4), slice(4, 8)):
    np.testing.assert_array_equal(train_lm.window_rows(sampler, 5, rows),
                                  sampler.batch(5)[rows])
  # One process: it holds every row; its local data is the global batch.
  cfg = train_lm.TrainLMConfig(mesh="1x1", batch_size=8, out=str(tmp_path))
  _, placement = train_lm.make_placement(cfg, {"w": np.zeros((4, 4))})
  assert placement.local_rows() == slice(0, 8)
  batch = placement.assemble(sampler.batch(5))
  np.testing.assert_array_equal(np.asarray(batch), sampler.batch(5))
  port = launch.free_port()
  env = launch.child_env(port, 2, 1, 4)
  assert env["JAX_COORDINATOR_ADDRESS"] == f"127.0.0.1:{port}"
  assert env["JAX_PROCESS_ID"] == "1" and env["JAX_NUM_PROCESSES"] == "2"
  assert env["XLA_FLAGS"].endswith("--xla_force_host_platform_device_count=4")


def case_stubborn(directory: str) -> None:
  """Ignores SIGTERM, says so in a file, then waits for ever."""
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  pathlib.Path(directory, f"ready_{os.environ[distributed.ENV_PROCESS_ID]}"
               ).write_text(str(os.getpid()))
  while True:
    time.sleep(1)


def case_hlo() -> dict:
  """tests/test_sharding.py's HLO case on a 2x4 mesh over two processes."""
  distributed.init_distributed(distributed.DistributedConfig())  # from JAX_* variables
  import jax
  from tests import test_sharding
  assert jax.process_count() == 2 and jax.local_device_count() == 4
  return {**test_sharding.case_hlo(), "process_count": jax.process_count()}


if __name__ == "__main__":
  _result = globals()[f"case_{sys.argv[1]}"](*sys.argv[2:])
  if distributed.is_main_process():
    print(json.dumps(_result))
