"""What a run leaves on disk: metrics.jsonl, JSON, markdown, COMMAND.md.

Also the run environment (CPU model, library versions) that every results
file records. Plots are `experiments.harness.plots`.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import re
from typing import Any, Sequence

import jax
import numpy as np
import optax

import mimuon_optax

def _json_default(x):
  if isinstance(x, (np.generic, jax.Array)):
    return np.asarray(x).item()
  raise TypeError(f"not JSON serializable: {type(x)}")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(record, default=_json_default) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def truncate_jsonl(path: str | os.PathLike, last_step: int) -> None:
  """Drops records after `last_step` (they are recomputed on resume)."""
  if not os.path.exists(path):
    return
  kept = [r for r in read_jsonl(path) if r["step"] <= last_step]
  with open(path, "w") as f:
    for r in kept:
      f.write(json.dumps(r) + "\n")


def write_json(path: str | os.PathLike, obj: Any) -> None:
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, default=_json_default)
    f.write("\n")


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def env_info() -> dict[str, Any]:
  """Where and with what a result was produced."""
  import flax
  return {
      "cpu": cpu_model(),
      "cpu_count": os.cpu_count(),
      "device": str(jax.devices()[0]),
      "device_count": jax.device_count(),
      "process_count": jax.process_count(),
      "backend": jax.default_backend(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else "",
      "optax": optax.__version__,
      "flax": flax.__version__,
      "numpy": np.__version__,
      "mimuon_optax": mimuon_optax.__version__,
      "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
  }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A GitHub markdown table; floats get 4 significant digits."""
  def cell(x):
    if isinstance(x, float):
      return f"{x:.4g}"
    return str(x)
  lines = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
  lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
  return "\n".join(lines)


def write_command_md(out: str | os.PathLike, title: str, command: str,
                     seeds: Sequence[int], wall_s: float,
                     notes: Sequence[str] = ()) -> None:
  """COMMAND.md: how a result folder was produced, and on what."""
  env = env_info()
  lines = [
      f"# {title}", "",
      "```bash", command, "```", "",
      f"- seeds: {', '.join(map(str, seeds))}",
      f"- device: {env['cpu']} ({env['cpu_count']} cores; {env['device']})",
      f"- jax {env['jax']}, optax {env['optax']}, flax {env['flax']},"
      f" numpy {env['numpy']}, python {env['python']},"
      f" mimuon_optax {env['mimuon_optax']}",
      f"- OPENBLAS_NUM_THREADS={env['OPENBLAS_NUM_THREADS']}",
      f"- wall time: {wall_s:.0f} s",
  ]
  lines += [f"- {n}" for n in notes]
  pathlib.Path(out, "COMMAND.md").write_text("\n".join(lines) + "\n")


def read_command_md(out: str | os.PathLike) -> str:
  """The command `write_command_md` wrote into ``out``/COMMAND.md (its
  ```bash block), or "" where there is no such file or block."""
  path = pathlib.Path(out, "COMMAND.md")
  if not path.exists():
    return ""
  found = re.search(r"```bash\n(.*?)\n```", path.read_text(), re.S)
  return found.group(1).strip() if found else ""
