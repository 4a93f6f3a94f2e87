"""Shared pieces of the experiments: CLI from dataclasses, optimizers, I/O.

One place for each idea: the argparse built from a config dataclass, the
three optimizers and their learning-rate schedule, MiMuon diagnostics as
flat per-matrix dicts, metrics.jsonl, plots, the run environment (CPU model,
library versions) and multi-process (jax.distributed) start-up. Checkpoints
are `mimuon_optax.checkpoint` (Orbax).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import re
import sys
import types
import typing
from typing import Any, Sequence

import jax
import numpy as np
import optax

import mimuon_optax
from mimuon_optax import _mix

OPTIMIZERS = ("adamw", "muon", "mimuon")
# Peak learning rates of the demo and the training scripts: single-seed
# sweeps on the byte-level tiny LM and the CNN (in git history before
# 2026-11-26; "Learning rates" in experiments/README.md). `lr` is the matrix
# learning rate for Muon/MiMuon and `adam_lr` the AdamW learning rate of their
# non-matrix leaves (embeddings, norms, biases, heads). MiMuon uses Muon's
# rates (the paper's one eta). The evidence studies do not use these: they
# choose their own on a validation split (tau_sweep).
DEFAULT_LRS = {
    "lm": {"adamw": (3e-3, None), "muon": (0.01, 3e-3),
           "mimuon": (0.01, 3e-3)},
    "vision": {"adamw": (1e-2, None), "muon": (0.03, 3e-3),
               "mimuon": (0.03, 3e-3)},
}


# ----------------------------------------------------------------------------
# Command line from a config dataclass
# ----------------------------------------------------------------------------


def field(default: Any, help: str, *, choices: Sequence[Any] | None = None,  # noqa: A002
          minimum: float | None = None, **kwargs) -> Any:
  """A dataclass field whose `help` becomes the `--flag`'s help text.

  `choices` (of the value, or of each element of a tuple field) and
  `minimum` are checked by argparse: a bad value is a one-line error.
  """
  metadata = {"help": help, "choices": choices, "minimum": minimum}
  return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _prog() -> str | None:
  """`python -m experiments.NAME` when run with -m, else argparse's default."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  return f"python -m {spec.name}" if spec is not None else None


def _typed(tp: type, optional: bool, minimum: float | None):
  """argparse `type=`: `tp`, the word `none` if optional, `>= minimum`."""
  def parse(text: str):
    if optional and text.lower() == "none":
      return None
    value = tp(text)
    if minimum is not None and value < minimum:
      raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
    return value
  parse.__name__ = tp.__name__  # argparse names the type in its errors
  return parse


def _strip_optional(tp):
  if typing.get_origin(tp) in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 1:
      return args[0], True
  return tp, False


