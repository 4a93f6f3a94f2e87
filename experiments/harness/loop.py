"""The training loop shared by train_lm and train_vision.

  summary = train(cfg, params, tx, loss_fn, batch_fn, evaluate, ...)

Every batch is a pure function of the step (`batch_fn(step)`), the learning
rate lives in the optimizer state, and checkpoints hold params and optimizer
state exactly (Orbax, `mimuon_optax.checkpoint`), so `--stop-at k` followed by
`--resume` gives the same params and losses, bit for bit on CPU, as one
uninterrupted run.

The step and the state placement are `mimuon_optax.training`'s. With a
`Placement` the params, optimizer state and batches live on a device mesh
(train_lm `--mesh`): the step is jitted with their shardings as
`in_shardings` == `out_shardings`. The mesh may span several processes
(`jax.distributed`, one per host of a pod): each process reads only the rows
of each batch that its devices hold and the global batch is assembled from
them; every process writes its own shards of a checkpoint and reads back
what its devices need, so a run saved on one mesh resumes on another (or on
one device, or with another number of processes). Only process 0 prints and
writes metrics, config, plots and the summary.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding

from experiments.harness import cli
from experiments.harness import diagnostics
from experiments.harness import distributed
from experiments.harness import plots
from experiments.harness import reporting
from experiments.harness.cli import field
from mimuon_optax import checkpoint
from mimuon_optax import training

METRICS = "metrics.jsonl"


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


@dataclasses.dataclass(frozen=True)
class Placement:
  """Shardings of a training run on `mesh`.

  Attributes:
    mesh: the device mesh (its devices may belong to several processes).
    params: a `NamedSharding` per parameter leaf.
    batch: the sharding of one batch (a pytree prefix of it), split along
      the leading (batch) axis.
    batch_size: rows of one global batch.
  """

  mesh: jax.sharding.Mesh
  params: Any
  batch: Any
  batch_size: int

  def local_rows(self) -> slice:
    """The rows of each global batch that this process's devices hold."""
    batch = jax.tree.leaves(self.batch, is_leaf=lambda x: isinstance(
        x, jax.sharding.Sharding))[0]
    spans = sorted({idx[0].indices(self.batch_size)[:2] for idx in
                    batch.addressable_devices_indices_map(
                        (self.batch_size,)).values()})
    lo, hi = spans[0][0], spans[-1][1]
    if sum(b - a for a, b in spans) != hi - lo:
      raise ValueError(f"process {jax.process_index()} holds batch rows"
                       f" {spans}, not one contiguous block")
    return slice(lo, hi)

  def assemble(self, local_batch: Any) -> Any:
    """The global batch on the mesh from this process's `local_rows`."""
    def one(sharding, tree):
      return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
          sharding, np.asarray(x), (self.batch_size, *np.shape(x)[1:])), tree)
    return jax.tree.map(one, self.batch, local_batch)

  def describe(self, tree: Any) -> dict[str, Any]:
    """Where the arrays of `tree` live: the mesh, and how many leaves are
    on it and span devices of several processes."""
    leaves = jax.tree.leaves(tree)
    on_mesh = [x for x in leaves if isinstance(x.sharding, NamedSharding)
               and x.sharding.mesh == self.mesh]
    return {"mesh": dict(self.mesh.shape), "devices": self.mesh.size,
            "processes": jax.process_count(), "leaves": len(leaves),
            "leaves_on_mesh": len(on_mesh),
            "leaves_across_processes": sum(
                not x.is_fully_addressable for x in on_mesh)}


