"""Hugging Face safetensors checkpoints <-> `Qwen3ForCausalLM`.

One table (`_tensor_rules`) says, for every HF tensor name, which NNX leaf it
fills, the HF shape it must have, and how to turn one layout into the other.
Loading and saving both walk that table, so they cannot drift apart.

Loading builds the model abstractly with `nnx.eval_shape` (no random init of
weights that are about to be overwritten), reads tensors one at a time with
`safetensors.safe_open(framework="numpy")`, checks each shape before reading
the data, and collects every problem (missing, unexpected, mis-shaped names)
into a single ValueError instead of stopping at the first.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
from flax import nnx

from mimuon_optax.models.qwen3.modeling import Qwen3Config, Qwen3ForCausalLM

_SINGLE_FILE = "model.safetensors"
_INDEX_FILE = "model.safetensors.index.json"
_CONFIG_FILE = "config.json"


@dataclasses.dataclass(frozen=True)
class _Rule:
  """How one HF tensor maps onto one NNX leaf.

  `hf_name` and `path` contain "{i}" for per-layer tensors. `to_flax` and
  `to_hf` convert between torch's Linear layout (out, in) and our kernels
  (fan_in..., fan_out...).
  """

  hf_name: str
  path: tuple[str, ...]
  hf_shape: tuple[int, ...]
  to_flax: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]

  @property
  def per_layer(self) -> bool:
    return "{i}" in self.hf_name


def _identity(x: np.ndarray) -> np.ndarray:
  return x


def _tensor_rules(cfg: Qwen3Config) -> list[_Rule]:
  D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
  H, K, Dh = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim

  def linear(hf_name, path, fan_in, fan_out):
    # torch Linear weight (out, in) -> kernel (in, out).
    return _Rule(hf_name, path, (fan_out, fan_in), lambda w: w.T,
                 lambda k: k.T)

  def heads_in(hf_name, path, heads):
    # (heads*Dh, D) -> (D, heads, Dh): the output features split into heads.
    return _Rule(hf_name, path, (heads * Dh, D),
                 lambda w: w.T.reshape(D, heads, Dh),
                 lambda k: k.reshape(D, heads * Dh).T)

  def norm(hf_name, path, dim):
    return _Rule(hf_name, path, (dim,), _identity, _identity)

  layer = "model.layers.{i}."
  rules = [
      _Rule("model.embed_tokens.weight", ("model", "embed_tokens", "embedding"),
            (V, D), _identity, _identity),
      heads_in(layer + "self_attn.q_proj.weight", ("self_attn", "q_proj", "kernel"), H),
      heads_in(layer + "self_attn.k_proj.weight", ("self_attn", "k_proj", "kernel"), K),
      heads_in(layer + "self_attn.v_proj.weight", ("self_attn", "v_proj", "kernel"), K),
      # (D, H*Dh) -> (H, Dh, D): the input features split into heads.
      _Rule(layer + "self_attn.o_proj.weight", ("self_attn", "o_proj", "kernel"),
            (D, H * Dh), lambda w: w.T.reshape(H, Dh, D),
            lambda k: k.reshape(H * Dh, D).T),
      norm(layer + "self_attn.q_norm.weight", ("self_attn", "q_norm", "scale"), Dh),
      norm(layer + "self_attn.k_norm.weight", ("self_attn", "k_norm", "scale"), Dh),
      linear(layer + "mlp.gate_proj.weight", ("mlp", "gate_proj", "kernel"), D, F),
      linear(layer + "mlp.up_proj.weight", ("mlp", "up_proj", "kernel"), D, F),
      linear(layer + "mlp.down_proj.weight", ("mlp", "down_proj", "kernel"), F, D),
      norm(layer + "input_layernorm.weight", ("input_layernorm", "scale"), D),
      norm(layer + "post_attention_layernorm.weight",
           ("post_attention_layernorm", "scale"), D),
      norm("model.norm.weight", ("model", "norm", "scale"), D),
  ]
  if not cfg.tie_word_embeddings:
    rules.append(linear("lm_head.weight", ("lm_head", "kernel"), D, V))
  return rules


def _expand(cfg: Qwen3Config) -> Iterator[tuple[str, _Rule, int | None]]:
  """Every (hf_name, rule, layer index or None) the model needs."""
  for rule in _tensor_rules(cfg):
    if rule.per_layer:
      for i in range(cfg.num_hidden_layers):
        yield rule.hf_name.format(i=i), rule, i
    else:
      yield rule.hf_name, rule, None


def _leaf_path(cfg: Qwen3Config, rule: _Rule, layer: int | None) -> tuple:
  """The NNX state path of a rule's leaf.

  Stacked layers share one leaf (the layer becomes an index into its leading
  axis), looped layers have one each.
  """
  if layer is None:
    return rule.path
  if cfg.scan_layers:
    return ("model", "layers", *rule.path)
  return ("model", "layers", layer, *rule.path)


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------


def _read_config(path: str) -> dict[str, Any]:
  config_path = os.path.join(path, _CONFIG_FILE)
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"No {_CONFIG_FILE} in {path}.")
  with open(config_path) as f:
    return json.load(f)


def _safetensors_files(path: str) -> list[str]:
  index_path = os.path.join(path, _INDEX_FILE)
  if os.path.exists(index_path):
    with open(index_path) as f:
      weight_map = json.load(f)["weight_map"]
    return [os.path.join(path, name) for name in sorted(set(weight_map.values()))]
  single = os.path.join(path, _SINGLE_FILE)
  if os.path.exists(single):
    return [single]
  raise FileNotFoundError(f"Neither {_SINGLE_FILE} nor {_INDEX_FILE} in {path}.")


def load_hf_checkpoint(path: str | os.PathLike, *, dtype=None, param_dtype=None,
                       scan_layers: bool = False,
                       remat: bool = False) -> Qwen3ForCausalLM:
  """Loads a HF Qwen3 checkpoint directory into a `Qwen3ForCausalLM`.

  Reads `config.json` and either `model.safetensors` or the shards listed in
  `model.safetensors.index.json`. `dtype` / `param_dtype` default to float32
  (the checkpoint's own dtype, often bfloat16, is converted). With tied
  embeddings `lm_head.weight` is not needed; if present it must equal
  `model.embed_tokens.weight`. `scan_layers` and `remat` choose how the model
  runs (see `Qwen3Config`); the checkpoint is the same either way.

  Raises ValueError for a non-Qwen3 config, and one ValueError listing every
  missing, unexpected and mis-shaped tensor.
  """
  path = os.fspath(path)
  overrides = dict(scan_layers=scan_layers, remat=remat)
  if dtype is not None:
    overrides["dtype"] = dtype
  if param_dtype is not None:
    overrides["param_dtype"] = param_dtype
  cfg = Qwen3Config.from_hf_config(_read_config(path), **overrides)

  abstract_model = nnx.eval_shape(lambda: Qwen3ForCausalLM(cfg, rngs=nnx.Rngs(0)))
  graphdef, abstract_state = nnx.split(abstract_model)
  abstract_leaves = dict(nnx.to_flat_state(abstract_state))
  leaf_shapes = {leaf: var.shape for leaf, var in abstract_leaves.items()}

  store_dtype = jnp.dtype(cfg.param_dtype)  # a numpy dtype (ml_dtypes for bf16)
  expected = {name: (rule, layer) for name, rule, layer in _expand(cfg)}
  arrays: dict[tuple, np.ndarray] = {}  # leaf path -> filled numpy array
  seen: set[str] = set()
  errors: list[str] = []
  tied_lm_head = None

  for file in _safetensors_files(path):
    with safetensors.safe_open(file, framework="numpy") as f:
      for name in f.keys():
        shape = tuple(f.get_slice(name).get_shape())
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
          tied_lm_head = f.get_tensor(name)  # checked against the embedding below
          continue
        if name not in expected:
          errors.append(f"unexpected tensor {name!r} {shape}")
          continue
        seen.add(name)
        rule, layer = expected[name]
        if shape != rule.hf_shape:
          errors.append(f"wrong shape for {name!r}: expected {rule.hf_shape},"
                        f" got {shape}")
          continue
        value = rule.to_flax(f.get_tensor(name)).astype(store_dtype)
        leaf = _leaf_path(cfg, rule, layer)
        if cfg.scan_layers and layer is not None:
          if leaf not in arrays:
            arrays[leaf] = np.zeros(leaf_shapes[leaf], store_dtype)
          arrays[leaf][layer] = value
        else:
          arrays[leaf] = value

  errors += [f"missing tensor {name!r} {expected[name][0].hf_shape}"
             for name in expected if name not in seen]
  embedding = arrays.get(("model", "embed_tokens", "embedding"))
  if tied_lm_head is not None and embedding is not None:
    if not np.array_equal(tied_lm_head.astype(store_dtype), embedding):
      errors.append("'lm_head.weight' differs from 'model.embed_tokens.weight'"
                    " but tie_word_embeddings is true")
  if errors:
    raise ValueError(f"Checkpoint {path} does not match Qwen3 config"
                     f" ({len(errors)} problems):\n  " + "\n  ".join(errors))

  # Every model leaf must have been produced by the table (guards the table
  # itself against drifting from the module tree).
  uncovered = sorted(set(leaf_shapes) - set(arrays), key=str)
  if uncovered:
    raise AssertionError(f"No checkpoint rule fills model leaves {uncovered}.")
  for leaf, array in arrays.items():
    assert array.shape == leaf_shapes[leaf], (leaf, array.shape)

  state = nnx.from_flat_state(
      [(leaf, var.replace(jnp.asarray(arrays[leaf])))
       for leaf, var in abstract_leaves.items()])
  return nnx.merge(graphdef, state)


# ----------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------


def save_hf_checkpoint(model: Qwen3ForCausalLM, path: str | os.PathLike) -> None:
  """Writes `config.json` and `model.safetensors` in the HF Qwen3 layout.

  The result opens with `transformers.Qwen3ForCausalLM.from_pretrained`.
  Tensors keep the model's `param_dtype`; with tied embeddings no
  `lm_head.weight` is written (as transformers itself does).
  """
  path = os.fspath(path)
  cfg = model.config
  os.makedirs(path, exist_ok=True)
  leaves = {leaf: np.asarray(var[...])
            for leaf, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}

  tensors = {}
  for name, rule, layer in _expand(cfg):
    value = leaves[_leaf_path(cfg, rule, layer)]
    if cfg.scan_layers and layer is not None:
      value = value[layer]
    tensors[name] = np.ascontiguousarray(rule.to_hf(value))
    assert tensors[name].shape == rule.hf_shape, (name, tensors[name].shape)

  # transformers 4.x rejects safetensors files without a "format" entry.
  safetensors.numpy.save_file(tensors, os.path.join(path, _SINGLE_FILE),
                              metadata={"format": "pt"})
  with open(os.path.join(path, _CONFIG_FILE), "w") as f:
    json.dump(cfg.to_hf_config(), f, indent=2)
