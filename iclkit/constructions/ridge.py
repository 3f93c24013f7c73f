"""Theorem 2: one Sherman–Morrison update per example, as a transformer (App. B), stacked.

``(A + x x^T)^-1 = A^-1 - (A^-1 x)(x^T A^-1) / (1 + x^T A^-1 x)``, starting from A_0^-1 = I/λ,
with ``b = sum x_i y_i`` and ``w = A^-1 b``: after n examples, exactly ridge regression. As
for SGD, every column runs the same block reading the previous y column (two back); BOS
(x = 0) is a fixed point of the update, so it keeps I/λ and b = 0 without any correction.

The paper's chain has ``mul(...,(d,1,1),...)`` for the final w'.x_2, which must be (1,d,1).
As for SGD, x_1 is *added* into the y column's empty x rows, so the query keeps its x. The
faithful rows are the paper's 3+5d+3d^2 (y_hat in its own row).

Certified domain: |x| <= X, |y| <= Y. Then ``0 < A^-1 <= I/λ`` gives every slot's bound:
|A^-1|, |corr| <= 1/λ; |u| <= X/λ; 1 <= den <= 1 + X^2/λ; |outer| <= X^2/λ^2; |b| <= nXY; and
ridge's ``|w| <= |y| / (2 sqrt λ) <= sqrt(n) Y / (2 sqrt λ)`` for every prefix, so
|x.w| <= X |w| and |y - x.w| <= Y + X |w|; the gain ``A_k^-1 x = u / den`` has norm at most
``sqrt(s/λ) / (1 + s) <= 1 / (2 sqrt λ)`` with s = x^T A_{k-1}^-1 x.
"""

from __future__ import annotations

import numpy as np

from iclkit.constructions.base import Construction, NoBounds, build, check_param, check_sizes, domain_params, is_symbolic
from iclkit.primitives import Aff, Parallel, Program, aff, div, dot, mov, mul


