"""The in-context algorithms of the literature beyond the paper: gd with k steps, pgd, newton, ols, lasso.

Tolerances: a prediction is held to its own per-prompt certificate (``Construction.certify``,
a rigorous bound on |transformer - program|) and to the float64 accuracy target
1e-8 (1 + |y_hat|) against the numpy closed form (``ACCURACY``), nothing looser.
"""

from dataclasses import replace

import numpy as np
import pytest

from iclkit import algorithms as A
from iclkit import constructions as C
from iclkit.constructions.base import ACCURACY
from iclkit.primitives import BoundError
from iclkit.verify import symbolic
from iclkit.verify.numeric import sample_problems

TARGET = ACCURACY["float64"]


def held(c, X, y, xq, closed):
    """Predictions within their certificates of the program and within the target of ``closed``."""
    yhat, cert, ref = c.predict(X, y, xq), c.certify(X, y, xq), c.reference(X, y, xq)
    exact = np.array([closed(X[b], y[b]) @ xq[b] for b in range(len(X))])
    assert np.all(np.abs(yhat - ref) <= cert)
    assert np.all(np.abs(yhat - exact) <= TARGET * (1 + np.abs(exact)))
    return yhat


@pytest.mark.parametrize("mode", ["fused", "faithful"])
def test_gd_with_k_steps_loops_one_step_and_matches_the_closed_form(mode):
    X, y, xq = sample_problems(2, 4, 6, seed=1)
    sizes = {}
    for k in (2, 3, 6):
        c = C.gd(2, 4, lr=0.05, lam=0.1, steps=k, mode=mode)
        held(c, X, y, xq, lambda X, y: A.gd(X, y, lr=0.05, lam=0.1, steps=k))
        sizes[k] = (c.num_layers, c.model.cfg.stored_layers, c.model.num_parameters())
    per_step = 1 if mode == "fused" else 2  # fused: one layer per step (attention updates, MLP forms S w)
    assert sizes[6][0] - sizes[3][0] == 3 * per_step
    assert sizes[3][1:] == sizes[6][1:]  # the step is stored once, whatever k


def test_pgd_with_the_identity_is_gd_without_regulariser_weight_for_weight():
    P = np.eye(3)
    a, b = C.pgd(3, 4, lr=0.02, P=P, steps=3), C.gd(3, 4, lr=0.02, lam=0.0, steps=3)
    for (k, u), (_, v) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch_equal(u, v), k


def torch_equal(u, v) -> bool:
    return u.shape == v.shape and bool((u == v).all())


def test_pgd_matches_its_closed_form_with_a_nonsymmetric_preconditioner():
    P = np.array([[1.0, 0.3], [-0.2, 0.6]])
    X, y, xq = sample_problems(2, 5, 6, seed=2)
    held(C.pgd(2, 5, lr=0.05, P=P, steps=4), X, y, xq, lambda X, y: A.pgd(X, y, lr=0.05, P=P, steps=4))


@pytest.mark.parametrize("steps", [1, 3])
def test_newton_matches_its_closed_form(steps):
    X, y, xq = sample_problems(2, 5, 6, seed=3)
    held(C.newton(2, 5, steps=steps), X, y, xq, lambda X, y: A.newton(X, y, steps=steps))


def test_newton_with_a_constant_alpha_refuses_a_prompt_where_it_diverges():
    X, y, xq = sample_problems(2, 3, 1, seed=4)
    top = np.linalg.eigvalsh(X[0].T @ X[0])[-1]
    c = C.newton(2, 3, steps=2, alpha=2.5 / top**2)  # alpha lambda_max^2 = 2.5 >= 2
    with pytest.raises(BoundError, match=r"alpha lambda_max\(X\^T X\)\^2 = 2.5 >= 2"):
        c.predict(X, y, xq)
    ok = C.newton(2, 3, steps=2, alpha=0.5 / top**2)
    held(ok, X, y, xq, lambda X, y: A.newton(X, y, steps=2, alpha=0.5 / top**2))


def test_ols_meets_lstsq_refuses_an_ill_conditioned_prompt_and_takes_the_min_norm_solution():
    X, y, xq = sample_problems(2, 6, 6, seed=5)
    c = C.ols(2, 6)
    held(c, X, y, xq, lambda X, y: A.ols(X, y))
    Xs = X[:1].copy()
    Xs[0, :, 1] = 2 * Xs[0, :, 0] + 1e-5 * np.arange(6)  # nearly rank 1: X^T X's condition about 1e12
    with pytest.raises(BoundError, match="too ill-conditioned for 12 Newton steps"):
        c.predict(Xs, y[:1], xq[:1])
    under = C.ols(3, 2)  # n' = 2 < d = 3: the minimum-norm least-squares solution
    Xu, yu, xu = sample_problems(3, 2, 4, seed=6)
    held(under, Xu, yu, xu, lambda X, y: np.linalg.pinv(X) @ y)


