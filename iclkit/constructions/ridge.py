"""Theorem 2: one Sherman–Morrison update per example, as a transformer (App. B), stacked.

``(A + x x^T)^-1 = A^-1 - (A^-1 x)(x^T A^-1) / (1 + x^T A^-1 x)``, starting from A_0^-1 = I/λ,
with ``b = sum x_i y_i`` and ``w = A^-1 b``: after n examples, exactly ridge regression. As
for SGD, every column runs the same block reading the previous y column (two back); BOS
(x = 0) is a fixed point of the update, so it keeps I/λ and b = 0 without any correction.

The paper's chain has ``mul(...,(d,1,1),...)`` for the final w'.x_2, which must be (1,d,1).
As for SGD, x_1 is *added* into the y column's empty x rows, so the query keeps its x. The
faithful rows are the paper's 3+5d+3d^2 (y_hat in its own row).

Certified domain: |x| <= X, |y| <= Y, and ridge iterates |w_k| <= W (the guard refuses a prompt
whose exact iterates exceed it). Then ``0 < A^-1 <= I/λ`` gives every slot's bound:
|A^-1|, |corr| <= 1/λ; |u| <= X/λ; 1 <= den <= 1 + X^2/λ; |outer| <= X^2/λ^2; |b| <= nXY;
|x.w| <= X W and |y - x.w| <= Y + X W; the gain ``A_k^-1 x = u / den`` has norm at most
``sqrt(s/λ) / (1 + s) <= 1 / (2 sqrt λ)`` with s = x^T A_{k-1}^-1 x. W defaults to
:func:`default_w_bound`.
"""

from __future__ import annotations

import numpy as np

from iclkit.constructions.base import (Construction, NoBounds, build, check_magnitude, check_param, check_sizes,
                                       default_x_norm, domain_params, is_symbolic)
from iclkit.primitives import Aff, Parallel, Program, aff, div, dot, mov, mul


def default_w_bound(d: int, n: int, lam: float, X: float, Y: float) -> float:
    """The bound on the iterates |w_k| that the constants are sized for. Over the whole domain
    ``|w_k| = |(X_k^T X_k + lam I)^-1 X_k^T y| <= |y| / (2 sqrt lam) <= sqrt(n) Y / (2 sqrt lam)``;
    noiseless prompts ``y = w*.x`` reach only ``|w_k| <= |w*|`` (``(X^T X + lam I)^-1 X^T X`` has
    norm < 1), and |w*| <= sqrt(d) + 6 for w* ~ N(0, I) but with probability below e^{-18}.
    The smaller of the two; noisy prompts may need a larger ``w_bound`` (else refused)."""
    return float(min(np.sqrt(n) * Y / (2 * np.sqrt(lam)), default_x_norm(d)))


