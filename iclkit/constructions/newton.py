"""Iterative Newton (Newton–Schulz) for least squares, and OLS through it, as looped transformers.

Fu et al. 2023's iteration on the prefix statistics S = X^T X, b = X^T y
(:mod:`iclkit.constructions.statistics`): ``M_0 = alpha S``, ``M_{j+1} = 2 M_j - M_j S M_j``,
``w = M_k b``. Each step is three ops, ``T = S M`` and ``U = M T`` (MLP products of d x d
matrices) and ``M <- 2 M - U``, the same for every j, so the compiler loops one step. With
the default ``alpha = 1 / (|S|_F^2 + 1)`` (:func:`iclkit.algorithms.newton_alpha`) the step
size is computed in the network: a dot product gives the divisor, a LayerNorm division
``S / (|S|_F^2 + 1)`` gives M_0, and the divisor is at least 1 in every column, BOS
included. ``I - M_j S = (I - alpha S^2)^(2^j)``: M_j's eigenvalues are
``m_j(lambda) = (1 - (1 - alpha lambda^2)^(2^j)) / lambda``, so ``|M_j|_2 <= 2^(j/2)`` (the
smaller of 1/lambda and 2^j alpha lambda <= 2^j lambda / (lambda^2 + 1)), the bound the
constants are sized for.

``ols`` is Newton run until the truncation ``|x_q . (w_k - w_OLS)|`` is below a tenth of the
accuracy target; a prompt too ill-conditioned for that within its steps is refused by name.
"""

from __future__ import annotations

import numpy as np

from iclkit import algorithms
from iclkit.algorithms import NEWTON_S0, check_steps
from iclkit.constructions.base import (ACCURACY, Construction, build, check_magnitude, check_param, check_sizes,
                                       domain_params, is_symbolic)
from iclkit.constructions.statistics import sufficient_statistics
from iclkit.primitives import BoundError, Program, aff, div, dot, mul


def newton_program(d: int, n: int, *, steps: int, alpha, x_norm: float, y_bound: float, name: str,
                   symbolic: bool = False) -> Program:
    """The prologue (S, b, M_0), ``steps`` identical Newton steps, then ``w = M b`` and ``x_q . w``.
    ``alpha`` None: the data-dependent default; else a constant."""
    stats = sufficient_statistics(d, n, None if symbolic else x_norm, None if symbolic else y_bound)
    X, Y = x_norm, y_bound
    if symbolic:
        M_bound = T_bound = den_bound = w_bound = None
    else:
        lam_max = n * X * X  # |S|_2 <= sum |x_i|^2
        if alpha is None:  # |M_j|_2 <= 2^(j/2) (module docstring); M_0 = S / (|S|_F^2 + 1) has |M_0| <= 1/2
            M_bound = max(0.5, 2 ** (steps / 2))
            T_bound = 1.0  # S M_j has eigenvalues 1 - (1 - alpha lambda^2)^(2^j) in [0, 1]
        else:  # alpha lambda^2 < 2 (the guard checks it): m_j <= min(2 / lambda, 2^j alpha lambda) <= sqrt(2^(j+1) alpha)
            M_bound = max(alpha * lam_max, np.sqrt(2 ** (steps + 1) * alpha))
            T_bound = 2.0
        den_bound = lam_max**2 + NEWTON_S0
        w_bound = M_bound * n * X * Y
    slots = {"y": (), "x": (d,)} | stats.slots | {"M": (d, d), "T": (d, d), "U": (d, d), "w": (d,), "yhat": ()}
    steps_: list = list(stats.steps)
    if alpha is None:
        slots["den"] = ()
        steps_ += [dot("den", "S", "S", d * d, bias=NEWTON_S0, bound=den_bound),  # |S|_F^2 + 1
                   div("M", "S", "den", den_min=NEWTON_S0, bound=None if symbolic else 0.5)]  # M_0 = alpha S
    else:
        steps_.append(aff("M", ("S", alpha), bound=M_bound))
    regions = {"prologue": (0, len(steps_))}
    for j in range(1, steps + 1):
        regions[f"step {j}"] = (len(steps_), len(steps_) + 3)
        steps_ += [mul("T", "S", "M", (d, d, d), bound=T_bound),
                   mul("U", "M", "T", (d, d, d), bound=M_bound),  # M S M: eigenvalues m (lambda m) <= m
                   aff("M", ("M", 2.0), ("U", -1.0), bound=M_bound)]
    regions["prediction"] = (len(steps_), len(steps_) + 2)
    steps_ += [mul("w", "M", "b", (d, d, 1), bound=w_bound),
               dot("yhat", "w", "x", d, bound=None if symbolic else w_bound * X)]
    return Program(slots, {"y": Y, "x": X}, steps_, name=name, regions=regions)


def check_alpha(alpha) -> float | None:
    return None if alpha is None else check_magnitude("alpha", check_param("alpha", alpha))


def newton(d: int, n: int, *, steps: int = 1, alpha: float | None = None, x_norm: float | None = None,
           y_bound: float | None = None, dtype: str = "float64", mode: str = "fused",
           levels: int | None = None) -> Construction:
    """A transformer running ``steps`` iterations of Newton's method for least squares on its
    n in-context examples. Matches :func:`iclkit.algorithms.newton`. A constant ``alpha``
    diverges on a prompt with ``alpha lambda_max(X^T X)^2 >= 2``: such a prompt is refused."""
    check_sizes(d, n)
    steps, alpha = check_steps(steps, least=0), check_alpha(alpha)
    x_norm, y_bound = domain_params(d, x_norm, y_bound)
    program = newton_program(d, n, steps=steps, alpha=alpha, x_norm=x_norm, y_bound=y_bound,
                             name=f"newton(d={d}, n={n}, steps={steps})")
    c = build("newton", program, d=d, n=n, params={"steps": steps, "alpha": alpha}, x_norm=x_norm, y_bound=y_bound,
              dtype=dtype, mode=mode, levels=levels)
    if alpha is not None:
        c.prompt_check = lambda X, y, xq: check_newton_alpha(alpha, X)
    return c


