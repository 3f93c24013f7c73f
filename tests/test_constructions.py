"""Constructions against iclkit.algorithms; counts against the paper; bad input."""

import numpy as np
import pytest

from iclkit import algorithms as A
from iclkit import constructions as C
from iclkit.primitives import BoundError
from iclkit.verify.numeric import DEFAULT_PARAMS, closed_form, sample_problems


@pytest.mark.parametrize("name", ["sgd", "gd", "ridge"])
@pytest.mark.parametrize("mode", ["faithful", "fused"])
@pytest.mark.parametrize("d", [1, 3])
def test_single_block_within_certified_bound(name, mode, d):
    c = C.REGISTRY[name](d, 1, mode=mode, **DEFAULT_PARAMS[name])
    X, y, xq = sample_problems(d, 1, 16, seed=d)
    err = np.abs(c.predict(X, y, xq) - closed_form(c, X, y, xq))
    assert err.max() <= c.error_bound


def test_paper_layer_counts_and_fused_beats_them():
    for d in (1, 4):
        assert C.sgd(d, 1, lr=0.01, mode="faithful").num_layers == 9
        assert C.ridge(d, 1, lam=0.1, mode="faithful").num_layers == 14
        assert C.sgd(d, 1, lr=0.01).num_layers < 9
        assert C.ridge(d, 1, lam=0.1).num_layers < 14
        # rows: faithful = the paper's (3+4d, 3+5d+3d^2), fixes included; fused is narrower
        assert C.sgd(d, 1, lr=0.01, mode="faithful").program_rows == 3 + 4 * d
        assert C.ridge(d, 1, lam=0.1, mode="faithful").program_rows == 3 + 5 * d + 3 * d * d
        assert C.sgd(d, 1, lr=0.01).program_rows == 3 + 3 * d
        assert C.ridge(d, 1, lam=0.1).program_rows == 4 + 4 * d + 2 * d * d
    # stacked: per example 6 faithful / 2 fused layers (SGD), 9 / 4 (ridge)
    assert C.sgd(2, 5, lr=0.01, mode="faithful").num_layers == 6 * 5 + 3
    assert C.sgd(2, 5, lr=0.01).num_layers == 2 * 5 + 1
    assert C.ridge(2, 5, lam=0.1, mode="faithful").num_layers == 9 * 5 + 4
    assert C.ridge(2, 5, lam=0.1).num_layers == 4 * 5 + 1


@pytest.mark.parametrize("name", ["sgd", "gd", "ridge"])
def test_stacked_meets_the_accuracy_target(name):
    """Issue 3's float64 target for stacked blocks, 1e-8 (1 + |y_hat|) (not a certified bound:
    the generic forward analysis is vacuous over many blocks; see README)."""
    c = C.REGISTRY[name](4, 6, **DEFAULT_PARAMS[name])
    X, y, xq = sample_problems(4, 6, 16, seed=7)
    exact = closed_form(c, X, y, xq)
    assert (np.abs(c.predict(X, y, xq) - exact) / (1 + np.abs(exact))).max() <= 1e-8


@pytest.mark.parametrize("mode", ["faithful", "fused"])
def test_stacked_sgd_has_a_finite_certificate(mode):
    """The contraction certificate (rho <= 1 on this domain) is far below the generic per-op
    analysis, which adds the update's Lipschitz constant at every step, and the measured
    error is under it. (Both finite since every read subtracts the zero unit.)"""
    c = C.sgd(4, 12, lr=0.01, lam=0.1, mode=mode, x_norm=4.0)
    assert np.isfinite(c.a_priori_bound) and c.a_priori_bound == c.contraction_bound
    assert 100 * c.contraction_bound < c.compiled.error_bounds["yhat"]
    X, y, xq = sample_problems(4, 12, 16, seed=11)
    X, xq = X * 0.8 / np.linalg.norm(X, axis=-1, keepdims=True).max(), xq / np.linalg.norm(xq, axis=-1).max()
    assert np.abs(c.predict(X, y, xq) - closed_form(c, X, y, xq)).max() <= c.error_bound


