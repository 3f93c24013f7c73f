"""The learning algorithms in closed form (numpy): the ground truth every construction is held to.

X has shape (n, d), y shape (n,). Each function returns the weight vector w; the prediction
for a query x_q is ``x_q @ w``. The loss is the paper's ``(w.x - y)^2 + lam |w|^2`` (Eq. 11).
"""

from __future__ import annotations

import numpy as np


def _check(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, d), got {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},) to match X {X.shape}, got {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("X and y must be finite (found NaN or inf)")
    return X, y


def check_param(name: str, value, zero_ok: bool = False) -> float:
    """A finite real number > 0 (or >= 0 with ``zero_ok``): else ``ValueError`` naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"{name} must be finite and {'>= 0' if zero_ok else '> 0'}, got {value}")
    return value


def check_w0(w0, d: int) -> np.ndarray:
    """The starting weights as a float array of shape (d,) (zeros when None); real and finite."""
    if w0 is None:
        return np.zeros(d)
    w0 = np.asarray(w0)
    if w0.dtype == bool or np.iscomplexobj(w0) or not np.issubdtype(w0.dtype, np.number):
        raise ValueError(f"w0 must hold real numbers, got an array of {w0.dtype}")
    if w0.shape != (d,):
        raise ValueError(f"w0 must have shape ({d},), got {w0.shape}")
    if not np.all(np.isfinite(w0)):
        raise ValueError(f"w0 must be finite, got {w0}")
    return w0.astype(float)


def sgd(X, y, *, lr: float, lam: float = 0.0, w0=None) -> np.ndarray:
    """One pass of SGD, one step per example in order (Theorem 1 stacked):
    ``w_k = w_{k-1} - 2 lr ((w_{k-1}.x_k - y_k) x_k + lam w_{k-1})``."""
    X, y = _check(X, y)
    lr, lam = check_param("lr", lr), check_param("lam", lam, zero_ok=True)
    w = check_w0(w0, X.shape[1])
    for x_k, y_k in zip(X, y):
        w = w - 2 * lr * ((w @ x_k - y_k) * x_k + lam * w)
    return w


def sgd_expansion(X, *, lr: float, lam: float = 0.0) -> np.ndarray:
    """How much one pass of SGD over X can amplify a perturbation of an iterate:
    ``max over j <= k of |M_k ... M_j|_2`` (1 for the empty product), with the update's linear
    part ``M_i = I - 2 lr (x_i x_i^T + lam I)``. X is (n, d) or (batch, n, d); one value per prompt."""
    X = np.asarray(X, dtype=float)
    single = X.ndim == 2
    X = X[None] if single else X
    lr, lam = check_param("lr", lr), check_param("lam", lam, zero_ok=True)
    B, n, d = X.shape
    M = np.eye(d) - 2 * lr * (X[..., :, None] * X[..., None, :] + lam * np.eye(d))
    worst = np.ones(B)
    for j in range(n):
        product = np.broadcast_to(np.eye(d), (B, d, d))
        for k in range(j, n):
            product = M[:, k] @ product
            worst = np.maximum(worst, np.linalg.norm(product, ord=2, axis=(1, 2)))
    return worst[0] if single else worst


def gd(X, y, *, lr: float, lam: float = 0.0, w0=None, steps: int = 1) -> np.ndarray:
    """Full-batch gradient descent: ``w <- w - 2 lr (X^T X w - X^T y + lam w)``, ``steps`` times."""
    X, y = _check(X, y)
    lr, lam = check_param("lr", lr), check_param("lam", lam, zero_ok=True)
    steps = check_steps(steps, least=0)
    w = check_w0(w0, X.shape[1])
    for _ in range(steps):
        w = w - 2 * lr * (X.T @ (X @ w) - X.T @ y + lam * w)
    return w


def check_steps(steps, least: int = 1) -> int:
    """An iteration count: an integer >= ``least``, else ``ValueError`` naming it."""
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)) or steps < least:
        raise ValueError(f"steps must be an integer >= {least}, got {steps!r}")
    return int(steps)


def check_preconditioner(P, d: int) -> np.ndarray:
    """A real, finite d x d matrix, else ``ValueError`` naming what is wrong."""
    P = np.asarray(P)
    if P.dtype == bool or np.iscomplexobj(P) or not np.issubdtype(P.dtype, np.number):
        raise ValueError(f"P must hold real numbers, got an array of {P.dtype}")
    if P.shape != (d, d):
        raise ValueError(f"P must be a {d} x {d} matrix (d x d), got shape {P.shape}")
    if not np.all(np.isfinite(P)):
        raise ValueError("P must be finite (found NaN or inf)")
    return P.astype(float)


def pgd(X, y, *, lr: float, P, steps: int = 1, w0=None) -> np.ndarray:
    """Preconditioned full-batch GD with a fixed d x d preconditioner P (Ahn et al. 2023):
    ``w <- w - 2 lr P (X^T X w - X^T y)``, ``steps`` times; P = I is :func:`gd` with lam = 0."""
    X, y = _check(X, y)
    lr, steps = check_param("lr", lr), check_steps(steps)
    P, w = check_preconditioner(P, X.shape[1]), check_w0(w0, X.shape[1])
    for _ in range(steps):
        w = w - 2 * lr * P @ (X.T @ (X @ w) - X.T @ y)
    return w


NEWTON_S0 = 1.0  # alpha = 1 / (|X^T X|_F^2 + NEWTON_S0): finite for every prompt, X = 0 included


def newton_alpha(X) -> float:
    """The default step ``alpha = 1 / (|S|_F^2 + 1)``, S = X^T X. It makes Newton converge on
    every prompt: the eigenvalues of ``alpha S^2`` lie in [0, 1) since |S|_2 <= |S|_F (Fu et
    al.'s ``2 / |S S^T|_2`` puts S's top eigenvalue at exactly -1 in ``I - alpha S^2``, where the
    iteration stalls)."""
    S = np.asarray(X, dtype=float).T @ np.asarray(X, dtype=float)
    return 1.0 / (float(np.sum(S * S)) + NEWTON_S0)


def newton(X, y, *, steps: int = 1, alpha: float | None = None) -> np.ndarray:
    """Iterative Newton (Newton–Schulz) for least squares, Fu et al. 2023's definition:
    ``M_0 = alpha S``, ``M_{j+1} = 2 M_j - M_j S M_j``, ``w = M_steps X^T y``, S = X^T X;
    ``alpha`` defaults to :func:`newton_alpha`. ``I - M_j S = (I - alpha S^2)^(2^j)``, so w
    tends to the min-norm least-squares solution (:func:`ols`) wherever
    ``alpha lambda_max(S)^2 < 2``; steps = 0 is ``M_0``."""
    X, y = _check(X, y)
    steps = check_steps(steps, least=0)
    alpha = newton_alpha(X) if alpha is None else check_param("alpha", alpha)
    S = X.T @ X
    M = alpha * S
    for _ in range(steps):
        M = 2 * M - M @ S @ M
    return M @ (X.T @ y)


def soft_threshold(v, tau: float) -> np.ndarray:
    """The l1 proximal map ``sign(v) max(|v| - tau, 0)``, entrywise."""
    v = np.asarray(v, dtype=float)
    return np.sign(v) * np.maximum(np.abs(v) - tau, 0.0)


def lasso(X, y, *, lr: float, l1: float, steps: int = 1, w0=None) -> np.ndarray:
    """ISTA (proximal gradient) for the Lasso ``|Xw - y|^2 + l1 |w|_1`` (Bai et al. 2023):
    ``w <- soft_threshold(w - 2 lr (X^T X w - X^T y), lr l1)``, ``steps`` times."""
    X, y = _check(X, y)
    lr, l1, steps = check_param("lr", lr), check_param("l1", l1, zero_ok=True), check_steps(steps)
    w = check_w0(w0, X.shape[1])
    for _ in range(steps):
        w = soft_threshold(w - 2 * lr * (X.T @ (X @ w) - X.T @ y), lr * l1)
    return w


def ridge(X, y, *, lam: float) -> np.ndarray:
    """Ridge regression ``(X^T X + lam I)^-1 X^T y`` (Theorem 2 stacked, Sherman–Morrison)."""
    X, y = _check(X, y)
    lam = check_param("lam", lam)
    return np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ y)


def ols(X, y) -> np.ndarray:
    """Minimum-norm least squares (the lam -> 0 limit of ridge)."""
    X, y = _check(X, y)
    return np.linalg.lstsq(X, y, rcond=None)[0]


def bayes(X, y, *, noise_var: float, prior_var: float) -> np.ndarray:
    """Posterior mean for ``w ~ N(0, prior_var I)``, ``y = w.x + N(0, noise_var)``: ridge with
    ``lam = noise_var / prior_var`` (Eqs. 18–19)."""
    noise_var, prior_var = check_param("noise_var", noise_var), check_param("prior_var", prior_var)
    return ridge(X, y, lam=noise_var / prior_var)