def check_newton_alpha(alpha: float, X: np.ndarray) -> None:
    """Refuse prompts (X of shape (batch, n, d)) on which Newton with this constant alpha diverges."""
    top = np.linalg.eigvalsh(np.einsum("bni,bnj->bij", X, X))[:, -1]
    worst = int(np.argmax(alpha * top**2))
    if alpha * top[worst] ** 2 >= 2:
        raise BoundError(f"prompt {worst}: alpha lambda_max(X^T X)^2 = {alpha * top[worst] ** 2:.4g} >= 2, where "
                         "Newton's iteration diverges (a smaller alpha, or alpha=None for the default that converges "
                         "on every prompt)")


DEFAULT_OLS_STEPS = 12  # (1 - alpha lambda_min^2)^(2^12) < 1e-11 while |S|_F^2 / lambda_min^2 <= 150


def ols(d: int, n: int, *, steps: int = DEFAULT_OLS_STEPS, x_norm: float | None = None, y_bound: float | None = None,
        dtype: str = "float64", mode: str = "fused", levels: int | None = None) -> Construction:
    """A transformer computing the minimum-norm least-squares prediction (the paper's OLS) on
    its n in-context examples: :func:`newton` with ``steps`` iterations and the default
    alpha. Matches :func:`iclkit.algorithms.ols` to the accuracy target, or refuses the prompt:
    the guard computes X^T X's eigenvalues and refuses a prompt whose Newton truncation bound
    ``|x_q| |w_OLS| max (1 - alpha lambda^2)^(2^steps)`` (over the nonzero eigenvalues
    lambda of X^T X, as lstsq counts them) exceeds a tenth of the target ``t (1 + |y_hat|)``;
    the run-time certificate must then stay within the other nine tenths."""
    check_sizes(d, n)
    steps = check_steps(steps)
    x_norm, y_bound = domain_params(d, x_norm, y_bound)
    program = newton_program(d, n, steps=steps, alpha=None, x_norm=x_norm, y_bound=y_bound,
                             name=f"ols(d={d}, n={n}, newton steps={steps})")
    c = build("ols", program, d=d, n=n, params={"steps": steps}, x_norm=x_norm, y_bound=y_bound, dtype=dtype,
              mode=mode, levels=levels)
    c.closed_form = lambda X, y, xq: xq @ algorithms.ols(X, y)  # the target; Newton's steps are how it gets there
    c.prompt_check = lambda X, y, xq: check_ols_truncation(X, y, xq, steps, ACCURACY[dtype] * TRUNCATION_SHARE)
    c.rounding_share = 1 - TRUNCATION_SHARE  # the run-time certificate gets the rest of the target
    return c


TRUNCATION_SHARE = 0.1  # ols: the share of the accuracy target left to Newton's truncation


def newton_truncation(X: np.ndarray, y: np.ndarray, xq: np.ndarray, steps: int) -> tuple[float, float, float]:
    """For one prompt: (the bound ``|x_q| |w_OLS| max_i (1 - alpha lambda_i^2)^(2^steps)`` on
    |x_q . (w_Newton - w_OLS)|, over the nonzero eigenvalues lambda_i = sigma_i^2 of X^T X,
    sigma_i the singular values of X that ``lstsq`` counts in its rank; the condition
    ``|S|_F^2 / lambda_r^2`` of the smallest; OLS's prediction x_q . w_OLS). Both methods leave
    X's null space at 0; a singular value just above lstsq's cutoff makes the bound large, and
    the prompt refused."""
    w, _, rank, sigma = np.linalg.lstsq(X, y, rcond=None)  # lstsq's own rank: the singular values it inverts
    if rank == 0:  # X = 0: OLS and Newton both predict 0
        return 0.0, 1.0, 0.0
    lam = sigma[:rank] ** 2  # the nonzero eigenvalues of X^T X; the null space is Newton's and OLS's alike
    alpha = algorithms.newton_alpha(X)
    contraction = float(np.max((1 - alpha * lam**2) ** (2**steps)))
    bound = float(np.linalg.norm(xq) * np.linalg.norm(w) * contraction)
    return bound, float((1 / alpha - NEWTON_S0) / lam[-1] ** 2), float(xq @ w)


def check_ols_truncation(X, y, xq, steps: int, allowed: float) -> None:
    """Refuse a prompt (batched X, y, xq) whose Newton truncation exceeds ``allowed (1 + |y_hat|)``."""
    for b in range(X.shape[0]):
        bound, cond, yhat = newton_truncation(X[b], y[b], xq[b], steps)
        if not bound <= allowed * (1 + abs(yhat)):
            raise BoundError(f"prompt {b}: too ill-conditioned for {steps} Newton steps (|X^T X|_F^2 / lambda_min^2 = "
                             f"{cond:.4g}; truncation bound {bound:.3g} > {allowed:g} (1 + |y_hat|)): OLS would not be "
                             "met to the accuracy target (more steps, or a better-conditioned prompt)")
