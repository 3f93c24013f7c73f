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
    (lambda: A.pgd(np.ones((2, 2)), np.ones(2), lr=0.1, P=np.eye(3)), "P must be a 2 x 2 matrix"),
    (lambda: A.pgd(np.ones((2, 2)), np.ones(2), lr=0.1, P=[[np.nan, 0], [0, 1]]), "P must be finite"),
    (lambda: A.pgd(np.ones((2, 2)), np.ones(2), lr=0.0, P=np.eye(2)), "lr must be finite and > 0"),
    (lambda: A.pgd(np.ones((2, 2)), np.ones(2), lr=0.1, P=np.eye(2), steps=0), "steps must be an integer >= 1"),
    (lambda: A.newton(np.ones((2, 2)), np.ones(2), steps=-1), "steps must be an integer >= 0"),
    (lambda: A.newton(np.ones((2, 2)), np.ones(2), alpha=0.0), "alpha must be finite and > 0"),
    (lambda: A.lasso(np.ones((2, 2)), np.ones(2), lr=0.1, l1=-1.0), "l1 must be finite and >= 0"),
    (lambda: A.lasso(np.ones((2, 2)), np.ones(2), lr=0.1, l1=1.0, steps=True), "steps must be an integer"),
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


def test_pgd_one_step_by_hand_and_identity_preconditioner_is_gd():
    X, y = np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([1.0, 2.0])
    P = np.array([[2.0, 0.0], [1.0, 1.0]])
    # w0 = 0: the gradient is -2 X^T y = -2 (1, 4); w = -2 lr P (-(1, 4)) = 2 lr P (1, 4)
    np.testing.assert_allclose(A.pgd(X, y, lr=0.1, P=P), 0.2 * np.array([2.0, 5.0]))
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((6, 3)), rng.standard_normal(6)
    np.testing.assert_allclose(A.pgd(X, y, lr=0.02, P=np.eye(3), steps=4), A.gd(X, y, lr=0.02, steps=4), rtol=1e-14)


def test_newton_squares_the_residual_and_reaches_ols():
    """``I - M_j S = (I - alpha S^2)^(2^j)`` (Newton–Schulz), checked through w = M_j b by
    recomputing M_j from the eigen-decomposition of S; many steps reach lstsq."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((7, 3)), rng.standard_normal(7)
    S, b = X.T @ X, X.T @ y
    lam, V = np.linalg.eigh(S)
    alpha = A.newton_alpha(X)
    assert alpha == pytest.approx(1 / (np.sum(lam**2) + 1.0))
    assert 0 < alpha * lam.max() ** 2 < 1
    for j in range(4):
        m = (1 - (1 - alpha * lam**2) ** (2**j)) / lam  # M_j's eigenvalues
        np.testing.assert_allclose(A.newton(X, y, steps=j), V @ (m * (V.T @ b)), rtol=1e-10)
    np.testing.assert_allclose(A.newton(X, y, steps=40), A.ols(X, y), rtol=1e-9)
    X2 = rng.standard_normal((2, 4))  # underdetermined: the min-norm solution
    np.testing.assert_allclose(A.newton(X2, X2 @ np.ones(4), steps=40), A.ols(X2, X2 @ np.ones(4)), rtol=1e-9)


def test_lasso_soft_thresholds_and_converges_to_the_kkt_point():
    np.testing.assert_array_equal(A.soft_threshold([3.0, -0.5, -2.0, 0.25], 1.0), [2.0, 0.0, -1.0, 0.0])
    rng = np.random.default_rng(4)
    X, w = rng.standard_normal((20, 4)), np.array([2.0, 0.0, -1.0, 0.0])
    y = X @ w + 0.1 * rng.standard_normal(20)
    np.testing.assert_allclose(A.lasso(X, y, lr=0.01, l1=0.0, steps=3), A.gd(X, y, lr=0.01, steps=3), rtol=1e-14)
    l1 = 5.0
    w_hat = A.lasso(X, y, lr=0.005, l1=l1, steps=5000)
    g = 2 * X.T @ (X @ w_hat - y)  # KKT: g_i = -l1 sign(w_i) where w_i != 0, |g_i| <= l1 where w_i = 0
    active = w_hat != 0
    np.testing.assert_allclose(g[active], -l1 * np.sign(w_hat[active]), atol=1e-8)
    assert np.all(np.abs(g[~active]) <= l1) and (~active).any()
