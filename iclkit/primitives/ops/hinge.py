"""The hinge family: relu, abs, clip and soft_threshold as one piecewise-linear MLP op.

Every piecewise-linear map of one variable with knots t_k is
``slope z + const + sum_k c_k |z - t_k|``: relu(z) = z/2 + |z|/2, clip(z, lo, hi) =
(lo + hi)/2 + (|z - lo| - |z - hi|)/2, soft_threshold(z, tau) = z + (|z - tau| - |z + tau|)/2.
Each |u| is a GeLU pair at sharpness s: ``(GeLU(s u) + GeLU(-s u)) / s = |u| erf(s |u| / sqrt 2)``,
short of |u| by ``|u| erfc(s |u| / sqrt 2) <= |u| e^{-s^2 u^2 / 2} <= e^{-1/2} / s`` (the
largest gap, at |u| = 1/s, and far smaller elsewhere); the linear part is a linear pair
(GeLU(z) - GeLU(-z) = z exactly), the constant the MLP's output bias. The compiler takes s as
large as the pre-activations allow, ``s = 1 / (u B)`` for |z - t_k| <= B (u the unit
roundoff), so the kink's gap is as small as the rounding. Every piece of the op's behaviour is
here (:data:`~iclkit.primitives.ops.base.PIECES`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sympy as sp

from iclkit.primitives import bounds as bd
from iclkit.primitives.ops.base import Op, column_max, current_reads, target_clear_error

KINK_GAP = math.exp(-0.5)  # max_u |u| erfc(s |u| / sqrt 2) <= e^{-1/2} / s


@dataclass(frozen=True)
class Hinge(Op):
    """``dst <- slope src + const + sum_k c_k |src - t_k|`` entrywise, ``knots = ((t_k, c_k), ...)``."""

    src: str = ""
    knots: tuple = ()
    slope: float = 0.0
    const: float = 0.0
    bound: float | None = None

    kind = "mlp"
    name = "hinge"
    scale_name = "hinge sharpness"

    def reads(self) -> tuple[str, ...]:
        return (self.src,)

    def shape_problems(self, sizes) -> list[str]:
        problems = []
        if sizes[self.src] != sizes[self.dst]:
            problems.append(f"sizes differ: {self.dst!r} has {sizes[self.dst]}, {self.src!r} has {sizes[self.src]}")
        numbers = [self.slope, self.const, *(v for knot in self.knots for v in knot)]
        if not self.knots or any(len(knot) != 2 for knot in self.knots):
            problems.append("knots must be one or more pairs (t_k, c_k)")
        elif not all(isinstance(v, sp.Basic) or (isinstance(v, (int, float)) and math.isfinite(v)) for v in numbers):
            problems.append("slope, const and every knot (t_k, c_k) must be finite real numbers")
        return problems

    def evaluate(self, values, sizes) -> np.ndarray:
        z = values[self.src]
        out = self.slope * z + self.const
        for t, c in self.knots:
            out = out + c * np.abs(z - t)  # on sympy symbols: Abs
        return out

    def _mass(self, Z):
        """Bound on the sum of |terms| for |z| <= Z (and on |result|)."""
        return abs(self.slope) * Z + abs(self.const) + sum(abs(c) * (Z + abs(t)) for t, c in self.knots)

    def lipschitz(self) -> float:
        return abs(self.slope) + sum(abs(c) for _, c in self.knots)

    def out_bound(self, bounds, sizes) -> float:
        return self.bound if self.bound is not None else self._mass(bounds[self.src])

    def propagated_error(self, bounds, errors, sizes) -> float:
        return self.lipschitz() * errors[self.src]

    def sharpness(self, dtype: str, Z: float) -> float:
        """s = 1 / (u B), B = Z + max |t_k|: the largest pre-activation s B stays at 1/u."""
        B = Z + max(abs(t) for t, _ in self.knots)
        return 1.0 / (bd.roundoff(dtype) * max(B, 1e-300))

    def own_error(self, mech, ctx, layer, read, other, dst_old, out):
        ln, dtype, Z = ctx.ln[layer], ctx.dtype, read[self.src]
        err = abs(self.slope) * bd.linear_read_error(dtype, ln, Z)
        for t, c in self.knots:
            e_read = ln.read_error(Z) + ln.read_error(abs(t))  # z and the constant unit, both through LayerNorm
            err = err + abs(c) * (e_read + bd.linear_pair_error(dtype, Z + abs(t) + e_read) + KINK_GAP / mech.scale)
        terms = self.out_terms(ctx.sizes)
        err = err + bd.gamma(terms, dtype) * self._mass(Z) + bd.roundoff(dtype) * np.abs(out)
        if self.dst in self.reads():  # in place: the MLP subtracts the old value
            err = err + bd.linear_read_error(dtype, ln, dst_old)
        return err + target_clear_error(self, ctx, other, dst_old)

    def evaluation_mass(self, values, sizes):
        z = np.abs(values[self.src])
        mass = abs(self.slope) * z + abs(self.const) + sum(abs(c) * np.abs(values[self.src] - t) for t, c in self.knots)
        return 2 * len(self.knots) + 3, mass

    def read_magnitudes(self, values):
        return current_reads(self, values)

    def remainder(self, exact, deviation):
        """``|f(z + e) - f(z) - f'(z) e| <= 2 |c_k| |e|`` where a knot lies within |e| of z, else 0."""
        z, e = exact[self.src], deviation[self.src]
        rem = np.zeros_like(z, dtype=float)
        for t, c in self.knots:
            rem = rem + np.where(np.abs(z - t) <= e, 2 * abs(c) * e, 0.0)
        return column_max(rem)

    def vjp(self, g, before, bar, sizes, absolute):
        z = before[self.src]
        slope = self.slope + sum(c * np.sign(z - t) for t, c in self.knots)
        bar[self.src] += g * (np.abs(slope) if absolute else slope)

    def out_terms(self, sizes):
        """Two units per knot, a linear pair for the slope, the bias."""
        return 2 * len(self.knots) + 2 * (self.slope != 0) + (self.const != 0)

    def lower(self, spec, sizes, mech, P, width, levels):
        spec.read_scale = P * math.sqrt(2 / width)
        s = mech.scale
        for i in range(sizes[self.dst]):
            if self.slope:
                spec.hidden.append(([(self.src, i, 1.0)], self.dst, i, self.slope))
                spec.hidden.append(([(self.src, i, -1.0)], self.dst, i, -self.slope))
            for t, c in self.knots:
                for sign in (1.0, -1.0):  # GeLU(s (z - t)) + GeLU(-s (z - t)) = s |z - t| erf(...)
                    spec.hidden.append(([(self.src, i, sign * s), ("one", 0, -sign * s * t)], self.dst, i, c / s))
        if self.const:
            spec.out_bias += [(self.dst, i, self.const) for i in range(sizes[self.dst])]

    def expected_weights(self, sink, sizes, mech, levels):
        """From |u| = (GeLU(s u) + GeLU(-s u)) / s and z = GeLU(z) - GeLU(-z), independently of
        :meth:`lower`: per entry a linear pair and two units per knot, balanced; the constant in b_out."""
        s = mech.scale
        one = sink.row("one", 0)
        for i in range(sizes[self.dst]):
            z, out = sink.row(self.src, i), sink.row(self.dst, i)
            if self.slope:
                sink.unit([(z, 1.0)], {out: self.slope}, True)
                sink.unit([(z, -1.0)], {out: -self.slope}, True)
            for t, c in self.knots:
                for sign in (1.0, -1.0):
                    sink.unit([(z, sign * s), (one, -sign * s * t)], {out: c / s}, True)
            if self.const:
                sink.bias(self.dst, i, self.const)

    def describe(self) -> str:
        return f"{self.name}({self.dst} <- {self.src}; knots {', '.join(str(t) for t, _ in self.knots)})"