@pytest.mark.parametrize("name, kw", [("sgd", {"lr": 0.1}), ("gd", {"lr": 0.2, "lam": 0.1}), ("ridge", {"lam": 0.01})])
@pytest.mark.parametrize("mode", ["fused", "faithful"])
def test_per_prompt_certificate_is_sound_and_tight(name, kw, mode):
    """certify bounds every prompt's error (sound) and its largest is within 100x of the
    largest measured error (issue 9's target; measured 1.3x to 4.2x here, README table)."""
    c = C.REGISTRY[name](4, 10, mode=mode, **kw)
    X, y, xq = sample_problems(4, 10, 16, seed=13)
    err = np.abs(c.predict(X, y, xq) - c.reference(X, y, xq))  # extended precision: the certificate can be that tight
    cert = c.certify(X, y, xq)
    assert cert.shape == (16,) and np.all(err <= cert)
    assert cert.max() <= 100 * err.max()


@pytest.mark.parametrize("name, n, kw", [("sgd", 40, {"lr": 0.1}), ("gd", 40, {"lr": 0.2, "lam": 0.1}),
                                        ("ridge", 16, {"lam": 0.01})])
def test_certificate_within_100x_at_d8(name, n, kw):
    """Issue 9's size, d = 8, n = 40 (ridge n = 16 here for the suite's time; n = 40 is in
    benchmarks/certificates.py, which asserts soundness too): sound on every prompt, largest
    certificate within 100x of the largest error (measured 2x to 12x), and the prediction
    within 1e-8 (1 + |y_hat|)."""
    c = C.REGISTRY[name](8, n, **kw)
    X, y, xq = sample_problems(8, n, 4, seed=13)
    exact, pred = closed_form(c, X, y, xq), c.predict(X, y, xq)
    err = np.abs(pred - c.reference(X, y, xq))
    cert = c.certify(X, y, xq)
    assert np.all(err <= cert) and cert.max() <= 100 * err.max()
    assert np.all(np.abs(pred - exact) <= 1e-8 * (1 + np.abs(exact)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name, kw", [("sgd", {"lr": 0.1}), ("gd", {"lr": 0.05, "lam": 0.1}), ("ridge", {"lam": 0.05})])
def test_measured_own_errors_obey_the_rounding_model(name, kw, dtype):
    """Every op's own error, measured in extended precision on real runs, is within what
    bounds.py derives for it at the same magnitudes (ratio <= 1), and the model is not
    vacuous: some op comes within 4x of its bound (a bound reported too small, or a factor
    dropped, fails the first; one inflated by 4 the second)."""
    c = C.REGISTRY[name](3, 5, dtype=dtype, **kw)
    X, y, xq = sample_problems(3, 5, 16, seed=5)
    ratios = c.own_error_ratios(X, y, xq)
    assert len(ratios) == len(c.compiled.program.ops)
    assert max(ratios.values()) <= 1.0, max(ratios.items(), key=lambda kv: kv[1])
    assert max(ratios.values()) >= 0.25


def test_a_corrupted_weight_is_named_and_the_certificate_stays_sound():
    """A weight changed after compilation: the certificate (measured own errors) still bounds
    the error, now large, and predict's run-time guard refuses the prompts; the own-error
    check names an op of the corrupted layer; a weight that writes where no op writes is
    refused outright."""
    import torch

    c = C.ridge(3, 2, lam=0.1)
    X, y, xq = sample_problems(3, 2, 8, seed=2)
    clean = c.certify(X, y, xq)
    with torch.no_grad():
        c.model.layers[1].W_out.mul_(1.0 + 1e-6)
    with pytest.raises(ValueError, match="tensor layers.1.W_out is no longer the compiled one"):
        c.predict(X, y, xq)  # the weights' digest refuses it before any forward pass
    with pytest.warns(UserWarning, match="no longer the compiled one"):
        err = np.abs(c.predict(X, y, xq, strict=False) - c.reference(X, y, xq))
    cert = c.certify(X, y, xq)
    assert np.all(err <= cert) and err.max() > 100 * clean.max()
    flagged = [op for op, r in c.own_error_ratios(X, y, xq).items() if r > 1]
    layer_1 = {f"{i}: {op.describe()}" for i, op in enumerate(c.compiled.program.ops) if c.compiled.placement[id(op)] == 1}
    assert flagged and set(flagged) <= layer_1
    c = C.ridge(3, 2, lam=0.1)
    written = {op.dst for op in c.compiled.program.ops if c.compiled.placement[id(op)] == 0}
    idle = next(s for s in c.compiled.program.slots if s not in written)
    with torch.no_grad():
        c.model.layers[0].W_O[0, :, c.layout.rows(idle).start] += 1e-3
    with pytest.raises(ValueError, match=f"changes slot '{idle}'"):
        c.certify(X, y, xq)


def test_sgd_at_the_papers_learning_rates_is_accurate_or_refused():
    """d = 8, n = 40, lr in the paper's grid: within 1e-8 (1 + |y_hat|) (issue target), or
    refused by the guard (lr 0.2: exact SGD diverges); never a silent wrong number."""
    X, y, xq = sample_problems(8, 40, 8, seed=4)
    for lr in (0.05, 0.1, 0.2):
        c = C.sgd(8, 40, lr=lr)
        try:
            pred = c.predict(X, y, xq)
        except BoundError as e:
            assert lr == 0.2 and "w" in str(e)
            continue
        exact = closed_form(c, X, y, xq)
        assert (np.abs(pred - exact) / (1 + np.abs(exact))).max() <= 1e-8
        assert np.all(np.abs(pred - c.reference(X, y, xq)) <= c.certify(X, y, xq))


def test_every_x_column_predicts_with_its_prefix():
    d, n = 3, 4
    c = C.sgd(d, n, lr=0.05, lam=0.1, w0=np.array([0.3, -0.2, 0.1]))
    X, y, xq = sample_problems(d, n, 1, seed=3)
    states = c.trace(X, y, xq)
    yhat = states[-1]["yhat"]
    for j in range(n):  # column 2j+1 holds x_{j+1}: predicted from examples 1..j
        w = A.sgd(X[0, :j], y[0, :j], lr=0.05, lam=0.1, w0=c.params["w0"]) if j else c.params["w0"]
        assert abs(yhat[2 * j + 1] - X[0, j] @ w) <= 1e-9


def test_ridge_is_bayes_and_approaches_ols():
    d, n = 2, 4
    X, y, xq = sample_problems(d, n, 4, seed=5, noise=0.5)
    c = C.ridge(d, n, lam=0.25)
    bayes = np.array([xq[b] @ A.bayes(X[b], y[b], noise_var=0.25, prior_var=1.0) for b in range(4)])
    assert np.abs(c.predict(X, y, xq) - bayes).max() <= 1e-8
    small = C.ridge(d, n, lam=1e-3, x_norm=4.0, y_bound=10.0)
    X2, y2, xq2 = sample_problems(d, n, 4, seed=6)
    ols = np.array([xq2[b] @ A.ols(X2[b], y2[b]) for b in range(4)])
    assert np.abs(small.predict(X2, y2, xq2) - ols).max() <= 1e-2


def test_bad_input_is_refused_with_reasons():
    c = C.sgd(2, 3, lr=0.01)
    X, y, xq = sample_problems(2, 3, 1, seed=0)
    with pytest.raises(ValueError, match=r"X must have shape \(n', 2\)"):
        c.predict(X[0, :, :1], y[0], xq[0])
    with pytest.raises(ValueError, match="y must have shape"):
        c.predict(X[0, :2], y[0], xq[0])
    with pytest.raises(ValueError, match="xq must have shape"):
        c.predict(X[0], y[0], np.ones(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        c.predict(X[0], np.array([1.0, np.inf, 0.0]), xq[0])
    with pytest.raises(BoundError, match="x_norm"):
        c.predict(X[0] * 100, y[0], xq[0])
    with pytest.raises(ValueError, match="lam must be finite and > 0"):
        C.ridge(2, 1, lam=0.0)
    for make, name in ((lambda: C.sgd(2, 1, lr=0.1, lam=np.nan), "lam"), (lambda: C.sgd(2, 1, lr=np.inf), "lr"),
                       (lambda: C.sgd(2, 1, lr=-0.1), "lr"), (lambda: C.gd(2, 1, lr=0.1, lam=np.nan), "lam"),
                       (lambda: C.ridge(2, 1, lam=np.inf), "lam"), (lambda: C.ridge(2, 1, lam=0.1, y_bound=np.inf), "y_bound"),
                       (lambda: C.sgd(2, 1, lr=0.1, x_norm=0.0), "x_norm"), (lambda: C.sgd(2, 1, lr=0.1, w_bound=np.nan), "w_bound")):
        with pytest.raises(ValueError, match=name):
            make()
    with pytest.raises(ValueError, match="w0 must be finite"):
        C.sgd(2, 1, lr=0.1, w0=[np.nan, 0.0])
    with pytest.raises(ValueError, match="empty"):
        c.predict(np.zeros((0, 3, 2)), np.zeros((0, 3)), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="real numbers"):
        c.predict(X[0] + 1j, y[0], xq[0])
    with pytest.raises(ValueError, match="real numbers"):
        c.predict(X[0] > 0, y[0], xq[0])
    with pytest.raises(ValueError, match="positive integer"):
        C.gd(0, 1, lr=0.1)
    with pytest.raises(ValueError, match="w0 must have shape"):
        C.sgd(2, 1, lr=0.1, w0=np.ones(3))


def test_save_and_cli_run(tmp_path, capsys):
    from iclkit.cli import main

    path = tmp_path / "ridge.safetensors"
    assert main(["build", "ridge", "--d", "2", "--n", "2", "--lam", "0.5", "--out", str(path)]) == 0
    X, y, xq = sample_problems(2, 2, 3, seed=9)
    np.savez(tmp_path / "p.npz", X=X, y=y, xq=xq)
    assert main(["run", str(path), "--prompts", str(tmp_path / "p.npz")]) == 0
    out = capsys.readouterr().out
    exact = xq[0] @ A.ridge(X[0], y[0], lam=0.5)
    assert f"{exact:.8g}"[:8] in out
    assert main(["run", str(path), "--prompts", str(tmp_path / "p.npz"), "--batch", "2"]) == 0


def test_verify_main_job_passes(capsys):
    from iclkit.cli import main

    assert main(["verify", "--constructions", "sgd", "ridge", "--d", "2", "--n", "1", "2", "--trials", "4"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("   sgd ", " ridge "))]
    assert len(rows) == 8 and all(row.endswith(" pass") for row in rows)  # every row, stacked ridge included
    assert out.count("no bound") == 1  # (the legend)
    assert max(map(len, out.splitlines())) <= 100 and "…" not in out  # the table fits 100 columns, nothing cut
    assert main(["sizes", "--d", "8", "--n", "40", "--modes", "faithful"]) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 100 and "…" not in out and "4.61M" not in out and "255k" in out
    assert main(["verify", "--constructions", "gd", "--d", "2", "--trials", "2", "--modes", "fused"]) == 0  # --n defaults


def test_cli_build_defaults_and_refuses_a_wrong_parameter(tmp_path, capsys):
    from iclkit.cli import main
    from iclkit.transformer import Transformer

    path = tmp_path / "sgd.safetensors"
    assert main(["build", "sgd", "--d", "2", "--out", str(path)]) == 0  # lr, lam: the paper's 0.01, 0.1
    params = Transformer.load(path)[1]["params"]
    assert (params["lr"], params["lam"]) == (0.01, 0.1)
    assert main(["build", "ridge", "--d", "2", "--lr", "0.1", "--out", str(path)]) == 2
    assert "ridge takes ['lam'], not ['lr']" in " ".join(capsys.readouterr().out.split())


def test_a_construction_float32_cannot_size_is_refused_not_built():
    """Slot bounds 1e12 apart (|x| <= 1e3, |A^-1| <= 1e9) leave no LayerNorm pad with a finite
    own-error bound in float32: refused at build, naming the op, not compiled into garbage."""
    with pytest.raises(ValueError, match=r"mul\(u <- A_inv, x\) cannot be made accurate in float32"):
        C.ridge(8, 24, lam=1e-9, x_norm=1e3, dtype="float32")


def test_float32_stacked_ridge_is_accurate_where_it_returned_garbage():
    """float32 ridge at d = 8, n = 24, lam = 0.01 once predicted with relative error 0.77 (a
    pad could not be sized for the residual's accumulated drift); every read now subtracts
    the zero unit and every attention resets the balance, so the transformer's outputs meet
    float32's 1e-3 target and every prompt is within its certificate. predict returns a
    prompt's prediction only if its certificate meets the target (a certificate is up to 7x
    the error here), else refuses it; each one it returns meets the target."""
    c = C.ridge(8, 24, lam=0.01, dtype="float32")
    X, y, xq = sample_problems(8, 24, 8, seed=3)
    pred, exact = c.predict(X, y, xq, strict=False), closed_form(c, X, y, xq)
    assert (np.abs(pred - exact) / (1 + np.abs(exact))).max() <= 1e-3
    cert = c.certify(X, y, xq)
    assert np.all(np.abs(pred - c.reference(X, y, xq)) <= cert)
    accepted = cert <= 1e-3 / (1 + 1e-3) * (1 + np.abs(pred))
    assert 4 <= accepted.sum() < 8
    b = int(np.argmax(accepted))
    assert abs(c.predict(X[b], y[b], xq[b]) - exact[b]) <= 1e-3 * (1 + abs(exact[b]))
    b = int(np.argmin(accepted))
    with pytest.raises(BoundError, match="accuracy target"):
        c.predict(X[b], y[b], xq[b])


# ---- looped (weight-tied) models ----------------------------------------------------------
def test_find_loop_takes_the_block_that_saves_most():
    from iclkit.primitives.compile import find_loop

    assert find_loop(list("abcbcbcd")) == (1, 2, 3)
    assert find_loop(list("aaaa")) == (0, 1, 4)
    assert find_loop(list("abcd")) is None
    assert find_loop(list("xabcabcabcy")) == (1, 3, 3)


LOOPED = [("sgd", {"lr": 0.05, "lam": 0.1}, m) for m in ("fused", "faithful")] + \
         [("gd", {"lr": 0.1, "lam": 0.1}, "fused")] + [("ridge", {"lam": 0.1}, m) for m in ("fused", "faithful")]


@pytest.mark.parametrize("name, kw, mode", LOOPED)
def test_looped_model_stores_one_block_and_equals_its_unrolled_stack(name, kw, mode, tmp_path):
    """Stored parameters at n = 8 within 3x of n = 1 (the issue's bar), the same predictions
    as the plain stack bit for bit, and a save/load round trip that is bit-exact and small."""
    import torch

    from iclkit.transformer import Transformer

    one, c = (C.REGISTRY[name](2, n, mode=mode, **kw) for n in (1, 8))
    assert c.model.num_parameters() <= 3 * one.model.num_parameters()
    assert len(list(c.model.parameters())) < len(list(c.model.unroll().parameters())) or name == "gd"
    tokens = c.compiled.tokens(c.inputs(*sample_problems(2, 8, 4, seed=5)))
    plain = c.model.unroll()
    assert plain.cfg.num_layers == c.num_layers == len(c.model.applied_layers)
    with torch.no_grad():
        assert torch.equal(c.model(tokens), plain(tokens))
    c.save(tmp_path / "c.safetensors")
    one.save(tmp_path / "one.safetensors")
    assert (tmp_path / "c.safetensors").stat().st_size <= 3 * (tmp_path / "one.safetensors").stat().st_size
    loaded, _ = Transformer.load(tmp_path / "c.safetensors")
    assert loaded.cfg == c.model.cfg
    with torch.no_grad():
        assert torch.equal(loaded(tokens), c.model(tokens))


@pytest.mark.parametrize("name, kw, mode", LOOPED)
def test_a_model_built_for_n_predicts_every_shorter_prompt(name, kw, mode):
    """Built for n = 6, run on prompts of k = 1..6 examples: within the per-prompt certificate
    of the extended-precision program value, and within 1e-8 (1 + |y_hat|) of the closed form
    for those k examples (the program-level proof is in iclkit.verify.symbolic)."""
    c = C.REGISTRY[name](2, 6, mode=mode, **kw)
    for k in range(1, 7):
        X, y, xq = sample_problems(2, k, 3, seed=k)
        pred, exact = c.predict(X, y, xq), closed_form(c, X, y, xq)
        assert np.all(np.abs(pred - c.reference(X, y, xq)) <= c.certify(X, y, xq))
        assert np.all(np.abs(pred - exact) <= 1e-8 * (1 + np.abs(exact))), (k, np.abs(pred - exact).max())
    with pytest.raises(ValueError, match=r"1 <= n' <= 6"):
        c.predict(*sample_problems(2, 7, 1, seed=0))


def test_corrupting_a_looped_block_corrupts_every_repeat():
    """The block is stored once: one changed entry moves every application of it, and the
    own-error check names an op of the block, not only the first copy."""
    import torch

    c = C.sgd(2, 8, lr=0.05)
    first, period, repeats = c.model.cfg.loop
    X, y, xq = sample_problems(2, 8, 2, seed=1)
    with torch.no_grad():
        c.model.layers[first].W_out.mul_(1 + 1e-6)
    ratios = c.own_error_ratios(X, y, xq)
    flagged = [int(key.split(":")[0]) for key, r in ratios.items() if r > 1]
    block_ops = [i for i, op in enumerate(c.compiled.program.ops)
                 if first <= c.compiled.placement[id(op)] < first + period * repeats]
    assert len(flagged) >= repeats - 1 and set(flagged) <= set(block_ops)


@pytest.mark.parametrize("mode", ["fused", "faithful"])
def test_stacked_ridge_has_a_finite_domain_wide_bound(mode):
    """The Sherman–Morrison certificate, relative in A's metric, is finite for stacked ridge
    (the generic per-op analysis is not: it multiplies A^-1's error by |A| every block),
    below 1e-2 at d = 4, n = 10, lam = 1, and no measured error exceeds it."""
    c = C.ridge(4, 10, lam=1.0, mode=mode)
    assert not np.isfinite(c.compiled.error_bounds["yhat"])
    assert np.isfinite(c.a_priori_bound) and c.a_priori_bound == c.contraction_bound < 1e-2
    X, y, xq = sample_problems(4, 10, 16, seed=17)
    err = np.abs(c.predict(X, y, xq, strict=False) - closed_form(c, X, y, xq))
    assert err.max() <= c.a_priori_bound and err.max() <= c.error_bound


def test_ridge_refuses_prompts_whose_iterates_leave_w_bound():
    """Constants are sized for ridge iterates |w_k| <= w_bound (default sqrt(d) + 6, what
    noiseless prompts with |w*| in the domain reach); a noisy prompt beyond it is refused by
    name, and a larger w_bound accepts it."""
    X, y, xq = sample_problems(2, 4, 1, seed=1)
    y = y + 40.0 * np.array([[1.0, -1.0, 1.0, -1.0]])
    with pytest.raises(BoundError, match=r"slot 'w' reaches"):
        C.ridge(2, 4, lam=0.1).predict(X, y, xq)
    wide = C.ridge(2, 4, lam=0.1, w_bound=200.0)
    assert abs(float(wide.predict(X, y, xq)[0]) - float(closed_form(wide, X, y, xq)[0])) <= wide.certify(X, y, xq)[0]


def test_stacked_sgd_at_the_papers_learning_rates_is_certified_or_refused():
    """d = 8, n = 40: at lr 0.1 the worst-case update expands (rho = 14.6 on |x| <= sqrt(8) + 6),
    so the domain also bounds a prompt's amplification (expansion_bound 100; N(0, I) prompts
    reach about 30): the a-priori domain-wide bound is finite and below 1e-1, and the prompts are
    within it and the 1e-8 target. At lr 0.2 exact SGD diverges: such prompts are refused."""
    c = C.sgd(8, 40, lr=0.1, lam=0.1)
    assert c.domain["expansion_bound"] == 100.0 and np.isfinite(c.a_priori_bound) and c.a_priori_bound < 1e-1
    X, y, xq = sample_problems(8, 40, 8, seed=21)
    exact = closed_form(c, X, y, xq)
    err = np.abs(c.predict(X, y, xq) - exact)
    assert err.max() <= c.a_priori_bound and (err / (1 + np.abs(exact))).max() <= 1e-8
    with pytest.raises(BoundError, match="amplify an error in w"):
        C.sgd(8, 40, lr=0.2, lam=0.1).predict(X, y, xq)


def test_where_the_a_priori_bound_misses_the_target_every_prediction_is_certified_as_it_runs():
    """Stacked ridge at lam = 0.001 (d = 1, n = 4, faithful) and float32 ridge at d = 1, n = 10
    have an infinite a-priori bound: predict certifies each prediction as it runs and refuses
    one whose certificate exceeds the accuracy target t (1 + |y_hat|), so error_bound is
    t (1 + |y_hat| bound). The clean model's prompts pass, within t (1 + |y_hat|) of the closed
    form; one output weight off by 1e-4 (1e-1 in float32) is refused by name. gd in float32 at
    d = 8, n = 40, whose prompts miss the 1e-3 target within their certificates, is refused.
    Where the a-priori bound meets the target (sgd, lr 0.01, d = 2, n = 1) nothing is guarded."""
    import torch

    from iclkit.constructions.base import ACCURACY
    from iclkit.primitives.compile import weight_digests

    for c, n in ((C.ridge(1, 4, lam=0.001, mode="faithful"), 4), (C.ridge(1, 10, lam=0.1, dtype="float32"), 10)):
        assert not np.isfinite(c.a_priori_bound) and c.guarded
        t = ACCURACY[c.model.cfg.dtype]
        assert c.error_bound == t * (1 + c.compiled.slot_bounds["yhat"])
        X, y, xq = sample_problems(c.d, n, 8, seed=4)
        pred, exact = c.predict(X, y, xq), closed_form(c, X, y, xq)
        assert np.all(np.abs(pred - exact) <= t * (1 + np.abs(exact)))
        with torch.no_grad():
            c.model.layers[-1].W_out.mul_(1 + (1e-4 if t < 1e-6 else 1e-1))
        with pytest.raises(ValueError, match="no longer the compiled one"):  # the weights' digest refuses first
            c.predict(X, y, xq)
        c.compiled.fingerprint = weight_digests(c.model)  # accept the edit: the certificate guard on its own
        assert np.any(c.certify(X, y, xq) > t / (1 + t) * (1 + np.abs(c.predict(X, y, xq, strict=False))))
        with pytest.raises(BoundError, match=r"certificate .* exceeds the accuracy target .* \(1 \+ \|y_hat\|\)"):
            c.predict(X, y, xq)
    c = C.gd(8, 40, lr=0.01, lam=0.1, dtype="float32")
    with pytest.raises(BoundError, match="accuracy target"):
        c.predict(*sample_problems(8, 40, 8, seed=0))
    c = C.sgd(2, 1, lr=0.01)
    assert not c.guarded and c.error_bound == c.a_priori_bound <= 1e-8


def test_the_guard_certifies_the_values_predict_returns():
    """The run-time guard's certificate is on predict's own values: certify(values=...) adds
    their distance from the certifying run's results (a batch of another size may round
    differently), so a value off by 1e-9 gets a bound 1e-9 larger."""
    from iclkit.primitives.certify import certify

    c = C.ridge(2, 2, lam=0.1)
    X, y, xq = sample_problems(2, 2, 3, seed=5)
    out = c.predict(X, y, xq)
    plain = certify(c.compiled, c.inputs(X, y, xq), "yhat")
    assert np.array_equal(certify(c.compiled, c.inputs(X, y, xq), "yhat", values=out), plain)
    shifted = certify(c.compiled, c.inputs(X, y, xq), "yhat", values=out + 1e-9)
    assert np.allclose(shifted - plain, 1e-9, rtol=1e-6, atol=0)


def test_a_batch_with_refused_prompts_keeps_the_accepted_predictions():
    """predict(on_refusal="nan") and predict_each: a prompt off the domain gets NaN and its
    reason; the others are exactly what predict returns for them alone."""
    c = C.sgd(2, 3, lr=0.01, lam=0.1)
    X, y, xq = sample_problems(2, 3, 4, seed=1)
    X[2, 0] *= 100.0  # |x| far beyond x_norm
    with pytest.raises(BoundError):
        c.predict(X, y, xq)
    values, reasons = c.predict_each(X, y, xq)
    assert np.isnan(values[2]) and "x_norm" in reasons[2]
    for b in (0, 1, 3):
        assert reasons[b] is None and values[b] == c.predict(X[b], y[b], xq[b])
    assert np.array_equal(c.predict(X, y, xq, on_refusal="nan"), values, equal_nan=True)
    with pytest.raises(ValueError, match="on_refusal must be"):
        c.predict(X, y, xq, on_refusal="skip")


def test_construction_load_rebuilds_a_saved_file(tmp_path):
    c = C.ridge(2, 3, lam=0.1, mode="faithful")
    c.save(tmp_path / "r.safetensors")
    loaded = C.Construction.load(tmp_path / "r.safetensors")
    X, y, xq = sample_problems(2, 3, 4, seed=2)
    assert loaded.name == "ridge" and loaded.mode == "faithful"
    assert np.array_equal(loaded.predict(X, y, xq), c.predict(X, y, xq))
