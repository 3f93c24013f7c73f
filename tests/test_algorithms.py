import numpy as np
import pytest

from iclkit import algorithms as A


def test_sgd_one_example_is_the_paper_update():
    x, y, w0 = np.array([1.0, 2.0]), 3.0, np.array([0.5, -1.0])
    w = A.sgd(x[None], np.array([y]), lr=0.1, lam=0.2, w0=w0)
    # Eq. 11 by hand: w - 2 lr ((w.x - y) x + lam w) with w.x = -1.5
    np.testing.assert_allclose(w, w0 - 0.2 * ((-1.5 - 3.0) * x + 0.2 * w0))


def test_gd_zero_steps_and_ridge_normal_equations():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((5, 3)), rng.standard_normal(5)
    np.testing.assert_array_equal(A.gd(X, y, lr=0.1, steps=0), np.zeros(3))
    w = A.ridge(X, y, lam=0.5)
    np.testing.assert_allclose(X.T @ (X @ w - y) + 0.5 * w, 0, atol=1e-12)
    np.testing.assert_allclose(A.bayes(X, y, noise_var=1.0, prior_var=2.0), w)


def test_ols_is_minimum_norm_when_underdetermined():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((2, 4)), rng.standard_normal(2)
    w = A.ols(X, y)
    np.testing.assert_allclose(X @ w, y, atol=1e-12)
    np.testing.assert_allclose(w, np.linalg.pinv(X) @ y, atol=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda: A.ridge(np.ones((2, 2)), np.ones(2), lam=0.0), "lam must be finite and > 0"),
    (lambda: A.ridge(np.ones((2, 2)), np.ones(2), lam=np.inf), "lam must be finite"),
    (lambda: A.sgd(np.ones((2, 2)), np.ones(2), lr=-1.0), "lr must be finite and > 0"),
    (lambda: A.sgd(np.ones((2, 2)), np.ones(2), lr=0.1, lam=np.nan), "lam must be finite and >= 0"),
    (lambda: A.sgd(np.ones((2, 2)), np.ones(2), lr=0.1, w0=[np.nan, 0.0]), "w0 must be finite"),
    (lambda: A.gd(np.ones((2, 2)), np.ones(2), lr=0.1, steps=1.5), "steps must be an integer"),
    (lambda: A.gd(np.ones((2, 2)), np.ones(2), lr=np.inf), "lr must be finite"),
    (lambda: A.bayes(np.ones((2, 2)), np.ones(2), noise_var=-1.0, prior_var=1.0), "noise_var must be finite"),
    (lambda: A.sgd(np.ones((2, 2)), np.ones(3), lr=0.1), "y must have shape"),
    (lambda: A.gd(np.ones(2), np.ones(2), lr=0.1), "X must have shape"),
    (lambda: A.ols(np.array([[np.nan]]), np.ones(1)), "finite"),
    (lambda: A.sgd(np.ones((2, 2)), np.ones(2), lr=0.1, w0=np.ones(3)), "w0 must have shape"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_sgd_expansion_is_the_largest_product_of_update_maps():
    """By hand: x = (5, 0), lr 0.1 gives M = diag(1 - 2*0.1*25, 1) = diag(-4, 1); two such
    steps amplify by 16; x = (3, 0) gives diag(-0.8, 1), norm 1, the empty product's value."""
    from iclkit.algorithms import sgd_expansion

    assert sgd_expansion(np.array([[5.0, 0.0]]), lr=0.1) == pytest.approx(4.0)
    assert sgd_expansion(np.array([[5.0, 0.0], [5.0, 0.0]]), lr=0.1) == pytest.approx(16.0)
    assert sgd_expansion(np.array([[3.0, 0.0], [3.0, 0.0]]), lr=0.1) == pytest.approx(1.0)
    batch = sgd_expansion(np.array([[[5.0, 0.0]], [[3.0, 0.0]]]), lr=0.1)
    assert batch.shape == (2,) and batch == pytest.approx([4.0, 1.0])
    with pytest.raises(ValueError, match="lr"):
        sgd_expansion(np.ones((2, 2)), lr=-0.1)