def ridge_program(d: int, n: int, *, lam: float, x_norm: float, y_bound: float, mode: str) -> Program:
    X, Y = x_norm, y_bound
    inv = 1 / lam
    identity = (np.eye(d) * inv).reshape(-1)
    if is_symbolic(lam):
        B = NoBounds()
    else:
        B = {"inv": inv, "u": X / lam, "outer": X * X / lam**2, "den": 1 + X * X / lam, "s": X * X / lam,
             "xy": X * Y, "b": n * X * Y, "w": np.sqrt(n) * Y / (2 * np.sqrt(lam))}
        B |= {("b", k): k * X * Y for k in range(1, n + 1)}
        B["yhat"] = B["w"] * X
        B["e"] = Y + B["yhat"]
        B["gain"] = 1 / (2 * np.sqrt(lam))  # |A_k^-1 x| = |Bx|/(1 + x'Bx) <= sqrt(s/lam)/(1+s), s = x'Bx
        B["g"] = B["gain"] * B["e"]
    slots = {"y": (), "x": (d,), "A_inv": (d, d), "u": (d,), "outer": (d, d), "den": (), "corr": (d, d),
             "w": (d,), "yhat": ()}
    steps: list = [mov("x", "x", 1, accumulate=True, bound=X)]  # x_1 into the y column's empty x rows
    if mode == "faithful":
        slots |= {"xy": (d,), "v": (d,)} | ({"b": (d,), "b_prev": (d,)} if n > 1 else {})
        block = [
            mul("u", "A_inv", "x", (d, d, 1), bound=B["u"]),  # A^-1 u
            mul("v", "x", "A_inv", (1, d, d), bound=B["u"]),  # v^T A^-1
            mul("outer", "u", "v", (d, 1, d), bound=B["outer"]),  # A^-1 u v^T A^-1
            mul("den", "v", "x", (1, d, 1), bound=B["s"]),  # v^T A^-1 u
            aff("den", ("den", 1.0), bias=1.0, bound=B["den"]),  # 1 + v^T A^-1 u, in place
            div("corr", "outer", "den", den_min=1.0, bound=B["inv"]),
            aff("A_inv", ("A_inv", 1.0), ("corr", -1.0), bound=B["inv"]),
        ]
        steps += [mul("xy", "x", "y", (d, 1, 1), bound=B["xy"]), aff("A_inv", bias=identity, bound=B["inv"]), *block]
        for k in range(1, n):
            steps += [
                Parallel(mov("A_inv", "A_inv", 2, bound=B["inv"]), mov("b_prev", "xy" if k == 1 else "b", 2, bound=B[("b", k)])),
                aff("b", ("b_prev", 1.0), ("xy", 1.0), bound=B[("b", k + 1)]),
                *block,
            ]
        if n == 1:  # the paper's steps 11-12: A_1^-1 x_1, then times y_1 in the same rows
            steps += [mul("w", "A_inv", "x", (d, d, 1), bound=B["u"]), mul("w", "w", "y", (d, 1, 1), bound=B["w"])]
        else:
            steps.append(mul("w", "A_inv", "b", (d, d, 1), bound=B["w"]))
        steps.append(mov("w", "w", 1, bound=B["w"]))  # step 13: w' to the query column, same rows
    else:
        # Fused, in recursive-least-squares form: A^-1 is symmetric, so v = u; w is carried
        # directly, w_k = w_{k-1} + g with g = (u / den)(y - x.w_{k-1}) = A_k^-1 x (y - x.w_{k-1}),
        # so no large b = sum x y is formed; block k's update is folded into block k+1's read.
        slots |= {"e": (), "g": (d,)}
        del slots["outer"]  # corr = (u / den) u^T: no d x d outer product is stored
        steps += [aff("A_inv", bias=identity, bound=B["inv"]), aff("w", bias=np.zeros(d), bound=B["w"])]
        for k in range(n):
            if k:
                steps += [
                    Aff("A_inv", terms=(("A_inv", 1.0), ("corr", -1.0)), offset=2, bound=B["inv"]),
                    Aff("w", terms=(("w", 1.0), ("g", 1.0)), offset=2, bound=B["w"]),
                ]
            steps += [
                mul("u", "A_inv", "x", (d, d, 1), bound=B["u"]),
                dot("e", "x", "w", d, bound=B["e"]),
                aff("e", ("y", 1.0), ("e", -1.0), bound=B["e"]),  # y - x.w, in place
                dot("den", "x", "u", d, bound=B["den"], bias=1.0),
                div("g", "u", "den", den_min=1.0, bound=B["gain"]),  # A_k^-1 x = u / den
                mul("corr", "g", "u", (d, 1, d), bound=B["inv"]),  # Sherman–Morrison: (u/den) u^T <= A^-1
                mul("g", "g", "e", (d, 1, 1), bound=B["g"]),  # times (y - x.w), in place
            ]
        steps.append(Aff("w", terms=(("w", 1.0), ("g", 1.0)), offset=1, bound=B["w"]))  # w_n to the query
    prediction = dot("yhat", "w", "x", d, bound=B["yhat"])
    steps.append(prediction)
    return Program(slots, {"y": Y, "x": X}, steps, name=f"ridge(d={d}, n={n})")


def ridge(d: int, n: int, *, lam: float, x_norm: float | None = None, y_bound: float | None = None,
          dtype: str = "float64", mode: str = "fused", levels: int | None = None) -> Construction:
    """A transformer computing ridge regression over its n in-context examples by n
    Sherman–Morrison updates (Theorem 2 at n=1). Matches :func:`iclkit.algorithms.ridge`."""
    check_sizes(d, n)
    check_param("lam", lam)
    x_norm, y_bound = domain_params(d, x_norm, y_bound)
    program = ridge_program(d, n, lam=lam, x_norm=x_norm, y_bound=y_bound, mode=mode)
    paper = {"layers": 14 if n == 1 else None, "rows": 3 + 5 * d + 3 * d * d}
    c = build("ridge", program, d=d, n=n, params={"lam": lam}, x_norm=x_norm, y_bound=y_bound,
              dtype=dtype, mode=mode, levels=levels, paper=paper)
    c.contraction_bound = sherman_morrison_bound(c, lam)
    return c