def ridge_program(d: int, n: int, *, lam: float, x_norm: float, y_bound: float, mode: str,
                  w_bound: float | None = None) -> Program:
    """The op chain; ``faithful`` follows the paper op for op, ``fused`` is the recursive
    least-squares form written for packing. ``w_bound`` bounds the iterates (default
    :func:`default_w_bound`)."""
    X, Y = x_norm, y_bound
    inv = 1 / lam
    identity = (np.eye(d) * inv).reshape(-1)
    if is_symbolic(lam):
        B = NoBounds()
    else:
        W = default_w_bound(d, n, lam, X, Y) if w_bound is None else w_bound
        B = {"inv": inv, "u": X / lam, "outer": X * X / lam**2, "den": 1 + X * X / lam, "s": X * X / lam,
             "xy": X * Y, "b": n * X * Y, "w": W}
        B |= {("b", k): k * X * Y for k in range(1, n + 1)}
        B["yhat"] = B["w"] * X
        B["e"] = Y + B["yhat"]
        B["gain"] = 1 / (2 * np.sqrt(lam))  # |A_k^-1 x| = |Bx|/(1 + x'Bx) <= sqrt(s/lam)/(1+s), s = x'Bx
        B["g"] = B["gain"] * B["e"]
    slots = {"y": (), "x": (d,), "A_inv": (d, d), "u": (d,), "outer": (d, d), "den": (), "corr": (d, d),
             "w": (d,), "yhat": ()}
    steps: list = [mov("x", "x", 1, accumulate=True, bound=X)]  # x_1 into the y column's empty x rows
    regions: dict[str, tuple[int, int]] = {}

    def region(name: str, *ops) -> None:  # append ops as a named region of the program
        regions[name] = (len(steps), len(steps) + len(ops))
        steps.extend(ops)

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
        steps += [mul("xy", "x", "y", (d, 1, 1), bound=B["xy"]), aff("A_inv", bias=identity, bound=B["inv"])]
        regions["prologue"] = (0, 3)
        region("sherman-morrison 1", *block)
        for k in range(1, n):  # A^-1 and b of example k carried to example k + 1's column, then its update
            region(f"carry {k}",
                   Parallel(mov("A_inv", "A_inv", 2, bound=B["inv"]),
                            mov("b_prev", "xy" if k == 1 else "b", 2, bound=B[("b", k)])),
                   aff("b", ("b_prev", 1.0), ("xy", 1.0), bound=B[("b", k + 1)]))
            region(f"sherman-morrison {k + 1}", *block)
        if n == 1:  # the paper's steps 11-12: A_1^-1 x_1, then times y_1 in the same rows
            weights = [mul("w", "A_inv", "x", (d, d, 1), bound=B["u"]), mul("w", "w", "y", (d, 1, 1), bound=B["w"])]
        else:
            weights = [mul("w", "A_inv", "b", (d, d, 1), bound=B["w"])]
        region("epilogue", *weights, mov("w", "w", 1, bound=B["w"]),  # step 13: w' to the query column, same rows
               dot("yhat", "w", "x", d, bound=B["yhat"]))
    else:
        # Fused, in recursive-least-squares form: A^-1 is symmetric, so v = u; w is carried
        # directly, w_k = w_{k-1} + g with g = (u / den)(y - x.w_{k-1}) = A_k^-1 x (y - x.w_{k-1}),
        # so no large b = sum x y is formed; block k's update is folded into block k+1's read.
        slots |= {"e": (), "g": (d,)}
        del slots["outer"]  # corr = (u / den) u^T: no d x d outer product is stored
        steps += [aff("A_inv", bias=identity, bound=B["inv"]), aff("w", bias=np.zeros(d), bound=B["w"])]
        regions["prologue"] = (0, 3)
        for k in range(1, n + 1):
            if k > 1:  # example k - 1's Sherman–Morrison and RLS updates, read from two columns back
                region(f"update {k - 1}",
                       Aff("A_inv", terms=(("A_inv", 1.0), ("corr", -1.0)), offset=2, bound=B["inv"]),
                       Aff("w", terms=(("w", 1.0), ("g", 1.0)), offset=2, bound=B["w"]))
            region(f"gain {k}",
                   mul("u", "A_inv", "x", (d, d, 1), bound=B["u"]),
                   dot("e", "x", "w", d, bound=B["e"]),
                   aff("e", ("y", 1.0), ("e", -1.0), bound=B["e"]),  # y - x.w, in place
                   dot("den", "x", "u", d, bound=B["den"], bias=1.0),
                   div("g", "u", "den", den_min=1.0, bound=B["gain"]),  # A_k^-1 x = u / den
                   mul("corr", "g", "u", (d, 1, d), bound=B["inv"]),  # Sherman–Morrison: (u/den) u^T <= A^-1
                   mul("g", "g", "e", (d, 1, 1), bound=B["g"]))  # times (y - x.w), in place
        region(f"update {n}", Aff("w", terms=(("w", 1.0), ("g", 1.0)), offset=1, bound=B["w"]))  # w_n to the query
        region("prediction", dot("yhat", "w", "x", d, bound=B["yhat"]))
    return Program(slots, {"y": Y, "x": X}, steps, name=f"ridge(d={d}, n={n})", regions=regions)


def ridge(d: int, n: int, *, lam: float, x_norm: float | None = None, y_bound: float | None = None,
          w_bound: float | None = None, dtype: str = "float64", mode: str = "fused",
          levels: int | None = None) -> Construction:
    """A transformer computing ridge regression over its n in-context examples by n
    Sherman–Morrison updates (Theorem 2 at n=1). Matches :func:`iclkit.algorithms.ridge`.
    ``x_norm``/``y_bound`` set the certified domain, ``w_bound`` the iterates' (default
    :func:`default_w_bound`; a prompt whose exact iterates exceed it is refused)."""
    check_sizes(d, n)
    check_magnitude("lam", check_param("lam", lam))
    x_norm, y_bound = domain_params(d, x_norm, y_bound)
    w_bound = default_w_bound(d, n, lam, x_norm, y_bound) if w_bound is None else \
        check_magnitude("w_bound", check_param("w_bound", w_bound))
    program = ridge_program(d, n, lam=lam, x_norm=x_norm, y_bound=y_bound, mode=mode, w_bound=w_bound)
    paper = {"layers": 14 if n == 1 else None, "rows": 3 + 5 * d + 3 * d * d}
    c = build("ridge", program, d=d, n=n, params={"lam": lam}, x_norm=x_norm, y_bound=y_bound,
              dtype=dtype, mode=mode, levels=levels, paper=paper, domain={"w_bound": w_bound})
    c.contraction_bound = sherman_morrison_bound(c, lam)
    return c


