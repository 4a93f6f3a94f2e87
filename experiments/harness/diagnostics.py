"""MiMuon's per-matrix diagnostics as flat `{matrix name: value}` dicts.

  record, counts = mix_summary(opt_state, counts, steps_since_last_call)

A matrix is named by its parameter path without the wrapper words
(`layers.0.q_proj`, `conv1`); a layer stack `name` expands to `name[i]`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

import mimuon_optax
from mimuon_optax._paths import path_names

_DROP_WORDS = ("model", "self_attn", "mlp", "kernel")


def short_name(path: Any) -> str:
  """`['model']['layers'][0]['self_attn']['q_proj']['kernel']` -> `layers.0.q_proj`."""
  words = path_names(path)
  kept = [w for w in words if w not in _DROP_WORDS]
  return ".".join(kept) or ".".join(words)


def flat_per_matrix(tree: Any) -> dict[str, np.ndarray]:
  """Per-matrix diagnostic tree -> {short name: numpy array}; None and
  MaskedNode positions are skipped."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    out[short_name(path)] = np.asarray(leaf)
  return out


def per_matrix_values(tree: Any) -> dict[str, float]:
  """A per-matrix tree (diagnostics) -> {name or name[i]: value}."""
  out = {}
  for name, value in flat_per_matrix(tree).items():
    for i, suffix in enumerate(_suffixes(value.shape)):
      out[name + suffix] = value.reshape(-1)[i].item()
  return out


def mix_summary(opt_state: Any, previous_counts: dict[str, np.ndarray] | None,
                steps_since: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """MiMuon diagnostics for a log record, and the counts to pass next time.

  `orth_frac[name]` is the fraction of the last `steps_since` steps in which
  the matrix was orthogonalized (from `orth_count` differences); `rel_gap`,
  `min_gap` and `rho` are the last measured gap statistics. Layer stacks are expanded to
  `name[i]`.
  """
  diag = mimuon_optax.mix_diagnostics(opt_state)
  counts = flat_per_matrix(diag.orth_count)
  record = {"orth_frac": {}, "rel_gap": {}, "min_gap": {}, "rho": {}}
  rel, absolute = flat_per_matrix(diag.rel_gap), flat_per_matrix(diag.min_gap)
  rho = flat_per_matrix(diag.rho)
  for name, count in counts.items():
    before = (previous_counts or {}).get(name, np.zeros_like(count))
    frac = (count - before) / max(steps_since, 1)
    for i, suffix in enumerate(_suffixes(count.shape)):
      record["orth_frac"][name + suffix] = float(frac.reshape(-1)[i])
      record["rel_gap"][name + suffix] = float(rel[name].reshape(-1)[i])
      record["min_gap"][name + suffix] = float(absolute[name].reshape(-1)[i])
      record["rho"][name + suffix] = float(rho[name].reshape(-1)[i])
  values = list(record["orth_frac"].values())
  record["orth_frac_mean"] = float(np.mean(values)) if values else 1.0
  return record, counts


def _suffixes(shape: tuple[int, ...]) -> list[str]:
  if not shape:
    return [""]
  return [f"[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]
