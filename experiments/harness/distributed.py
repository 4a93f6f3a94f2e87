"""Several processes (jax.distributed), one per host as on a TPU pod.

  class Config(DistributedConfig): ...          # --coordinator etc.
  init_distributed(cfg)                          # before jax sees devices

Each flag falls back to its environment variable (`JAX_COORDINATOR_ADDRESS`,
`JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`); none of them set: one process.
Process 0 is the one that prints and writes (`is_main_process`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax

from experiments.harness.cli import field

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """Multi-process fields: one Python process per host, as on a TPU pod.

  Each flag falls back to its environment variable (`JAX_COORDINATOR_ADDRESS`,
  `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`); none of them set: one process.
  """

  coordinator: str | None = field(
      None, "HOST:PORT of the jax.distributed coordinator (process 0), or"
      f" 'auto' (TPU pods: detect everything); none: ${ENV_COORDINATOR} if"
      " set, else one process")
  num_processes: int | None = field(
      None, f"number of processes; none: ${ENV_NUM_PROCESSES}", minimum=1)
  process_id: int | None = field(
      None, f"this process's index, 0..N-1; none: ${ENV_PROCESS_ID}",
      minimum=0)
  init_timeout: int = field(
      120, "seconds jax.distributed.initialize waits for every process",
      minimum=1)

  def __post_init__(self):
    distributed_settings(self)  # bad flags / variables fail at parse time


def _env_int(name: str, flag: str) -> int | None:
  text = os.environ.get(name)
  if text is None or text == "":
    return None
  try:
    return int(text)
  except ValueError:
    raise ValueError(f"{flag}: ${name}={text!r} is not an integer") from None


def distributed_settings(cfg: Any) -> tuple[str, int | None, int | None] | None:
  """(coordinator, num_processes, process_id) from the flags of
  `DistributedConfig`, else the environment; None for one process.

  Raises:
    ValueError: naming the flag, for a missing or out-of-range value.
  """
  coordinator = cfg.coordinator or os.environ.get(ENV_COORDINATOR) or None
  num = cfg.num_processes
  if num is None:
    num = _env_int(ENV_NUM_PROCESSES, "--num-processes")
  pid = cfg.process_id
  if pid is None:
    pid = _env_int(ENV_PROCESS_ID, "--process-id")
  if coordinator is None:
    if (num or 1) > 1 or pid:
      raise ValueError(f"--num-processes / --process-id need --coordinator"
                       f" HOST:PORT (or ${ENV_COORDINATOR})")
    return None
  if coordinator == "auto":
    return coordinator, num, pid
  host, _, port = coordinator.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f"--coordinator must be HOST:PORT (port 1..65535) or"
                     f" 'auto', got {coordinator!r}")
  if num is None or pid is None:
    missing = "--num-processes" if num is None else "--process-id"
    env = ENV_NUM_PROCESSES if num is None else ENV_PROCESS_ID
    raise ValueError(f"--coordinator {coordinator} needs {missing} (or"
                     f" ${env})")
  if num < 1:
    raise ValueError(f"--num-processes must be >= 1, got {num}")
  if not 0 <= pid < num:
    raise ValueError(f"--process-id {pid} is out of range for"
                     f" --num-processes {num} (0..{num - 1})")
  return coordinator, num, pid


def init_distributed(cfg: Any) -> None:
  """`jax.distributed.initialize` per `cfg` (a `DistributedConfig`).

  Call before anything else touches jax's devices. A no-op for one process
  or when already initialized. A loopback coordinator binds to loopback
  only; CPU processes exchange data with gloo.
  """
  settings = distributed_settings(cfg)
  if settings is None or jax.distributed.is_initialized():
    return
  coordinator, num, pid = settings
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs: dict[str, Any] = dict(initialization_timeout=cfg.init_timeout)
  if coordinator != "auto":
    kwargs.update(coordinator_address=coordinator, num_processes=num,
                  process_id=pid)
    if coordinator.rpartition(":")[0] in ("127.0.0.1", "localhost"):
      kwargs["coordinator_bind_address"] = coordinator
  jax.distributed.initialize(**kwargs)


def is_main_process() -> bool:
  """Process 0: the one that prints and writes metrics, plots, summaries."""
  return jax.process_index() == 0
