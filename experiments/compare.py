"""AdamW vs Muon vs MiMuon on one task: a markdown table and a plot.

  python -m experiments.compare --preset demo      # the README demo, < 10 min
  python -m experiments.compare --preset demo --sweep   # the lr sweep

Each optimizer trains the same model from the same init on the same batches
(`--seed`), at its tuned learning rate (optimizers.DEFAULT_LRS, from `--sweep`).
`--sweep` instead trains every optimizer at every learning rate of its grid
for `--sweep-steps` steps and reports the held-out loss of each (sweep.md);
the best go into optimizers.DEFAULT_LRS by hand.

Writes to `--out`: results.md (table + command + environment), results.json,
loss_curves.png, and one folder per run with its metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Sequence

import mimuon_optax
from experiments import train_lm
from experiments import train_vision
from experiments.harness import cli
from experiments.harness import data_images
from experiments.harness import optimizers
from experiments.harness import plots
from experiments.harness import reporting
from experiments.harness.cli import field
from mimuon_optax import _mix

TASKS = ("lm", "vision")
PRESETS = {
    # The README demo: tiny Qwen3 on Shakespeare bytes, 3 x 300 steps.
    "demo": dict(task="lm", steps=300, eval_every=25, out="runs/demo"),
    # Small CNN on all of Fashion-MNIST.
    "vision": dict(task="vision", dataset="fashion", steps=600,
                   eval_every=50, out="runs/compare_vision"),
    # A 1-minute smoke test.
    "smoke": dict(task="lm", model_preset="micro", steps=30, eval_every=30,
                  seq_len=64, batch_size=8, out="runs/compare_smoke"),
}


@dataclasses.dataclass(frozen=True)
class CompareConfig:
  """Configuration of `compare` (every field is a `--flag`)."""

  preset: str | None = field(None, f"defaults for a setup: {sorted(PRESETS)}")
  out: str = field("runs/compare", "output directory")
  task: str = field("lm", "task", choices=TASKS)
  optimizers: tuple[str, ...] = field(optimizers.OPTIMIZERS, "optimizers to run",
                                      choices=optimizers.OPTIMIZERS)
  lrs: tuple[float, ...] | None = field(
      None, "peak lr per optimizer (same order); none: optimizers.DEFAULT_LRS",
      positive=True)
  steps: int = field(300, "training steps per optimizer", minimum=1)
  warmup_steps: int = field(20, "linear warmup steps", minimum=0)
  eval_every: int = field(100, "evaluate every k steps (and at the end)",
                          minimum=1)
  seed: int = field(0, "init and data seed (shared by all optimizers)")
  # lm
  model_preset: str = field("tiny", "lm: model size", choices=train_lm.PRESETS)
  tokenizer: str = field("byte", "lm: tokenizer",
                         choices=train_lm.data_text.TOKENIZERS)
  seq_len: int = field(128, "lm: tokens per window", minimum=1)
  batch_size: int = field(16, "lm: windows per step; vision: x8 examples",
                          minimum=1)
  # vision
  dataset: str = field("fashion", "vision: dataset",
                       choices=train_vision.data_images.DATASETS)
  model: str = field("cnn", "vision: model", choices=train_vision.MODELS)
  # MiMuon
  tau: float = field(mimuon_optax.DEFAULT_TAU,
                     "MiMuon gate threshold (library default)", minimum=0)
  tau_mode: str = field("spacing", "MiMuon gate statistic",
                        choices=_mix.TAU_MODES)
  sgd_scale: str = field("none", "MiMuon SGD-branch scale",
                         choices=_mix.SGD_SCALES)
  # sweep
  sweep: bool = field(False, "run the learning-rate sweep instead")
  sweep_steps: int = field(150, "steps of each sweep run", minimum=1)
  sweep_adamw: tuple[float, ...] = field((1e-3, 3e-3, 1e-2), "AdamW lr grid",
                                         positive=True)
  sweep_muon: tuple[float, ...] = field((0.01, 0.03, 0.1), "Muon lr grid",
                                        positive=True)
  sweep_mimuon: tuple[float, ...] = field(
      (0.01, 0.03, 0.1, 0.3, 1.0), "MiMuon lr grid (wider: its SGD branch"
      " takes steps of size lr * |M|, far smaller than lr * |UV^T|)",
      positive=True)
  progress: bool = field(True, "tqdm progress bars")


def run_one(cfg: CompareConfig, optimizer: str, lr: float | None, steps: int,
            out: pathlib.Path, data=None) -> dict[str, Any]:
  """Trains one optimizer; returns its summary (without params)."""
  shared = dict(
      out=str(out), optimizer=optimizer, lr=lr, steps=steps,
      warmup_steps=cfg.warmup_steps, eval_every=min(cfg.eval_every, steps),
      seed=cfg.seed, tau=cfg.tau, tau_mode=cfg.tau_mode,
      sgd_scale=cfg.sgd_scale, checkpoint=False, plot=False,
      progress=cfg.progress)
  if cfg.task == "lm":
    run_cfg = train_lm.TrainLMConfig(
        preset=cfg.model_preset, tokenizer=cfg.tokenizer, seq_len=cfg.seq_len,
        batch_size=cfg.batch_size, **shared)
    summary = train_lm.run(run_cfg)
  else:
    run_cfg = train_vision.TrainVisionConfig(
        dataset=cfg.dataset, model=cfg.model, batch_size=8 * cfg.batch_size,
        **shared)
    summary = train_vision.run(run_cfg, data)
  summary.pop("params")
  default_lr, default_adam_lr = optimizers.DEFAULT_LRS[cfg.task][optimizer]
  summary["lr"] = default_lr if lr is None else lr
  summary["adam_lr"] = None if optimizer == "adamw" else default_adam_lr
  summary["records"] = reporting.read_jsonl(out / "metrics.jsonl")
  orth = [r["orth_frac_mean"] for r in summary["records"]
          if "orth_frac_mean" in r]
  summary["orth_frac"] = sum(orth) / len(orth) if orth else None
  return summary


def _label(cfg: CompareConfig, optimizer: str) -> str:
  """The row label: MiMuon names its gate settings (the README's labels)."""
  if optimizer != "mimuon":
    return optimizer
  scale = "" if cfg.sgd_scale == "none" else f", {cfg.sgd_scale}"
  return f"mimuon ({cfg.tau_mode}, tau={cfg.tau:g}{scale})"


def _row(cfg: CompareConfig, s: dict[str, Any]) -> list[str]:
  """One table row, losses to 3 decimals (runs differ in the third)."""
  f = s["final"]
  held_out = f["val_loss"] if cfg.task == "lm" else f["test_loss"]
  lr = f"{s['lr']:g}" + ("" if s["adam_lr"] is None else f" / {s['adam_lr']:g}")
  row = [_label(cfg, s["optimizer"]), lr] + [
      f"{x:.3f}" for x in (f["train_eval_loss"], held_out, f["gap"])]
  if cfg.task == "vision":
    row.append(f"{f['test_acc']:.3f}")
  row += ["-" if s["orth_frac"] is None else f"{s['orth_frac']:.3f}",
          f"{s['wall_s']:.0f}"]
  return row


def _headers(cfg: CompareConfig) -> list[str]:
  held = "val loss" if cfg.task == "lm" else "test loss"
  h = ["optimizer", "lr (matrix / adam)", "train loss", held, "gap"]
  if cfg.task == "vision":
    h.append("test acc")
  return h + ["orth. frac", "wall s"]


def _what(cfg: CompareConfig) -> str:
  if cfg.task == "lm":
    return (f"{cfg.model_preset} Qwen3 on Shakespeare ({cfg.tokenizer}"
            f" tokens), B={cfg.batch_size}, T={cfg.seq_len}")
  return f"{cfg.model} on {cfg.dataset}, B={8 * cfg.batch_size}"


def results_md(cfg: CompareConfig, summaries: Sequence[dict[str, Any]],
               total_s: float, command: str, env: dict[str, Any]) -> str:
  """results.md: the table `make demo` prints, then how it was made.

  Everything it reads is kept in results.json (`runs`, `total_wall_s`,
  `command`, `env`), so the committed table can be rebuilt from it.
  """
  table = reporting.markdown_table(_headers(cfg),
                                   [_row(cfg, s) for s in summaries])
  return "\n".join([
      f"# compare: {_what(cfg)}, {cfg.steps} steps, seed {cfg.seed}", "",
      table, "",
      "train loss: on fixed training windows/examples, eval mode; gap ="
      " held-out - train; orth. frac: MiMuon's mean fraction of matrices"
      " orthogonalized per step; wall s includes compile (compile s: "
      + ", ".join(f"{s['optimizer']} {s['compile_s']:.0f}" for s in summaries)
      + "). Losses differ in the third decimal across machines.", "",
      f"Total wall time: {total_s:.0f} s.", "",
      f"Command: `{command}`", "",
      f"Environment: {env['cpu']} ({env['cpu_count']} cores), {env['device']},"
      f" jax {env['jax']}, optax {env['optax']}, flax {env['flax']}.", ""])


def compare(cfg: CompareConfig, command: str) -> str:
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  data = (data_images.load_images(cfg.dataset) if cfg.task == "vision"
          else None)
  lrs = cfg.lrs or (None,) * len(cfg.optimizers)
  if len(lrs) != len(cfg.optimizers):
    raise ValueError("--lrs needs one value per optimizer")
  t0 = time.perf_counter()
  summaries = [run_one(cfg, opt, lr, cfg.steps, out / opt, data)
               for opt, lr in zip(cfg.optimizers, lrs)]
  total_s = time.perf_counter() - t0
  env = reporting.env_info()
  text = results_md(cfg, summaries, total_s, command, env)
  (out / "results.md").write_text(text)
  what = _what(cfg)
  reporting.write_command_md(
      out, f"compare: {what}", command, [cfg.seed], total_s,
      [f"{s['optimizer']}: lr {s['lr']:g}, adam lr {s['adam_lr']}"
       for s in summaries] +
      [f"MiMuon: tau={cfg.tau}, tau_mode={cfg.tau_mode},"
       f" sgd_scale={cfg.sgd_scale}", "table: results.md"])
  reporting.write_json(out / "results.json", {
      "config": cli.config_dict(cfg), "command": command, "env": env,
      "total_wall_s": total_s,
      "runs": [{k: v for k, v in s.items() if k != "records"}
               for s in summaries]})
  runs = {s["optimizer"]: _held_out_as_val(cfg, s["records"])
          for s in summaries}
  plots.plot_loss_curves(runs, out / "loss_curves.png", title=what,
                          extra_key="test_acc" if cfg.task == "vision" else None)
  return text


def _held_out_as_val(cfg, records):
  if cfg.task == "lm":
    return records
  return [{**r, "val_loss": r["test_loss"]} if "test_loss" in r else r
          for r in records]


def sweep(cfg: CompareConfig, command: str) -> str:
  out = pathlib.Path(cfg.out) / "sweep"
  out.mkdir(parents=True, exist_ok=True)
  data = (data_images.load_images(cfg.dataset) if cfg.task == "vision"
          else None)
  grids = {"adamw": cfg.sweep_adamw, "muon": cfg.sweep_muon,
           "mimuon": cfg.sweep_mimuon}
  rows, best, results = [], {}, []
  t0 = time.perf_counter()
  for opt in cfg.optimizers:
    for lr in grids[opt]:
      s = run_one(cfg, opt, lr, cfg.sweep_steps, out / f"{opt}_lr{lr:g}", data)
      f = s["final"]
      held = f["val_loss"] if cfg.task == "lm" else f["test_loss"]
      results.append({"optimizer": opt, "lr": lr, "adam_lr": s["adam_lr"],
                      "held_out_loss": held,
                      "train_eval_loss": f["train_eval_loss"],
                      "train_loss": f["train_loss"],
                      "test_acc": f.get("test_acc"),
                      "orth_frac_mean": f.get("orth_frac_mean"),
                      "wall_s": s["wall_s"]})
      if opt not in best or held < best[opt][1]:
        best[opt] = (lr, held)
  for r in results:
    mark = " **best**" if best[r["optimizer"]][0] == r["lr"] else ""
    rows.append([r["optimizer"], f"{r['lr']:g}{mark}",
                 "-" if r["adam_lr"] is None else f"{r['adam_lr']:g}",
                 r["train_loss"], r["held_out_loss"],
                 "-" if r["test_acc"] is None else r["test_acc"],
                 "-" if r["orth_frac_mean"] is None
                 else f"{r['orth_frac_mean']:.3f}",
                 f"{r['wall_s']:.0f}"])
  headers = ["optimizer", "peak lr", "adam lr", "last train loss",
             "held-out loss", "test acc", "orth. frac (last window)", "wall s"]
  env = reporting.env_info()
  text = "\n".join([
      f"# lr sweep: task {cfg.task}, {cfg.sweep_steps} steps, seed {cfg.seed}",
      "", reporting.markdown_table(headers, rows), "",
      f"Total wall time: {time.perf_counter() - t0:.0f} s.", "",
      f"Command: `{command}`", "",
      f"Environment: {env['cpu']} ({env['cpu_count']} cores), jax"
      f" {env['jax']}, optax {env['optax']}, flax {env['flax']}.", ""])
  (out / "sweep.md").write_text(text)
  reporting.write_command_md(out, f"lr sweep ({cfg.task})", command, [cfg.seed],
                          time.perf_counter() - t0, ["table: sweep.md"])
  reporting.write_json(out / "sweep.json", {
      "config": cli.config_dict(cfg), "command": command, "env": env,
      "results": results,
      "best": {k: {"lr": v[0], "held_out_loss": v[1]} for k, v in best.items()}})
  return text


def run(cfg: CompareConfig, command: str) -> str:
  """The table (and the plot, unless `--sweep`); prints both."""
  text = sweep(cfg, command) if cfg.sweep else compare(cfg, command)
  print(text)
  if not cfg.sweep:
    print(f"plot: {pathlib.Path(cfg.out).resolve() / 'loss_curves.png'}")
  return text


def main(argv: Sequence[str] | None = None) -> str:
  return cli.study_main(CompareConfig, __doc__, run, argv, presets=PRESETS)


if __name__ == "__main__":
  main()