def sherman_morrison_bound(c: Construction, lam: float) -> float:
    """:func:`_sherman_morrison_bound`, with NaN (inf times 0 on the way) reported as inf."""
    with np.errstate(invalid="ignore", over="ignore"):
        bound = _sherman_morrison_bound(c, lam)
    return bound if np.isfinite(bound) else float("inf")


def _sherman_morrison_bound(c: Construction, lam: float) -> float:
    """A domain-wide certificate for stacked ridge, relative in the metric of A = (A^-1)^-1.

    Let P~_k be the transformer's A^-1 after k examples, A~_k its inverse, and
    ``A~_k = A_k^{1/2} (I + R_k) A_k^{1/2}``; ``|M|_A = |A_k^{1/2} M A_k^{1/2}|_2``. The faithful
    block computes, for any invertible P, ``SM(P) = (P^-1 + x x^T)^-1 = P - u v^T / den``
    (u = P x, v = P^T x, den = 1 + x^T P x: Sherman–Morrison holds unsymmetric); the fused one
    forms ``u u^T / den``, SM(P) plus ``u x^T (P - P^T) / den``, at most ``2 |gain| X |K|`` with K =
    P~'s antisymmetric part (the fused correction is symmetric, so K only collects the blocks'
    own errors). So ``P~_k = SM(P~_{k-1}) + E_k``, and :func:`_block_error` bounds |E_k|_A from
    the ops' own errors (u, v off by eps_u, eps_v; den by ``Delta = X |eps_v| + eps_den``):
    ``|u v^T Delta / (den den~)|_A <= rho^2 Delta`` and ``|eps_u v^T / den~|_A <= rho sqrt(a_k) |eps_u|``,
    because ``|A_k^{1/2} P x|^2 = s (1 + s)`` with s = x^T P x (A_k = A_{k-1} + x x^T), so
    ``|A_k^{1/2} u| / den <= 1``, up to ``rho = (1 + r') / (1 - mu)`` for P~ != P (r' = r / (1 - r),
    mu = r' + Delta: den~ is within mu of den, relatively), a_k = lam + k X^2 >= |A_k|.
    Then ``A~_k = A~_{k-1} + x x^T + Delta_k`` and, with ``Q^-1 = A~_{k-1} + x x^T`` and the
    push-through identity, ``A_k^{-1/2} Delta_k A_k^{-1/2} = -(I + R')E^(I + (I + R')E^)^-1(I + R')``
    with ``E^ = A_k^{1/2} E_k A_k^{1/2}`` and |R'| <= |R_{k-1}| (A_{k-1} <= A_k). Hence
    ``r_k <= r + (1 + r)^2 e / (1 - (1 + r) e)``, e = |E_k|_A, and ``|P~_k - P_k|_2 <= r_k / (1 - r_k) / lam``:
    errors add relative to A, never multiplied by it.

    w (fused, recursive least squares): ``w_k = (I - P_k x x^T) w_{k-1} + P_k x y`` and
    ``I - P_k x x^T = P_k A_{k-1}`` maps the A_{k-1}-norm into the A_k-norm with norm <= 1, so
    ``|A_k^{1/2} e_k| <= |A_{k-1}^{1/2} e_{k-1}| + sqrt(a_k d) delta_w`` (delta_w: block k's error in
    w with A^-1 off by |P~_{k-1} - P_{k-1}| and w exact) and ``|e_n| <= |A_n^{1/2} e_n| / sqrt(lam)``.
    The faithful b-form carries b itself: its error is the generic analysis of the b ops.
    Infinite only if some ``(1 + r) e >= 1``, mu >= 1 or r >= 1 (then no domain-wide
    certificate: the per-prompt one, :meth:`Construction.certify`, still holds)."""
    program, d, n = c.compiled.program, c.d, c.n
    ops = program.ops
    X = c.x_norm
    if c.mode == "fused":  # the first example's gain and correction, then its updates of A^-1 and w
        block = program.ops_of("gain 1", "update 1")
    else:  # the first Sherman–Morrison block, then the move of A^-1 to the next example's column
        block = program.ops_of("sherman-morrison 1") + (
            [op for op in program.ops_of("carry 1") if op.dst == "A_inv"] if n > 1 else [])
    start = c.compiled.block_start(block, carried=("A_inv", "w"))
    init = c.compiled.propagate(program.ops_of("prologue"), start)  # mov x, the initial A^-1, then w or xy
    e0 = d * init["A_inv"]  # A~_0 from the rounding of I/lam: R_0 = (I + lam E_0)^-1 - I
    if lam * e0 >= 1:
        return float("inf")
    r = lam * e0 / (1 - lam * e0)
    skew = e0  # |K|_2: the antisymmetric part of P~ (fused)
    E_P = r / (1 - r) / lam
    E_w = w_norm = 0.0
    for k in range(1, n + 1):
        a = lam + k * X * X
        e, own_A = _block_error(c, block, start, a, r, E_P, E_w)
        if not np.isfinite(e):
            return float("inf")
        if c.mode == "fused":
            gain = 1 / (2 * np.sqrt(lam)) + X * E_P  # |P~ x| / den
            e += a * 2 * gain * X * skew
            skew += d * own_A
            w_norm += _gain_error(c, block, start, a, r, E_P, E_w)
            E_w = w_norm / np.sqrt(lam)
        if (1 + r) * e >= 1:
            return float("inf")
        r += (1 + r) ** 2 * e / (1 - (1 + r) * e)
        if r >= 1:
            return float("inf")
        E_P = r / (1 - r) / lam
    if c.mode == "fused":
        return c.compiled.propagate(program.ops_of("prediction"), start | {"w": E_w})["yhat"]
    b_ops = [op for op in ops if op.dst in ("xy", "b", "b_prev")]
    b_err = c.compiled.propagate(b_ops, start)
    epilogue = program.ops_of("epilogue")
    if n == 1:  # w = (A^-1 x) y: the generic analysis
        return c.compiled.propagate(epilogue, b_err | {"A_inv": E_P})["yhat"]
    # w = P~ b~: (P~ - P) b = A_n^{-1/2} (A_n^{1/2} (P~ - P) A_n^{1/2}) A_n^{1/2} w, |A_n^{1/2} w| <= sqrt(a_n) W
    a, W = lam + n * X * X, c.domain["w_bound"]
    w_mul, *to_query = epilogue
    own = c.compiled.propagate([w_mul], start | {"A_inv": 0.0, "b": 0.0}, slack={"A_inv": E_P, "b": b_err["b"]})["w"]
    E_w = r / (1 - r) * np.sqrt(a / lam) * W + (1 / lam + E_P) * np.sqrt(d) * b_err["b"] + own
    return c.compiled.propagate(to_query, start | {"w": E_w})["yhat"]


