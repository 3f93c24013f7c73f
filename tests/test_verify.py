"""Symbolic proofs and the property suites (small budget here; `iclkit verify --property` runs more)."""

import pytest
from hypothesis import settings

from iclkit.verify import properties, symbolic


def test_theorems_prove_and_the_paper_sign_is_caught():
    assert symbolic.prove_sgd(2, 1, "faithful")
    assert symbolic.prove_ridge(2, 1, "faithful")
    assert symbolic.prove_sgd(2, 2, "fused") and symbolic.prove_ridge(1, 2, "fused")
    assert not symbolic.prove_sgd(2, 1, "faithful", mistake=True)


@pytest.mark.parametrize("name, fn", [(name, fn) for name, fn in symbolic.claims(2)], ids=lambda x: x if isinstance(x, str) else "")
def test_every_claim_proves(name, fn):
    assert fn()[0], name


@pytest.mark.parametrize("prop", properties.PROPERTIES, ids=lambda p: p.__name__)
def test_property(prop):
    settings(max_examples=8, deadline=None, derandomize=True)(prop)()
