"""One full-batch gradient-descent step over the whole context, as a transformer.

``w = w0 - 2 lr (sum_i (w0.x_i - y_i) x_i + lam w0)``: every y column computes its own
example's gradient term, causal uniform attention averages them over columns 0..t (BOS and
x columns contribute 0), and a product with the column count t+1 turns the mean into the
sum. Every x column thus predicts with GD over the examples before it; the query column
uses all n.
"""

from __future__ import annotations

import numpy as np

from iclkit.algorithms import check_steps
from iclkit.constructions.base import Construction, build, is_symbolic, step_params
from iclkit.primitives import Mean, Program, aff, dot, mov, mul


def gd_program(d: int, n: int, *, lr: float, lam: float, w0: np.ndarray, x_norm: float, y_bound: float) -> Program:
    X, Y = x_norm, y_bound
    if is_symbolic(lr, lam, w0):  # a proof: no numeric bounds
        b_err = b_g = B_w = None
        G_bound = yhat_bound = None
    else:
        W0 = float(np.linalg.norm(w0))
        b_err = W0 * X + Y
        b_g = X * b_err
        B_w = W0 + 2 * lr * (n * b_g + lam * W0)
        G_bound, yhat_bound = n * b_g, np.sqrt(d) * B_w * X
    T_max = 2 * n + 1  # the pos unit is t / T_max
    slots = {"y": (), "x": (d,), "x_ex": (d,), "err": (), "g": (d,), "g_mean": (d,), "count": (),
             "G": (d,), "w": (d,), "yhat": ()}
    steps = [
        mov("x_ex", "x", 1),
        aff("count", ("pos", float(T_max)), bias=1.0, bound=T_max + 1.0),  # t + 1 columns so far
        aff("err", ("x_ex", w0.reshape(1, d)), ("y", -1.0), bound=b_err),  # w0.x - y
        mul("g", "x_ex", "err", (d, 1, 1), bound=b_g),
        Mean("g_mean", src="g"),
        mul("G", "g_mean", "count", (d, 1, 1), bound=G_bound),  # sum over the examples so far
        aff("w", ("G", -2 * lr), bias=(1 - 2 * lr * lam) * w0, bound=B_w),
        dot("yhat", "w", "x", d, bound=yhat_bound),
    ]
    regions = {"prologue": (0, 2), "gradient": (2, 6), "update": (6, 7), "prediction": (7, 8)}
    return Program(slots, {"y": Y, "x": X}, steps, name=f"gd(d={d}, n={n})", regions=regions)


def gd(d: int, n: int, *, lr: float, lam: float = 0.0, w0=None, steps: int = 1, x_norm: float | None = None,
       y_bound: float | None = None, w_bound: float | None = None, dtype: str = "float64", mode: str = "fused",
       levels: int | None = None) -> Construction:
    """A transformer taking ``steps`` full-batch GD steps on its n in-context examples.
    Matches :func:`iclkit.algorithms.gd`. One step computes each example's residual in its
    own column (this module); more steps work on the prefix statistics X^T X and X^T y and
    loop one step's layer (:mod:`iclkit.constructions.descent`), where ``w_bound`` bounds the
    iterates (a prompt whose exact iterates exceed it is refused)."""
    steps = check_steps(steps, least=0)
    if steps != 1:  # none (x_q . w0) or several: the looped program
        from iclkit.constructions.descent import gd_steps

        return gd_steps(d, n, lr=lr, lam=lam, w0=w0, steps=steps, x_norm=x_norm, y_bound=y_bound, w_bound=w_bound,
                        dtype=dtype, mode=mode, levels=levels)
    if w_bound is not None:
        raise ValueError("w_bound bounds the iterates of steps > 1; one step's weights are the constant w0")
    w0, x_norm, y_bound = step_params("gd", d, n, lr, lam, w0, x_norm, y_bound)
    program = gd_program(d, n, lr=lr, lam=lam, w0=w0, x_norm=x_norm, y_bound=y_bound)
    return build("gd", program, d=d, n=n, params={"lr": lr, "lam": lam, "w0": w0}, x_norm=x_norm,
                 y_bound=y_bound, dtype=dtype, mode=mode, levels=levels)
