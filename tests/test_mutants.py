"""Mutants that must die: wrong weights fail the proof from the weights, and small wrong changes
to the code (a drifting prediction, an under-reported certificate, a scaled attention output, a
closed form with its lambda off) fail the checks the suite and `iclkit verify` rely on."""

import numpy as np
import pytest
import torch

from iclkit import algorithms
from iclkit import constructions as C
from iclkit.verify import numeric, symbolic
from iclkit.verify.numeric import check, sample_problems
from iclkit.verify.weights import WeightProofError, prove_weights

# the mutants are run on purpose: predict(strict=False) warns that the weights are not the compiled ones
pytestmark = pytest.mark.filterwarnings("ignore:.*no longer the compiled one:UserWarning")

COMBOS = [(name, kw, mode) for name, kw in (("sgd", {"lr": 0.1}), ("gd", {"lr": 0.1}), ("ridge", {"lam": 0.1}))
          for mode in ("fused", "faithful")]


def weight_mutants(model):
    """The issue's mutants: each layer's W_Q, W_K zeroed; the largest entry of every other
    tensor (W_V, W_O, W_in, b_in, W_out, b_out, the embedding, positions, readout) times 1.5."""
    for i, layer in enumerate(model.layers):
        for name in ("W_Q", "W_K"):
            yield f"layer {i} {name} zeroed", getattr(layer, name), 0.0
        for name in ("W_V", "W_O", "W_in", "b_in", "W_out", "b_out"):
            yield f"layer {i} {name} largest x1.5", getattr(layer, name), 1.5
    for name in ("W_E", "pos", "readout"):
        yield f"{name} largest x1.5", getattr(model, name), 1.5


@pytest.mark.parametrize("name, kw, mode", COMBOS)
def test_every_weight_mutant_that_changes_the_output_fails_the_proof(name, kw, mode):
    """Built for n = 4 (looped where the program repeats), every mutant whose output differs
    from the clean model's in any bit on 4 prompts fails :func:`prove_weights`."""
    c = C.REGISTRY[name](2, 4, mode=mode, **kw)
    X, y, xq = sample_problems(2, 4, 4, seed=3)
    clean = c.predict(X, y, xq)
    changed = 0
    for label, W, factor in weight_mutants(c.model):
        kept = W.data.clone()
        with torch.no_grad():
            if factor == 0.0:
                W.zero_()
            else:
                W.view(-1)[torch.argmax(W.data.abs())] *= factor
            out = c.predict(X, y, xq, strict=False)
        if not np.array_equal(out, clean):
            changed += 1
            with pytest.raises(WeightProofError):
                prove_weights(c.model, c.compiled)
                pytest.fail(f"{label}: output changed, proof held")
        with torch.no_grad():
            W.copy_(kept)
    prove_weights(c.model, c.compiled)  # restored
    assert changed >= 10


# ---- code mutants --------------------------------------------------------------------------
def test_a_prediction_drifting_by_1e7_fails_verify(monkeypatch):
    """``iclkit verify``'s row fails when y_hat drifts by 1e-7 (1 + |y_hat|) (target 1e-8)."""
    assert check("sgd", 2, 4, trials=8).status == "pass"
    real = C.Construction.predict

    def drifting(self, X, y, xq, strict=True):
        out = real(self, X, y, xq, strict)
        return out + 1e-7 * (1 + np.abs(out))

    monkeypatch.setattr(C.Construction, "predict", drifting)
    row = check("sgd", 2, 4, trials=8)
    assert row.status == "FAIL" and not row.meets_target and not row.within_certificate


def test_an_under_reported_certificate_is_caught():
    """With an injected weight error the certificate is tight (within 1e-5 of the measured error
    on some prompt), so a certificate reported 0.1 % low falls below a measured error."""
    from iclkit.primitives import certify as certify_module

    c = C.ridge(3, 2, lam=0.1)
    X, y, xq = sample_problems(3, 2, 8, seed=2)
    with torch.no_grad():
        c.model.layers[1].W_out.mul_(1.0 + 1e-6)
    err = np.abs(c.predict(X, y, xq, strict=False) - c.reference(X, y, xq))
    cert = c.certify(X, y, xq)
    assert np.all(err <= cert)
    assert np.any(0.999 * cert < err)  # what a 0.1 % under-report would fail
    real = certify_module.certify
    try:
        certify_module.certify = lambda *a, **k: 0.999 * real(*a, **k)
        assert not np.all(err <= c.certify(X, y, xq))
    finally:
        certify_module.certify = real


def test_an_attention_output_scaled_by_1e6_fails_the_checks(monkeypatch):
    """Every attention sublayer's output times 1 + 1e-6: the row fails its target and an op's
    measured own error exceeds its model."""
    from iclkit.transformer.model import DecoderLayer

    real = DecoderLayer.attention
    monkeypatch.setattr(DecoderLayer, "attention", lambda self, h: real(self, h) * (1 + 1e-6))
    assert check("ridge", 2, 3, trials=8).status == "FAIL"
    c = C.ridge(2, 3, lam=0.1)
    assert max(c.own_error_ratios(*sample_problems(2, 3, 4, seed=0)).values()) > 1


@pytest.mark.parametrize("name", ["sgd", "gd", "ridge"])
def test_a_closed_form_with_lambda_off_by_1_percent_fails(monkeypatch, name):
    """The numpy closed form with lam * 1.01 fails `iclkit verify`'s row, and the sympy closed
    form with lam * 1.01 fails the symbolic proof. (gd from w0 = 0 never sees lam: w0 != 0 here.)"""
    params = numeric.DEFAULT_PARAMS[name] | ({"w0": [0.5, -1.0]} if name == "gd" else {})
    real = getattr(algorithms, name)
    monkeypatch.setattr(algorithms, name, lambda X, y, lam=0.0, **kw: real(X, y, lam=1.01 * lam, **kw))
    assert check(name, 2, 4, trials=8, params=params).status == "FAIL"
    monkeypatch.setattr(algorithms, name, real)
    assert check(name, 2, 4, trials=8, params=params).status == "pass"
    form = getattr(symbolic, f"{name}_closed_form")
    assert symbolic.prove_shorter_prompt(name, 1, 3, 2, "fused")
    monkeypatch.setattr(symbolic, f"{name}_closed_form", lambda *a: form(*a[:-1], 1.01 * a[-1]))
    assert not symbolic.prove_shorter_prompt(name, 1, 3, 2, "fused")
