"""The causal language-modelling loss: next-token cross-entropy.

  loss = next_token_loss(model, tokens_BxTp1)   # model(ids) -> logits
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax


def next_token_loss(model: Callable[[jax.Array], jax.Array],
                    tokens_BxTp1: jax.Array) -> jax.Array:
  """Mean cross-entropy of ``tokens[:, 1:]`` given ``tokens[:, :-1]``.

  Args:
    model: maps ``(B, T)`` token ids to ``(B, T, V)`` logits (e.g.
      ``Qwen3ForCausalLM``).
    tokens_BxTp1: ``(B, T + 1)`` integer token ids.

  Returns:
    A scalar; the logits are cast to float32 before the softmax.

  Example:
    >>> import jax.numpy as jnp
    >>> uniform = lambda ids: jnp.zeros((*ids.shape, 4))   # 4-token vocab
    >>> round(float(next_token_loss(uniform, jnp.zeros((2, 5), int))), 4)
    1.3863
  """
  logits_BxTxV = model(tokens_BxTp1[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(
      logits_BxTxV.astype(jnp.float32), tokens_BxTp1[:, 1:]).mean()
