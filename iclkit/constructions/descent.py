"""k steps of full-batch (preconditioned) gradient descent over the whole context, as a looped transformer.

``w <- shrink w - C (S w - b)`` on the prefix statistics S = X^T X, b = X^T y
(:mod:`iclkit.constructions.statistics`): ``gd`` with ``steps > 1`` has shrink = 1 - 2 lr lam
and C = 2 lr I (von Oswald et al. 2023: one layer per step); ``pgd`` has shrink = 1 and
C = 2 lr P (Ahn et al. 2023); ``lasso`` ends each step in the l1 proximal map (ISTA, Bai et al. 2023),
``w <- soft_threshold(w - 2 lr (S w - b), lr l1)``. Each gradient step is the same two ops, ``Sw = S w`` (an MLP product)
and the update (attention-side), so the compiler stores one step's layer and loops it; the
proof holds for every k by induction over the loop.
"""

from __future__ import annotations

import numpy as np

from iclkit.algorithms import check_preconditioner, check_steps
from iclkit.constructions.base import (Construction, build, check_magnitude, check_param, default_x_norm, is_symbolic,
                                       step_params)
from iclkit.constructions.statistics import sufficient_statistics
from iclkit.primitives import Program, aff, dot, mul, soft_threshold


def default_w_bound(d: int, n: int, steps: int, shrink: float, C: np.ndarray, w0: np.ndarray, X: float, Y: float) -> float:
    """The bound on the iterates |w_j| (Euclidean) the constants are sized for: the worst case
    over the domain where that is smaller, else what noiseless prompts ``y = w*.x`` reach when
    the step contracts (``|w_j - w*|`` cannot grow by more than the preconditioner's condition
    number's square root): ``sqrt(cond C) (|w0| + 2 (sqrt(d) + 6))``. The run-time guard refuses
    a prompt whose exact iterates exceed it."""
    S_norm, C_norm = n * X * X, float(np.linalg.norm(C, 2))
    rho = abs(shrink) + C_norm * S_norm
    if np.allclose(C, C[0, 0] * np.eye(d)):  # C = c I: |shrink I - c S| over 0 <= S <= n X^2
        rho = max(abs(shrink), abs(shrink - C[0, 0] * S_norm))
    worst = W = float(np.linalg.norm(w0))
    for _ in range(steps):
        W = rho * W + C_norm * n * X * Y
        worst = max(worst, W)
    kappa = float(np.linalg.cond(C))
    typical = np.sqrt(kappa) * (float(np.linalg.norm(w0)) + 2 * default_x_norm(d)) if np.isfinite(kappa) else np.inf
    return max(min(worst, typical), 1.0)  # C = 0 and w0 = 0 leave w at 0: a bound must be positive (a larger one is sound)


def descent_program(d: int, n: int, *, steps: int, shrink, C, w0, x_norm: float, y_bound: float, w_bound: float | None,
                    name: str, tau=None) -> Program:
    """The prologue (S, b, w = w0), ``steps`` identical steps, and the prediction ``x_q . w``;
    with ``tau`` each step ends in the l1 proximal map (ISTA): ``w <- soft_threshold(v, tau)``
    of the gradient step v."""
    symbolic = is_symbolic(shrink, C, w0)
    stats = sufficient_statistics(d, n, None if symbolic else x_norm, None if symbolic else y_bound)
    W = None if symbolic else w_bound
    Sw_bound = None if symbolic else n * x_norm**2 * W  # |S w| <= |S|_2 |w| <= n X^2 W
    slots = {"y": (), "x": (d,)} | stats.slots | {"w": (d,), "Sw": (d,), "yhat": ()}
    steps_ = [*stats.steps, aff("w", bias=w0, bound=W)]
    regions = {"prologue": (0, len(steps_))}
    for j in range(1, steps + 1):
        step = [mul("Sw", "S", "w", (d, d, 1), bound=Sw_bound)]
        if tau is None:
            step.append(aff("w", ("w", shrink), ("Sw", -C), ("b", C), bound=W))
        else:  # the gradient step into v (bounded like the iterates), then the proximal map
            slots["v"] = (d,)
            step += [aff("v", ("w", shrink), ("Sw", -C), ("b", C), bound=W), soft_threshold("w", "v", tau, bound=W)]
        regions[f"step {j}"] = (len(steps_), len(steps_) + len(step))
        steps_ += step
    regions["prediction"] = (len(steps_), len(steps_) + 1)
    steps_.append(dot("yhat", "w", "x", d, bound=None if symbolic else W * x_norm))
    return Program(slots, {"y": y_bound, "x": x_norm}, steps_, name=name, regions=regions)


