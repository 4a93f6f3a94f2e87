"""Qwen3-0.6B itself (random init) trained with mimuon() on the CPU: loss, step time, memory, gate.

  python -m experiments.qwen3_0_6b --out experiments/results/qwen3_0_6b

The full `Qwen3Config.qwen3_0_6b()` preset (28 layers, hidden 1024, vocab
151,936, 596M parameters; `--layers` runs fewer at full width), no weights
(none ship), layers stacked with `scan_layers` so one layer compiles. Batches
are Shakespeare windows from the real Qwen3 tokenizer. `mimuon()` runs at the
library defaults (spacing tau 0.3, `gap_every=1`, bf16 Newton-Schulz) with a
constant matrix lr after a short warmup. Each step appends to metrics.jsonl:
train loss, step wall time, and the fraction of matrices of each layer kind
(q, k, v, o, gate, up, down) whose update was orthogonalized at that step.
`--time-budget-s` stops early (and says so) when the measured step time
(from step 2 on) projects past the budget, so a run never silently takes
hours.
Writes metrics.jsonl, summary.json, results.md, loss.png and COMMAND.md.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import resource
import time
from typing import Any, Sequence

import numpy as np
import optax
from flax import nnx

import mimuon_optax
from experiments.harness import cli
from experiments.harness import data_text
from experiments.harness import diagnostics
from experiments.harness import loop
from experiments.harness import optimizers
from experiments.harness import plots
from experiments.harness import reporting
from experiments.harness.cli import field
from mimuon_optax import training
from mimuon_optax.models.qwen3 import Qwen3Config
from mimuon_optax.models.qwen3 import Qwen3ForCausalLM
from mimuon_optax.models.qwen3 import next_token_loss
from mimuon_optax.models.qwen3 import qwen3_weight_dimension_numbers


@dataclasses.dataclass(frozen=True)
class Qwen06Config:
  """Configuration of `qwen3_0_6b` (every field is a `--flag`)."""

  out: str = field("runs/qwen3_0_6b", "output directory")
  model: str = field("0.6b", "0.6b: Qwen3-0.6B's widths and vocabulary;"
                     " micro: hidden 64 with the same vocabulary (tests)",
                     choices=("0.6b", "micro"))
  layers: int = field(28, "decoder layers (28 = the real model)", minimum=1)
  steps: int = field(20, "training steps", minimum=1)
  batch_size: int = field(2, "windows per step", minimum=1)
  seq_len: int = field(32, "tokens per window", minimum=1)
  lr: float = field(0.01, "matrix lr (constant after warmup)", positive=True)
  adam_lr: float = field(3e-3, "AdamW lr of embeddings and norms",
                         positive=True)
  warmup_steps: int = field(2, "linear warmup steps", minimum=0)
  tau: float = field(mimuon_optax.DEFAULT_TAU, "MiMuon spacing tau",
                     minimum=0)
  gap_every: int = field(1, "MiMuon gap_every", minimum=1)
  seed: int = field(0, "init and data seed")
  time_budget_s: float = field(3600.0, "stop when the projected run time"
                               " exceeds this", minimum=1)


def layer_kind(name: str) -> str:
  return name.split(".")[-1].replace("_proj", "")


def orth_by_kind(opt_state: Any, previous: dict[str, np.ndarray] | None
                 ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Fraction of matrices per layer kind orthogonalized since `previous`
  (one step: `diagnostics.mix_summary`'s per-matrix fractions, grouped)."""
  record, counts = diagnostics.mix_summary(opt_state, previous, 1)
  fracs: dict[str, list[float]] = {}
  for name, frac in record["orth_frac"].items():  # name: layers.q_proj[i]
    fracs.setdefault(layer_kind(name.split("[")[0]), []).append(frac)
  return {k: float(np.mean(v)) for k, v in sorted(fracs.items())}, counts


def peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(cfg: Qwen06Config, command: str = "") -> dict[str, Any]:
  out = pathlib.Path(cfg.out)
  out.mkdir(parents=True, exist_ok=True)
  t_start = time.perf_counter()
  tokenizer = data_text.get_tokenizer("qwen3")
  train, _ = data_text.split_plays()
  tokens = data_text.load_tokens(train, tokenizer)
  sampler = data_text.WindowSampler(tokens, cfg.seq_len, cfg.batch_size,
                                    cfg.seed)
  small = (dict(hidden_size=64, intermediate_size=192, num_attention_heads=2,
                num_key_value_heads=1, head_dim=32)
           if cfg.model == "micro" else {})
  model_cfg = Qwen3Config.qwen3_0_6b(num_hidden_layers=cfg.layers,
                                     scan_layers=True, **small)
  model = Qwen3ForCausalLM(model_cfg, rngs=nnx.Rngs(cfg.seed))
  graphdef, state = nnx.split(model, nnx.Param)
  params = nnx.as_pure(state)
  del model, state
  num_params = loop.tree_size(params)

  def schedule(peak):
    return optax.linear_schedule(0.0, peak, max(cfg.warmup_steps, 1))

  tx = mimuon_optax.mimuon(
      schedule(cfg.lr), tau=cfg.tau, gap_every=cfg.gap_every,
      adam_learning_rate=schedule(cfg.adam_lr),
      weight_dimension_numbers=qwen3_weight_dimension_numbers(params),
      **optimizers.ADAMW_LEAVES)

  def loss_fn(params, tokens_BxTp1):
    return next_token_loss(nnx.merge(graphdef, params), tokens_BxTp1)

  opt_state = tx.init(params)
  t0 = time.perf_counter()
  step_fn = training.make_train_step(tx, loss_fn).lower(
      params, opt_state, sampler.batch(0)).compile()
  compile_s = time.perf_counter() - t0
  metrics = out / "metrics.jsonl"
  metrics.unlink(missing_ok=True)
  counts, records, stopped = None, [], None
  for i in range(cfg.steps):
    t0 = time.perf_counter()
    params, opt_state, loss = step_fn(params, opt_state, sampler.batch(i))
    loss = float(loss)
    step_s = time.perf_counter() - t0
    kinds, counts = orth_by_kind(opt_state, counts)
    record = {"step": i + 1, "loss": loss, "step_s": step_s,
              "orth_frac": kinds, "peak_rss_gib": peak_rss_gib()}
    records.append(record)
    reporting.append_jsonl(metrics, record)
    print(f"step {i + 1}: loss {loss:.4f} ({step_s:.1f}s) orth"
          f" {np.mean(list(kinds.values())):.2f}", flush=True)
    elapsed = time.perf_counter() - t_start
    # Step 1 can carry one-off costs (first-touch allocation): project from
    # step 2 on.
    if i >= 1 and elapsed + step_s * (cfg.steps - i - 1) > cfg.time_budget_s:
      stopped = (f"stopped after step {i + 1}: {cfg.steps} steps would take"
                 f" ~{elapsed + step_s * (cfg.steps - i - 1):.0f} s >"
                 f" --time-budget-s {cfg.time_budget_s:g}")
      print(stopped, flush=True)
      break
  steady = [r["step_s"] for r in records[1:]] or [records[0]["step_s"]]
  per_kind = {k: float(np.mean([r["orth_frac"][k] for r in records]))
              for k in records[0]["orth_frac"]}
  summary = {
      "layers": cfg.layers, "num_params": num_params,
      "tokens_per_step": cfg.batch_size * cfg.seq_len,
      "steps_run": len(records), "stopped": stopped,
      "first_loss": records[0]["loss"], "last_loss": records[-1]["loss"],
      "min_loss": min(r["loss"] for r in records),
      "compile_s": compile_s, "step_s_median": float(np.median(steady)),
      "peak_rss_gib": peak_rss_gib(), "orth_frac_by_kind": per_kind,
      "orth_frac_mean": float(np.mean(list(per_kind.values()))),
      "wall_s": time.perf_counter() - t_start, "env": reporting.env_info(),
      "config": dataclasses.asdict(cfg),
  }
  reporting.write_json(out / "summary.json", summary)
  _plot(records, out / "loss.png", cfg)
  table = reporting.markdown_table(
      ["layer kind"] + list(per_kind),
      [["orthogonalized fraction"] + [per_kind[k] for k in per_kind]])
  (out / "results.md").write_text("\n".join([
      f"# Qwen3-0.6B shapes, {cfg.layers} layers, mimuon() on the CPU", "",
      f"{num_params / 1e6:.0f}M parameters; {len(records)} steps of"
      f" {cfg.batch_size}x{cfg.seq_len} tokens; loss {records[0]['loss']:.3f}"
      f" -> {records[-1]['loss']:.3f} (min {summary['min_loss']:.3f});"
      f" compile {compile_s:.0f} s; median step {summary['step_s_median']:.1f}"
      f" s; peak RSS {summary['peak_rss_gib']:.1f} GiB."
      + (f" {stopped}." if stopped else ""), "", table, ""]) + "\n")
  reporting.write_command_md(out, "Qwen3-0.6B with mimuon() on the CPU", command,
                          [cfg.seed], summary["wall_s"])
  return summary


def _plot(records, path, cfg):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  steps = [r["step"] for r in records]
  axes[0].plot(steps, [r["loss"] for r in records], "o-", color="C2")
  axes[0].set_xlabel("step")
  axes[0].set_ylabel("train loss (batch)")
  axes[0].set_title(f"Qwen3-0.6B shapes, {cfg.layers} layers, mimuon()")
  for i, kind in enumerate(records[0]["orth_frac"]):
    color, ls, marker = plots.curve_style(i)
    axes[1].plot(steps, [r["orth_frac"][kind] for r in records], color=color,
                 ls=ls, marker=marker, ms=4, label=kind)
  axes[1].set_xlabel("step")
  axes[1].set_ylabel("fraction of layers orthogonalized")
  axes[1].set_ylim(-0.05, 1.05)
  axes[1].legend(fontsize=8, ncol=2)
  for ax in axes:
    ax.grid(alpha=0.3)
  plots.save_figure(fig, path)


def run_and_show(cfg: Qwen06Config, command: str) -> dict[str, Any]:
  """`run`, then prints its summary."""
  summary = run(cfg, command)
  print(json.dumps({k: v for k, v in summary.items()
                    if k not in ("env", "config")}, indent=1))
  return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return cli.study_main(Qwen06Config, __doc__, run_and_show, argv)


if __name__ == "__main__":
  main()
