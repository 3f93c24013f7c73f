"""The paper's metrics (Sec. 4.2, Eqs. 15-17), per prefix length, with bootstrap intervals."""

from __future__ import annotations

import numpy as np


def spd_per_prompt(pred_a: np.ndarray, pred_b: np.ndarray) -> np.ndarray:
    """(A - B)^2 averaged over the queries: (B, n, K) -> (B, n), for bootstrapping over prompts."""
    return ((pred_a - pred_b) ** 2).mean(axis=2)


def spd(pred_a: np.ndarray, pred_b: np.ndarray) -> np.ndarray:
    """Squared prediction difference per prefix (Eq. 15): mean over prompts and queries of
    (A - B)^2. Inputs (B, n, K); returns (n,)."""
    return spd_per_prompt(pred_a, pred_b).mean(0)


def _linear_fits(queries: np.ndarray, preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of the predictions on [queries, 1] for each prompt and prefix:
    returns the coefficients (B, n, d+1) and the fitted values (B, n, K)."""
    B, n, K, d = queries.shape
    if K < d + 1:
        raise ValueError(f"fitting implicit weights needs at least d + 1 = {d + 1} queries per prefix, got {K}")
    design = np.concatenate([queries, np.ones((B, n, K, 1))], -1)
    coef = np.einsum("bnij,bnj->bni", np.linalg.pinv(design), preds)  # batched least squares
    return coef, np.einsum("bnkj,bnj->bnk", design, coef)


def implicit_weights(queries: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """w_hat per prompt and prefix: least squares of the predictions on the queries (Eq. 16),
    with an intercept as in the paper's code. (B,n,K,d), (B,n,K) -> (B,n,d)."""
    return _linear_fits(queries, preds)[0][..., :-1]


def ilwd_per_prompt(queries: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> np.ndarray:
    """|w_A - w_B|^2 per prompt and prefix, (B, n)."""
    wa, wb = implicit_weights(queries, pred_a), implicit_weights(queries, pred_b)
    return ((wa - wb) ** 2).sum(-1)


def ilwd(queries: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> np.ndarray:
    """Implicit linear weight difference per prefix (Eq. 17): mean over prompts of |w_A - w_B|^2."""
    return ilwd_per_prompt(queries, pred_a, pred_b).mean(0)


def mspd(spd_curve: np.ndarray, d: int) -> float:
    """SPD averaged over the under-determined prefixes 1 <= i < d."""
    return float(spd_curve[1:d].mean())


def r_squared(queries: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """R^2 of the linear fit (with intercept) to the predictions, per prefix (App. F)."""
    fitted = _linear_fits(queries, preds)[1]
    resid = ((preds - fitted) ** 2).sum(2)
    total = ((preds - preds.mean(2, keepdims=True)) ** 2).sum(2)
    return 1 - resid.sum(0) / np.maximum(total.sum(0), 1e-300)


def bootstrap(per_prompt: np.ndarray, samples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the mean over prompts (axis 0), per remaining index."""
    rng = np.random.default_rng(seed)
    B = per_prompt.shape[0]
    means = np.stack([per_prompt[rng.integers(0, B, B)].mean(0) for _ in range(samples)])
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi
