"""Theorem 1: one SGD step per example, as a transformer (Akyürek et al., App. A), stacked.

Every column runs the same block (a looped transformer): block k takes w from two columns
back (the previous y column) and applies the update with the example of its own column, so
after n blocks the column of y_j holds w_j, the SGD iterate after the first j examples.
Before the first example the read falls back to BOS, which therefore must keep w0 for
ever: its x and y are zero, so its update is only the λ-shrink ``w0 (1 - 2 lr λ)``, and a
BOS-indexed constant ``+2 lr λ w0`` cancels it exactly (linear, no gating product needed).

Fixes to the paper's chain (paper-notes §3): the λ term is ``+λ w`` inside the gradient; mov
copies from column t-1 into column t, and *adds* x_1 into the y column's empty x rows, so
the query's x (whose predecessor's x rows are empty) is not wiped. Rows: y, x, w.x - y
(w.x is written there first), x(w.x - y), w, gradient, y_hat: the paper's 3+4d, with y_hat
in its own row instead of a dead gradient row and w.x sharing the error's row.
"""

from __future__ import annotations

import numpy as np

from iclkit.constructions.base import (Construction, NoBounds, build, check_magnitude, check_param, default_x_norm,
                                       is_symbolic, step_params)
from iclkit.primitives import Aff, Program, aff, dot, mov, mul


def sgd_weight_bound(d: int, n: int, lr: float, lam: float, w0: np.ndarray, X: float, Y: float) -> float:
    """Bound on |w_k| for k <= n when |x| <= X, |y| <= Y: the update map
    ``I - 2 lr (x x^T + lam I)`` has norm at most rho, so ``|w_k| <= rho^k |w0| + 2 lr X Y sum rho^i``."""
    rho = update_norm(lr, lam, X)
    bound, W = float(np.linalg.norm(w0)), float(np.linalg.norm(w0))
    for _ in range(n):
        W = rho * W + 2 * lr * X * Y
        bound = max(bound, W)
    return bound


def default_w_bound(d: int, n: int, lr: float, lam: float, w0: np.ndarray, X: float, Y: float) -> float:
    """The bound on the iterates |w_k| that the constants are sized for (the guard refuses
    prompts whose exact iterates exceed it). The worst case over the domain
    (:func:`sgd_weight_bound`) where that is smaller; otherwise what noiseless prompts reach:
    for ``y = w*.x`` a step with ``2 lr (|x|^2 + lam) <= 2`` moves w towards w* (times a
    map of norm <= 1, plus the shrink ``2 lr lam |w*|``), so ``|w_k| <= |w0| + 2 |w*|``,
    and |w*| <= sqrt(d) + 6 for w* ~ N(0, I) but with probability below e^{-18}."""
    typical = float(np.linalg.norm(w0)) + 2 * default_x_norm(d)
    return min(sgd_weight_bound(d, n, lr, lam, w0, X, Y), typical)