def sherman_morrison_bound(c: Construction, lam: float) -> float:
    """A domain-wide certificate for stacked ridge, through A = (A^-1)^-1, where the errors
    simply add up. Let P~_k be the transformer's A^-1 after k examples. Block k applies the
    exact Sherman–Morrison map to P~_{k-1} up to its own error delta_k (its ops run on the P~
    it holds), so ``A~_k = A~_{k-1} + x x^T + Delta_k`` with
    ``|Delta_k| <= a^2 eta / (1 - a eta)``, a >= |A~_{k-1} + x x^T| (<= lam + k X^2 + the
    Deltas so far), eta = d delta_k (2-norm of a d x d error). Then
    ``|P~_k - P_k| <= S/lam^2 / (1 - S/lam)``, S = sum Delta. For w (fused, recursive
    least squares): the gain is exactly SM(P~_{k-1}) x up to the block's own error eps_k, so
    ``B_k = A~_k w~_k`` obeys ``B_k = B_{k-1} + x y + Delta_k w~_k + (A~_{k-1} + x x^T) eps_k``,
    while ``b_k = A_k w_k = sum x y``; hence ``w~_n - w_n = P~_n (B_n - b_n) + (P~_n - P_n) b_n``.
    The faithful b-form carries b itself: its error is the generic analysis of the b ops.
    Finite while every a eta < 1 and S < lam; infinite otherwise (no domain-wide certificate:
    the per-prompt one, :meth:`Construction.certify`, still holds)."""
    ops, d, n = c.compiled.program.ops, c.d, c.n
    X, Y = c.x_norm, c.y_bound
    # x, y as every block reads them; the scratch slots' old values (cleared by each block)
    # carry the previous block's errors: one pass over the block gives them
    start = {s: 0.0 for s in c.compiled.program.slots} | {s: c.compiled.error_bounds[s] for s in ("x", "y")}
    first = 3  # mov x, the initial A^-1, then w (fused) or xy (faithful)
    if c.mode == "fused":
        block = ops[first:first + 7] + (ops[first + 7:first + 9] if n > 1 else [ops[-2]])  # + the update's affs
    else:
        block = ops[first:first + 7] + ([ops[first + 7]] if n > 1 else [])  # + the next block's move of A^-1
    w_bound = float(c.compiled.slot_bounds["w"])
    init = c.compiled.propagate(ops[:first], start)
    start |= {s: e for s, e in c.compiled.propagate(block, start).items() if s not in ("A_inv", "w", "x", "y")}
    eta0 = d * init["A_inv"]  # A~_0 from the rounding of I/lam, as every later Delta
    S = lam * lam * eta0 / (1 - lam * eta0)
    E_P = E_w = 0.0
    B_err = 0.0
    for k in range(1, n + 1):
        errs = c.compiled.propagate(block, start | {"A_inv": 0.0, "w": 0.0}, slack={"A_inv": E_P, "w": E_w})
        eta = d * errs["A_inv"]
        a = lam + k * X * X + S
        if a * eta >= 1:
            return float("inf")
        Delta = a * a * eta / (1 - a * eta)
        S += Delta
        if S >= lam:
            return float("inf")
        E_P = S / lam**2 / (1 - S / lam)
        if c.mode == "fused":
            B_err += Delta * (w_bound + E_w) + a * np.sqrt(d) * errs["w"]
            E_w = (1 / lam + E_P) * B_err + E_P * k * X * Y
    if c.mode == "fused":
        return c.compiled.propagate(ops[-1:], start | {"w": E_w})["yhat"]
    b_ops = [op for op in ops if op.dst in ("xy", "b", "b_prev")]
    b_err = c.compiled.propagate(b_ops, start)
    return c.compiled.propagate(ops[-4:] if n == 1 else ops[-3:], b_err | {"A_inv": E_P})["yhat"]
