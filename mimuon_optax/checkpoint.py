"""Saving and restoring (params, optimizer state) with Orbax, sharded arrays.

  save_state("/ckpt", step, params, opt_state)      # writes /ckpt/<step>/
  target = abstract_like(params, opt_state)         # shapes and shardings
  step, params, opt_state = restore_state("/ckpt", target)  # latest step

Each process writes its own shards (with several processes, as on a TPU pod,
``path`` must be a directory every host sees: a shared file system or a
``gs://`` bucket, and every process must call these functions); restoring
onto a target whose leaves carry shardings (``abstract_like`` keeps the
arrays' shardings, or pass ``jax.ShapeDtypeStruct(shape, dtype,
sharding=...)`` leaves for a new mesh) reads every shard straight onto its
device. The optimizer state's structure (NamedTuples, ``optax.MaskedNode``)
comes from the target, so restore with the state of the same ``tx``
(``jax.eval_shape(tx.init, params)`` and
``mimuon_optax.opt_state_shardings`` build one without allocating).
Orbax reads back exactly the bytes it wrote, so training resumes bit for bit.

A save is atomic: Orbax writes ``path/<step>.orbax-checkpoint-tmp-*`` and
renames it to ``path/<step>`` when complete, so a process killed while
saving leaves the previous steps intact and :func:`latest_step` skips the
unfinished one. A damaged step (files missing, truncated or altered) is
never skipped silently: :func:`restore_state` raises ``ValueError`` naming
its directory and what is wrong, and :func:`latest_step` raises for a
directory that holds files but no checkpoint (docs/reliability.md).

Orbax is not a core dependency (it is in the ``experiments`` extra): this
module imports on a core install, and :func:`save_state` /
:func:`restore_state` raise ``ImportError`` naming
``pip install orbax-checkpoint`` when it is missing.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

_TMP_MARK = '.orbax-checkpoint-tmp'  # an unfinished save: <step><mark>-<n>
# Files every complete step of save_state has (Orbax's item metadata, the
# OCDBT root manifest): a step without them cannot be read.
_REQUIRED = ('default/_METADATA', 'default/manifest.ocdbt')
# TensorStore's codes for array data it cannot read back as written (OCDBT
# checksums its data: altered bytes are DATA_LOSS).
_STORAGE_ERRORS = ('DATA_LOSS', 'OUT_OF_RANGE', 'NOT_FOUND')
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
  """The newest step saved under ``path``; None if there is none.

  None when ``path`` does not exist, is empty or holds only unfinished
  saves (Orbax's ``*.orbax-checkpoint-tmp-*``, left by a killed process).

  Raises:
    ValueError: naming ``path``, when it holds other files but no step.
  """
  if '://' not in os.fspath(path) and not os.path.isdir(path):
    return None
  with _manager(path) as manager:
    step = manager.latest_step()
  if step is None and '://' not in os.fspath(path):
    other = sorted(e for e in os.listdir(path) if _TMP_MARK not in e)
    if other:
      raise ValueError(
          f'{os.fspath(path)!r} holds no checkpoint (no <step> directory),'
          f' only {other[:5]}: not a checkpoint directory of save_state, or'
          ' one whose steps were deleted. Restore from another directory, or'
          ' remove it to start afresh.')
  return step


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
    ValueError: naming the step's directory and what is wrong, if it is
      incomplete or damaged (missing, truncated or altered files; the
      previous step is never taken silently instead), or if it does not
      fit ``abstract_tree`` (shapes, tree structure).
    ImportError: if Orbax is not installed (also in :func:`save_state`).
  """
  ocp = _orbax()
  with _manager(path) as manager:
    if step is None:
      step = manager.latest_step()
      if step is None:
        raise FileNotFoundError(f'No checkpoint under {path!r}.')
    step_dir = _check_step_dir(path, step)
    try:
      restored = manager.restore(
          int(step), args=ocp.args.StandardRestore(abstract_tree))
    except Exception as e:  # Orbax/TensorStore raise many types.
      raise _restore_error(step_dir, e) from e
  return int(step), restored['params'], restored['opt_state']


def _first_line(error: Exception) -> str:
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0][:400] if text else ""}'


def _restore_error(step_dir: str, error: Exception) -> ValueError:
  """Damaged data (TensorStore's status codes) or a target that differs."""
  if str(error).startswith(_STORAGE_ERRORS):
    return _damaged(step_dir, _first_line(error))
  return ValueError(
      f'Checkpoint {step_dir!r} does not restore onto this target (another'
      f' model or optimizer?): {_first_line(error)}')


def _damaged(step_dir: str, what: str) -> ValueError:
  return ValueError(
      f'Checkpoint {step_dir!r} is incomplete or damaged: {what}. Delete that'
      ' directory to resume from the step before it, or start afresh'
      ' elsewhere.')


def _check_step_dir(path: str, step: int) -> str:
  """``path/<step>``, after checking the files a complete save has.

  Raises:
    ValueError: naming the directory and the missing or unreadable file.
  """
  step_dir = os.path.join(os.fspath(path), str(int(step)))
  if '://' in step_dir:
    return step_dir  # remote: Orbax's own errors, wrapped by the caller
  missing = [f for f in _REQUIRED
             if not os.path.isfile(os.path.join(step_dir, f))]
  if missing:
    raise _damaged(step_dir, f'missing {", ".join(missing)}')
  metadata = os.path.join(step_dir, _REQUIRED[0])
  try:
    with open(metadata) as f:
      json.load(f)
  except ValueError as e:
    raise _damaged(step_dir, f'{_REQUIRED[0]} is not valid JSON'
                   f' (truncated?): {e}') from e
  return step_dir


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
  step_dir = _check_step_dir(path, step)
  item = os.path.join(step_dir, 'default')
  checkpointer = ocp.StandardCheckpointer()
  try:
    stored = checkpointer.metadata(item).item_metadata.tree
    tree = checkpointer.restore(item, jax.tree.map(
        lambda m: np.empty(m.shape, m.dtype), stored))
  except Exception as e:  # Orbax/TensorStore raise many types.
    raise _damaged(step_dir, _first_line(e)) from e  # no target to differ
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