def sgd_program(d: int, n: int, *, lr: float, lam: float, w0: np.ndarray, x_norm: float, y_bound: float, mode: str,
                w_bound: float | None = None) -> Program:
    """The op chain; ``faithful`` follows the paper op for op, ``fused`` is written for packing.
    ``w_bound`` bounds the iterates (default :func:`default_w_bound`)."""
    X, Y = x_norm, y_bound
    if is_symbolic(lr, lam, w0):
        B = NoBounds()
    else:
        W = default_w_bound(d, n, lr, lam, w0, X, Y) if w_bound is None else w_bound
        B = {"w": W, "wx": W * X, "err": W * X + Y, "xerr": X * (W * X + Y), "grad": X * (W * X + Y) + lam * W}
    shrink = 1 - 2 * lr * lam
    bos_fix = (2 * lr * lam * w0).reshape(d, 1)  # keeps BOS's w at w0
    slots = {"y": (), "x": (d,), "err": (), "xerr": (d,), "w": (d,), "yhat": ()}
    # step 1: x_1 into the y column's empty x rows; adding leaves every other column as it was
    steps: list = [mov("x", "x", 1, accumulate=True, bound=X)]
    regions: dict[str, tuple[int, int]] = {}

    def region(name: str, *ops) -> None:  # append ops as a named region of the program
        regions[name] = (len(steps), len(steps) + len(ops))
        steps.extend(ops)

    if mode == "faithful":
        slots["grad"] = (d,)
        update = [
            aff("grad", ("xerr", 1.0), ("w", lam), bound=B["grad"]),
            aff("w", ("w", 1.0), ("grad", -2 * lr), ("bos", bos_fix), bound=B["w"]),
        ]
        regions["prologue"] = (0, 1)
        region("example 1",
               aff("err", ("x", w0.reshape(1, d)), bound=B["err"]),  # step 2: w.x (w is a layer parameter)
               aff("err", ("err", 1.0), ("y", -1.0), bound=B["err"]),  # step 3: w.x - y, in the same row
               mul("xerr", "x", "err", (d, 1, 1), bound=B["xerr"]),
               aff("w", bias=w0, bound=B["w"]),  # step 5: write w
               *update)
        for k in range(2, n + 1):
            region(f"example {k}",
                   mov("w", "w", 2, bound=B["w"]),  # w_{k-1} from the previous y column
                   dot("err", "w", "x", d, bound=B["err"]),
                   aff("err", ("err", 1.0), ("y", -1.0), bound=B["err"]),
                   mul("xerr", "x", "err", (d, 1, 1), bound=B["xerr"]),
                   *update)
        region("epilogue", mov("w", "w", 1, bound=B["w"]),  # step 8: w' to the next (query) column, same rows
               dot("yhat", "w", "x", d, bound=B["wx"]))
    else:
        steps.append(aff("w", bias=w0, bound=B["w"]))
        regions["prologue"] = (0, 2)
        for k in range(1, n + 1):
            if k > 1:  # the previous block's update, read from two columns back
                region(f"update {k - 1}",
                       Aff("w", terms=(("w", shrink), ("xerr", -2 * lr), ("bos", bos_fix)), offset=2, bound=B["w"]))
            region(f"gradient {k}",
                   dot("err", "w", "x", d, bound=B["err"]),
                   aff("err", ("err", 1.0), ("y", -1.0), bound=B["err"]),
                   mul("xerr", "x", "err", (d, 1, 1), bound=B["xerr"]))
        # the last update, moved to the next column (the query) in the same rows
        region(f"update {n}", Aff("w", terms=(("w", shrink), ("xerr", -2 * lr), ("bos", bos_fix)), offset=1, bound=B["w"]))
        region("prediction", dot("yhat", "w", "x", d, bound=B["wx"]))
    return Program(slots, {"y": Y, "x": X}, steps, name=f"sgd(d={d}, n={n})", regions=regions)


DEFAULT_EXPANSION = 100.0


