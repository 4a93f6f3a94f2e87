"""Saving and restoring (params, optimizer state) with Orbax, sharded arrays.

  save_state("/ckpt", step, params, opt_state)      # writes /ckpt/<step>/
  target = abstract_like(params, opt_state)         # shapes and shardings
  step, params, opt_state = restore_state("/ckpt", target)  # latest step

Each process writes its own shards (with several processes, as on a TPU pod,
``path`` must be a directory every host sees: a shared file system or a
``gs://`` bucket, and every process must call these functions); restoring onto a target whose leaves
carry shardings (``abstract_like`` keeps the arrays' shardings, or pass
``jax.ShapeDtypeStruct(shape, dtype, sharding=...)`` leaves for a new mesh)
reads every shard straight onto its device. The optimizer state's structure
(NamedTuples, ``optax.MaskedNode``) comes from the target, so restore with
the state of the same ``tx`` (``jax.eval_shape(tx.init, params)`` and
``mimuon_optax.opt_state_shardings`` build one without allocating).
Orbax reads back exactly the bytes it wrote, so training resumes bit for bit.

Orbax is not a core dependency (it is in the ``experiments`` extra): this
module imports on a core install, and :func:`save_state` /
:func:`restore_state` raise ``ImportError`` naming
``pip install orbax-checkpoint`` when it is missing.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

INSTALL_HINT = ('mimuon_optax.checkpoint needs Orbax: pip install'
                ' orbax-checkpoint (or pip install "mimuon_optax[experiments]")')


def _orbax():
  """``orbax.checkpoint``, imported on first use."""
  try:
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(INSTALL_HINT) from e
  return ocp


def abstract_like(params: Any, opt_state: Any) -> dict[str, Any]:
  """The restore target for arrays like these: shapes, dtypes, shardings."""
  as_struct = lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=getattr(x, 'sharding', None))
  return {'params': jax.tree.map(as_struct, params),
          'opt_state': jax.tree.map(as_struct, opt_state)}


def _manager(path: str, keep: int | None = None):
  path = os.fspath(path)
  if '://' not in path:  # gs://... stays as it is
    path = os.path.abspath(path)
  ocp = _orbax()
  return ocp.CheckpointManager(
      path, options=ocp.CheckpointManagerOptions(max_to_keep=keep))


def latest_step(path: str) -> int | None:
  """The newest step saved under ``path``; None if there is none."""
  if '://' not in os.fspath(path) and not os.path.isdir(path):
    return None
  with _manager(path) as manager:
    return manager.latest_step()


def save_state(path: str, step: int, params: Any, opt_state: Any,
               keep: int | None = None) -> None:
  """Writes ``params`` and ``opt_state`` to ``path/<step>`` and waits.

  ``keep``: delete all but the newest ``keep`` steps (None: keep all).
  """
  ocp = _orbax()
  with _manager(path, keep) as manager:
    manager.save(int(step), args=ocp.args.StandardSave(
        {'params': params, 'opt_state': opt_state}))
    manager.wait_until_finished()


def restore_state(path: str, abstract_tree: dict[str, Any],
                  step: int | None = None) -> tuple[int, Any, Any]:
  """Reads ``(step, params, opt_state)`` saved by :func:`save_state`.

  Args:
    path: the directory given to :func:`save_state`.
    abstract_tree: ``{"params": ..., "opt_state": ...}`` of
      ``jax.ShapeDtypeStruct`` (with ``sharding``) or arrays, e.g. from
      :func:`abstract_like`; it fixes structure, dtypes and placement.
    step: which step; None: the latest.

  Raises:
    FileNotFoundError: if ``path`` holds no checkpoint.
    ImportError: if Orbax is not installed (also in :func:`save_state`).
  """
  ocp = _orbax()
  with _manager(path) as manager:
    if step is None:
      step = manager.latest_step()
      if step is None:
        raise FileNotFoundError(f'No checkpoint under {path!r}.')
    restored = manager.restore(
        int(step), args=ocp.args.StandardRestore(abstract_tree))
  return int(step), restored['params'], restored['opt_state']


def load_numpy(path: str, step: int | None = None) -> dict[str, Any]:
  """Every array of a :func:`save_state` checkpoint as numpy, on this host.

  Keys are ``"params" + keystr`` and ``"opt_state" + keystr`` of the saved
  trees (dicts and sequences as orbax stores them); for inspecting and
  comparing checkpoints, not for resuming (use :func:`restore_state`).
  """
  ocp = _orbax()
  step = latest_step(path) if step is None else step
  if step is None:
    raise FileNotFoundError(f'No checkpoint under {path!r}.')
  item = os.path.join(os.fspath(path), str(step), 'default')
  checkpointer = ocp.StandardCheckpointer()
  stored = checkpointer.metadata(item).item_metadata.tree
  tree = checkpointer.restore(item, jax.tree.map(
      lambda m: np.empty(m.shape, m.dtype), stored))
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