def _num(v):
    """A float, or a sympy expression kept as it is (a program built for a proof)."""
    return v if isinstance(v, sp.Basic) else float(v)


def relu(dst: str, src: str, bound: float | None = None) -> Hinge:
    """``dst <- max(src, 0)`` = src/2 + |src|/2."""
    return Hinge(dst, src=src, knots=((0.0, 0.5),), slope=0.5, bound=bound)


def absolute(dst: str, src: str, bound: float | None = None) -> Hinge:
    """``dst <- |src|``."""
    return Hinge(dst, src=src, knots=((0.0, 1.0),), bound=bound)


def clip(dst: str, src: str, lo: float, hi: float, bound: float | None = None) -> Hinge:
    """``dst <- min(max(src, lo), hi)`` = (lo + hi)/2 + (|src - lo| - |src - hi|)/2, lo < hi."""
    if not lo < hi:
        raise ValueError(f"clip needs lo < hi, got lo = {lo}, hi = {hi}")
    return Hinge(dst, src=src, knots=((_num(lo), 0.5), (_num(hi), -0.5)), const=_num((lo + hi) / 2), bound=bound)


def soft_threshold(dst: str, src: str, tau: float, bound: float | None = None) -> Hinge:
    """``dst <- sign(src) max(|src| - tau, 0)`` = src + (|src - tau| - |src + tau|)/2, tau >= 0."""
    if not isinstance(tau, sp.Basic) and not (math.isfinite(tau) and tau >= 0):
        raise ValueError(f"soft_threshold needs a finite tau >= 0, got {tau}")
    return Hinge(dst, src=src, knots=((_num(tau), 0.5), (-_num(tau), -0.5)), slope=1.0, bound=bound)