def _own_errors(c: Construction, block: list, start: dict, slack: dict):
    """``own((dst, op kind), more_slack)``: the own error of the block's op writing ``dst``, taken
    alone (its operands exact) at its read bounds inflated by ``slack`` and ``more_slack``, from
    the compiler's analysis (x and y read with their errors); 0 for an op the block lacks."""
    by = {(op.dst, type(op).__name__): op for op in block}
    exact = start | {s: 0.0 for s in start if s not in ("x", "y")}

    def own(key: tuple, more: dict | None = None) -> float:
        op = by.get(key)
        return 0.0 if op is None else c.compiled.propagate([op], exact, slack=slack | (more or {}))[op.dst]

    return own


def _gain_error(c: Construction, block: list, start: dict, a: float, r: float, E_P: float, E_w: float) -> float:
    """A bound on ``|A_k^{1/2} delta_w|`` for block k of the fused form, where delta_w is what the
    block adds to w beyond the exact update of the w~ it holds: ``(g~ - g) res~ + g eps_e +
    eps_ge + eps_w``, g = P_k x exact, ``res~ = y - x.w~`` as computed (off by eps_e). With
    ``P~ = P + D``, ``|A_{k-1}^{1/2} D A_{k-1}^{1/2}| <= r' = r / (1 - r)``: ``|A_k^{1/2} D x| / den <= r'``
    and ``|x^T D x| / den <= r'`` (``|A_k^{1/2} P x| = sqrt(s (1 + s))``, den = 1 + s), so den~ is within
    ``m = r' + X |eps_u| + eps_den`` of den, relatively, and
    ``|A_k^{1/2} (g~ - g)| <= (r' + sqrt(a_k) |eps_u| + m) / (1 - m) + sqrt(a_k) |eps_g|``; ``|A_k^{1/2} g| <= 1``."""
    d, X = c.d, c.x_norm
    own = _own_errors(c, block, start, {"A_inv": E_P, "w": E_w})
    rr = r / (1 - r)
    eps_u = np.sqrt(d) * own(("u", "Mul"))
    eps_den = own(("den", "Mul"), {"u": eps_u})
    m = rr + X * eps_u + eps_den
    if m >= 1:
        return float("inf")
    eps_g = np.sqrt(d) * own(("g", "Div"), {"u": eps_u, "den": m * (1 + X * X / c.params["lam"])})
    gain_A = (rr + np.sqrt(a) * eps_u + m) / (1 - m) + np.sqrt(a) * eps_g
    eps_e = own(("e", "Mul")) + own(("e", "Aff"))
    res = c.compiled.slot_bounds["e"] + X * np.sqrt(d) * E_w + eps_e  # |y - x.w~| as computed
    gain = 1 / (2 * np.sqrt(c.params["lam"])) + X * E_P + gain_A / np.sqrt(c.params["lam"])  # |g~|
    eps_ge = own(("g", "Mul"), {"g": gain, "e": eps_e})
    eps_w = own(("w", "Aff"), {"g": gain * res})
    return float(gain_A * res + eps_e + np.sqrt(a * d) * (eps_ge + eps_w))


