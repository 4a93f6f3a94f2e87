"""Bad input: construction-time ValueErrors naming the argument (issue 14)."""

import numpy as np
import pytest

import mimuon_optax as mo

FACTORIES = (mo.muon, mo.mimuon)


@pytest.mark.parametrize('factory', FACTORIES)
@pytest.mark.parametrize('kwargs,name', [
    (dict(ns_steps=-3, ns_coeffs='jordan'), 'ns_steps'),
    (dict(ns_steps=0, ns_coeffs='jordan'), 'ns_steps'),
    (dict(ns_steps=0), 'ns_steps'),
    (dict(ns_steps=2.5, ns_coeffs='jordan'), 'ns_steps'),
    (dict(ns_coeffs=np.zeros((0, 3))), 'ns_coeffs'),
    (dict(ns_coeffs=np.zeros((2, 2))), 'ns_coeffs'),
    (dict(ns_coeffs='nope'), 'ns_coeffs'),
    (dict(beta=1.5), 'beta'),
    (dict(beta=1.0), 'beta'),
    (dict(beta=-0.1), 'beta'),
    (dict(beta=float('nan')), 'beta'),
    (dict(beta=np.ones(2) * 0.9), 'beta'),
    (dict(beta='abc'), 'beta'),
])
def test_construction_rejects(factory, kwargs, name):
  with pytest.raises(ValueError, match=name):
    factory(0.1, **kwargs)


@pytest.mark.parametrize('kwargs,name', [
    (dict(gap_every=0), 'gap_every'),
    (dict(tau=float('nan')), 'tau'),
    (dict(tau=-1.0), 'tau'),
    (dict(tau='abc'), 'tau'),
    (dict(tau=None), 'tau'),
    (dict(tau=np.ones(2)), 'tau'),
])
def test_mimuon_construction_rejects(kwargs, name):
  with pytest.raises(ValueError, match=name):
    mo.mimuon(0.1, **kwargs)


def test_momentum_and_newton_schulz_reject():
  with pytest.raises(ValueError, match='beta'):
    mo.momentum(1.5)
  with pytest.raises(ValueError, match='ns_steps'):
    mo.scale_by_newton_schulz('jordan', ns_steps=-3)
  with pytest.raises(ValueError, match='ns_coeffs'):
    mo.ns_schedule(np.zeros((0, 3)))


def test_edge_values_accepted():
  mo.muon(0.1, beta=0.0)
  mo.mimuon(0.1, beta=0.0, tau=float('inf'), gap_every=3)
  mo.muon(0.1, ns_coeffs='jordan', ns_steps=np.int32(1))
