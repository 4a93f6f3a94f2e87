"""Qwen3 decoder-only language model in Flax NNX.

A port of `transformers`' `Qwen3ForCausalLM` (and of the layout used by
jax-ml/bonsai): pre-norm decoder layers with RMSNorm, grouped-query attention
with a per-head RMSNorm on queries and keys, rotary position embeddings in the
HF "rotate_half" convention, a SwiGLU MLP, and a tied or untied LM head.

Array names carry their shapes, one letter per axis:

  B batch            T query positions       S key positions (= T without cache)
  D hidden size      V vocab size            F MLP hidden size
  H query heads      K key/value heads       G query heads per KV head (H // K)
  Dh head dim        R rotary frequencies (Dh // 2)
  L layers (leading axis of stacked weights when `scan_layers=True`)

(einsum strings use single letters, so E stands for Dh there.)

Weights follow the Flax layout, kernels are (fan_in..., fan_out...):

  embed_tokens.embedding  (V, D)        lm_head.kernel       (D, V)
  q_proj.kernel           (D, H, Dh)    k/v_proj.kernel      (D, K, Dh)
  o_proj.kernel           (H, Dh, D)    gate/up_proj.kernel  (D, F)
  down_proj.kernel        (F, D)        *norm.scale          (D,) or (Dh,)

With `scan_layers=True` every per-layer weight gains a leading L axis
(`model.layers.self_attn.q_proj.kernel` is (L, D, H, Dh)); otherwise the layers
are an `nnx.List` and paths carry the layer index (`model.layers.0.…`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

# Per-layer KV cache: (k_BxSxKxDh, v_BxSxKxDh). The whole-model cache is a
# list of those (looped layers) or one such pair with a leading L axis
# (scanned layers); see `Qwen3ForCausalLM.init_cache`.
LayerCache = tuple[jax.Array, jax.Array]


# ----------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Qwen3Config:
  """Architecture hyper-parameters (HF names) plus how to run the model.

  `dtype` is the compute dtype of activations; `param_dtype` the storage dtype
  of the weights. `scan_layers` stacks the decoder layers along a leading axis
  and runs them with `nnx.scan` (one compile of one layer instead of L);
  `remat` rematerialises each layer's activations in the backward pass.
  """

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: int
  head_dim: int
  rope_theta: float = 1_000_000.0
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = True
  max_position_embeddings: int = 40960
  initializer_range: float = 0.02
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  scan_layers: bool = False
  remat: bool = False

  def __post_init__(self):
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(
          f"num_attention_heads={self.num_attention_heads} is not a multiple of"
          f" num_key_value_heads={self.num_key_value_heads}.")
    if self.head_dim % 2:
      raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}.")

  @classmethod
  def qwen3_0_6b(cls, **overrides) -> Qwen3Config:
    """Qwen/Qwen3-0.6B (about 596M parameters, tied embeddings)."""
    kwargs: dict[str, Any] = dict(
        vocab_size=151936,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        max_position_embeddings=40960,
    )
    kwargs.update(overrides)
    return cls(**kwargs)

  @classmethod
  def tiny(cls, **overrides) -> Qwen3Config:
    """A ~0.8M-parameter model over bytes (vocab 256) that trains on a CPU."""
    kwargs: dict[str, Any] = dict(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        rope_theta=10_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        max_position_embeddings=2048,
    )
    kwargs.update(overrides)
    return cls(**kwargs)

  @classmethod
  def from_hf_config(cls, hf_config: dict[str, Any], **overrides) -> Qwen3Config:
    """Reads a transformers `config.json` dict; `overrides` replace fields.

    Raises ValueError for other architectures and for Qwen3 options this port
    does not implement (attention bias, sliding window, RoPE scaling, non-SiLU
    activations) rather than silently computing something else.
    """
    model_type = hf_config.get("model_type")
    architectures = hf_config.get("architectures") or []
    if model_type != "qwen3":
      raise ValueError(
          f"Unsupported model_type {model_type!r} in config; expected 'qwen3'.")
    unknown = [a for a in architectures if a != "Qwen3ForCausalLM"]
    if unknown:
      raise ValueError(
          f"Unsupported architectures {unknown} in config; expected"
          " ['Qwen3ForCausalLM'].")
    if hf_config.get("hidden_act", "silu") != "silu":
      raise ValueError(f"Unsupported hidden_act {hf_config['hidden_act']!r}.")
    if hf_config.get("attention_bias", False):
      raise ValueError("attention_bias=True is not supported.")
    if hf_config.get("use_sliding_window", False):
      raise ValueError("use_sliding_window=True is not supported.")

    # transformers>=5 nests RoPE settings in `rope_parameters`; older
    # checkpoints use top-level `rope_theta` with an optional `rope_scaling`.
    rope = hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
      raise ValueError(f"Unsupported RoPE type {rope_type!r}.")
    rope_theta = rope.get("rope_theta", hf_config.get("rope_theta", 10_000.0))

    num_heads = hf_config["num_attention_heads"]
    head_dim = hf_config.get("head_dim") or hf_config["hidden_size"] // num_heads
    kwargs: dict[str, Any] = dict(
        vocab_size=hf_config["vocab_size"],
        hidden_size=hf_config["hidden_size"],
        intermediate_size=hf_config["intermediate_size"],
        num_hidden_layers=hf_config["num_hidden_layers"],
        num_attention_heads=num_heads,
        num_key_value_heads=hf_config.get("num_key_value_heads") or num_heads,
        head_dim=head_dim,
        rope_theta=float(rope_theta),
        rms_norm_eps=hf_config.get("rms_norm_eps", 1e-6),
        # Qwen3Config's own default is untied.
        tie_word_embeddings=hf_config.get("tie_word_embeddings", False),
        max_position_embeddings=hf_config.get("max_position_embeddings", 40960),
        initializer_range=hf_config.get("initializer_range", 0.02),
    )
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_hf_config(self) -> dict[str, Any]:
    """A `config.json` dict that `transformers.Qwen3Config` accepts."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_hidden_layers,
        "num_attention_heads": self.num_attention_heads,
        "num_key_value_heads": self.num_key_value_heads,
        "head_dim": self.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": self.max_position_embeddings,
        "rms_norm_eps": self.rms_norm_eps,
        # Both spellings: `rope_theta` for transformers 4.x, `rope_parameters`
        # for 5.x (which also still understands the former).
        "rope_theta": self.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
        "tie_word_embeddings": self.tie_word_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "initializer_range": self.initializer_range,
        "torch_dtype": jnp.dtype(self.param_dtype).name,
    }


