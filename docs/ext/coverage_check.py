"""Sphinx extension: every name in `mimuon_optax.__all__` has an API entry.

Like optax's docs/ext/coverage_check.py, but run inside every build: at its
end it compares `mimuon_optax.__all__` with the objects the
Python domain documents (`autofunction`, `autoclass`, `autodata`, ...) and
warns for each missing name, which `sphinx-build -W` turns into an error.
So the reference cannot silently fall behind the package.
"""

import mimuon_optax
from sphinx.util import logging

logger = logging.getLogger(__name__)


def undocumented(documented: set[str]) -> list[str]:
  """Public names of `mimuon_optax` without an entry in `documented`."""
  return sorted(name for name in mimuon_optax.__all__
                if f'mimuon_optax.{name}' not in documented)


def _check(app, exception) -> None:
  if exception is not None:
    return
  documented = set(app.env.get_domain('py').objects)
  for name in undocumented(documented):
    logger.warning('mimuon_optax.%s is in __all__ but on no API page '
                   '(add it to a docs/api/*.rst page)', name,
                   type='coverage_check')


def setup(app):
  # Every build, incremental ones included (their consistency check is
  # skipped when no page changed, but __all__ may have).
  app.connect('build-finished', _check)
  return {'parallel_read_safe': True, 'parallel_write_safe': True}
