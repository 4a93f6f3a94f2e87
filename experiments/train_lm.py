"""Train a Qwen3-architecture language model on Shakespeare.

  python -m experiments.train_lm --optimizer mimuon --steps 300 --out runs/lm

Byte tokenizer and the ~0.8M-parameter `tiny` preset by default (a CPU
trains it at ~8k tokens/s); `--tokenizer qwen3` uses the real Qwen3
tokenizer (vocab 151936, so the embedding dominates). Writes to `--out`:
metrics.jsonl (train loss, lr, tokens/s; every eval: val loss, train loss on
fixed windows, gap = val - train; for MiMuon per-matrix orthogonalized
fraction and gaps), loss_curves.png, config.json, summary.json and ckpt/
(resume with `--resume`).

`--mesh DATAxFSDP` trains on a (data, fsdp) device mesh: weights FSDP-split
over "fsdp" (`--mesh-shard-layers`: layer stacks of `--scan-layers` split on
their layer axis), batches over every device, and Muon/MiMuon run
Newton-Schulz and the gap test on whole matrices spread over "fsdp"
(`mimuon_optax.models.qwen3.sharding`). On a CPU, simulate devices:

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
    python -m experiments.train_lm --mesh 2x4 --batch-size 16

Several processes (one per host of a TPU pod, `jax.distributed`):
`--coordinator HOST:PORT --num-processes N --process-id I` (or
`JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`; on a TPU
pod `--coordinator auto`) with `--mesh` over the devices of all of them.
Each process reads only its rows of every batch; process 0 alone prints and
writes metrics, plots and the summary; every process writes its shards of
the checkpoints, so `--out` must be a directory all hosts see. Rehearse on
one machine with `python -m experiments.harness.launch` (N local processes).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments.harness import cli
from experiments.harness import data_text
from experiments.harness import distributed
from experiments.harness import loop
from experiments.harness import optimizers
from experiments.harness.cli import field
from mimuon_optax.models.qwen3 import Qwen3Config
from mimuon_optax.models.qwen3 import Qwen3ForCausalLM
from mimuon_optax.models.qwen3 import next_token_loss
from mimuon_optax.models.qwen3 import qwen3_weight_dimension_numbers
from mimuon_optax.models.qwen3 import sharding as qwen3_sharding

PRESETS = ("micro", "tiny", "small", "width_0_6b")
# Fixed evaluation windows: the same for every optimizer, seed and resume.
EVAL_SEED_VAL, EVAL_SEED_TRAIN = 1_000_003, 1_000_033


@dataclasses.dataclass(frozen=True)
class TrainLMConfig(loop.LoopConfig, optimizers.OptimizerConfig,
                    distributed.DistributedConfig):
  """Configuration of `train_lm` (every field is a `--flag`)."""

  out: str = field("runs/train_lm", "output directory")
  preset: str = field(
      "tiny", f"model size, one of {PRESETS}: micro (~60k params, for tests),"
      " tiny (~0.8M, Qwen3Config.tiny()), small (~4.8M), width_0_6b (~32M:"
      " Qwen3-0.6B's widths, 2 layers, byte vocab)", choices=PRESETS)
  tokenizer: str = field("byte", "tokenizer", choices=data_text.TOKENIZERS)
  seq_len: int = field(128, "tokens per training window (T)", minimum=1)
  batch_size: int = field(16, "windows per step (B)", minimum=1)
  eval_batches: int = field(
      4, "batches of B windows for each of the val and train-eval losses",
      minimum=1)
  val_plays: tuple[str, ...] = field(
      data_text.DEFAULT_VAL_PLAYS, "works held out for validation")
  cache_dir: str = field(data_text.DEFAULT_CACHE_DIR, "token cache directory")
  scan_layers: bool = field(False, "stack the layers and run them with nnx.scan")
  mesh: str | None = field(
      None, "train on a DATAxFSDP device mesh, e.g. 2x4 (DATA*FSDP must equal"
      " the device count and divide --batch-size); none: one device")
  mesh_shard_layers: bool = field(
      False, "with --mesh and --scan-layers: split layer stacks on their"
      " layer axis instead of a matrix axis")

  def __post_init__(self):
    super().__post_init__()
    settings = distributed.distributed_settings(self)
    if settings is not None and (settings[1] or 1) > 1 and self.mesh is None:
      raise ValueError(f"--num-processes {settings[1]} needs --mesh (one mesh"
                       " over the devices of every process)")


def parse_mesh(spec: str) -> tuple[int, int]:
  """`"2x4"` -> `(2, 4)` (data, fsdp)."""
  parts = spec.lower().split("x")
  if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
    raise ValueError(f"--mesh must look like DATAxFSDP (e.g. 2x4), got"
                     f" {spec!r}")
  return int(parts[0]), int(parts[1])


def make_placement(cfg: TrainLMConfig, params: Any
                   ) -> tuple[jax.sharding.Mesh | None, loop.Placement | None]:
  """The mesh and shardings of `--mesh` (None, None without it)."""
  if cfg.mesh is None:
    if cfg.mesh_shard_layers:
      raise ValueError("--mesh-shard-layers needs --mesh")
    if jax.process_count() > 1:
      raise ValueError(f"{jax.process_count()} processes need --mesh (one"
                       " mesh over the devices of every process)")
    return None, None
  data, fsdp = parse_mesh(cfg.mesh)
  if cfg.batch_size % (data * fsdp):
    raise ValueError(f"--batch-size {cfg.batch_size} is not divisible by the"
                     f" {data * fsdp} devices of --mesh {cfg.mesh}")
  if cfg.mesh_shard_layers and not cfg.scan_layers:
    raise ValueError("--mesh-shard-layers needs --scan-layers (stacked layers)")
  mesh = qwen3_sharding.make_mesh(data=data, fsdp=fsdp)
  return mesh, loop.Placement(
      mesh, qwen3_sharding.param_shardings(
          params, mesh, shard_layers=cfg.mesh_shard_layers),
      qwen3_sharding.batch_sharding(mesh), cfg.batch_size)


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
  elif preset == "width_0_6b":  # Qwen3-0.6B's matrix shapes, 2 layers.
    return Qwen3Config.qwen3_0_6b(num_hidden_layers=2, vocab_size=vocab_size,
                                  scan_layers=scan_layers)
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
    return next_token_loss(nnx.merge(graphdef, params), tokens_BxTp1)

  sampler = data_text.WindowSampler(train_tokens, cfg.seq_len, cfg.batch_size,
                                    cfg.seed)
  return dict(params=params, dims=dims, loss_fn=loss_fn, sampler=sampler,
              train_tokens=train_tokens, val_tokens=val_tokens,
              tokenizer=tokenizer, model_config=model_cfg)


def window_rows(sampler: data_text.WindowSampler, index: int,
                rows: slice) -> np.ndarray:
  """`sampler.batch(index)[rows]`, gathering only the tokens of `rows`."""
  rng = np.random.default_rng([sampler.seed, index])
  starts_B = rng.integers(0, len(sampler.tokens) - sampler.seq_len,
                          size=sampler.batch_size)
  offsets_T = np.arange(sampler.seq_len + 1)
  return sampler.tokens[starts_B[rows, None] + offsets_T].astype(np.int32)


def run(cfg: TrainLMConfig) -> dict[str, Any]:
  """Trains per `cfg`; returns the summary written to summary.json."""
  distributed.init_distributed(cfg)  # before anything touches the devices
  cfg = optimizers.resolve_lrs(cfg, "lm")  # config.json records the rates used
  parts = build(cfg)
  params, loss_fn = parts["params"], parts["loss_fn"]
  mesh, placement = make_placement(cfg, params)
  tx, schedule = optimizers.make_optimizer(
      cfg, "lm", cfg.steps, parts["dims"], mesh=mesh,
      mesh_axes=qwen3_sharding.FSDP if mesh is not None else None)

  sampler = parts["sampler"]
  if placement is None:
    rows, place, eval_loss = slice(None), jnp.asarray, jax.jit(loss_fn)
  else:  # global batches from this process's rows; losses on every host
    rows, place = placement.local_rows(), placement.assemble
    eval_loss = jax.jit(loss_fn, out_shardings=NamedSharding(mesh, P()))

  def windows(tokens, seed):
    fixed = data_text.WindowSampler(tokens, cfg.seq_len, cfg.batch_size, seed)
    return [place(window_rows(fixed, i, rows))
            for i in range(cfg.eval_batches)]

  val_batches = windows(parts["val_tokens"], EVAL_SEED_VAL)
  train_batches = windows(parts["train_tokens"], EVAL_SEED_TRAIN)

  def evaluate(params):
    return {"val_loss": loop.mean_over_batches(eval_loss, params, val_batches),
            "train_eval_loss": loop.mean_over_batches(eval_loss, params,
                                                      train_batches)}

  result = loop.train(
      cfg, params, tx, loss_fn, sampler.batch, evaluate,
      lr_schedule=schedule, items_per_step=cfg.batch_size * cfg.seq_len,
      placement=placement,
      local_batch_fn=lambda step, rows: window_rows(sampler, step, rows))
  return loop.write_summary(
      cfg, params, result, train_tokens=int(len(parts["train_tokens"])),
      val_tokens=int(len(parts["val_tokens"])))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  cfg = cli.parse_config(TrainLMConfig, __doc__.split("\n\n")[0], argv)
  summary = run(cfg)
  if distributed.is_main_process():
    print(loop.final_line(cfg, summary, ("train_loss", "val_loss")))
    print(f"results: {pathlib.Path(cfg.out).resolve()}")
  return summary


if __name__ == "__main__":
  main()
