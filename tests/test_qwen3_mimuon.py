"""mimuon() on the tiny Qwen3: routing of every leaf and one training step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mimuon_optax as mo
from mimuon_optax.models.qwen3 import Qwen3Config
from mimuon_optax.models.qwen3 import Qwen3ForCausalLM
from mimuon_optax.models.qwen3 import qwen3_weight_dimension_numbers

MATRIX_KINDS = ('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj',
                'up_proj', 'down_proj')


def _expected_label(path):
  return 'muon' if any(k in path for k in MATRIX_KINDS) else 'adam'


@pytest.mark.parametrize('scan_layers', [False, True])
@pytest.mark.parametrize('tie', [True, False])
def test_one_mimuon_step_routes_and_changes_every_parameter(scan_layers, tie):
  config = Qwen3Config.tiny(num_hidden_layers=2, scan_layers=scan_layers,
                            tie_word_embeddings=tie)
  model = Qwen3ForCausalLM(config, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.as_pure(params)
  dims = qwen3_weight_dimension_numbers(params)

  labels = mo.default_param_labels(params, dims)
  flat_labels = {jax.tree_util.keystr(p): l for p, l in
                 jax.tree_util.tree_flatten_with_path(labels)[0]}
  assert flat_labels and all(
      label == _expected_label(path) for path, label in flat_labels.items())
  assert sum(l == 'muon' for l in flat_labels.values()) == (
      7 if scan_layers else 14)
  assert any('embed_tokens' in p for p, l in flat_labels.items()
             if l == 'adam')

  ids = jax.random.randint(jax.random.key(1), (2, 16), 0, config.vocab_size)

  def loss_fn(params):
    logits = nnx.merge(graphdef, params)(ids[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, ids[:, 1:]).mean()

  tx = mo.mimuon(1e-2, weight_dimension_numbers=dims, ns_dtype='float32')
  state = tx.init(params)
  loss0, grads = jax.value_and_grad(loss_fn)(params)
  updates, state = jax.jit(tx.update)(grads, state, params)
  new_params = optax.apply_updates(params, updates)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params,
                         new_params)
  assert all(jax.tree.leaves(changed))

  diag = mo.mix_diagnostics(state)
  orth = {jax.tree_util.keystr(p): np.asarray(v) for p, v in
          jax.tree_util.tree_flatten_with_path(diag.orthogonalized)[0]}
  # One decision per matrix: per layer when stacked, scalar when looped.
  assert len(orth) == (7 if scan_layers else 14)
  for value in orth.values():
    assert value.shape == ((2,) if scan_layers else ())
  # An orthogonalized matrix got U V^T: its nonzero singular values are ~1
  # (the gradient of 30 tokens has rank <= 30, the rest stays ~0).
  by_path = lambda tree: {jax.tree_util.keystr(p): np.asarray(v) for p, v in
                          jax.tree_util.tree_flatten_with_path(tree)[0]}
  q_path = next(p for p in orth if 'q_proj' in p)
  shape = (-1, config.hidden_size, config.num_attention_heads *
           config.head_dim)
  q_update = by_path(updates)[q_path].reshape(shape) / -1e-2
  q_grad = by_path(grads)[q_path].reshape(shape)
  for layer in range(q_update.shape[0]):
    if np.ravel(orth[q_path])[layer]:
      s_grad = np.linalg.svd(q_grad[layer], compute_uv=False)
      s_update = np.linalg.svd(q_update[layer], compute_uv=False)
      rank = int(np.sum(s_grad > 1e-2 * s_grad[0]))
      assert 0 < rank <= 30
      assert np.all(np.abs(s_update[:rank] - 1) < 0.2), s_update[:rank]
  loss1 = loss_fn(new_params)
  assert loss1 < loss0