def train(
    cfg: Any,
    params: Any,
    tx: optax.GradientTransformation,
    loss_fn: Callable[[Any, Any], jax.Array],
    batch_fn: Callable[[int], Any],
    evaluate: Callable[[Any], dict[str, float]],
    *,
    lr_schedule: optax.Schedule,
    items_per_step: int,
    items_name: str = "tokens",
    eval_keys: tuple[str, str] = ("val_loss", "train_eval_loss"),
    placement: Placement | None = None,
    local_batch_fn: Callable[[int, slice], Any] | None = None,
) -> dict[str, Any]:
  """Trains `params` for `cfg.steps` steps with logging and checkpoints.

  Args:
    cfg: has the `LoopConfig` fields and `optimizer`.
    params: initial parameters (a pytree of arrays).
    tx: the optimizer.
    loss_fn: `loss_fn(params, batch) -> scalar`.
    batch_fn: `batch_fn(step) -> batch` (host arrays).
    evaluate: `evaluate(params) -> {name: float}`; must return the two
      `eval_keys` (held-out loss, train loss on fixed examples); their
      difference is logged as `gap`.
    lr_schedule: logged as `lr`.
    items_per_step: tokens or examples per step, for the throughput.
    items_name: "tokens" or "examples".
    eval_keys: (held-out loss, train-eval loss) keys of `evaluate`'s dict.
    placement: run on a device mesh with these shardings (default: the
      default device).
    local_batch_fn: with a placement, `local_batch_fn(step, rows)` ->
      `batch_fn(step)[rows]`, reading only those rows; default: slices
      `batch_fn(step)`.

  Returns:
    {"params", "final" (the last record), "wall_s", "compile_s"}, and
    with a placement "placement" (`Placement.describe` of the final params
    and optimizer state).
  """
  out = pathlib.Path(cfg.out)
  main = distributed.is_main_process()
  out.mkdir(parents=True, exist_ok=True)
  metrics_path = out / METRICS
  ckpt_dir = out / "ckpt"
  get_batch = batch_fn
  if placement is None:
    opt_state = tx.init(params)
    step_fn = training.make_train_step(tx, loss_fn)
  else:
    params, opt_state, state_sharding = training.place_train_state(
        params, tx, placement.mesh, placement.params)
    step_fn = training.make_train_step(
        tx, loss_fn, mesh=placement.mesh, param_sharding=placement.params,
        opt_state_sharding=state_sharding, batch_sharding=placement.batch)
    rows = placement.local_rows()
    read = local_batch_fn or (lambda step, rows: jax.tree.map(
        lambda x: x[rows], batch_fn(step)))
    get_batch = lambda step: placement.assemble(read(step, rows))
  start = 0
  if cfg.resume and checkpoint.latest_step(ckpt_dir) is not None:
    start, params, opt_state = checkpoint.restore_state(
        ckpt_dir, checkpoint.abstract_like(params, opt_state))
    if main:
      reporting.truncate_jsonl(metrics_path, start)
      print(f"Resumed from step {start} ({ckpt_dir}).")
  else:
    if main:
      if metrics_path.exists():
        metrics_path.unlink()
      if cfg.checkpoint:  # another run's steps would outrank this run's
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    _sync("fresh start")
  if main:
    reporting.write_json(out / "config.json", {**cli.config_dict(cfg),
                                            "env": reporting.env_info()})

  t0 = time.perf_counter()
  train_step = step_fn.lower(params, opt_state, get_batch(start)).compile()
  compile_s = time.perf_counter() - t0
  is_mimuon = cfg.optimizer == "mimuon"
  counts = (diagnostics.mix_summary(opt_state, None, 1)[1] if is_mimuon else None)

  last = cfg.stop_at if cfg.stop_at is not None else cfg.steps
  last = min(last, cfg.steps)
  record: dict[str, Any] = {}
  losses, window_start, t_window = [], start, time.perf_counter()
  progress = _progress(cfg, start, last)
  for step in range(start, last):
    params, opt_state, loss = train_step(params, opt_state, get_batch(step))
    losses.append(loss)
    done = step + 1
    is_eval = done % cfg.eval_every == 0 or done == cfg.steps
    is_ckpt = ((cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
               or done == cfg.steps or done == last)
    if not (done % cfg.log_every == 0 or is_eval or is_ckpt):
      continue
    train_loss = float(np.mean(jax.device_get(losses)))  # waits for the step
    elapsed = time.perf_counter() - t_window
    record = {
        "step": done,
        "train_loss": train_loss,
        "lr": float(lr_schedule(step)),
        f"{items_name}_per_s": (done - window_start) * items_per_step / elapsed,
        "wall_s": time.perf_counter() - t0,
    }
    if is_mimuon:
      mix, counts = diagnostics.mix_summary(opt_state, counts, done - window_start)
      record.update(mix)
    if is_eval:
      record.update(evaluate(params))
      record["gap"] = record[eval_keys[0]] - record[eval_keys[1]]
    if main:
      reporting.append_jsonl(metrics_path, record)
    if is_ckpt and cfg.checkpoint:  # every process writes its shards
      checkpoint.save_state(ckpt_dir, done, params, opt_state,
                            keep=cfg.keep_checkpoints)
    progress.update(done - window_start)
    progress.set_postfix(_postfix(record), refresh=False)
    losses, window_start, t_window = [], done, time.perf_counter()
  progress.close()
  wall_s = time.perf_counter() - t0
  if main and cfg.plot and metrics_path.exists():
    extra = "test_acc" if eval_keys[0] == "test_loss" else None
    records = reporting.read_jsonl(metrics_path)
    if extra is None:
      plots.plot_loss_curves({cfg.optimizer: records}, out / "loss_curves.png",
                              title=str(out.name))
    else:
      plots.plot_loss_curves({cfg.optimizer: _as_val(records, eval_keys)},
                              out / "loss_curves.png", title=str(out.name),
                              extra_key=extra)
  result = {"params": params, "final": record, "wall_s": wall_s,
            "compile_s": compile_s}
  if placement is not None:
    result["placement"] = placement.describe((params, opt_state))
  return result


def _sync(name: str) -> None:
  """Waits for every process (a no-op with one)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def _as_val(records, eval_keys):
  # plot_loss_curves draws "val_loss" as the held-out curve.
  return [{**r, "val_loss": r[eval_keys[0]]} if eval_keys[0] in r else r
          for r in records]


def _postfix(record):
  keys = ("train_loss", "val_loss", "test_loss", "test_acc", "orth_frac_mean")
  return {k: f"{record[k]:.3f}" for k in keys if k in record}


class _NoProgress:
  def update(self, n):
    del n

  def set_postfix(self, *args, **kwargs):
    del args, kwargs

  def close(self):
    pass


def _progress(cfg, start, last):
  if not cfg.progress or not distributed.is_main_process():
    return _NoProgress()
  from tqdm import tqdm
  return tqdm(total=last, initial=start, desc=os.path.basename(cfg.out),
              mininterval=2.0, dynamic_ncols=True)


def write_summary(cfg: Any, params: Any, result: dict[str, Any],
                  **fields: Any) -> dict[str, Any]:
  """Writes `cfg.out`/summary.json for a `train` result; returns it with the
  trained params."""
  summary = {
      "optimizer": cfg.optimizer,
      **fields,
      "num_params": tree_size(params),
      "compile_s": result["compile_s"],
      "wall_s": result["wall_s"],
      "final": result["final"],
  }
  if "placement" in result:
    summary["placement"] = result["placement"]
  if distributed.is_main_process():
    reporting.write_json(pathlib.Path(cfg.out) / "summary.json", summary)
  return {**summary, "params": result["params"]}


def final_line(cfg: Any, summary: dict[str, Any], keys: tuple[str, ...]) -> str:
  """One line for the end of a run: the optimizer, the last step, `keys` of
  the last record (nan where missing), wall and compile time."""
  final = summary["final"]
  metrics = "".join(f" {k} {final.get(k, float('nan')):.4f}" for k in keys)
  return (f"{cfg.optimizer}: step {final.get('step')}{metrics} wall"
          f" {summary['wall_s']:.1f}s (compile {summary['compile_s']:.1f}s)")


def tree_size(tree: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def mean_over_batches(fn: Callable[..., jax.Array], params: Any,
                      batches: list[Any]) -> float:
  """Mean of `fn(params, batch)` over equal-size batches."""
  return float(np.mean([float(fn(params, b)) for b in batches]))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels).mean()
