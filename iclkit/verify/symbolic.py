"""Symbolic proofs (sympy).

1. **Programs are correct.** A construction's op chain, run by the reference interpreter on
   sympy symbols (x_i, y_i, x_q, w0, lr, lam), simplifies to the closed form exactly.
2. **Mechanisms realise their ops.** The formulas the compiler writes into the layers, with
   the large constants as symbols, equal the target in the limit, and the leading error term
   has the order the certified bound claims: the GeLU polarisation product (O(S^-2K) with K
   Richardson scales), the linear GeLU pair (exact), the LayerNorm read (O(P^-2)), the
   LayerNorm division (O(M^-2)), hard attention (weight 1 - O(T e^-G)).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import sympy as sp

from iclkit.constructions.base import prompt_inputs
from iclkit.constructions.descent import descent_program
from iclkit.constructions.gd import gd_program
from iclkit.constructions.newton import newton_program
from iclkit.constructions.ridge import ridge_program
from iclkit.constructions.sgd import sgd_program
from iclkit.primitives import Aff, Program
from iclkit.primitives.bounds import richardson_weights

LR, LAM = sp.symbols("lr lam", positive=True)


@dataclass
class Claim:
    name: str
    proved: bool
    seconds: float
    detail: str = ""


def symbolic_prompt(d: int, n: int):
    """Real symbols X (n,d), y (n,), x_q (d,), w0 (d,) as numpy object arrays."""
    X = np.array(sp.symbols(f"x1:{n + 1}_1:{d + 1}", real=True), dtype=object).reshape(n, d)
    y = np.array(sp.symbols(f"y1:{n + 1}", real=True), dtype=object)
    xq = np.array(sp.symbols(f"q1:{d + 1}", real=True), dtype=object)
    w0 = np.array(sp.symbols(f"w1:{d + 1}", real=True), dtype=object)
    return X, y, xq, w0


def program_prediction(program: Program, X, y, xq, t_max: int | None = None) -> sp.Expr:
    """y_hat at the query column, interpreting ``program`` on symbolic prompts (``t_max``: the
    column the pos unit maps to 1; by default the prompt's last)."""
    return program.interpret(prompt_inputs(X[None], y[None], xq[None]), t_max=t_max)["yhat"][0, -1]


def sgd_closed_form(X, y, xq, w0, lr, lam) -> sp.Expr:
    w = sp.Matrix(w0)
    for x_k, y_k in zip(X, y):
        x = sp.Matrix(x_k)
        w = w - 2 * lr * (((w.T * x)[0] - y_k) * x + lam * w)
    return (sp.Matrix(xq).T * w)[0]


def gd_closed_form(X, y, xq, w0, lr, lam) -> sp.Expr:
    Xm, ym, w = sp.Matrix(X), sp.Matrix(y), sp.Matrix(w0)
    return (sp.Matrix(xq).T * (w - 2 * lr * (Xm.T * (Xm * w - ym) + lam * w)))[0]


def ridge_closed_form(X, y, xq, lam) -> sp.Expr:
    Xm, ym = sp.Matrix(X), sp.Matrix(y)
    w = (Xm.T * Xm + lam * sp.eye(Xm.shape[1])).inv() * Xm.T * ym
    return (sp.Matrix(xq).T * w)[0]


def is_zero(expr: sp.Expr) -> bool:
    return sp.simplify(sp.together(sp.expand(expr))) == 0


def with_paper_sign_mistake(program: Program) -> Program:
    """The paper's summary list: gradient term ``x(w.x - y) - lam w`` (W2 = -lam) instead of +lam w."""
    steps = []
    for op in program.steps:
        if isinstance(op, Aff) and op.dst == "grad":
            op = Aff("grad", terms=tuple((s, -W) if s == "w" else (s, W) for s, W in op.terms), bound=op.bound)
        steps.append(op)
    return Program(program.slots, program.inputs, steps, name=program.name + " (paper's sign)")


def prove_sgd(d: int, n: int, mode: str, mistake: bool = False) -> bool:
    X, y, xq, w0 = symbolic_prompt(d, n)
    program = sgd_program(d, n, lr=LR, lam=LAM, w0=w0, x_norm=1.0, y_bound=1.0, mode=mode)
    if mistake:
        program = with_paper_sign_mistake(program)
    return is_zero(program_prediction(program, X, y, xq) - sgd_closed_form(X, y, xq, w0, LR, LAM))


def prove_ridge(d: int, n: int, mode: str) -> bool:
    """Ridge's divisor 1 + x^T A^-1 x is >= 1 (A^-1 is positive definite), so |den| = den,
    as a div on symbols evaluates it. The difference is a rational function, proved 0 by
    cancellation."""
    X, y, xq, _ = symbolic_prompt(d, n)
    program = ridge_program(d, n, lam=LAM, x_norm=1.0, y_bound=1.0, mode=mode)
    diff = program_prediction(program, X, y, xq) - ridge_closed_form(X, y, xq, LAM)
    return sp.cancel(sp.together(diff)) == 0


def prove_shorter_prompt(name: str, d: int, n: int, k: int, mode: str) -> bool:
    """The program built for n examples, run on a prompt of k <= n examples (2k+2 columns,
    the pos unit still t / (2n+1) as in the compiled model), predicts the closed form for those
    k examples. Why it holds for every k: each stacked block at column t reads only columns
    t, t-1, t-2 (x_1 moved in, the previous iterate two back), so by induction on blocks,
    after block j the columns up to 2j hold their final values and later blocks recompute the
    same values from the same inputs; the query reads column 2k. gd reads t + 1 from pos."""
    X, y, xq, w0 = symbolic_prompt(d, k)
    if name == "sgd":
        program = sgd_program(d, n, lr=LR, lam=LAM, w0=w0, x_norm=1.0, y_bound=1.0, mode=mode)
        exact = sgd_closed_form(X, y, xq, w0, LR, LAM)
    elif name == "gd":
        program, exact = gd_program(d, n, lr=LR, lam=LAM, w0=w0, x_norm=1.0, y_bound=1.0), gd_closed_form(X, y, xq, w0, LR, LAM)
    else:
        program, exact = ridge_program(d, n, lam=LAM, x_norm=1.0, y_bound=1.0, mode=mode), ridge_closed_form(X, y, xq, LAM)
    diff = program_prediction(program, X, y, xq, t_max=2 * n + 1) - exact
    return sp.cancel(sp.together(diff)) == 0


# ---- induction over the loop: a claim for every n ------------------------------------------
def _vector(name: str, d: int) -> np.ndarray:
    return np.array(sp.symbols(f"{name}1:{d + 1}", real=True), dtype=object)


def _run_on_columns(program: Program, steps: list, state: dict, T: int = 4) -> dict:
    """Run ``steps`` on T columns whose slots hold ``state`` ({slot: {column: value}}), the
    rest 0: the carried state two columns back, the new example at the last column."""
    inputs = {}
    for slot, columns in state.items():
        arr = np.zeros((1, T) + program.slots[slot], dtype=object)
        for c, v in columns.items():
            arr[0, c] = v
        inputs[slot] = arr
    toy = Program(program.slots, {slot: 1.0 for slot in state}, steps, name=program.name + " (block)")
    return toy.interpret(inputs, t_max=T - 1)


def _prologue(program: Program, count: int, n: int):
    """The base case's run: the program's first ``count`` steps on a symbolic prompt of n
    examples. Returns (slots after them, X, y)."""
    X, y, xq, _ = symbolic_prompt(program.slots["x"][0], n)
    head = Program(program.slots, program.inputs, program.steps[:count])
    return head.interpret(prompt_inputs(X[None], y[None], xq[None]), t_max=2 * n + 1), X, y


def _equal(got, want) -> bool:
    """Entrywise equal as rational functions (the program's float constants 1.0, 0.0 made exact)."""
    return all(sp.cancel(sp.together(sp.nsimplify(sp.sympify(g) - w, rational=True))) == 0
               for g, w in zip(np.ravel(got), np.ravel(want)))


def prove_sgd_loop(d: int, mode: str = "fused") -> bool:
    """Stacked SGD, for every n, by induction over the looped block. Faithful: the invariant
    at the column of y_k is ``w = w_k``; the block (w from two columns back, the gradient at
    the new example, the update) maps it to k + 1; the first seven ops give k = 1; the move
    to the query and the dot give x_q . w_n. Fused: invariant at the
    column of y_k: ``w = w_{k-1}`` (the iterate before example k) and ``xerr = x_k (w_{k-1}.x_k - y_k)``.
    Step: the block (update from two columns back, then w.x - y and its product with x) maps
    the invariant for k to the invariant for k + 1, for symbolic w_{k-1}, x_k, y_k, x_{k+1},
    y_{k+1}. Base: the prologue and the first block give it for k = 1 (the BOS column keeps
    w0). Epilogue: the final update read from one column back and the dot give
    ``x_q . w_n``. Hence the program built for any n computes SGD's prediction."""
    w0, x, y, xn, yn = _vector("v", d), _vector("p", d), sp.Symbol("yp", real=True), _vector("x", d), sp.Symbol("y", real=True)
    W = _vector("W", d)
    program = sgd_program(d, 3, lr=LR, lam=LAM, w0=w0, x_norm=1.0, y_bound=1.0, mode=mode)
    step = lambda v, a, b: v - 2 * LR * ((v @ a - b) * a + LAM * v)  # noqa: E731
    if mode == "faithful":
        out = _run_on_columns(program, program.steps_of("example 2"), {"w": {1: W}, "x": {3: xn}, "y": {3: yn}})
        first, X1, y1 = _prologue(program, program.span("example 1")[1], 1)
        end = _run_on_columns(program, program.steps_of("epilogue"), {"w": {2: W}, "x": {3: xn}})
        return (_equal(out["w"][0, 3], step(W, xn, yn)) and _equal(first["w"][0, 2], step(w0, X1[0], y1[0]))
                and _equal(end["yhat"][0, 3], W @ xn))
    out = _run_on_columns(program, program.steps_of("update 1", "gradient 2"),
                          {"w": {1: W}, "xerr": {1: x * (W @ x - y)}, "x": {3: xn}, "y": {3: yn}})
    w_next = step(W, x, y)
    ok = _equal(out["w"][0, 3], w_next) and _equal(out["xerr"][0, 3], xn * (w_next @ xn - yn))
    first, X1, y1 = _prologue(program, program.span("gradient 1")[1], 1)
    ok &= _equal(first["w"][0, 2], w0) and _equal(first["xerr"][0, 2], X1[0] * (w0 @ X1[0] - y1[0]))
    end = _run_on_columns(program, program.steps_of("update 3", "prediction"),
                          {"w": {2: W}, "xerr": {2: x * (W @ x - y)}, "x": {3: xn}})
    return ok and _equal(end["yhat"][0, 3], step(W, x, y) @ xn)


def prove_ridge_loop(d: int, mode: str = "fused") -> bool:
    """Stacked ridge, for every n, by induction over the looped block.

    Fused (recursive least squares): invariant at the column of y_k, with P = A_{k-1}^-1
    (symmetric) and w = w_{k-1}: ``A_inv = P``, ``w = w``, ``corr = g u^T`` and
    ``g = g (y_k - x_k.w)`` where u = P x_k, g = u / (1 + x_k.u). Step: the block
    (Sherman–Morrison and RLS updates from two columns back, then the new example's u, den,
    gain, correction) maps it to the invariant for k + 1, for symbolic P, w, x_k, y_k, x_{k+1},
    y_{k+1}. Base: the prologue and the first block give it for k = 1 with P = I/lam, w = 0.
    Epilogue: the final RLS update read from one column back and the dot give x_q . w_n.

    Faithful (the paper's b-form): invariant at the column of y_k, k >= 2: ``A_inv = P_k``,
    ``b = b_k = sum_{i<=k} x_i y_i``. Step: the block (A^-1 and b from two columns back, b plus
    the column's x y, Sherman–Morrison on the new x) maps it to k + 1 for a symbolic, not even
    symmetric, P, symbolic b, x_{k+1}, y_{k+1}, every other slot of the new column holding
    arbitrary symbols (stale values the block must overwrite, never read). Base: the first two
    examples give k = 2. Epilogue: ``w = A_inv b`` moved to the query and the dot give
    ``x_q . P b``. Hence the program built for any n >= 2 computes ridge's prediction."""
    if mode == "faithful":
        return _prove_ridge_loop_faithful(d)
    Pm = sp.Matrix(d, d, lambda i, j: sp.Symbol(f"P{min(i, j) + 1}{max(i, j) + 1}", real=True))
    P = np.array(Pm.tolist(), dtype=object)
    W, x, y, xn, yn = _vector("W", d), _vector("p", d), sp.Symbol("yp", real=True), _vector("x", d), sp.Symbol("y", real=True)
    program = ridge_program(d, 3, lam=LAM, x_norm=1.0, y_bound=1.0, mode="fused")

    def invariant(P, w, x, y):
        u = P @ x
        g = u / (1 + x @ u)
        return {"A_inv": P, "w": w, "corr": np.outer(g, u), "g": g * (y - x @ w)}

    def sm(P, w, x, y):
        inv = invariant(P, w, x, y)
        return P - inv["corr"], w + inv["g"]

    state = {k: {1: v} for k, v in invariant(P, W, x, y).items()} | {"x": {3: xn}, "y": {3: yn}}
    out = _run_on_columns(program, program.steps_of("update 1", "gain 2"), state)
    want = invariant(*sm(P, W, x, y), xn, yn)
    ok = all(_equal(out[k][0, 3], want[k]) for k in want)
    first, X1, y1 = _prologue(program, program.span("gain 1")[1], 1)
    base = invariant(np.eye(d, dtype=object) / LAM, np.zeros(d, dtype=object), X1[0], y1[0])
    ok &= all(_equal(first[k][0, 2], base[k]) for k in base)
    end = _run_on_columns(program, program.steps_of("update 3", "prediction"),
                          {k: {2: v} for k, v in invariant(P, W, x, y).items()} | {"x": {3: xn}})
    return ok and _equal(end["yhat"][0, 3], sm(P, W, x, y)[1] @ xn)


def _prove_ridge_loop_faithful(d: int) -> bool:
    """The faithful half of :func:`prove_ridge_loop`."""
    P = np.array(sp.Matrix(d, d, lambda i, j: sp.Symbol(f"P{i + 1}{j + 1}", real=True)).tolist(), dtype=object)
    B, xn, yn = _vector("B", d), _vector("x", d), sp.Symbol("y", real=True)
    program = ridge_program(d, 3, lam=LAM, x_norm=1.0, y_bound=1.0, mode="faithful")

    def sm(P, x):
        u, v = P @ x, x @ P
        return P - np.outer(u, v) / (1 + v @ x)

    new = {"x": xn, "y": yn, "xy": xn * yn}
    stale = {s: _vector(f"s_{s}_", int(np.prod(shape, dtype=int))).reshape(shape)
             for s, shape in program.slots.items() if s not in new}
    state = {s: {3: v} for s, v in stale.items()} | {s: {3: v} for s, v in new.items()}
    state["A_inv"][1], state["b"][1] = P, B
    out = _run_on_columns(program, program.steps_of("carry 2", "sherman-morrison 3"), state)  # the looped block
    ok = _equal(out["A_inv"][0, 3], sm(P, xn)) and _equal(out["b"][0, 3], B + xn * yn)
    first, X2, y2 = _prologue(program, program.span("sherman-morrison 2")[1], 2)
    P2 = sm(sm(np.eye(d, dtype=object) / LAM, X2[0]), X2[1])
    ok &= _equal(first["A_inv"][0, 4], P2) and _equal(first["b"][0, 4], X2[0] * y2[0] + X2[1] * y2[1])
    end = _run_on_columns(program, program.steps_of("epilogue"), {"A_inv": {2: P}, "b": {2: B}, "x": {3: xn}})
    return ok and _equal(end["yhat"][0, 3], (P @ B) @ xn)


def _matrix(name: str, d: int) -> np.ndarray:
    return np.array(sp.Matrix(d, d, lambda i, j: sp.Symbol(f"{name}{i + 1}{j + 1}", real=True)).tolist(), dtype=object)


def _statistics_hold(program: Program, n: int) -> tuple[bool, np.ndarray]:
    """The prologue on a symbolic prompt of n examples: S = X^T X, b = X^T y at the query
    column. Returns (whether they hold, the prompt's x_q-free X)."""
    first, X, y = _prologue(program, program.span("prologue")[1], n)
    q = 2 * n + 1
    return _equal(first["S"][0, q], X.T @ X) and _equal(first["b"][0, q], X.T @ y), first


def _repeats(program: Program, region: str, count: int) -> bool:
    """Regions ``region 1`` .. ``region count`` hold the same ops (the looped step)."""
    first = [repr(op) for op in program.steps_of(f"{region} 1")]
    return all([repr(op) for op in program.steps_of(f"{region} {j}")] == first for j in range(2, count + 1))


def soft_threshold_identity() -> bool:
    """``h(u) = u + (|u - tau| - |u + tau|) / 2`` is ``sign(u) max(|u| - tau, 0)`` for tau > 0, in
    each case: u = tau + p gives p, u = -tau - p gives -p (p > 0), and u = (q - p)/2 with
    tau = (p + q)/2 (p, q >= 0: the band |u| <= tau) gives 0."""
    p, q, tau = sp.symbols("p q tau", positive=True)
    h = lambda u, t: u + (sp.Abs(u - t) - sp.Abs(u + t)) / 2  # noqa: E731
    return (sp.simplify(h(tau + p, tau) - p) == 0 and sp.simplify(h(-tau - p, tau) + p) == 0
            and sp.simplify(h((q - p) / 2, (p + q) / 2)) == 0)


def _prove_descent(d: int, n: int, shrink, C, tau=None) -> bool:
    """The induction shared by the descent programs: for a symbolic S, b and w, the looped step
    (every step the same ops) maps w to ``v = shrink w - C (S w - b)``, or with ``tau`` to the
    program's soft threshold of it, ``v + (|v - tau| - |v + tau|) / 2``; the prologue gives
    S = X^T X, b = X^T y and w = w0 at the query of a symbolic prompt of n examples; the end,
    ``x_q . w``."""
    w0 = _vector("v", d)
    program = descent_program(d, n, steps=3, shrink=shrink, C=C, w0=w0, x_norm=1.0, y_bound=1.0, w_bound=None,
                              name="descent (proof)", tau=tau)
    S, B, W, xn = _matrix("S", d), _vector("B", d), _vector("W", d), _vector("x", d)
    out = _run_on_columns(program, program.steps_of("step 2"), {"S": {3: S}, "b": {3: B}, "w": {3: W}})
    v = shrink * W - C @ (S @ W - B)
    want = v if tau is None else v + (np.abs(v - tau) - np.abs(v + tau)) / 2
    ok = _repeats(program, "step", 3) and _equal(out["w"][0, 3], want)
    held, first = _statistics_hold(program, n)
    ok &= held and _equal(first["w"][0, 2 * n + 1], w0)
    end = _run_on_columns(program, program.steps_of("prediction"), {"w": {3: W}, "x": {3: xn}})
    return ok and _equal(end["yhat"][0, 3], W @ xn)


def prove_lasso_loop(d: int, mode: str = "fused", n: int = 2) -> bool:
    """ISTA for the Lasso, for every k, by induction over the looped step: for symbolic S, b,
    w, step size c and threshold tau, one step maps w to ``h(w - c (S w - b))`` entrywise, with
    h the soft threshold (:func:`soft_threshold_identity`). Base: the prologue's S, b and
    w = w0 at the query column for n examples; end: ``x_q . w``."""
    c, tau = sp.Symbol("c", positive=True), sp.Symbol("tau", positive=True)
    return soft_threshold_identity() and _prove_descent(d, n, 1, c * np.eye(d, dtype=object), tau)


def prove_descent_loop(d: int, mode: str = "fused", n: int = 2) -> bool:
    """k full-batch (preconditioned) GD steps on the prefix statistics, for every k, by induction
    over the looped step: for a symbolic S (any d x d matrix), b, w, shrink and preconditioner
    C, one step maps w to ``shrink w - C (S w - b)`` (every step is the same two ops). Base: the
    prologue gives S = X^T X, b = X^T y and w = w0 at the query column of a symbolic prompt of
    n examples. End: the prediction is ``x_q . w``. The program is the same in both modes."""
    return _prove_descent(d, n, sp.Symbol("s", real=True), _matrix("C", d))


def prove_newton_loop(d: int, mode: str = "fused", n: int = 2) -> bool:
    """Newton's iteration for least squares, for every k, by induction over the looped step:
    for symbolic d x d S and M, one step maps M to ``2 M - M S M``. Base: the prologue gives
    S = X^T X, b = X^T y and ``M_0 = S / (|S|_F^2 + 1)`` (the default alpha) at the query column
    of a symbolic prompt of n examples. End: ``x_q . M b``."""
    program = newton_program(d, n, steps=3, alpha=None, x_norm=1.0, y_bound=1.0, name="newton (proof)", symbolic=True)
    S, M, B, xn = _matrix("S", d), _matrix("M", d), _vector("B", d), _vector("x", d)
    same = _repeats(program, "step", 3)
    out = _run_on_columns(program, program.steps_of("step 2"), {"S": {3: S}, "M": {3: M}})
    ok = same and _equal(out["M"][0, 3], 2 * M - M @ S @ M)
    held, first = _statistics_hold(program, n)
    q = 2 * n + 1
    S_q = first["S"][0, q]
    ok &= held and _equal(first["M"][0, q], S_q / (np.sum(S_q * S_q) + 1))
    end = _run_on_columns(program, program.steps_of("prediction"), {"M": {3: M}, "b": {3: B}, "x": {3: xn}})
    return ok and _equal(end["yhat"][0, 3], (M @ B) @ xn)


@dataclass(frozen=True)
class LoopProof:
    """An induction over a looped block: ``prove(d)`` and the claim it establishes for every n
    (or every k); ``applies(c)``: whether a construction's program has that loop."""

    prove: object  # d -> bool
    claim: str
    applies: object = lambda c: True  # Construction -> bool


_SGD_STEP = "w_k = w_{k-1} - 2 lr ((w_{k-1}.x_k - y_k) x_k + lam w_{k-1})"
LOOP_PROOFS = {  # (construction, mode) -> the induction and its all-n claim
    ("sgd", "fused"): LoopProof(prove_sgd_loop, f"for every n >= 1, y_hat = x_q . w_n with {_SGD_STEP}, w_0 = w0 "
                                "(invariant at y_k's column: w = w_{k-1}, xerr = x_k (w_{k-1}.x_k - y_k); base k = 1)"),
    ("sgd", "faithful"): LoopProof(lambda d: prove_sgd_loop(d, "faithful"),
                                   f"for every n >= 1, y_hat = x_q . w_n with {_SGD_STEP}, w_0 = w0 "
                                   "(invariant at y_k's column: w = w_k; base k = 1)"),
    ("ridge", "fused"): LoopProof(prove_ridge_loop, "for every n >= 1, y_hat = x_q . w_n with the recursive least-squares "
                                  "w_k = w_{k-1} + A_k^-1 x_k (y_k - x_k.w_{k-1}), A_k^-1 by Sherman–Morrison from I/lam, "
                                  "so w_n = (X^T X + lam I)^-1 X^T y (invariant at y_k's column: A_inv = A_{k-1}^-1, "
                                  "w = w_{k-1}, corr, g; base k = 1)"),
    ("ridge", "faithful"): LoopProof(lambda d: prove_ridge_loop(d, "faithful"),
                                     "for every n >= 2, y_hat = x_q . A_n^-1 b_n with A_k^-1 by Sherman–Morrison from I/lam "
                                     "(any P, symmetric or not) and b_k = sum_{i<=k} x_i y_i (invariant at y_k's column: "
                                     "A_inv = A_k^-1, b = b_k, any stale values elsewhere; base k = 2)"),
}
_DESCENT = ("for every k >= 1 steps, y_hat = x_q . w_k with w_j = shrink w_{j-1} - C (S w_{j-1} - b) on S = X^T X, "
            "b = X^T y (gd: shrink = 1 - 2 lr lam, C = 2 lr I; pgd: shrink = 1, C = 2 lr P), w_0 = w0 (step: any S, "
            "b, w, C; the prologue's S, b for n = 2)")
_NEWTON = ("for every k >= 1 steps, y_hat = x_q . M_k X^T y with M_j = 2 M_{j-1} - M_{j-1} S M_{j-1}, "
           "M_0 = S / (|S|_F^2 + 1), S = X^T X (step: any S, M; the prologue's S, b, M_0 for n = 2)")
_LASSO = ("for every k >= 1 steps, y_hat = x_q . w_k with w_j = soft_threshold(w_{j-1} - 2 lr (S w_{j-1} - b), lr l1) "
          "on S = X^T X, b = X^T y, w_0 = w0 (step: any S, b, w, step size and threshold; soft_threshold by cases; the "
          "prologue's S, b for n = 2)")
for _mode in ("fused", "faithful"):
    LOOP_PROOFS[("gd", _mode)] = LoopProof(lambda d, m=_mode: prove_descent_loop(d, m), _DESCENT,
                                           lambda c: c.params.get("steps", 1) > 1)
    LOOP_PROOFS[("pgd", _mode)] = LoopProof(lambda d, m=_mode: prove_descent_loop(d, m), _DESCENT)
    LOOP_PROOFS[("newton", _mode)] = LoopProof(lambda d, m=_mode: prove_newton_loop(d, m), _NEWTON,
                                               lambda c: c.params.get("alpha") is None and c.params["steps"] >= 1)
    LOOP_PROOFS[("ols", _mode)] = LoopProof(lambda d, m=_mode: prove_newton_loop(d, m), _NEWTON)
    LOOP_PROOFS[("lasso", _mode)] = LoopProof(lambda d, m=_mode: prove_lasso_loop(d, m), _LASSO)


# ---- mechanisms ----------------------------------------------------------------------------
a, b, z = sp.symbols("a b z", real=True)
S, P, M, G = sp.symbols("S P M G", positive=True)


def gelu(u: sp.Expr) -> sp.Expr:
    return u / 2 * (1 + sp.erf(u / sp.sqrt(2)))


def product_mechanism(levels: int) -> tuple[bool, str]:
    """sum_m w_m S_m^2/4 sqrt(pi/2) [sq((a+b)/S_m) - sq((a-b)/S_m)] = ab + O(S^-2K), leading
    coefficient nonzero at exactly order S^-2K."""
    factors, _ = richardson_weights(levels)
    factors = [sp.Integer(int(f)) for f in factors]
    # the compiler's weights, solved exactly: sum w = 1, sum w f^-2n = 0 for 0 < n < levels
    V = sp.Matrix([[f ** (-2 * n) for f in factors] for n in range(levels)])
    weights = list(V.solve(sp.Matrix([1] + [0] * (levels - 1))))
    assert np.allclose([float(w) for w in weights], richardson_weights(levels)[1])
    eps = sp.symbols("epsilon", positive=True)  # eps = 1/S
    total = 0
    for f, w in zip(factors, weights):
        sq = lambda u: sp.sqrt(sp.pi / 2) * (gelu(u) + gelu(-u))  # noqa: E731
        Sm = f / eps  # the compiler's scale S * 2^m
        total += w * Sm**2 / 4 * (sq((a + b) / Sm) - sq((a - b) / Sm))
    series = sp.series(total, eps, 0, 2 * levels + 1).removeO()
    series = sp.expand(sp.simplify(series))
    lead = sp.expand(series.coeff(eps, 2 * levels))
    ok = sp.simplify(series.coeff(eps, 0) - a * b) == 0 and all(series.coeff(eps, k) == 0 for k in range(1, 2 * levels)) and lead != 0
    return ok, f"ab + ({sp.factor(lead)}) S^-{2 * levels} + ..."


def linear_mechanism() -> tuple[bool, str]:
    """GeLU(z) - GeLU(-z) = z exactly: no large offset (Lemma 5) is needed for linear units."""
    return sp.simplify(gelu(z) - gelu(-z) - z) == 0, "GeLU(z) - GeLU(-z) = z"


def layer_norm_mechanism() -> tuple[bool, str]:
    """Units (P, -P, h, -h) (the balance unit makes the mean 0): the MLP's read
    ``h * P sqrt(2/L) / sigma`` tends to h with error -h^3/(4P^2) + O(P^-4), here L = 4."""
    L = 4
    units = [P, -P, a, -a]
    mean = sum(units) / L
    sigma = sp.sqrt(sum((u - mean) ** 2 for u in units) / L)
    read = (a - mean) / sigma * P * sp.sqrt(sp.Rational(2, L))
    series = sp.series(read, P, sp.oo, 4).removeO()
    ok = sp.limit(read, P, sp.oo) == a and sp.simplify(series - (a - a**3 / (2 * P**2))) == 0
    return ok, "h - h|r|^2/(4P^2) + ..., |r|^2 = 2h^2"


def division_mechanism() -> tuple[bool, str]:
    """Units (M c, -M c, y, -y): the read ``y M sqrt(2/L) / sigma`` tends to y/|c|, error O(M^-2)."""
    c = sp.symbols("c", positive=True)
    L = 4
    units = [M * c, -M * c, a, -a]
    sigma = sp.sqrt(sum(u**2 for u in units) / L)
    read = a / sigma * M * sp.sqrt(sp.Rational(2, L))
    ok = sp.simplify(sp.limit(read, M, sp.oo) - a / c) == 0 and sp.simplify(
        sp.series(read, M, sp.oo, 4).removeO() - (a / c - a**3 / (2 * c**3 * M**2))) == 0
    return ok, "y/|c| - y|r|^2/(4 c^3 M^2) + ..."


def attention_mechanism(T: int = 6) -> tuple[bool, str]:
    """Logits -G (j - s)^2 over T columns: the weight on column s tends to 1, the rest to 0,
    and the total leak is below (T-1) e^{-G}."""
    s = 2
    logits = [-G * (j - s) ** 2 for j in range(T)]
    weight = sp.exp(logits[s]) / sum(sp.exp(v) for v in logits)
    leak = 1 - weight
    ok = sp.limit(weight, G, sp.oo) == 1 and sp.limit(leak / ((T - 1) * sp.exp(-G)), G, sp.oo) <= 1
    return ok, f"leak / ((T-1) e^-G) -> {sp.limit(leak / ((T - 1) * sp.exp(-G)), G, sp.oo)}"


def hinge_mechanism() -> tuple[bool, str]:
    """``(GeLU(s u) + GeLU(-s u)) / s = u erf(s u / sqrt 2)``, which tends to |u|; the gap
    ``|u| erfc(s |u| / sqrt 2) <= |u| e^{-s^2 u^2 / 2}`` (erfc(x) <= e^{-x^2}) is largest at
    |u| = 1/s, where it is e^{-1/2} / s."""
    u, v = sp.symbols("u v", positive=True)
    pair = (gelu(S * u) + gelu(-S * u)) / S
    identity = sp.simplify(pair - u * sp.erf(S * u / sp.sqrt(2))) == 0 and sp.limit(pair, S, sp.oo) == u
    gap = v * sp.exp(-v**2 / 2)  # v = s |u|: the gap times s
    peak = sp.solve(sp.diff(gap, v), v)
    ok = identity and peak == [1] and sp.simplify(gap.subs(v, 1) - sp.exp(-sp.Rational(1, 2))) == 0
    return ok, "pair = |u| erf(s|u|/sqrt 2); gap <= e^-1/2 / s"


def compiled_hinge_layer() -> tuple[bool, str]:
    """The compiled soft_threshold layer (tau = 1/4), pad P and sharpness S symbolic: LayerNorm's
    factor gamma -> 1 as P -> oo, and at gamma = 1 the written value is
    ``a + sum_k c_k (a - t_k) erf(S (a - t_k) / sqrt 2)``, which tends to soft_threshold(a, 1/4)."""
    from iclkit.primitives import soft_threshold

    tau = sp.Rational(1, 4)
    gamma, out = _compiled_mlp(soft_threshold("z", "a", 0.25), {"a": (), "z": ()}, {"a": 1.0}, P,
                               {"a": a, "one": sp.Integer(1)}, ("pad+", "pad-"), P)
    want = a + sum(c * (a - t) * sp.erf(S * (a - t) / sp.sqrt(2)) for t, c in ((tau, sp.Rational(1, 2)),
                                                                             (-tau, -sp.Rational(1, 2))))
    at = out.subs(GAMMA, 1)
    point = {a: sp.Rational(3, 7), S: sp.Rational(5, 2)}
    ok = sp.limit(gamma, P, sp.oo) == 1 and abs(float((at - want).subs(point))) <= 1e-14 and \
        sp.limit(want.subs(a, sp.Rational(3, 7)), S, sp.oo) == sp.Rational(3, 7) - tau
    return ok, "gamma -> 1; z = a + sum c_k (a - t_k) erf(S (a - t_k)/sqrt 2) -> soft_threshold(a, 1/4)"


OP_PROOFS = {  # op class -> the claims of `iclkit prove` that prove its mechanism and its compiled layer
    "Aff": ("primitive mov/aff/mean: hard attention", "compiled aff layer (matrix, scalar, bias)"),
    "Mov": ("primitive mov/aff/mean: hard attention", "compiled mov layer (t-1), G -> oo"),
    "Mean": ("primitive mov/aff/mean: hard attention", "compiled mean layer"),
    "Mul": ("primitive mul/dot: GeLU product, 2 scale(s)", "compiled mul layer, P and S symbolic"),
    "Div": ("primitive div: LayerNorm division (Lemma 8)", "compiled div layer, M symbolic"),
    "Hinge": ("primitive hinge (relu, abs, clip, soft_threshold): GeLU pair |u|",
              "compiled soft_threshold layer, P and S symbolic"),
}


def claims(max_d: int = 3):
    """Every claim as (name, function returning (ok, detail))."""
    out = [
        ("primitive mov/aff/mean: hard attention", attention_mechanism),
        ("primitive aff (MLP-free linear units): GeLU pair", linear_mechanism),
        ("LayerNorm read (Lemma 6)", layer_norm_mechanism),
        ("primitive div: LayerNorm division (Lemma 8)", division_mechanism),
    ]
    out += [(f"primitive mul/dot: GeLU product, {k} scale(s)", lambda k=k: product_mechanism(k)) for k in (1, 2, 3)]
    out += [("compiled mul layer, P and S symbolic", compiled_product_layer),
            ("compiled div layer, M symbolic", compiled_division_layer),
            ("primitive hinge (relu, abs, clip, soft_threshold): GeLU pair |u|", hinge_mechanism),
            ("compiled soft_threshold layer, P and S symbolic", compiled_hinge_layer)]
    from iclkit.primitives import Mean, aff, mov

    W = np.array([[1.0, 2.0], [0.0, -1.0]])
    out += [
        ("compiled mov layer (t-1), G -> oo", lambda: (compiled_attention_layer(mov("z", "a", 1), {"a": (2,), "z": (2,)}, {"a": 1.0}), "exact")),
        ("compiled accumulating mov layer", lambda: (compiled_attention_layer(mov("a", "a", 1, accumulate=True, bound=2.0), {"a": (2,)}, {"a": 1.0}), "exact")),
        ("compiled aff layer (matrix, scalar, bias)", lambda: (compiled_attention_layer(
            aff("z", ("a", W), ("b", -0.5), bias=np.array([1.0, 0.25])), {"a": (2,), "b": (2,), "z": (2,)}, {"a": 1.0, "b": 1.0}), "exact")),
        ("compiled mean layer", lambda: (compiled_attention_layer(Mean("z", src="a"), {"a": (2,), "z": (2,)}, {"a": 1.0}), "exact")),
    ]
    for d in range(1, max_d + 1):
        for mode in ("faithful", "fused"):
            out.append((f"Theorem 1 (sgd, n=1, {mode}) d={d}", lambda d=d, m=mode: (prove_sgd(d, 1, m), "")))
            out.append((f"Theorem 2 (ridge, n=1, {mode}) d={d}", lambda d=d, m=mode: (prove_ridge(d, 1, m), "")))
    for d in range(1, min(max_d, 2) + 1):
        out.append((f"two stacked sgd blocks d={d}", lambda d=d: (prove_sgd(d, 2, "fused"), "")))
        out.append((f"two stacked ridge blocks d={d}", lambda d=d: (prove_ridge(d, 2, "fused"), "")))
    for d in range(1, min(max_d, 2) + 1):
        for (name, mode), loop in LOOP_PROOFS.items():
            out.append((f"every n, by induction over the loop: {name} ({mode}) d={d}",
                        lambda d=d, loop=loop: (loop.prove(d), loop.claim)))
    for name in ("sgd", "gd", "ridge"):
        out.append((f"{name} built for n=3 on a prompt of 1 example d=1 (fused)",
                    lambda name=name: (prove_shorter_prompt(name, 1, 3, 1, "fused"), "")))
    out.append(("the paper's λ sign is caught (sgd d=2 must NOT prove)",
                lambda: (not prove_sgd(2, 1, "faithful", mistake=True), "")))
    return out


def run_proofs(console, max_d: int = 3) -> int:
    from rich.table import Table

    table = Table(title="iclkit prove")
    for col in ("claim", "result", "seconds", "detail"):
        table.add_column(col)
    failed = 0
    for name, fn in claims(max_d):
        t0 = time.perf_counter()
        ok, detail = fn()
        dt = time.perf_counter() - t0
        failed += not ok
        table.add_row(name, "[green]proved[/]" if ok else "[red]FAILED[/]", f"{dt:.2f}", detail)
    console.print(table)
    return 1 if failed else 0


# ---- the compiled layers themselves --------------------------------------------------------
def _compiled_mlp(op, slots: dict, inputs: dict, constant: sp.Symbol, h: dict, pad_names: tuple[str, str],
                  pad: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """The MLP sublayer the compiler writes for ``op``, with its large constant (P for mul, M
    for div) left as a symbol: returns (LayerNorm's scale factor gamma, the written value)."""
    from iclkit.primitives import Program, compile_program
    from iclkit.primitives.compile import _layer_spec
    from iclkit.primitives.errors import Mechanism

    program = Program(slots, inputs, [op])
    compiled = compile_program(program, max_len=2, levels=1)
    layer = compiled.schedule[0]
    sizes = program.sizes()
    mechs = {id(op): Mechanism(scale=constant if op.sets_layer_norm else S, kappa=1)}
    spec = _layer_spec(layer, compiled.layout, sizes, P, mechs, levels=1)
    # the residual after the layer's attention: slots, constant units, pads, balance (mean 0)
    units = {name: h.get(name, sp.Integer(0)) for name in compiled.layout.slots}
    units[pad_names[0]], units[pad_names[1]] = pad, -pad
    units["bal"] = -sum(v for k, v in units.items() if k not in ("pad+", "pad-", "div+", "div-", "bal"))
    L = compiled.layout.width
    assert sp.simplify(sum(units.values())) == 0  # LayerNorm's mean is exactly zero
    sigma = sp.sqrt(sum(v**2 for v in units.values()) / L)
    gamma = sp.nsimplify(spec.read_scale / constant) * constant / sigma  # multiplies every read unit
    out = 0
    for terms, dst, idx, out_coef in spec.hidden:
        if dst != op.dst or idx != 0:
            continue
        pre = sum(sp.nsimplify(coef) * units[slot] for slot, _, coef in terms) * GAMMA
        out += sp.nsimplify(out_coef, [sp.pi]) * gelu(pre)
    return gamma, out  # the value depends on the constant only through gamma


GAMMA = sp.symbols("gamma", positive=True)


def compiled_product_layer() -> tuple[bool, str]:
    """The compiled mul layer, pad P and product scale S symbolic: LayerNorm's factor gamma -> 1
    as P -> oo (error O(P^-2)), and at gamma = 1 the written value is ab - ab(a^2+b^2)/(3S^2) + O(S^-4)."""
    from iclkit.primitives import mul

    gamma, out = _compiled_mlp(mul("z", "a", "b", (1, 1, 1)), {"a": (), "b": (), "z": ()}, {"a": 1.0, "b": 1.0},
                               P, {"a": a, "b": b, "one": sp.Integer(1)}, ("pad+", "pad-"), P)
    eps = sp.symbols("epsilon", positive=True)
    series = sp.expand(sp.series(out.subs(GAMMA, 1).subs(S, 1 / eps), eps, 0, 4).removeO())
    # the weights are floats (sqrt(pi/2) rounded), so coefficients match to float precision
    point = {a: sp.Rational(3, 7), b: sp.Rational(-5, 11)}
    close = lambda x, y: abs(float(x.subs(point)) - float(y.subs(point))) <= 1e-12 * abs(float(y.subs(point)))  # noqa: E731
    ok = (sp.limit(gamma, P, sp.oo) == 1 and close(series.coeff(eps, 0), a * b)
          and close(series.coeff(eps, 2), -a * b * (a**2 + b**2) / 3) and series.coeff(eps, 1) == 0)
    return ok, "gamma -> 1; z = ab - ab(a^2+b^2)/(3 S^2) + ... (to float precision of the weights)"


def compiled_division_layer() -> tuple[bool, str]:
    """The compiled div layer, division scale M symbolic: the written value tends to y/|c| as M -> oo."""
    from iclkit.primitives import div

    c = sp.symbols("c", positive=True)
    gamma, out = _compiled_mlp(div("z", "a", "c", den_min=1.0), {"a": (), "c": (), "z": ()}, {"a": 1.0, "c": 2.0},
                               M, {"a": a, "c": c, "one": sp.Integer(1)}, ("div+", "div-"), M * c)
    ok = sp.limit(gamma * c, M, sp.oo) == 1 and sp.simplify(out.subs(GAMMA, 1 / c) - a / c) == 0
    return ok, "gamma -> 1/|c| as M -> oo, where z = y/|c| exactly (GeLU pair)"


def compiled_attention_layer(op, slots: dict, inputs: dict, T: int = 4) -> bool:
    """An attention-only primitive's compiled weights, evaluated on symbolic columns in the hard-
    attention limit (G -> oo; see the hard-attention claim for the rate): the target slot gets
    exactly its reference value, every other slot is untouched, and the balance unit keeps the
    column sum at zero."""
    from iclkit.primitives import Program, compile_program

    return attention_layer_matches(compile_program(Program(slots, inputs, [op]), max_len=T, levels=1), T)


def attention_layer_matches(compiled, T: int) -> bool:
    """The check of :func:`compiled_attention_layer` on an already compiled one-op program."""
    from iclkit.primitives.compile import _layer_spec
    from iclkit.primitives.errors import Mechanism

    program, op = compiled.program, compiled.program.ops[0]
    layer, torch_layer = compiled.schedule[0], compiled.model.layers[0]
    spec = _layer_spec(layer, compiled.layout, program.sizes(), 1.0, compiled.mechanisms, levels=1)
    shifts = list(spec.heads)  # head h of the torch layer reads column max(t - shifts[h], 0)
    exact = lambda t: sp.Matrix(t.detach().numpy().tolist()).applyfunc(sp.nsimplify)  # noqa: E731
    labels = compiled.layout.labels()
    # symbolic columns: every program slot free; system units as the embedding sets them
    pos = compiled.model.pos.detach().numpy()
    columns = []
    for t in range(T):
        col = [sp.nsimplify(v) for v in pos[t]]
        for name in program.slots:
            rows = compiled.layout.rows(name)
            for i in range(rows.stop - rows.start):
                col[rows.start + i] = sp.Symbol(f"{name}{i}_{t}", real=True)
        bal = compiled.layout.rows("bal").start
        col[bal] = -sum(v for j, v in enumerate(col) if j != bal and labels[j] not in ("pad+", "pad-", "div+", "div-"))
        columns.append(sp.Matrix(col))
    values = {n: np.array([[[c[i] for i in range(compiled.layout.rows(n).start, compiled.layout.rows(n).stop)]
                            for c in columns]], dtype=object) for n in program.inputs}
    reference = program.interpret(values)[op.dst][0]
    for t in range(T):
        update = sp.zeros(len(labels), 1)
        for h, shift in enumerate(shifts):
            src = columns[max(t - shift, 0)] if shift is not None else sum(columns[: t + 1], sp.zeros(len(labels), 1)) / (t + 1)
            update += exact(torch_layer.W_O[h]).T * (exact(torch_layer.W_V[h]).T * src)
        new = columns[t] + update
        for j, label in enumerate(labels):
            name = label.split("[")[0]
            if name == op.dst:
                idx = j - compiled.layout.rows(name).start
                target = np.asarray(reference[t]).reshape(-1)[idx]
                if sp.simplify(new[j] - target) != 0:
                    return False
            elif name != "bal" and sp.simplify(new[j] - columns[t][j]) != 0:
                return False
        if sp.simplify(sum(new[j] for j, lab in enumerate(labels) if lab not in ("pad+", "pad-", "div+", "div-"))) != 0:
            return False
    return True


def prove_program(program: Program, closed_form, d: int, n: int) -> bool:
    """``program`` (built for n examples) computes ``closed_form(X, y, xq)`` on every prompt of
    n examples in d dimensions: both on real symbols, the difference cancelled exactly (a
    rational function; a division on symbols divides by the divisor itself, so the proof
    holds where the divisors are positive). Write the program's parameters as sympy symbols
    to prove it for every value of them (docs/authoring.md)."""
    X, y, xq, _ = symbolic_prompt(d, n)
    diff = program_prediction(program, X, y, xq, t_max=2 * n + 1) - closed_form(X, y, xq)
    return sp.cancel(sp.together(sp.expand(diff))) == 0
