"""The prefix sufficient statistics of least squares, ``S = X^T X`` and ``b = X^T y``, in every column.

Causal attention lets column t see only the columns before it, so an algorithm that revisits
the examples (several GD steps, Newton's iterations, ISTA) cannot form per-example residuals
after its first step. Everything it needs is in S and b over the examples so far: each y
column 2i forms ``x_i x_i^T`` and ``x_i y_i`` (x_i moved from the column before), causal
uniform attention averages them over columns 0..t (BOS and x columns contribute 0), and a
product with the column count t + 1 turns the means into sums. The query column thus holds
S and b over all n examples; every earlier column those of the examples before it.
"""

from __future__ import annotations

from dataclasses import dataclass

from iclkit.primitives import Mean, Op, aff, mov, mul


@dataclass(frozen=True)
class Statistics:
    """The prologue's slots and ops, and entrywise bounds on S and b."""

    slots: dict[str, tuple[int, ...]]
    steps: list[Op]
    S_bound: float | None
    b_bound: float | None


def sufficient_statistics(d: int, n: int, x_norm: float | None, y_bound: float | None) -> Statistics:
    """Ops writing ``S`` (d x d) and ``b`` (d) at every column; bounds None for a proof.

    ``|S_ij| <= sum_i |x_i|^2 <= n X^2`` and ``|b_j| <= n X Y`` for |x| <= X, |y| <= Y."""
    X, Y = x_norm, y_bound
    numeric = X is not None and Y is not None
    T_max = 2 * n + 1  # the pos unit holds t / T_max
    slots = {"x_ex": (d,), "count": (), "outer": (d, d), "xy": (d,), "S_mean": (d, d), "b_mean": (d,),
             "S": (d, d), "b": (d,)}
    steps: list[Op] = [
        mov("x_ex", "x", 1),  # at y column 2i: x_i (0 in every other column)
        aff("count", ("pos", float(T_max)), bias=1.0, bound=T_max + 1.0),  # t + 1 columns so far
        mul("outer", "x_ex", "x_ex", (d, 1, d), bound=X * X if numeric else None),  # x_i x_i^T
        mul("xy", "x_ex", "y", (d, 1, 1), bound=X * Y if numeric else None),  # x_i y_i
        Mean("S_mean", src="outer"),
        Mean("b_mean", src="xy"),
        mul("S", "S_mean", "count", (d * d, 1, 1), bound=n * X * X if numeric else None),  # X^T X so far
        mul("b", "b_mean", "count", (d, 1, 1), bound=n * X * Y if numeric else None),  # X^T y so far
    ]
    return Statistics(slots, steps, n * X * X if numeric else None, n * X * Y if numeric else None)
