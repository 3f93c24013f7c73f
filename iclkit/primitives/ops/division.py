"""The division family: div in the MLP (Lemma 8), LayerNorm as the divider.

The layer's attention swaps the ±P pads for ±M·den, so LayerNorm divides by |den|; the MLP
reads the numerator through linear pairs and restores ±P through its bias; the next layer's
attention removes ±M·den. Divisions sharing a layer share their divisor. Every piece of the
op's behaviour is here (:data:`~iclkit.primitives.ops.base.PIECES`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from iclkit.primitives import bounds as bd
from iclkit.primitives.ops.base import Op, current_reads, target_clear_error


@dataclass(frozen=True)
class Div(Op):
    """``dst <- num / |den|`` in every column (Lemma 8), certified for ``|den| >= den_min``."""

    num: str = ""
    den: str = ""
    den_min: float = 1.0
    bound: float | None = None

    kind = "mlp"
    name = "div"
    sets_layer_norm = True  # its layer's LayerNorm scale is the divisor's (one divisor per layer)

    def reads(self) -> tuple[str, ...]:
        return (self.num, self.den)

    def shape_problems(self, sizes) -> list[str]:
        problems = []
        if sizes[self.den] != 1:
            problems.append(f"the divisor {self.den!r} must be a scalar slot, it has {sizes[self.den]} entries")
        if sizes[self.num] != sizes[self.dst]:
            problems.append(f"sizes differ: {self.dst!r} has {sizes[self.dst]}, {self.num!r} has {sizes[self.num]}")
        if not self.den_min > 0:
            problems.append(f"den_min must be > 0 (a lower bound on |{self.den}|), got {self.den_min}")
        return problems

    def evaluate(self, values, sizes) -> np.ndarray:
        """``num / |den|``. On symbols (a proof) ``num / den``: a proof holds for a positive
        divisor (den >= den_min, as the constructions' divisors are), and sympy's Abs would
        flip signs inside it when it normalises ``Abs(-z)`` to ``Abs(z)``."""
        if values[self.num].dtype == object or values[self.den].dtype == object:
            return values[self.num] / values[self.den]
        return values[self.num] / np.abs(values[self.den])

    def out_bound(self, bounds, sizes) -> float:
        return self.bound if self.bound is not None else bounds[self.num] / self.den_min

    def propagated_error(self, bounds, errors, sizes) -> float:
        en, ec = errors[self.num], errors[self.den]
        if ec >= self.den_min:
            return float("inf")
        c_lo = self.den_min - ec
        return en / c_lo + bounds[self.num] * ec / (self.den_min * c_lo)


    def own_error(self, mech, ctx, layer, read, other, dst_old, out):
        return bd.div_error(ctx.dtype, ctx.ln[layer], read[self.num], read[self.den], out) + \
            target_clear_error(self, ctx, other, dst_old)

    def evaluation_mass(self, values, sizes):
        return 2, np.abs(self.evaluate(values, sizes))

    def read_magnitudes(self, values):
        return current_reads(self, values)

    def remainder(self, exact, deviation):
        c = np.abs(exact[self.den])
        ec, en = deviation[self.den], deviation[self.num]
        n = np.abs(exact[self.num])
        with np.errstate(divide="ignore", invalid="ignore"):
            q = (en * c + n * ec) * ec / (c * c * (c - ec))
        return np.where(ec < c, q, np.inf)

    def vjp(self, g, before, bar, sizes, absolute):  # d(num/|c|)/dc = -num sign(c) / c^2
        f = np.abs if absolute else (lambda v: v)
        c = before[self.den]
        bar[self.num] += g / np.abs(c)
        sign = 1.0 if absolute else -np.sign(c)
        bar[self.den] += sign * (g * f(before[self.num])).sum(-1, keepdims=True) / c**2

    def out_terms(self, sizes):
        return 1

    def lower(self, spec, sizes, mech, P, width, levels):
        M = mech.scale
        if not spec.dividing:  # the first division of the layer sets up the pads
            spec.dividing = True
            spec.read_scale = M * math.sqrt(2 / width)
            h0 = spec.head(0, sizes)
            h0.add(self.den, "div+", np.array([[M]]))
            h0.add(self.den, "div-", np.array([[-M]]))
            h0.add("one", "pad+", np.array([[-P]]))
            h0.add("one", "pad-", np.array([[P]]))
            spec.out_bias += [("pad+", 0, P), ("pad-", 0, -P)]
        for i in range(sizes[self.dst]):  # GeLU(z) - GeLU(-z) = z, exactly
            spec.hidden.append(([(self.num, i, 1.0)], self.dst, i, 1.0))
            spec.hidden.append(([(self.num, i, -1.0)], self.dst, i, -1.0))

    def lower_cleanup(self, spec, sizes, mech) -> None:
        """The next layer's attention removes this division's pads ±M·den."""
        spec.head(0, sizes).add(self.den, "div+", np.array([[-mech.scale]]))
        spec.head(0, sizes).add(self.den, "div-", np.array([[mech.scale]]))

    def expected_weights(self, sink, sizes, mech, levels):
        """Linear pairs reading the numerator (balanced); LayerNorm divides."""
        for i in range(sizes[self.dst]):
            sink.unit([(sink.row(self.num, i), 1.0)], {sink.row(self.dst, i): 1.0}, True)
            sink.unit([(sink.row(self.num, i), -1.0)], {sink.row(self.dst, i): -1.0}, True)

    def expected_pads(self, sink, mech, P: float) -> None:
        """The layer's attention swaps ±P for ±M·den (once per dividing layer); the MLP's bias
        restores ±P."""
        sink.map(0, self.den, "div+", [[mech.scale]])
        sink.map(0, self.den, "div-", [[-mech.scale]])
        sink.map(0, "one", "pad+", [[-P]])
        sink.map(0, "one", "pad-", [[P]])

    def expected_cleanup(self, sink, mech) -> None:
        """The next layer's attention removes the pads ±M·den."""
        sink.map(0, self.den, "div+", [[-mech.scale]])
        sink.map(0, self.den, "div-", [[mech.scale]])


def div(dst: str, num: str, den: str, den_min: float, bound: float | None = None) -> Div:
    """``dst <- num / |den|``; ``den_min`` is the lower bound on |den| the error bound is certified for."""
    return Div(dst, num=num, den=den, den_min=den_min, bound=bound)
