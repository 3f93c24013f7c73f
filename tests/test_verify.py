"""Symbolic proofs and the property suites (small budget here; `iclkit verify --property` runs more)."""

import pytest
import torch
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


def test_compiled_layer_check_catches_a_wrong_weight():
    from iclkit.primitives import Program, compile_program, mov

    compiled = compile_program(Program({"a": (2,), "z": (2,)}, {"a": 1.0}, [mov("z", "a", 1)]), max_len=4)
    assert symbolic.attention_layer_matches(compiled, 4)
    with torch.no_grad():
        compiled.model.layers[0].W_O[0] *= 1.5  # a wrong output scale in the moving head
    assert not symbolic.attention_layer_matches(compiled, 4)


@pytest.mark.parametrize("prop", properties.PROPERTIES, ids=lambda p: p.__name__)
def test_property(prop):
    settings(max_examples=8, deadline=None, derandomize=True)(prop)()