def build_parser(config_cls: type, description: str) -> argparse.ArgumentParser:
  """One `--flag` per field (underscores -> dashes), typed from annotations.

  bool -> `--flag/--no-flag`; `tuple[X, ...]` -> one or more X; `X | None`
  accepts the word `none`.
  """
  parser = argparse.ArgumentParser(
      prog=_prog(), description=description,
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  hints = typing.get_type_hints(config_cls)
  for f in dataclasses.fields(config_cls):
    tp, optional = _strip_optional(hints[f.name])
    flag = "--" + f.name.replace("_", "-")
    kwargs = dict(default=f.default, help=f.metadata.get("help", ""),
                  dest=f.name)
    minimum = f.metadata.get("minimum")
    if f.metadata.get("choices") is not None:
      kwargs["choices"] = f.metadata["choices"]
    if tp is bool:
      kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(tp) is tuple:
      elem = typing.get_args(tp)[0]
      kwargs.update(nargs="+", type=_typed(elem, False, minimum))
    else:
      kwargs["type"] = _typed(tp, optional, minimum)
    parser.add_argument(flag, **kwargs)
  return parser


def parse_config(config_cls: type, description: str,
                 argv: Sequence[str] | None = None) -> Any:
  parser = build_parser(config_cls, description)
  return _checked(parser, config_cls, vars(parser.parse_args(argv)))


def _checked(parser: argparse.ArgumentParser, config_cls: type,
             values: dict[str, Any]) -> Any:
  """The config, or a one-line usage error (exit 2) for a bad combination."""
  try:
    return _to_config(config_cls, values)
  except ValueError as e:
    parser.error(str(e))


def _to_config(config_cls: type, values: dict[str, Any]) -> Any:
  """argparse values -> the dataclass (lists back to tuple fields)."""
  hints = typing.get_type_hints(config_cls)
  for name, value in values.items():
    if (typing.get_origin(_strip_optional(hints[name])[0]) is tuple
        and value is not None):
      values[name] = tuple(value)
  return config_cls(**values)


# ----------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimizer fields shared by every experiment config."""

  optimizer: str = field("mimuon", "optimizer", choices=OPTIMIZERS)
  lr: float | None = field(
      None, "peak learning rate (the matrix lr for muon/mimuon); none: the"
      " tuned default for the task (common.DEFAULT_LRS)")
  adam_lr: float | None = field(
      None, "AdamW lr of the non-matrix leaves of muon/mimuon; none: the"
      " tuned default")
  weight_decay: float = field(
      0.0, "decoupled weight decay (matrices for muon/mimuon, every leaf for"
      " adamw)")
  warmup_steps: int = field(20, "linear warmup steps before the cosine decay",
                            minimum=0)
  tau: float = field(mimuon_optax.DEFAULT_TAU,
                     "MiMuon gate threshold (library default)", minimum=0)
  tau_mode: str = field(
      "spacing", "MiMuon gate statistic: spacing (rho = kappa sqrt(r) /"
      " median gap, the library default), relative (kappa / s_max) or"
      " absolute (kappa)", choices=_mix.TAU_MODES)
  sgd_scale: str = field(
      "none", "MiMuon SGD-branch scale: none (paper) or rms_match",
      choices=_mix.SGD_SCALES)
  gap_every: int = field(1, "MiMuon: re-measure the spectrum every k steps",
                         minimum=1)


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """Training-loop fields shared by train_lm and train_vision."""

  out: str = field("runs/run", "output directory (metrics.jsonl, PNG, ckpt/)")
  steps: int = field(300, "training steps", minimum=1)
  seed: int = field(0, "seed of the init and of the data order")
  log_every: int = field(10, "log train loss / throughput every k steps",
                         minimum=1)
  eval_every: int = field(100, "evaluate every k steps (and at the end)",
                          minimum=1)
  checkpoint_every: int = field(
      100, "save a checkpoint every k steps (and at the end); 0: only at the"
      " end", minimum=0)
  resume: bool = field(False, "continue from the latest checkpoint in out/")
  stop_at: int | None = field(
      None, "stop after this step (checkpoint written), as if interrupted;"
      " the schedule still spans --steps")
  checkpoint: bool = field(True, "write checkpoints to out/ckpt/ (Orbax)")
  keep_checkpoints: int = field(
      1, "how many of the newest checkpoints to keep", minimum=1)
  progress: bool = field(True, "show a tqdm progress bar")
  plot: bool = field(True, "write loss_curves.png at the end")


def lr_schedule(peak: float, steps: int, warmup_steps: int,
                final_fraction: float = 0.1) -> optax.Schedule:
  """Linear warmup to `peak`, cosine decay to `final_fraction * peak`."""
  warmup_steps = min(warmup_steps, max(steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      0.0 if warmup_steps else peak, peak, warmup_steps, max(steps, 1),
      end_value=peak * final_fraction)


# The AdamW branch of muon/mimuon in every experiment here: the same b1/b2 as
# the plain AdamW runs, no Nesterov (the library's defaults follow optax's
# contrib.muon instead: b2=0.999, Nesterov AdamW).
ADAMW_LEAVES = dict(adam_b1=0.9, adam_b2=0.95, adam_eps=1e-8,
                    adam_nesterov=False)


def resolve_lrs(cfg: Any, task: str) -> Any:
  """`cfg` with `lr` (and `adam_lr` for muon/mimuon) set to the rates used."""
  default_lr, default_adam_lr = DEFAULT_LRS[task][cfg.optimizer]
  return dataclasses.replace(
      cfg, lr=default_lr if cfg.lr is None else cfg.lr,
      adam_lr=(None if cfg.optimizer == "adamw" else
               default_adam_lr if cfg.adam_lr is None else cfg.adam_lr))


def make_optimizer(cfg: Any, task: str, steps: int, weight_dimension_numbers=None,
                   *, mesh: jax.sharding.Mesh | None = None,
                   mesh_axes: str | tuple[str, ...] | None = None,
                   ns_dtype: str = "bfloat16",
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(transform, matrix lr schedule) for `cfg.optimizer`.

  `cfg` has the `OptimizerConfig` fields. AdamW uses b1=0.9, b2=0.95 like the
  AdamW branch of Muon/MiMuon, so the three differ only in the matrix rule.
  `mesh`/`mesh_axes` go to `muon`/`mimuon` (whole-matrix Newton-Schulz and
  gap test spread over the mesh); AdamW is elementwise and needs neither.
  `ns_dtype` is the Newton-Schulz dtype of `muon`/`mimuon`.
  """
  if cfg.optimizer not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got"
                     f" {cfg.optimizer!r}")
  cfg = resolve_lrs(cfg, task)
  lr, adam_lr = cfg.lr, cfg.adam_lr
  schedule = lr_schedule(lr, steps, cfg.warmup_steps)
  if cfg.optimizer == "adamw":
    return optax.adamw(schedule, b1=0.9, b2=0.95,
                       weight_decay=cfg.weight_decay), schedule
  common = dict(
      learning_rate=schedule, weight_decay=cfg.weight_decay,
      adam_learning_rate=lr_schedule(adam_lr, steps, cfg.warmup_steps),
      weight_dimension_numbers=weight_dimension_numbers, mesh=mesh,
      mesh_axes=mesh_axes, ns_dtype=ns_dtype, **ADAMW_LEAVES)
  if cfg.optimizer == "muon":
    return mimuon_optax.muon(**common), schedule
  return mimuon_optax.mimuon(
      tau=cfg.tau, tau_mode=cfg.tau_mode, sgd_scale=cfg.sgd_scale,
      gap_every=cfg.gap_every, **common), schedule


# ----------------------------------------------------------------------------
# Per-matrix names and MiMuon diagnostics
# ----------------------------------------------------------------------------

_DROP_WORDS = ("model", "self_attn", "mlp", "kernel")


def short_name(path: Any) -> str:
  """`['model']['layers'][0]['self_attn']['q_proj']['kernel']` -> `layers.0.q_proj`."""
  words = re.findall(r"\[['\"]?([^'\"\]]+)['\"]?\]|\.(\w+)",
                     jax.tree_util.keystr(path))
  words = [a or b for a, b in words]
  kept = [w for w in words if w not in _DROP_WORDS]
  return ".".join(kept) or ".".join(words)


def flat_per_matrix(tree: Any) -> dict[str, np.ndarray]:
  """Per-matrix diagnostic tree -> {short name: numpy array}; None and
  MaskedNode positions are skipped."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    out[short_name(path)] = np.asarray(leaf)
  return out


def per_matrix_values(tree: Any) -> dict[str, float]:
  """A per-matrix tree (diagnostics) -> {name or name[i]: value}."""
  out = {}
  for name, value in flat_per_matrix(tree).items():
    for i, suffix in enumerate(_suffixes(value.shape)):
      out[name + suffix] = value.reshape(-1)[i].item()
  return out


def mix_summary(opt_state: Any, previous_counts: dict[str, np.ndarray] | None,
                steps_since: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """MiMuon diagnostics for a log record, and the counts to pass next time.

  `orth_frac[name]` is the fraction of the last `steps_since` steps in which
  the matrix was orthogonalized (from `orth_count` differences); `rel_gap`,
  `min_gap` and `rho` are the last measured gap statistics. Layer stacks are expanded to
  `name[i]`.
  """
  diag = mimuon_optax.mix_diagnostics(opt_state)
  counts = flat_per_matrix(diag.orth_count)
  record = {"orth_frac": {}, "rel_gap": {}, "min_gap": {}, "rho": {}}
  rel, absolute = flat_per_matrix(diag.rel_gap), flat_per_matrix(diag.min_gap)
  rho = flat_per_matrix(diag.rho)
  for name, count in counts.items():
    before = (previous_counts or {}).get(name, np.zeros_like(count))
    frac = (count - before) / max(steps_since, 1)
    for i, suffix in enumerate(_suffixes(count.shape)):
      record["orth_frac"][name + suffix] = float(frac.reshape(-1)[i])
      record["rel_gap"][name + suffix] = float(rel[name].reshape(-1)[i])
      record["min_gap"][name + suffix] = float(absolute[name].reshape(-1)[i])
      record["rho"][name + suffix] = float(rho[name].reshape(-1)[i])
  values = list(record["orth_frac"].values())
  record["orth_frac_mean"] = float(np.mean(values)) if values else 1.0
  return record, counts


def _suffixes(shape: tuple[int, ...]) -> list[str]:
  if not shape:
    return [""]
  return [f"[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]


# ----------------------------------------------------------------------------
# Metrics, checkpoints, environment
# ----------------------------------------------------------------------------


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


def write_json(path: str | os.PathLike, obj: Any) -> None:
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, default=_json_default)
    f.write("\n")


def config_dict(cfg: Any) -> dict[str, Any]:
  return dataclasses.asdict(cfg)


# ----------------------------------------------------------------------------
# Several processes (jax.distributed), as on a TPU pod
# ----------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------


def curve_style(i: int) -> tuple[str, str, str]:
  """(colour, line style, marker) of the i-th curve of a plot."""
  return f"C{i}", ("-", "--", ":", "-.")[i % 4], "os^Dv"[i % 5]


def plot_loss_curves(runs: dict[str, list[dict]], path: str | os.PathLike,
                     title: str = "", extra_key: str | None = None) -> None:
  """Train (thin) and eval (thick, markers) loss vs step; every run has its
  own colour, line style and marker, so overlapping curves stay
  distinguishable; with `extra_key` (e.g. "test_acc") a second panel."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = 2 if extra_key else 1
  fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
  ax = axes[0, 0]
  for i, (label, records) in enumerate(runs.items()):
    color, ls, marker = curve_style(i)
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    evals = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if train:
      ax.plot(*zip(*train), color=color, ls=ls, alpha=0.45, lw=1,
              label=f"{label} train")
    if evals:
      ax.plot(*zip(*evals), color=color, ls=ls, lw=2, marker=marker, ms=5,
              mfc="none" if i % 2 else color, label=f"{label} held-out")
  ax.set_xlabel("step")
  ax.set_ylabel("loss")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if extra_key:
    ax = axes[0, 1]
    for i, (label, records) in enumerate(runs.items()):
      pts = [(r["step"], r[extra_key]) for r in records if extra_key in r]
      color, ls, marker = curve_style(i)
      if pts:
        ax.plot(*zip(*pts), color=color, ls=ls, marker=marker, ms=5,
                mfc="none" if i % 2 else color, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(extra_key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def save_figure(fig: Any, path: str | os.PathLike) -> None:
  """Lays out, writes (110 dpi) and closes a matplotlib figure."""
  import matplotlib.pyplot as plt
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


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


def parse_with_presets(config_cls: type, description: str,
                       presets: dict[str, dict[str, Any]],
                       argv: Sequence[str] | None = None) -> Any:
  """Like `parse_config`, where `--preset NAME` first replaces the defaults
  by `presets[NAME]` (flags given explicitly still win)."""
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument("--preset", default=None)
  known, _ = pre.parse_known_args(argv)
  parser = build_parser(config_cls, description)
  if known.preset is not None:
    if known.preset not in presets:
      parser.error(f"--preset must be one of {sorted(presets)}")
    parser.set_defaults(**presets[known.preset])
  return _checked(parser, config_cls, vars(parser.parse_args(argv)))


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
