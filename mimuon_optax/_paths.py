"""Names of the keys in a pytree path: the one rule for labels, specs, reports.

  >>> import jax
  >>> tree = {"model": {"layers": [{"q_proj": {"kernel": 0}}]}}
  >>> [path_names(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
  [['model', 'layers', '0', 'q_proj', 'kernel']]
"""

from __future__ import annotations

from typing import Any


def path_names(path: Any) -> list[str]:
  """The key of each entry of a ``jax.tree_util`` key path, as a string.

  Dict keys (``DictKey.key``), attribute names (``GetAttrKey.name``) and
  sequence indices (``SequenceKey.idx``, ``FlattenedIndexKey.key``) in
  order, case kept; any other entry as ``str``.
  """
  names = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        names.append(str(getattr(key, attr)))
        break
    else:
      names.append(str(key))
  return names