@pytest.mark.parametrize("mode", ["fused", "faithful"])
def test_lasso_is_ista_with_a_certified_soft_threshold(mode):
    X, y, xq = sample_problems(2, 5, 6, seed=8)
    c = C.lasso(2, 5, lr=0.02, l1=4.0, steps=5, mode=mode)
    held(c, X, y, xq, lambda X, y: A.lasso(X, y, lr=0.02, l1=4.0, steps=5))
    # the threshold bites: some coordinate of the exact iterate is exactly 0 on some prompt
    assert any((A.lasso(X[b], y[b], lr=0.02, l1=4.0, steps=5) == 0).any() for b in range(len(X)))
    ratios = c.own_error_ratios(X, y, xq)
    hinges = {k: v for k, v in ratios.items() if "hinge" in k}
    assert hinges and max(hinges.values()) <= 1.0  # measured own error within the rounding model


def test_hinge_ops_match_their_meaning_within_their_bounds():
    from iclkit.primitives import Program, absolute, clip, compile_program, relu, soft_threshold

    z = np.array([-2.0, -0.3, -1e-9, 0.0, 1e-12, 0.2, 0.25, 1.7])
    want = {"relu": np.maximum(z, 0), "abs": np.abs(z), "clip": np.clip(z, -0.3, 0.5),
            "soft": np.sign(z) * np.maximum(np.abs(z) - 0.25, 0)}
    ops = {"relu": relu("out", "a"), "abs": absolute("out", "a"), "clip": clip("out", "a", -0.3, 0.5),
           "soft": soft_threshold("out", "a", 0.25)}
    for name, op in ops.items():
        compiled = compile_program(Program({"a": (8,), "out": (8,)}, {"a": 2.0}, [op]), max_len=2)
        got = compiled.run({"a": np.broadcast_to(z, (1, 2, 8)).copy()})["out"][0, 1]
        assert np.all(np.abs(got - want[name]) <= compiled.error_bounds["out"]), name
        assert compiled.error_bounds["out"] <= 1e-13, name  # certified to near the rounding, kink included
    with pytest.raises(ValueError, match="clip needs lo < hi"):
        clip("out", "a", 1.0, 0.0)
    with pytest.raises(ValueError, match="soft_threshold needs a finite tau >= 0"):
        soft_threshold("out", "a", -1.0)


@pytest.mark.parametrize("call, match", [
    (lambda: C.pgd(2, 3, lr=0.0, P=np.eye(2)), "lr must be finite and > 0"),
    (lambda: C.pgd(2, 3, lr=0.1, P=np.eye(3)), "P must be a 2 x 2 matrix"),
    (lambda: C.pgd(2, 3, lr=0.1, P=[[np.inf, 0], [0, 1]]), "P must be finite"),
    (lambda: C.pgd(2, 3, lr=0.1, P=np.eye(2), steps=0), "steps must be an integer >= 1"),
    (lambda: C.gd(2, 3, lr=0.1, steps=-1), "steps must be an integer >= 0"),
    (lambda: C.gd(2, 3, lr=0.1, w_bound=5.0), "w_bound bounds the iterates of steps > 1"),
    (lambda: C.newton(2, 3, steps=2.5), "steps must be an integer"),
    (lambda: C.newton(2, 3, alpha=-1.0), "alpha must be finite and > 0"),
    (lambda: C.ols(2, 3, steps=0), "steps must be an integer >= 1"),
    (lambda: C.lasso(2, 3, lr=0.1, l1=-0.5), "l1 must be finite and >= 0"),
    (lambda: C.lasso(2, 3, lr=-0.1, l1=0.5), "lr must be finite and > 0"),
    (lambda: C.lasso(2, 3, lr=0.1, l1=0.5, steps=0), "steps must be an integer >= 1"),
])
def test_bad_parameters_get_one_line_errors(call, match):
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("prove", [symbolic.prove_descent_loop, symbolic.prove_newton_loop, symbolic.prove_lasso_loop])
def test_the_loop_proofs_hold_and_catch_a_wrong_step(prove, monkeypatch):
    assert prove(2)
    name = "newton_program" if prove is symbolic.prove_newton_loop else "descent_program"
    original = getattr(symbolic, name)

    def wrong(*args, **kwargs):  # every step's update: its first coefficient off by 1e-9 (the loop still repeats)
        program = original(*args, **kwargs)
        for j in (1, 2, 3):
            at = program.span(f"step {j}")[0] + (1 if name == "descent_program" else 2)
            (src, coef), *rest = program.steps[at].terms
            program.steps[at] = replace(program.steps[at], terms=((src, coef * (1 + 1e-9)), *rest))
        return program

    monkeypatch.setattr(symbolic, name, wrong)
    assert not prove(2)