def _block_error(c: Construction, block: list, start: dict, a: float, r: float, E_P: float,
                 E_w: float) -> tuple[float, float]:
    """(a bound on |E_k|_A, the entrywise own error of the A^-1 write) for one Sherman–Morrison
    block run on a P~ = P + D with ``|A_{k-1}^{1/2} D A_{k-1}^{1/2}| <= r' = r / (1 - r)`` (so
    ``|A_k^{1/2} D x| <= r' sqrt(s (1 + s))`` and ``|x^T D x| <= r' s``) and ``|D|_2 <= E_P``. Each
    op's own error is taken alone (its operands exact) at its read bounds inflated by the
    deviations, from the compiler's analysis; vectors' 2-norms are sqrt(d) times the entry
    bound, matrices' d times."""
    d, X = c.d, c.x_norm
    own = _own_errors(c, block, start, {"A_inv": E_P, "w": E_w})
    eps_u = own(("u", "Mul"))  # x's error included: x is read as the compiler bounds it
    if c.mode == "fused":
        eps_v = eps_u
        eps_den = own(("den", "Mul"), {"u": eps_u})
        eps_g = own(("g", "Div"), {"u": eps_u, "den": X * np.sqrt(d) * eps_u + eps_den})
        eps_c = own(("corr", "Mul"), {"u": eps_u, "g": eps_g})
        eps_o = 0.0
    else:
        eps_v = own(("v", "Mul"))
        eps_den = own(("den", "Mul"), {"v": eps_v}) + own(("den", "Aff"))
        eps_o = own(("outer", "Mul"), {"u": eps_u, "v": eps_v})
        eps_g = own(("corr", "Div"), {"outer": eps_o, "den": X * np.sqrt(d) * eps_v + eps_den})
        eps_c = 0.0
    own_A = own(("A_inv", "Aff"), {"corr": eps_g if c.mode == "faithful" else eps_c})
    nu, nv = np.sqrt(d) * eps_u, np.sqrt(d) * eps_v  # 2-norms
    delta = X * nv + eps_den
    rr = r / (1 - r)
    mu = rr + delta  # den~ >= (1 + s)(1 - mu)
    if mu >= 1:
        return float("inf"), own_A
    rho = (1 + rr) / (1 - mu)  # |A_k^{1/2} P~ x| / den~
    S = X * X / c.params["lam"]  # s = x^T A^-1 x <= S
    z_max = np.sqrt(S * (1 + S)) * (1 + rr)  # |A_k^{1/2} u|
    e = rho * np.sqrt(a) * (nu + nv) + a * nu * nv / (1 - mu) + rho**2 * delta + a * d * own_A
    if c.mode == "fused":  # corr = g u^T with g = u / den + eps_g
        e += np.sqrt(a * d) * eps_g * (z_max + np.sqrt(a) * nu) + a * d * eps_c
    else:  # corr = (u v^T + eps_o) / den + eps_g
        e += a * d * eps_o / (1 - mu) + a * d * eps_g
    return float(e), own_A