def check_w_bound(w_bound) -> float:
    return check_magnitude("w_bound", check_param("w_bound", w_bound))


def gd_steps(d: int, n: int, *, lr: float, lam: float, w0, steps: int, x_norm, y_bound, w_bound, dtype: str,
             mode: str, levels: int | None) -> Construction:
    """:func:`iclkit.constructions.gd` for ``steps != 1``: the looped descent program with
    shrink = 1 - 2 lr lam and C = 2 lr I."""
    w0, x_norm, y_bound = step_params("gd", d, n, lr, lam, w0, x_norm, y_bound)
    shrink, C = 1 - 2 * lr * lam, 2 * lr * np.eye(d)
    W = default_w_bound(d, n, steps, shrink, C, w0, x_norm, y_bound) if w_bound is None else check_w_bound(w_bound)
    program = descent_program(d, n, steps=steps, shrink=shrink, C=C, w0=w0, x_norm=x_norm, y_bound=y_bound,
                              w_bound=W, name=f"gd(d={d}, n={n}, steps={steps})")
    return build("gd", program, d=d, n=n, params={"lr": lr, "lam": lam, "w0": w0, "steps": steps}, x_norm=x_norm,
                 y_bound=y_bound, dtype=dtype, mode=mode, levels=levels, domain={"w_bound": W})


def pgd(d: int, n: int, *, lr: float, P, steps: int = 1, w0=None, x_norm: float | None = None,
        y_bound: float | None = None, w_bound: float | None = None, dtype: str = "float64", mode: str = "fused",
        levels: int | None = None) -> Construction:
    """A transformer taking ``steps`` preconditioned full-batch GD steps on its n in-context
    examples, ``w <- w - 2 lr P (X^T X w - X^T y)``. Matches :func:`iclkit.algorithms.pgd`.
    ``w_bound`` bounds the iterates (default :func:`default_w_bound`; a prompt whose exact
    iterates exceed it is refused)."""
    steps = check_steps(steps)
    w0, x_norm, y_bound = step_params("pgd", d, n, lr, 0.0, w0, x_norm, y_bound)
    P = check_preconditioner(P, d)
    check_magnitude("|P|", float(np.abs(P).max()) if np.abs(P).max() <= 1e30 else float("inf"))
    C = 2 * lr * P
    W = default_w_bound(d, n, steps, 1.0, C, w0, x_norm, y_bound) if w_bound is None else check_w_bound(w_bound)
    program = descent_program(d, n, steps=steps, shrink=1.0, C=C, w0=w0, x_norm=x_norm, y_bound=y_bound, w_bound=W,
                              name=f"pgd(d={d}, n={n}, steps={steps})")
    return build("pgd", program, d=d, n=n, params={"lr": lr, "P": P, "steps": steps, "w0": w0}, x_norm=x_norm,
                 y_bound=y_bound, dtype=dtype, mode=mode, levels=levels, domain={"w_bound": W})


def lasso(d: int, n: int, *, lr: float, l1: float, steps: int = 1, w0=None, x_norm: float | None = None,
          y_bound: float | None = None, w_bound: float | None = None, dtype: str = "float64", mode: str = "fused",
          levels: int | None = None) -> Construction:
    """A transformer running ``steps`` iterations of ISTA (proximal GD) for the Lasso
    ``|Xw - y|^2 + l1 |w|_1`` on its n in-context examples: a GD step, then the soft
    threshold at ``lr l1`` (a hinge op, :func:`iclkit.primitives.soft_threshold`). Matches
    :func:`iclkit.algorithms.lasso`. ``w_bound`` bounds the iterates and the gradient steps
    (default :func:`default_w_bound`: the proximal map is non-expansive); a prompt whose exact
    values exceed it is refused."""
    steps = check_steps(steps)
    w0, x_norm, y_bound = step_params("lasso", d, n, lr, 0.0, w0, x_norm, y_bound)
    check_magnitude("l1", check_param("l1", l1, zero_ok=True))
    C = 2 * lr * np.eye(d)
    W = default_w_bound(d, n, steps, 1.0, C, w0, x_norm, y_bound) if w_bound is None else check_w_bound(w_bound)
    program = descent_program(d, n, steps=steps, shrink=1.0, C=C, w0=w0, x_norm=x_norm, y_bound=y_bound, w_bound=W,
                              name=f"lasso(d={d}, n={n}, steps={steps})", tau=lr * l1)
    return build("lasso", program, d=d, n=n, params={"lr": lr, "l1": l1, "steps": steps, "w0": w0}, x_norm=x_norm,
                 y_bound=y_bound, dtype=dtype, mode=mode, levels=levels, domain={"w_bound": W})
