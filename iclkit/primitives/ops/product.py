"""The product family: mul and dot in the MLP (Lemmas 4 and 7, improved).

``ab = S^2/4 (sq((ka + b/k)/S) - sq((ka - b/k)/S))`` with ``sq(z) = sqrt(pi/2)(GeLU(z) +
GeLU(-z))``, Richardson-combined over scales ``S 2^m``, every operand read through LayerNorm
pinned by the pads ±P. Every piece of the ops' behaviour is here
(:data:`~iclkit.primitives.ops.base.PIECES`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from iclkit.primitives import bounds as bd
from iclkit.primitives.ops.base import Op, column_max, current_reads, target_clear_error

SQRT_HALF_PI = math.sqrt(math.pi / 2)


@dataclass(frozen=True)
class Mul(Op):
    """``dst (p x r) <- a (p x q) @ b (q x r) + bias`` in every column (Lemma 7: p·r dot
    products of length q; a constant ``bias`` is added exactly by the MLP's output bias)."""

    a: str = ""
    b: str = ""
    shape: tuple[int, int, int] = (1, 1, 1)
    bound: float | None = None
    bias: float = 0.0

    kind = "mlp"
    name = "mul"

    def reads(self) -> tuple[str, ...]:
        return (self.a, self.b)

    def shape_problems(self, sizes) -> list[str]:
        p, q, r = self.shape
        problems = []
        if min(self.shape) < 1:
            problems.append(f"shape {self.shape} must be positive")
        for slot, need, what in ((self.a, p * q, f"{p}x{q}"), (self.b, q * r, f"{q}x{r}"), (self.dst, p * r, f"{p}x{r}")):
            if sizes[slot] != need:
                problems.append(f"slot {slot!r} has {sizes[slot]} entries but must hold a {what} matrix ({need})")
        return problems

    def evaluate(self, values, sizes) -> np.ndarray:
        p, q, r = self.shape
        A = values[self.a].reshape(*values[self.a].shape[:2], p, q)
        B = values[self.b].reshape(*values[self.b].shape[:2], q, r)
        return np.matmul(A, B).reshape(*A.shape[:2], p * r) + self.bias

    def out_bound(self, bounds, sizes) -> float:
        if self.bound is not None:
            return self.bound
        return self.shape[1] * bounds[self.a] * bounds[self.b] + abs(self.bias)

    def propagated_error(self, bounds, errors, sizes) -> float:
        ea, eb = errors[self.a], errors[self.b]
        return self.shape[1] * (bounds[self.a] * eb + bounds[self.b] * ea + ea * eb)


    def own_error(self, mech, ctx, layer, read, other, dst_old, out):
        ln = ctx.ln[layer]
        err = bd.mul_error(ctx.dtype, ln, read[self.a], read[self.b], self.shape[1], ctx.levels, mech.scale, mech.kappa, out)
        if self.dst in self.reads():  # in place: the MLP subtracts the old value, read through LayerNorm and a linear pair
            err = err + bd.linear_read_error(ctx.dtype, ln, dst_old)
        return err + target_clear_error(self, ctx, other, dst_old)

    def evaluation_mass(self, values, sizes):
        absolute = {self.a: np.abs(values[self.a]), self.b: np.abs(values[self.b])}
        return self.shape[1] + 2, Mul(self.dst, a=self.a, b=self.b, shape=self.shape, bias=abs(self.bias)).evaluate(
            absolute, sizes)

    def read_magnitudes(self, values):
        return current_reads(self, values)

    def remainder(self, exact, deviation):
        return self.shape[1] * column_max(deviation[self.a]) * column_max(deviation[self.b])

    def vjp(self, g, before, bar, sizes, absolute):
        f = np.abs if absolute else (lambda v: v)
        p, q, r = self.shape
        B, T = g.shape[:2]
        G = g.reshape(B, T, p, r)
        A = f(before[self.a].reshape(B, T, p, q))
        Bm = f(before[self.b].reshape(B, T, q, r))
        bar[self.a] += (G @ np.swapaxes(Bm, -1, -2)).reshape(B, T, p * q)
        bar[self.b] += (np.swapaxes(A, -1, -2) @ G).reshape(B, T, q * r)

    def out_terms(self, sizes):
        return 1

    def lower(self, spec, sizes, mech, P, width, levels):
        """The GeLU product units (unbalanced: the next attention resets the balance unit)."""
        spec.read_scale = P * math.sqrt(2 / width)
        first = len(spec.hidden)
        for terms, out_idx, c_out in self._units(mech.scale, mech.kappa, levels):
            spec.hidden.append((terms, self.dst, out_idx, c_out))
        spec.products.update(range(first, len(spec.hidden)))
        if self.bias:
            spec.out_bias += [(self.dst, i, self.bias) for i in range(sizes[self.dst])]

    def _units(self, S: float, kappa: float, levels: int):
        """ab = S^2/4 (sq((ka+b/k)/S) - sq((ka-b/k)/S)), Richardson-combined over scales S 2^m:
        (input terms (slot, idx, coef), output entry, output coefficient) per unit."""
        p, q, r = self.shape
        factors, weights = bd.richardson_weights(levels)
        for i in range(p):
            for k in range(r):
                for j in range(q):
                    a_idx, b_idx, out_idx = i * q + j, j * r + k, i * r + k
                    for f, w in zip(factors, weights):
                        Sm = S * f
                        c_out = w * Sm**2 / 4 * SQRT_HALF_PI
                        for sign_b, sign_out in ((1.0, 1.0), (-1.0, -1.0)):
                            for sign in (1.0, -1.0):
                                yield ([(self.a, a_idx, sign * kappa / Sm), (self.b, b_idx, sign * sign_b / (kappa * Sm))],
                                       out_idx, sign_out * c_out)

    def expected_weights(self, sink, sizes, mech, levels):
        """From the polarisation lemma, independently of :meth:`lower`: four units per scale and
        product, writing only the product's entry, unbalanced; the bias in b_out."""
        p, q, s = self.shape
        factors, weights = bd.richardson_weights(levels)
        for i in range(p):
            for k in range(s):
                for j in range(q):
                    a, b, out = sink.row(self.a, i * q + j), sink.row(self.b, j * s + k), sink.row(self.dst, i * s + k)
                    for f, w in zip(factors, weights):
                        Sm = mech.scale * f
                        c_out = w * Sm**2 / 4 * math.sqrt(math.pi / 2)
                        for sign_b in (1.0, -1.0):
                            for sign in (1.0, -1.0):
                                sink.unit([(a, sign * mech.kappa / Sm), (b, sign * sign_b / (mech.kappa * Sm))],
                                          {out: sign_b * c_out}, False)
        if self.bias:
            for i in range(sizes[self.dst]):
                sink.bias(self.dst, i, self.bias)


def mul(dst: str, a: str, b: str, shape: tuple[int, int, int], bound: float | None = None, bias: float = 0.0) -> Mul:
    """``dst <- a @ b + bias`` with a (p x q), b (q x r) read row-major from their slots."""
    return Mul(dst, a=a, b=b, shape=tuple(shape), bound=bound, bias=bias)


def dot(dst: str, u: str, v: str, n: int, bound: float | None = None, bias: float = 0.0) -> Mul:
    """``dst <- u . v + bias`` for length-n slots: mul with shape (1, n, 1)."""
    return Mul(dst, a=u, b=v, shape=(1, n, 1), bound=bound, bias=bias)
