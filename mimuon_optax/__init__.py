"""mimuon_optax: Muon and MiMuon (Mixed Muon) as composable Optax transforms."""

from mimuon_optax import _platform

_platform.limit_openblas_threads()  # Before the first jax linalg call.
_platform.check_versions()  # Before optax.contrib below, which old optax lack.

# pylint: disable=g-import-not-at-top,g-bad-import-order

from optax.contrib import MuonDimensionNumbers

from mimuon_optax._alias import default_param_labels
from mimuon_optax._alias import mimuon
from mimuon_optax._alias import muon
from mimuon_optax._alias import scale_by_lr_scaling
from mimuon_optax._context import MatrixContext
from mimuon_optax._distributed import opt_state_shardings
from mimuon_optax._gap import GapStats
from mimuon_optax._gap import singular_values
from mimuon_optax._gap import spectral_gap
from mimuon_optax._gap import spectral_gaps
from mimuon_optax._matrix import resolve_dimension_numbers
from mimuon_optax._mix import DEFAULT_TAU
from mimuon_optax._mix import MiMuonMixState
from mimuon_optax._mix import mimuon_mix
from mimuon_optax._mix import mix_diagnostics
from mimuon_optax._momentum import MomentumState
from mimuon_optax._momentum import momentum
from mimuon_optax._musgd import musgd
from mimuon_optax._newton_schulz import GRAM_MIN_ASPECT
from mimuon_optax._newton_schulz import NSSchedule
from mimuon_optax._newton_schulz import newton_schulz
from mimuon_optax._newton_schulz import ns_schedule
from mimuon_optax._newton_schulz import scale_by_newton_schulz
from mimuon_optax._newton_schulz import uses_gram

__version__ = "0.1.0"

__all__ = (
    "DEFAULT_TAU",
    "GRAM_MIN_ASPECT",
    "GapStats",
    "MatrixContext",
    "MiMuonMixState",
    "MomentumState",
    "MuonDimensionNumbers",
    "NSSchedule",
    "default_param_labels",
    "mimuon",
    "mimuon_mix",
    "mix_diagnostics",
    "momentum",
    "muon",
    "musgd",
    "newton_schulz",
    "ns_schedule",
    "opt_state_shardings",
    "resolve_dimension_numbers",
    "scale_by_lr_scaling",
    "scale_by_newton_schulz",
    "singular_values",
    "spectral_gap",
    "spectral_gaps",
    "uses_gram",
)
