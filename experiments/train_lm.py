"""Train a Qwen3-architecture language model on Shakespeare.

  python -m experiments.train_lm --optimizer mimuon --steps 300 --out runs/lm

Byte tokenizer and the ~0.8M-parameter `tiny` preset by default (a CPU
trains it at ~8k tokens/s); `--tokenizer qwen3` uses the real Qwen3
tokenizer (vocab 151936, so the embedding dominates). Writes to `--out`:
metrics.jsonl (train loss, lr, tokens/s; every eval: val loss, train loss on
fixed windows, gap = val - train; for MiMuon per-matrix orthogonalized
fraction and gaps), loss_curves.png, config.json, summary.json and ckpt/
(resume with `--resume`).
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from typing import Any, Sequence

if __package__ in (None, ""):  # `python experiments/train_lm.py`
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  import experiments  # noqa: F401  (sets OPENBLAS_NUM_THREADS first)

import jax
import jax.numpy as jnp
from flax import nnx

from experiments import common
from experiments import data_text
from experiments import loop
from experiments.common import field
from mimuon_optax.models.qwen3 import Qwen3Config
from mimuon_optax.models.qwen3 import Qwen3ForCausalLM
from mimuon_optax.models.qwen3 import qwen3_weight_dimension_numbers

PRESETS = ("micro", "tiny", "small")
# Fixed evaluation windows: the same for every optimizer, seed and resume.
EVAL_SEED_VAL, EVAL_SEED_TRAIN = 1_000_003, 1_000_033


@dataclasses.dataclass(frozen=True)
class TrainLMConfig(common.LoopConfig, common.OptimizerConfig):
  """Configuration of `train_lm` (every field is a `--flag`)."""

  out: str = field("runs/train_lm", "output directory")
  preset: str = field(
      "tiny", f"model size, one of {PRESETS}: micro (~60k params, for tests),"
      " tiny (~0.8M, Qwen3Config.tiny()), small (~4.8M)")
  tokenizer: str = field("byte", f"one of {data_text.TOKENIZERS}")
  seq_len: int = field(128, "tokens per training window (T)")
  batch_size: int = field(16, "windows per step (B)")
  eval_batches: int = field(
      4, "batches of B windows for each of the val and train-eval losses")
  val_plays: tuple[str, ...] = field(
      data_text.DEFAULT_VAL_PLAYS, "works held out for validation")
  cache_dir: str = field(data_text.DEFAULT_CACHE_DIR, "token cache directory")
  scan_layers: bool = field(False, "stack the layers and run them with nnx.scan")


def model_config(preset: str, vocab_size: int, scan_layers: bool) -> Qwen3Config:
  if preset == "micro":
    overrides = dict(hidden_size=64, intermediate_size=192,
                     num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=32)
  elif preset == "tiny":
    overrides = {}
  elif preset == "small":
    overrides = dict(hidden_size=256, intermediate_size=768,
                     num_hidden_layers=6, num_attention_heads=8,
                     num_key_value_heads=4, head_dim=32)
  else:
    raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
  return Qwen3Config.tiny(vocab_size=vocab_size, scan_layers=scan_layers,
                          **overrides)


def build(cfg: TrainLMConfig) -> dict[str, Any]:
  """Model, data and loss for `cfg`, without training (used by spectra)."""
  train_tokens, val_tokens, tokenizer = data_text.load_splits(
      cfg.tokenizer, cfg.cache_dir, cfg.val_plays)
  model_cfg = model_config(cfg.preset, tokenizer.vocab_size, cfg.scan_layers)
  model = Qwen3ForCausalLM(model_cfg, rngs=nnx.Rngs(cfg.seed))
  graphdef, state = nnx.split(model, nnx.Param)
  params = nnx.as_pure(state)
  dims = qwen3_weight_dimension_numbers(params)

  def loss_fn(params, tokens_BxTp1):
    logits_BxTxV = nnx.merge(graphdef, params)(tokens_BxTp1[:, :-1])
    return loop.cross_entropy(logits_BxTxV, tokens_BxTp1[:, 1:])

  sampler = data_text.WindowSampler(train_tokens, cfg.seq_len, cfg.batch_size,
                                    cfg.seed)
  return dict(params=params, dims=dims, loss_fn=loss_fn, sampler=sampler,
              train_tokens=train_tokens, val_tokens=val_tokens,
              tokenizer=tokenizer, model_config=model_cfg)


def run(cfg: TrainLMConfig) -> dict[str, Any]:
  """Trains per `cfg`; returns the summary written to summary.json."""
  parts = build(cfg)
  params, loss_fn = parts["params"], parts["loss_fn"]
  tx, schedule = common.make_optimizer(cfg, "lm", cfg.steps, parts["dims"])

  def windows(tokens, seed):
    sampler = data_text.WindowSampler(tokens, cfg.seq_len, cfg.batch_size, seed)
    return [jnp.asarray(sampler.batch(i)) for i in range(cfg.eval_batches)]

  val_batches = windows(parts["val_tokens"], EVAL_SEED_VAL)
  train_batches = windows(parts["train_tokens"], EVAL_SEED_TRAIN)
  eval_loss = jax.jit(loss_fn)

  def evaluate(params):
    return {"val_loss": loop.mean_over_batches(eval_loss, params, val_batches),
            "train_eval_loss": loop.mean_over_batches(eval_loss, params,
                                                      train_batches)}

  result = loop.train(
      cfg, params, tx, loss_fn, parts["sampler"].batch, evaluate,
      lr_schedule=schedule, items_per_step=cfg.batch_size * cfg.seq_len)
  return loop.write_summary(
      cfg, params, result, train_tokens=int(len(parts["train_tokens"])),
      val_tokens=int(len(parts["val_tokens"])))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  cfg = common.parse_config(TrainLMConfig, __doc__.split("\n\n")[0], argv)
  summary = run(cfg)
  final = summary["final"]
  print(f"{cfg.optimizer}: step {final.get('step')} train_loss"
        f" {final.get('train_loss', float('nan')):.4f} val_loss"
        f" {final.get('val_loss', float('nan')):.4f} wall"
        f" {summary['wall_s']:.1f}s (compile {summary['compile_s']:.1f}s)")
  return summary


if __name__ == "__main__":
  main()