def sgd(d: int, n: int, *, lr: float, lam: float = 0.0, w0=None, x_norm: float | None = None,
        y_bound: float | None = None, w_bound: float | None = None, expansion_bound: float | None = None,
        dtype: str = "float64", mode: str = "fused", levels: int | None = None) -> Construction:
    """A transformer running one pass of SGD over its n in-context examples (Theorem 1 at n=1).

    Matches :func:`iclkit.algorithms.sgd`. ``x_norm``/``y_bound`` set the certified domain
    (|x| <= x_norm, |y| <= y_bound; defaults cover x, w ~ N(0, I)) and ``w_bound`` the
    iterates' (default :func:`default_w_bound`; a prompt whose exact iterates exceed it is
    refused). Where the worst-case update expands (rho > 1, e.g. lr >= 0.02 at d = 8) the
    domain also bounds how much a prompt's updates amplify an error in w,
    :func:`iclkit.algorithms.sgd_expansion` <= ``expansion_bound`` (default 100; x ~ N(0, I_8),
    n = 40 reach at most 3.0 at lr 0.05, 30 at lr 0.1, and about 1e3-1e7 at lr 0.2, where
    exact SGD diverges: refused); the certificate grows with it. ``mode`` is ``fused`` (fewest
    layers) or ``faithful`` (the paper's chain, one op per layer).
    """
    w0, x_norm, y_bound = step_params("sgd", d, n, lr, lam, w0, x_norm, y_bound)
    w_bound = default_w_bound(d, n, lr, lam, w0, x_norm, y_bound) if w_bound is None else \
        check_magnitude("w_bound", check_param("w_bound", w_bound))
    domain = {"w_bound": w_bound}
    if update_norm(lr, lam, x_norm) > 1 and n > 1:
        K = DEFAULT_EXPANSION if expansion_bound is None else check_param("expansion_bound", expansion_bound)
        if K < 1:
            raise ValueError(f"expansion_bound must be >= 1 (the empty product), got {K!r}")
        domain["expansion_bound"] = K
    program = sgd_program(d, n, lr=lr, lam=lam, w0=w0, x_norm=x_norm, y_bound=y_bound, mode=mode, w_bound=w_bound)
    paper = {"layers": 9, "rows": 3 + 4 * d} if n == 1 else {"layers": None, "rows": 3 + 4 * d}
    c = build("sgd", program, d=d, n=n, params={"lr": lr, "lam": lam, "w0": w0}, x_norm=x_norm,
                 y_bound=y_bound, dtype=dtype, mode=mode, levels=levels, paper=paper, domain=domain)
    c.contraction_bound = contraction_bound(c, lr, lam)
    return c


def update_norm(lr: float, lam: float, X: float) -> float:
    """rho = max |I - 2 lr (x x^T + lam I)|_2 over |x| <= X."""
    return max(abs(1 - 2 * lr * lam), abs(1 - 2 * lr * (X * X + lam)))


def contraction_bound(c: Construction, lr: float, lam: float) -> float:
    """A certificate for stacked SGD that sees what the generic per-op analysis cannot: one
    exact update ``w -> (I - 2 lr (x x^T + lam I)) w + 2 lr y x`` is affine in w with a
    linear part of 2-norm at most rho = max(|1 - 2 lr lam|, |1 - 2 lr (X^2 + lam)|), so if
    block k's own error (its ops run on the w the transformer holds) is at most delta_k per
    entry, the error of w obeys ``|e_k|_2 <= rho |e_{k-1}|_2 + sqrt(d) delta_k``. delta_k is
    taken at the slot bounds inflated by |e_{k-1}| (the transformer's w is off by that much).
    Where rho > 1 the domain bounds every product ``|M_k ... M_{j+1}|_2 <= K`` (the guard's
    expansion_bound), so ``|e_k|_2 <= K sqrt(d) sum_j delta_j``."""
    rho = update_norm(lr, lam, c.x_norm)
    K = c.domain.get("expansion_bound")
    program = c.compiled.program
    if c.mode == "fused":  # (w.x, w.x - y, x(w.x - y), update), then y_hat
        blocks, final = [program.ops_of("gradient 1", "update 1")] * c.n, program.ops_of("prediction")
    else:
        later = [program.ops_of("example 2")] * (c.n - 1) if c.n > 1 else []
        blocks, final = [program.ops_of("example 1")] + later, program.ops_of("epilogue")
    start = c.compiled.block_start(blocks[-1], carried=("w",))
    w_error = total = 0.0
    for block in blocks:
        delta = c.compiled.propagate(block, start | {"w": 0.0}, slack={"w": w_error})["w"]
        total += np.sqrt(c.d) * delta
        w_error = rho * w_error + np.sqrt(c.d) * delta if K is None else K * total
    return c.compiled.propagate(final, start | {"w": w_error})["yhat"]
