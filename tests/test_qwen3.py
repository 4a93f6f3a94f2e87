"""Tests for the Flax NNX Qwen3 port against transformers (CPU, tiny models)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import safetensors.numpy
import torch
import transformers
from flax import nnx

from mimuon_optax import _matrix
from mimuon_optax.models.qwen3 import (Qwen3Config, Qwen3ForCausalLM, generate,
                                       load_hf_checkpoint, next_token_loss,
                                       qwen3_weight_dimension_numbers,
                                       save_hf_checkpoint)

RTOL = 1e-4

# head_dim (16) != hidden_size / heads (8) on purpose, as in real Qwen3 models.
TINY_HF = dict(vocab_size=128, hidden_size=32, intermediate_size=64,
               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               head_dim=16, max_position_embeddings=256, rope_theta=10_000.0,
               initializer_range=0.1)


# Jitted forward: eager NNX dispatch compiles op by op and is slower on CPU.
logits_fn = nnx.jit(lambda model, ids, mask=None: model(ids, mask))


def max_rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.max(np.abs(a - b)) / np.max(np.abs(b))


def make_hf_model(tie: bool, seed: int = 0) -> transformers.Qwen3ForCausalLM:
  torch.manual_seed(seed)
  cfg = transformers.Qwen3Config(**TINY_HF, tie_word_embeddings=tie,
                                 attn_implementation="eager")
  model = transformers.Qwen3ForCausalLM(cfg).eval()
  # HF initialises norm scales to 1; randomise them so a misplaced norm
  # weight would show up in the logits.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.uniform_(0.5, 1.5)
  return model


def hf_logits(model, ids, mask=None):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(np.asarray(ids)),
                attention_mask=None if mask is None else torch.tensor(np.asarray(mask)))
  return out.logits.numpy()


def ids_and_right_padded_mask(vocab=TINY_HF["vocab_size"], B=2, T=12, pad=4):
  ids = np.random.default_rng(0).integers(0, vocab, (B, T))
  mask = np.ones((B, T), np.int64)
  mask[1, T - pad:] = 0
  return ids, mask


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def hf_checkpoint(request, tmp_path_factory):
  model = make_hf_model(tie=request.param)
  path = tmp_path_factory.mktemp("hf_tied" if request.param else "hf_untied")
  model.save_pretrained(path)
  return model, path


# ----------------------------------------------------------------------------
# HF parity
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("scan_layers", [False, True], ids=["loop", "scan"])
def test_logits_match_transformers(hf_checkpoint, scan_layers):
  hf_model, path = hf_checkpoint
  model = load_hf_checkpoint(path, scan_layers=scan_layers)
  assert model.config.tie_word_embeddings == hf_model.config.tie_word_embeddings
  ids, mask = ids_and_right_padded_mask()
  ours = np.asarray(logits_fn(model, jnp.asarray(ids), jnp.asarray(mask)))
  theirs = hf_logits(hf_model, ids, mask)
  assert ours.dtype == np.float32
  real = mask.astype(bool)
  assert max_rel_err(ours[real], theirs[real]) <= RTOL


def test_sharded_checkpoint_loads(tmp_path):
  hf_model = make_hf_model(tie=False, seed=1)
  hf_model.save_pretrained(tmp_path, max_shard_size="40KB")
  assert (tmp_path / "model.safetensors.index.json").exists()
  assert len(list(tmp_path.glob("*.safetensors"))) > 1
  model = load_hf_checkpoint(tmp_path)
  ids, _ = ids_and_right_padded_mask()
  assert max_rel_err(logits_fn(model, jnp.asarray(ids)), hf_logits(hf_model, ids)) <= RTOL


@pytest.mark.parametrize("tie,scan_layers", [(True, False), (False, True)])
def test_save_round_trip_loads_in_transformers(tmp_path, tie, scan_layers):
  cfg = Qwen3Config(**TINY_HF, tie_word_embeddings=tie, scan_layers=scan_layers)
  model = Qwen3ForCausalLM(cfg, rngs=nnx.Rngs(3))
  save_hf_checkpoint(model, tmp_path)

  hf_model = transformers.Qwen3ForCausalLM.from_pretrained(
      tmp_path, attn_implementation="eager").eval()
  assert hf_model.config.tie_word_embeddings == tie
  ids, mask = ids_and_right_padded_mask()
  real = mask.astype(bool)
  ours = np.asarray(logits_fn(model, jnp.asarray(ids), jnp.asarray(mask)))
  assert max_rel_err(ours[real], hf_logits(hf_model, ids, mask)[real]) <= RTOL

  # And back into JAX, bit for bit.
  reloaded = load_hf_checkpoint(tmp_path, scan_layers=scan_layers)
  for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)),
                  jax.tree.leaves(nnx.state(reloaded, nnx.Param))):
    np.testing.assert_array_equal(a, b)


def test_hf_config_round_trip():
  cfg = Qwen3Config.qwen3_0_6b()
  hf_cfg = transformers.Qwen3Config(**cfg.to_hf_config())
  assert Qwen3Config.from_hf_config(hf_cfg.to_dict()) == cfg
  # A transformers-4.x style config.json (top-level rope_theta).
  legacy = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
            "vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072,
            "num_hidden_layers": 28, "num_attention_heads": 16,
            "num_key_value_heads": 8, "head_dim": 128, "rope_theta": 1000000,
            "rope_scaling": None, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True, "max_position_embeddings": 40960,
            "torch_dtype": "bfloat16"}
  assert Qwen3Config.from_hf_config(legacy) == cfg


def test_qwen3_0_6b_param_count_matches_transformers():
  cfg = Qwen3Config.qwen3_0_6b()
  abstract = nnx.eval_shape(lambda: Qwen3ForCausalLM(cfg, rngs=nnx.Rngs(0)))
  ours = sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))

  with torch.device("meta"):
    hf_model = transformers.Qwen3ForCausalLM(
        transformers.Qwen3Config(**cfg.to_hf_config()))
  theirs = sum(p.numel() for p in hf_model.parameters())  # dedups tied weights
  assert ours == theirs
  assert 590e6 < ours < 600e6  # "0.6B" with tied embeddings


# ----------------------------------------------------------------------------
# Bad checkpoints
# ----------------------------------------------------------------------------


def test_bad_checkpoint_reports_every_problem(tmp_path):
  hf_model = make_hf_model(tie=True)
  hf_model.config.to_json_file(tmp_path / "config.json")
  tensors = {k: v.numpy() for k, v in hf_model.state_dict().items()
             if k != "lm_head.weight"}  # tied: transformers drops it too
  del tensors["model.layers.1.mlp.up_proj.weight"]
  tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((3, 5), np.float32)
  tensors["model.layers.0.self_attn.q_proj.bias"] = np.zeros((64,), np.float32)
  safetensors.numpy.save_file(tensors, tmp_path / "model.safetensors")

  with pytest.raises(ValueError) as err:
    load_hf_checkpoint(tmp_path)
  message = str(err.value)
  assert "missing tensor 'model.layers.1.mlp.up_proj.weight'" in message
  assert "wrong shape for 'model.layers.0.self_attn.k_proj.weight'" in message
  assert "unexpected tensor 'model.layers.0.self_attn.q_proj.bias'" in message


@pytest.mark.parametrize("change", [
    {"architectures": ["LlamaForCausalLM"], "model_type": "llama"},
    {"architectures": ["Qwen3MoeForCausalLM"]},
])
def test_unknown_architecture_raises(tmp_path, change):
  hf_cfg = Qwen3Config.tiny().to_hf_config() | change
  (tmp_path / "config.json").write_text(json.dumps(hf_cfg))
  with pytest.raises(ValueError, match="Unsupported"):
    load_hf_checkpoint(tmp_path)


# ----------------------------------------------------------------------------
# Model behaviour
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("scan_layers", [False, True], ids=["loop", "scan"])
def test_causality_through_gradients(scan_layers):
  """d logits[t] / d embedding[t'] is exactly zero for every t' > t."""
  cfg = Qwen3Config(**TINY_HF, scan_layers=scan_layers, remat=scan_layers)
  model = Qwen3ForCausalLM(cfg, rngs=nnx.Rngs(0))
  T = 6
  embeds_TxD = jax.random.normal(jax.random.key(1), (T, cfg.hidden_size))

  # Plain jax transforms must not close over NNX Variables (nnx.scan/remat
  # inside the model refuse them), so close over pure arrays and merge inside.
  graphdef, state = nnx.split(model)
  state = nnx.as_pure(state)

  def logit_sums_T(embeds_TxD):
    model = nnx.merge(graphdef, state)
    return model(inputs_embeds=embeds_TxD[None])[0].sum(-1)

  jac_TxTxD = jax.jit(jax.jacrev(logit_sums_T))(embeds_TxD)
  influence_TxT = np.asarray(jnp.abs(jac_TxTxD).sum(-1))  # [t, t']
  future = np.triu(np.ones((T, T), bool), k=1)
  assert np.all(influence_TxT[future] == 0)
  assert np.all(influence_TxT[~future] > 0)


@pytest.mark.parametrize("scan_layers", [False, True], ids=["loop", "scan"])
def test_greedy_generate_matches_repeated_forward(scan_layers):
  # A large init keeps greedy choices away from near-ties.
  cfg = Qwen3Config(**(TINY_HF | dict(initializer_range=0.5)),
                    tie_word_embeddings=False, scan_layers=scan_layers)
  model = Qwen3ForCausalLM(cfg, rngs=nnx.Rngs(0))
  n_new = 5
  prompts = [[5, 17, 99, 3], [40, 2, 2, 71, 8, 120]]

  expected = []
  for prompt in prompts:  # no cache, no padding, one row at a time
    ids = jnp.asarray([prompt])
    for _ in range(n_new):
      next_id = jnp.argmax(logits_fn(model, ids)[:, -1], axis=-1)
      ids = jnp.concatenate([ids, next_id[:, None]], axis=1)
    expected.append(np.asarray(ids[0, len(prompt):]))

  # Both prompts in one padded batch, through the KV cache; the shapes are
  # the same for both paddings, so this compiles once.
  T = max(map(len, prompts))
  for padding in ("left", "right"):
    ids = np.zeros((2, T), np.int32)
    mask = np.zeros((2, T), np.int32)
    for row, prompt in enumerate(prompts):
      where = slice(T - len(prompt), T) if padding == "left" else slice(0, len(prompt))
      ids[row, where] = prompt
      mask[row, where] = 1
    out = generate(model, jnp.asarray(ids), n_new, attention_mask=jnp.asarray(mask))
    assert out.shape == (2, T + n_new)
    np.testing.assert_array_equal(np.asarray(out[:, :T]), ids)
    np.testing.assert_array_equal(np.asarray(out[:, T:]), np.stack(expected),
                                  err_msg=padding)
  assert len(set(np.stack(expected).ravel())) > 2  # not a degenerate repeat


def test_sampling_generate_runs():
  model = Qwen3ForCausalLM(Qwen3Config.tiny(num_hidden_layers=1), rngs=nnx.Rngs(0))
  out = generate(model, jnp.ones((2, 3), jnp.int32), 4, temperature=1.0,
                 rng=jax.random.key(0))
  assert out.shape == (2, 7)
  assert np.all((np.asarray(out) >= 0) & (np.asarray(out) < 256))


# ----------------------------------------------------------------------------
# Muon dimension numbers
# ----------------------------------------------------------------------------


def as_matrices(shape, dims):
  """(batch, fan_in, fan_out): the stack of matrices the optimizer sees."""
  view = _matrix.matrix_view((), shape, dims)
  return view.to_matrices(jnp.zeros(shape, jnp.int8)).shape


@pytest.mark.parametrize("scan_layers", [False, True], ids=["loop", "scan"])
def test_muon_dimension_numbers(scan_layers):
  cfg = Qwen3Config.tiny(tie_word_embeddings=False, scan_layers=scan_layers)
  D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
  H, K, Dh, L = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
                 cfg.num_hidden_layers)
  model = nnx.eval_shape(lambda: Qwen3ForCausalLM(cfg, rngs=nnx.Rngs(0)))
  params = nnx.state(model, nnx.Param)
  dims = qwen3_weight_dimension_numbers(params)
  assert isinstance(dims, nnx.State)

  expected = {"q_proj": (D, H * Dh), "k_proj": (D, K * Dh), "v_proj": (D, K * Dh),
              "o_proj": (H * Dh, D), "gate_proj": (D, F), "up_proj": (D, F),
              "down_proj": (F, D)}
  batch = L if scan_layers else 1
  flat_params = dict(nnx.to_flat_state(params))
  flat_dims = dict(nnx.to_flat_state(dims))
  assert flat_params.keys() == flat_dims.keys()
  seen = set()
  for path, var in flat_params.items():
    d = flat_dims[path]
    kind = next((k for k in expected if k in path), None)
    if kind is None:  # embeddings, lm_head, norms
      assert d is None, path
      continue
    seen.add(kind)
    assert as_matrices(var.shape, d) == (batch, *expected[kind]), path
  assert seen == expected.keys()

  # The documented examples, literally.
  get = lambda *p: flat_dims[("model", "layers", *((0,) if not scan_layers else ()), *p)]
  q, o = get("self_attn", "q_proj", "kernel"), get("self_attn", "o_proj", "kernel")
  if scan_layers:
    assert q == optax.contrib.MuonDimensionNumbers(1, (2, 3))
    assert o == optax.contrib.MuonDimensionNumbers((1, 2), 3)
  else:
    assert q == optax.contrib.MuonDimensionNumbers(0, (1, 2))
    assert o == optax.contrib.MuonDimensionNumbers((0, 1), 2)


def test_muon_step_with_dimension_numbers():
  """optax.contrib.muon accepts the tree (and the function) for an NNX model."""
  cfg = Qwen3Config.tiny(num_hidden_layers=2, scan_layers=True)
  model = Qwen3ForCausalLM(cfg, rngs=nnx.Rngs(0))
  dims = qwen3_weight_dimension_numbers(nnx.state(model, nnx.Param))
  for spec in (dims, qwen3_weight_dimension_numbers):
    tx = optax.contrib.muon(1e-2, muon_weight_dimension_numbers=spec)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    ids = jnp.arange(32).reshape(2, 16) % cfg.vocab_size

    @nnx.jit
    def step(model, opt, ids):
      loss, grads = nnx.value_and_grad(next_token_loss)(model, ids)
      opt.update(model, grads)
      return loss

    losses = [float(step(model, opt, ids)) for _ in range(3)]
    assert losses[-1] < losses[0]
