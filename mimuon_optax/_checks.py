"""Construction-time checks of numeric hyperparameters."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np


def check_real_scalar(name: str, value: Any, in_range: Callable[[Any], bool],
                      requirement: str, *, allow_schedule: bool = False
                      ) -> None:
  """Raises ``ValueError`` naming ``name`` unless ``value`` is in range.

  ``value`` must be a real scalar with ``in_range(value)`` (NaN fails every
  range).

  Traced values (``optax.inject_hyperparams``) and, with
  ``allow_schedule``, callables cannot be checked at construction and pass.
  """
  if isinstance(value, jax.core.Tracer) or (allow_schedule and callable(value)):
    return
  try:
    array = np.asarray(value)
  except Exception:  # pylint: disable=broad-except
    array = None
  if (array is None or array.shape != () or array.dtype.kind not in 'iuf'
      or not in_range(array)):
    raise ValueError(f'{name} must be {requirement}, got {value!r}')