def test_a_saved_pgd_is_proved_from_its_file_for_every_k(tmp_path, capsys):
    from iclkit.cli import main

    c = C.pgd(2, 3, lr=0.05, P=np.diag([0.5, 1.5]), steps=3)
    path = tmp_path / "pgd.safetensors"
    c.save(path)
    assert main(["prove", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "proved from the weights" in out and "for every k >= 1 steps" in out
    again = C.Construction.load(path)
    X, y, xq = sample_problems(2, 3, 4, seed=7)
    np.testing.assert_array_equal(again.predict(X, y, xq), c.predict(X, y, xq))


def test_the_command_line_builds_them_and_refuses_a_parameter_they_do_not_take(tmp_path, capsys):
    from iclkit.cli import main

    path = tmp_path / "lasso.safetensors"
    assert main(["build", "lasso", "--d", "2", "--n", "3", "--l1", "0.5", "--steps", "4", "--out", str(path)]) == 0
    c = C.Construction.load(path)
    assert (c.name, c.params["l1"], c.params["steps"]) == ("lasso", 0.5, 4)
    assert main(["prove", str(path)]) == 0
    assert "soft_threshold" in " ".join(capsys.readouterr().out.split())  # the every-k claim
    assert main(["build", "sgd", "--d", "2", "--steps", "3", "--out", str(tmp_path / "x")]) == 2
    assert "sgd takes ['lam', 'lr'], not ['steps']" in " ".join(capsys.readouterr().out.split())


def test_the_proof_from_the_weights_reads_the_soft_threshold_units():
    """lasso's hinge units: the proof passes on the compiled weights and fails, naming the layer,
    when one unit's sharpness (its input weight) or its output weight is scaled by 1.5."""
    import torch

    from iclkit.verify.weights import WeightProofError, prove_weights

    c = C.lasso(2, 3, lr=0.05, l1=1.0, steps=2)
    assert prove_weights(c.model, c.compiled)
    layer = next(i for i, layer in enumerate(c.compiled.schedule) if any(op.name == "hinge" for op in layer.mlp))
    stored = c.model.cfg.applied_index()[layer]
    unit = int(torch.argmax(c.model.layers[stored].W_in.abs().max(0).values))  # the sharpest unit: a hinge's
    for tensor in ("W_in", "W_out"):
        W = getattr(c.model.layers[stored], tensor)
        original = W.detach().clone()
        with torch.no_grad():
            if tensor == "W_in":
                W[:, unit] *= 1.5
            else:
                W[unit] *= 1.5
        with pytest.raises(WeightProofError, match=f"layer {layer}"):
            prove_weights(c.model, c.compiled)
        with torch.no_grad():
            W.copy_(original)


def test_degenerate_but_well_defined_cases_are_answered():
    """P = 0 (pgd stays at w0), zero steps (gd and newton: x_q . w0 and x_q . M_0 b), and for
    ols an all-zero prompt and one of repeated examples (rank 1 < min(n, d): OLS is well
    defined, and Newton's null space is OLS's)."""
    X, y, xq = sample_problems(2, 3, 4, seed=9)
    held(C.pgd(2, 3, lr=0.05, P=np.zeros((2, 2)), steps=2), X, y, xq, lambda X, y: np.zeros(2))
    held(C.gd(2, 3, lr=0.05, steps=0, w0=[1.0, -2.0]), X, y, xq, lambda X, y: np.array([1.0, -2.0]))
    held(C.newton(2, 3, steps=0), X, y, xq, lambda X, y: A.newton(X, y, steps=0))
    c = C.ols(2, 3)
    assert abs(c.predict(np.zeros((3, 2)), np.zeros(3), np.ones(2))) <= TARGET  # OLS: 0
    repeated = np.array([[[1.0, 2.0]] * 3])
    held(c, repeated, np.ones((1, 3)), np.array([[0.5, -1.0]]), lambda X, y: np.linalg.pinv(X) @ y)