# ----------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------


def _normal_init(config: Qwen3Config):
  # HF initialises every Linear and Embedding with N(0, initializer_range).
  return nnx.initializers.normal(stddev=config.initializer_range)


class Einsum(nnx.Module):
  """A bias-free projection `einsum(equation, x, kernel)`.

  Keeping heads as separate kernel axes (instead of a flat H*Dh) lets the
  weight layout say which axes are fan-in and fan-out, which is what the Muon
  dimension numbers in `optim.py` rely on.
  """

  def __init__(self, equation: str, kernel_shape: tuple[int, ...], *,
               config: Qwen3Config, rngs: nnx.Rngs):
    self.equation = equation
    self.dtype = config.dtype
    self.kernel = nnx.Param(
        _normal_init(config)(rngs.params(), kernel_shape, config.param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.einsum(self.equation, x.astype(self.dtype),
                      self.kernel[...].astype(self.dtype))


class Embed(nnx.Module):
  """Token embedding (V, D); `attend` reuses it as a tied output head."""

  def __init__(self, config: Qwen3Config, *, rngs: nnx.Rngs):
    self.dtype = config.dtype
    self.embedding = nnx.Param(_normal_init(config)(
        rngs.params(), (config.vocab_size, config.hidden_size),
        config.param_dtype))

  def __call__(self, ids_BxT: jax.Array) -> jax.Array:
    return jnp.take(self.embedding[...], ids_BxT, axis=0).astype(self.dtype)

  def attend(self, x_BxTxD: jax.Array) -> jax.Array:
    return jnp.einsum("BTD,VD->BTV", x_BxTxD.astype(self.dtype),
                      self.embedding[...].astype(self.dtype),
                      preferred_element_type=jnp.float32)


class RMSNorm(nnx.Module):
  """RMSNorm as in HF Qwen3: normalise in float32, cast back, then scale."""

  def __init__(self, dim: int, *, config: Qwen3Config):
    self.eps = config.rms_norm_eps
    self.dtype = config.dtype
    self.scale = nnx.Param(jnp.ones((dim,), config.param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    x_f32 = x.astype(jnp.float32)
    variance = jnp.mean(jnp.square(x_f32), axis=-1, keepdims=True)
    normed = (x_f32 * jax.lax.rsqrt(variance + self.eps)).astype(self.dtype)
    return normed * self.scale[...].astype(self.dtype)


def rope_sin_cos(positions_BxT: jax.Array, head_dim: int,
                 theta: float) -> tuple[jax.Array, jax.Array]:
  """Rotary angles (B, T, R) in float32, R = head_dim // 2."""
  exponent_R = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
  inv_freq_R = 1.0 / (theta**exponent_R)
  angles_BxTxR = positions_BxT.astype(jnp.float32)[..., None] * inv_freq_R
  return jnp.sin(angles_BxTxR), jnp.cos(angles_BxTxR)


def apply_rope(x_BxTxNxDh: jax.Array, sin_BxTxR: jax.Array,
               cos_BxTxR: jax.Array) -> jax.Array:
  """Rotary embedding, HF convention: `x * cos + rotate_half(x) * sin`.

  The frequencies are repeated over both halves of the head (not
  interleaved pairs).
  """
  x1, x2 = jnp.split(x_BxTxNxDh.astype(jnp.float32), 2, axis=-1)
  sin, cos = sin_BxTxR[:, :, None, :], cos_BxTxR[:, :, None, :]
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x_BxTxNxDh.dtype)


class Attention(nnx.Module):
  """Grouped-query attention with q/k RMSNorm per head and RoPE."""

  def __init__(self, config: Qwen3Config, *, rngs: nnx.Rngs):
    D, H, K, Dh = (config.hidden_size, config.num_attention_heads,
                   config.num_key_value_heads, config.head_dim)
    self.num_kv_heads = K
    self.dtype = config.dtype
    self.q_proj = Einsum("BTD,DHE->BTHE", (D, H, Dh), config=config, rngs=rngs)
    self.k_proj = Einsum("BTD,DKE->BTKE", (D, K, Dh), config=config, rngs=rngs)
    self.v_proj = Einsum("BTD,DKE->BTKE", (D, K, Dh), config=config, rngs=rngs)
    self.o_proj = Einsum("BTHE,HED->BTD", (H, Dh, D), config=config, rngs=rngs)
    self.q_norm = RMSNorm(Dh, config=config)
    self.k_norm = RMSNorm(Dh, config=config)

  def __call__(self, x_BxTxD, sin_BxTxR, cos_BxTxR, mask_BxTxS,
               kv_cache: LayerCache | None, cache_index: jax.Array):
    q_BxTxHxDh = apply_rope(self.q_norm(self.q_proj(x_BxTxD)), sin_BxTxR, cos_BxTxR)
    k_BxTxKxDh = apply_rope(self.k_norm(self.k_proj(x_BxTxD)), sin_BxTxR, cos_BxTxR)
    v_BxTxKxDh = self.v_proj(x_BxTxD)

    if kv_cache is None:
      k_BxSxKxDh, v_BxSxKxDh = k_BxTxKxDh, v_BxTxKxDh
    else:
      # Fixed-size cache: write this chunk at `cache_index` and attend to the
      # whole buffer; the mask hides slots that are not written yet.
      k_cache, v_cache = kv_cache
      start = (0, cache_index, 0, 0)
      k_BxSxKxDh = jax.lax.dynamic_update_slice(
          k_cache, k_BxTxKxDh.astype(k_cache.dtype), start)
      v_BxSxKxDh = jax.lax.dynamic_update_slice(
          v_cache, v_BxTxKxDh.astype(v_cache.dtype), start)
      kv_cache = (k_BxSxKxDh, v_BxSxKxDh)

    # Query head h reads KV head h // G (HF's repeat_kv), so split H as (K, G).
    B, T, H, Dh = q_BxTxHxDh.shape
    q_BxTxKxGxDh = q_BxTxHxDh.reshape(B, T, self.num_kv_heads, -1, Dh)
    logits_BxKxGxTxS = jnp.einsum(
        "BTKGE,BSKE->BKGTS", q_BxTxKxGxDh, k_BxSxKxDh.astype(self.dtype),
        preferred_element_type=jnp.float32) * Dh**-0.5
    # A finite fill keeps fully masked rows (left-padding queries) NaN-free.
    logits_BxKxGxTxS = jnp.where(mask_BxTxS[:, None, None], logits_BxKxGxTxS,
                                 jnp.finfo(jnp.float32).min)
    probs_BxKxGxTxS = jax.nn.softmax(logits_BxKxGxTxS, axis=-1).astype(self.dtype)
    out_BxTxKxGxDh = jnp.einsum("BKGTS,BSKE->BTKGE", probs_BxKxGxTxS,
                                v_BxSxKxDh.astype(self.dtype))
    return self.o_proj(out_BxTxKxGxDh.reshape(B, T, H, Dh)), kv_cache


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  def __init__(self, config: Qwen3Config, *, rngs: nnx.Rngs):
    D, F = config.hidden_size, config.intermediate_size
    self.gate_proj = Einsum("BTD,DF->BTF", (D, F), config=config, rngs=rngs)
    self.up_proj = Einsum("BTD,DF->BTF", (D, F), config=config, rngs=rngs)
    self.down_proj = Einsum("BTF,FD->BTD", (F, D), config=config, rngs=rngs)

  def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
    h_BxTxF = jax.nn.silu(self.gate_proj(x_BxTxD)) * self.up_proj(x_BxTxD)
    return self.down_proj(h_BxTxF)


class DecoderLayer(nnx.Module):
  """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, config: Qwen3Config, *, rngs: nnx.Rngs):
    self.input_layernorm = RMSNorm(config.hidden_size, config=config)
    self.self_attn = Attention(config, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(config.hidden_size, config=config)
    self.mlp = MLP(config, rngs=rngs)

  def __call__(self, x_BxTxD, sin_BxTxR, cos_BxTxR, mask_BxTxS,
               kv_cache: LayerCache | None, cache_index: jax.Array):
    attn_BxTxD, kv_cache = self.self_attn(
        self.input_layernorm(x_BxTxD), sin_BxTxR, cos_BxTxR, mask_BxTxS,
        kv_cache, cache_index)
    x_BxTxD = x_BxTxD + attn_BxTxD
    x_BxTxD = x_BxTxD + self.mlp(self.post_attention_layernorm(x_BxTxD))
    return x_BxTxD, kv_cache


def _run_layer(layer: DecoderLayer, x_BxTxD, sin_BxTxR, cos_BxTxR, mask_BxTxS,
               kv_cache, cache_index):
  # A free function (not a bound method) so nnx.remat / nnx.scan see the layer
  # as an explicit argument.
  return layer(x_BxTxD, sin_BxTxR, cos_BxTxR, mask_BxTxS, kv_cache, cache_index)


# ----------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------


class Qwen3Model(nnx.Module):
  """Embedding, decoder layers and final norm (HF's `model.` prefix)."""

  def __init__(self, config: Qwen3Config, *, rngs: nnx.Rngs):
    self.config = config
    self.embed_tokens = Embed(config, rngs=rngs)
    if config.scan_layers:
      # nnx.vmap over split RNGs builds one DecoderLayer whose weights all
      # carry a leading L axis, ready for nnx.scan.
      @nnx.split_rngs(splits=config.num_hidden_layers)
      @nnx.vmap(in_axes=(0,), out_axes=0)
      def make_stacked_layers(rngs: nnx.Rngs) -> DecoderLayer:
        return DecoderLayer(config, rngs=rngs)

      self.layers = make_stacked_layers(rngs)
    else:
      # One stacked layer (scan) or a list of layers: either way `layers`.
      self.layers = nnx.List([  # type: ignore[assignment]
          DecoderLayer(config, rngs=rngs)
          for _ in range(config.num_hidden_layers)])
    self.norm = RMSNorm(config.hidden_size, config=config)

  def __call__(self, x_BxTxD, positions_BxT, key_valid_BxS, cache, cache_index):
    """Runs the decoder stack on embeddings.

    Query t sits in cache slot `cache_index + t`; it may attend to key slot s
    when s <= that slot and `key_valid_BxS[:, s]` (padding is False). Without
    a cache S == T and `cache_index` is 0.
    """
    cfg = self.config
    T, S = x_BxTxD.shape[1], key_valid_BxS.shape[1]
    sin_BxTxR, cos_BxTxR = rope_sin_cos(positions_BxT, cfg.head_dim, cfg.rope_theta)
    query_slot_T = cache_index + jnp.arange(T)
    causal_TxS = jnp.arange(S)[None, :] <= query_slot_T[:, None]
    mask_BxTxS = causal_TxS[None] & key_valid_BxS[:, None, :]

    run_layer = nnx.remat(_run_layer) if cfg.remat else _run_layer
    if cfg.scan_layers:
      # Layer weights and the stacked cache are scanned over (axis 0); the
      # residual stream is the carry; RoPE, mask and index are broadcast.
      scan_fn = nnx.scan(
          run_layer,
          in_axes=(0, nnx.Carry, None, None, None, 0, None),
          out_axes=(nnx.Carry, 0))
      x_BxTxD, cache = scan_fn(self.layers, x_BxTxD, sin_BxTxR, cos_BxTxR,
                                   mask_BxTxS, cache, cache_index)
    else:
      new_cache = []
      for i, layer in enumerate(self.layers):
        x_BxTxD, layer_cache = run_layer(
            layer, x_BxTxD, sin_BxTxR, cos_BxTxR, mask_BxTxS,
            None if cache is None else cache[i], cache_index)
        new_cache.append(layer_cache)
      cache = None if cache is None else new_cache
    return self.norm(x_BxTxD), cache


class Qwen3ForCausalLM(nnx.Module):
  """Qwen3 language model; `model(input_ids)` returns float32 logits (B,T,V).

  With `scan_layers` or `remat` the forward pass uses NNX transforms, which
  refuse Variables captured from an outer trace. Under plain `jax.jit` /
  `jax.grad` / `jax.lax.scan`, pass the model in through NNX transforms
  (`nnx.jit`, `nnx.grad`) or close over `nnx.as_pure(nnx.split(model)[1])`
  and `nnx.merge` inside the traced function, as `generate` does.
  """

  def __init__(self, config: Qwen3Config, *, rngs: nnx.Rngs):
    self.config = config
    self.model = Qwen3Model(config, rngs=rngs)
    if not config.tie_word_embeddings:
      self.lm_head = Einsum("BTD,DV->BTV", (config.hidden_size, config.vocab_size),
                            config=config, rngs=rngs)

  def __call__(self, input_ids: jax.Array | None = None,
               attention_mask: jax.Array | None = None, *,
               inputs_embeds: jax.Array | None = None) -> jax.Array:
    """Logits for `input_ids` (B, T) or for `inputs_embeds` (B, T, D).

    `attention_mask` (B, T) holds 1 for tokens and 0 for padding. Padding keys
    are never attended to, and RoPE positions count only real tokens
    (`cumsum(mask) - 1`), so a left-padded row gets the same logits as the
    unpadded sequence; for right padding this equals HF's default positions.
    Logits at padding positions are meaningless.
    """
    if inputs_embeds is None:
      if input_ids is None:
        raise ValueError('give input_ids or inputs_embeds')
      x_BxTxD = self.model.embed_tokens(input_ids)
    else:
      x_BxTxD = inputs_embeds.astype(self.config.dtype)
    B, T = x_BxTxD.shape[:2]
    if attention_mask is None:
      valid_BxT = jnp.ones((B, T), bool)
      positions_BxT = jnp.broadcast_to(jnp.arange(T), (B, T))
    else:
      valid_BxT = attention_mask.astype(bool)
      positions_BxT = _positions_from_mask(valid_BxT)
    h_BxTxD, _ = self.model(x_BxTxD, positions_BxT, valid_BxT, None,
                            jnp.zeros((), jnp.int32))
    return self.logits(h_BxTxD)

  def logits(self, h_BxTxD: jax.Array) -> jax.Array:
    """The output head, always producing float32 logits."""
    if self.config.tie_word_embeddings:
      return self.model.embed_tokens.attend(h_BxTxD)
    cfg = self.config
    return jnp.einsum("BTD,DV->BTV", h_BxTxD.astype(cfg.dtype),
                      self.lm_head.kernel[...].astype(cfg.dtype),
                      preferred_element_type=jnp.float32)

  def init_cache(self, batch_size: int, max_length: int, dtype=None):
    """A zeroed KV cache of `max_length` slots, in the compute dtype.

    Scanned layers: one (k, v) pair of shape (L, B, S, K, Dh) each.
    Looped layers: a list of L (k, v) pairs of shape (B, S, K, Dh).
    """
    cfg = self.config
    dtype = dtype or cfg.dtype
    shape: tuple[int, ...] = (batch_size, max_length,
                              cfg.num_key_value_heads, cfg.head_dim)
    if cfg.scan_layers:
      shape = (cfg.num_hidden_layers, *shape)
      return (jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
    return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
            for _ in range(cfg.num_hidden_layers)]

  def forward_with_cache(self, input_ids_BxT, positions_BxT, key_valid_BxS,
                         cache, cache_index):
    """(logits, new cache) for a chunk written at cache slots [index, +T).

    See `Qwen3Model.__call__` for the masking rule.
    """
    x_BxTxD = self.model.embed_tokens(input_ids_BxT)
    h_BxTxD, cache = self.model(x_BxTxD, positions_BxT, key_valid_BxS, cache,
                                cache_index)
    return self.logits(h_BxTxD), cache


def _positions_from_mask(valid_BxT: jax.Array) -> jax.Array:
  return jnp.maximum(jnp.cumsum(valid_BxT, axis=-1) - 1, 0)


# ----------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------


def generate(model: Qwen3ForCausalLM, input_ids: jax.Array, max_new_tokens: int,
             *, temperature: float = 0.0, rng: jax.Array | None = None,
             attention_mask: jax.Array | None = None) -> jax.Array:
  """Samples `max_new_tokens` tokens after `input_ids` (B, T) with a KV cache.

  Greedy when `temperature == 0`, otherwise samples from softmax(logits / T)
  with `rng`. The prompt may be padded (`attention_mask` 1/0, left or right):
  padding is never attended to and the first new token is predicted from each
  row's last real token. There is no early stop at EOS: every row gets exactly
  `max_new_tokens` tokens, so shapes (and the cache, T + max_new_tokens
  slots) are fixed and the whole loop is one jitted `lax.scan`.

  Returns (B, T + max_new_tokens): the prompt followed by the new tokens.
  """
  if max_new_tokens <= 0:
    return input_ids
  greedy = temperature == 0.0
  if not greedy and rng is None:
    raise ValueError("Sampling with temperature > 0 needs `rng`.")
  if rng is None:
    rng = jax.random.key(0)  # unused by greedy decoding
  if attention_mask is None:
    attention_mask = jnp.ones(input_ids.shape, bool)
  # Pure arrays (no Variable objects) so that each nnx.merge below builds
  # fresh Variables at its own trace level.
  graphdef, state = nnx.split(model)
  state = nnx.as_pure(state)
  new_tokens = _generate_jit(graphdef, state, input_ids,
                             attention_mask.astype(bool), rng,
                             jnp.float32(temperature), max_new_tokens, greedy)
  return jnp.concatenate([input_ids, new_tokens.astype(input_ids.dtype)], axis=1)


@functools.partial(jax.jit, static_argnums=(0, 6, 7))
def _generate_jit(graphdef, state, input_ids_BxT, valid_BxT, rng, temperature,
                  max_new_tokens: int, greedy: bool):
  model = nnx.merge(graphdef, state)
  B, T = input_ids_BxT.shape
  S = T + max_new_tokens

  def pick(logits_BxV, key):
    if greedy:
      return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, logits_BxV / temperature).astype(jnp.int32)

  # Generated tokens always count as real keys; the causal mask hides the
  # slots not written yet.
  key_valid_BxS = jnp.concatenate(
      [valid_BxT, jnp.ones((B, max_new_tokens), bool)], axis=1)
  cache = model.init_cache(B, S)

  # Prefill: the whole prompt in one pass, then predict from each row's last
  # real token (not necessarily slot T-1 under right padding).
  logits_BxTxV, cache = model.forward_with_cache(
      input_ids_BxT, _positions_from_mask(valid_BxT), key_valid_BxS, cache,
      jnp.zeros((), jnp.int32))
  last_B = jnp.max(jnp.where(valid_BxT, jnp.arange(T), 0), axis=1)
  keys = jax.random.split(rng, max_new_tokens)
  token_B = pick(logits_BxTxV[jnp.arange(B), last_B], keys[0])
  num_real_B = valid_BxT.sum(axis=1).astype(jnp.int32)

  def step(carry, xs):
    token_B, cache = carry
    # Re-merge inside the scan body: NNX transforms (remat, scan over layers)
    # refuse to touch Variables created at the outer trace level.
    model = nnx.merge(graphdef, state)
    i, key = xs  # token_B is the i-th new token; it goes to slot T + i.
    positions_Bx1 = (num_real_B + i)[:, None]
    logits_Bx1xV, cache = model.forward_with_cache(
        token_B[:, None], positions_Bx1, key_valid_BxS, cache, T + i)
    next_B = pick(logits_Bx1xV[:, 0], key)
    return (next_B, cache), token_B

  (last_token_B, _), tokens_NxB = jax.lax.scan(
      step, (token_B, cache),
      (jnp.arange(max_new_tokens - 1, dtype=jnp.int32), keys[1:]))
  return jnp.concatenate([tokens_NxB.T, last_token_B[:, None]], axis=1)
