"""The attention family: aff, mov and mean, exact up to rounding (Lemmas 2 and 3).

A head per read pattern (a shift by k columns, or the causal mean) carries the linear map; the
value and output maps also subtract the target's old value, so a write overwrites (unless it
accumulates). Every piece of the ops' behaviour is here (:data:`~iclkit.primitives.ops.base.PIECES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iclkit.primitives import bounds as bd
from iclkit.primitives.ops.base import (Op, Values, _as_matrix, _check_coefficient, _is_symbolic, _row_mass,
                                        column_max, shifted, unshift_add)


@dataclass(frozen=True)
class Aff(Op):
    """``dst <- sum_i W_i src_i + bias``, all read at column ``t - offset`` (Lemma 2: aff).

    A term is ``(src, W)`` or ``(src, W, offset)``; ``W`` is a scalar (times identity) or an
    (out, in) matrix, and a term's own offset overrides the op's. ``mov`` is the special
    case of one identity term and ``offset > 0``.
    """

    terms: tuple = ()
    bias: object = None
    offset: int = 0
    bound: float | None = None  # asserted bound on |dst| entries (overrides propagation)
    accumulate: bool = False  # dst <- dst + ...: adds instead of overwriting

    name = "aff"

    def reads(self) -> tuple[str, ...]:
        return tuple(term[0] for term in self.terms) + ((self.dst,) if self.accumulate else ())

    def term_offsets(self) -> list[int]:
        return [term[2] if len(term) > 2 else self.offset for term in self.terms]

    def matrices(self, sizes: dict[str, int]) -> list[tuple[str, np.ndarray]]:
        return [(term[0], _as_matrix(term[1], sizes[self.dst], sizes[term[0]])) for term in self.terms]

    def matrix(self, W, src: str, sizes: dict[str, int]) -> np.ndarray:
        """A term's coefficient ``W`` (on slot ``src``) as its (out, in) matrix."""
        return _as_matrix(W, sizes[self.dst], sizes[src])

    def _mass(self, term: tuple, sizes: dict[str, int]) -> float:
        return _row_mass(term[1], sizes[self.dst], sizes[term[0]])

    def row_nonzeros(self, term: tuple, sizes: dict[str, int]) -> int:
        """The most nonzero coefficients in one row of a term's matrix (a scalar's: 0 or 1)."""
        if np.ndim(term[1]) == 0:
            return int(term[1] != 0)
        return int((np.abs(_as_matrix(term[1], sizes[self.dst], sizes[term[0]])) > 0).sum(axis=1).max())

    def bias_vector(self, size: int) -> np.ndarray | None:
        if self.bias is None:
            return None
        b = np.asarray(self.bias, dtype=object if _is_symbolic(self.bias) else float).reshape(-1)
        if b.size == 1 and size != 1:
            b = np.repeat(b, size)
        if b.size != size:
            raise ValueError(f"bias has {b.size} entries, slot {self.dst!r} has {size}")
        return b

    def shape_problems(self, sizes: dict[str, int]) -> list[str]:
        problems = []
        for src, W, *_ in self.terms:
            try:
                _check_coefficient(W, sizes[self.dst], sizes[src])
            except ValueError as e:
                problems.append(f"term {src!r}: {e}")
        try:
            self.bias_vector(sizes[self.dst])
        except ValueError as e:
            problems.append(str(e))
        if not self.terms and self.bias is None:
            problems.append("an aff needs at least one term or a bias")
        if min([self.offset, *self.term_offsets()]) < 0:
            problems.append("offsets must be >= 0 (reads look back in time)")
        return problems

    def coefficient_problems(self, dtype: str = "float64") -> list[str]:
        """Coefficients the compiled weights cannot hold in ``dtype``: NaN or infinite, beyond
        its largest number, or subnormal there (the rounding model assumes no underflow)."""
        info = np.finfo(np.dtype(dtype))
        problems = []
        for what, W in [(f"term {t[0]!r}", t[1]) for t in self.terms] + [("the bias", self.bias)]:
            if W is None or _is_symbolic(W):
                continue
            W = np.abs(np.asarray(W, dtype=float))
            subnormal = W[(W > 0) & (W < info.tiny)]
            if not np.all(np.isfinite(W)):
                problems.append(f"{what} has a NaN or infinite coefficient")
            elif np.any(W > info.max):
                problems.append(f"{what} has a coefficient ({W.max():.3g}) beyond {dtype}'s range")
            elif subnormal.size:
                problems.append(f"{what} has a coefficient ({subnormal.min():.3g}) that is subnormal in {dtype}: "
                                "the rounding model assumes no underflow")
        return problems

    def evaluate(self, values: Values, sizes: dict[str, int]) -> np.ndarray:
        some = next(iter(values.values()))
        out = np.zeros(some.shape[:2] + (sizes[self.dst],), dtype=object if self._symbolic(values) else float)
        for (src, W, *_), offset in zip(self.terms, self.term_offsets()):
            value = shifted(values[src], offset)
            if np.ndim(W) == 0:  # a scalar times identity: the product itself, without the matrix
                _check_coefficient(W, sizes[self.dst], sizes[src])
                out = out + value * (W if _is_symbolic(W) else float(W))
            else:
                out = out + value @ self.matrix(W, src, sizes).T
        b = self.bias_vector(sizes[self.dst])
        out = out if b is None else out + b
        return out + values[self.dst] if self.accumulate else out

    def _symbolic(self, values: Values) -> bool:
        return any(v.dtype == object for v in values.values()) or any(_is_symbolic(t[1]) for t in self.terms) or (
            self.bias is not None and _is_symbolic(self.bias)
        )

    def input_mass(self, bounds, sizes) -> float:
        """Bound on |entry| of the result from the terms' bounds alone (no assertion); a zero
        term adds nothing, even from an unbounded slot."""
        masses = ((self._mass(term, sizes), bounds[term[0]]) for term in self.terms)
        total = sum(mass * bound for mass, bound in masses if mass)
        b = self.bias_vector(sizes[self.dst])
        total += 0.0 if b is None else float(np.abs(b).max())
        return total + bounds[self.dst] if self.accumulate else total

    def out_bound(self, bounds, sizes) -> float:
        return self.bound if self.bound is not None else self.input_mass(bounds, sizes)

    def propagated_error(self, bounds, errors, sizes) -> float:
        total = sum(self._mass(term, sizes) * errors[term[0]] for term in self.terms)
        return total + errors[self.dst] if self.accumulate else total

    def own_error(self, mech, ctx, layer, read, other, dst_old, out):
        mass = self.input_mass(read, ctx.sizes)
        other_mass = self.input_mass(other, ctx.sizes)
        if not self.accumulate:
            mass, other_mass = mass + dst_old, other_mass + other[self.dst]
        return bd.attention_error(ctx.dtype, ctx.t_max, other_mass, mass, out, mech.out_terms)

    def evaluation_mass(self, values, sizes):
        absolute = {s: np.abs(values[s]) for s in (*self.reads(), "one")}
        magnitudes = tuple((src, abs(float(W)) if np.ndim(W) == 0 else np.abs(self.matrix(W, src, sizes)), off)
                           for (src, W, *_), off in zip(self.terms, self.term_offsets()))
        mass = Aff(self.dst, terms=magnitudes, bias=None if self.bias is None else np.abs(self.bias_vector(sizes[self.dst])),
                   accumulate=self.accumulate).evaluate(absolute, sizes)
        terms = sum(self.row_nonzeros(term, sizes) for term in self.terms) + 2
        return terms, mass

    def read_magnitudes(self, values):
        """At the columns its terms look back to; the target itself (accumulating) at t."""
        read = {s: np.zeros_like(column_max(values[s])) for s in self.reads()}
        offsets = [(term[0], k) for term, k in zip(self.terms, self.term_offsets())]
        offsets += [(s, 0) for s in self.reads() if s == self.dst]
        for s, k in offsets:
            read[s] = np.maximum(read[s], shifted(column_max(values[s]), k))
        return read

    def remainder(self, exact, deviation):
        return 0.0  # linear: its linearisation is exact

    def vjp(self, g, before, bar, sizes, absolute):
        for (src, W, *_), offset in zip(self.terms, self.term_offsets()):  # a scalar W: times identity
            if absolute:
                pulled = g * abs(float(W)) if np.ndim(W) == 0 else g @ np.abs(self.matrix(W, src, sizes))
            else:
                pulled = g * float(W) if np.ndim(W) == 0 else g @ self.matrix(W, src, sizes)
            unshift_add(bar[src], pulled, offset)
        if self.accumulate:
            bar[self.dst] += g

    def out_terms(self, sizes):
        """Its terms' largest row count, a bias, and minus the old value (overwrite)."""
        count = sum(self.row_nonzeros(term, sizes) for term in self.terms)
        return count + (self.bias is not None) + (not self.accumulate)

    def lower(self, spec, sizes, mech, P, width, levels):
        for (src, W), offset in zip(self.matrices(sizes), self.term_offsets()):
            spec.head(offset, sizes).add(src, self.dst, W)
        b = self.bias_vector(sizes[self.dst])
        if b is not None:
            spec.head(0, sizes).add("one", self.dst, b.reshape(-1, 1))
        if not self.accumulate:
            spec.head(0, sizes).add(self.dst, self.dst, -np.eye(sizes[self.dst]))  # overwrite: minus the old value

    def expected_weights(self, sink, sizes, mech, levels):
        for (src, W), shift in zip(self.matrices(sizes), self.term_offsets()):
            sink.map(shift, src, self.dst, W)
        b = self.bias_vector(sizes[self.dst])
        if b is not None:
            sink.map(0, "one", self.dst, b.reshape(-1, 1))
        if not self.accumulate:
            sink.map(0, self.dst, self.dst, -np.eye(sizes[self.dst]))

    def describe(self) -> str:
        parts = []
        for (src, W, *_), offset in zip(self.terms, self.term_offsets()):
            coef = "" if (np.ndim(W) == 0 and W == 1) else "W·"
            parts.append(f"{coef}{src}" + (f"[t-{offset}]" if offset else ""))
        if self.bias is not None:
            parts.append("b")
        return f"{self.name}({self.dst} {'+=' if self.accumulate else '<-'} {' + '.join(parts)})"


@dataclass(frozen=True)
class Mov(Aff):
    """``dst <- src`` read from column ``t - offset`` (the paper's mov, fixed: target t, source t-offset)."""

    name = "mov"


def mov(dst: str, src: str, offset: int = 1, bound: float | None = None, accumulate: bool = False) -> Mov:
    """Copy slot ``src`` of column t-offset into slot ``dst`` of column t, in every column.

    ``accumulate=True`` adds instead (dst += src[t-offset]): the paper's mov of x_1 into the
    y column's empty x rows, which leaves every column whose predecessor's rows are 0 as it was."""
    return Mov(dst, terms=((src, 1.0),), offset=offset, bound=bound, accumulate=accumulate)


def aff(dst: str, *terms: tuple[str, object], bias=None, bound: float | None = None) -> Aff:
    """``dst <- sum_i W_i src_i + bias`` in every column (Lemma 2)."""
    return Aff(dst, terms=tuple(terms), bias=bias, bound=bound)


@dataclass(frozen=True)
class Mean(Op):
    """``dst <- mean of src over columns 0..t`` (uniform causal attention: the sum over a context)."""

    src: str = ""
    name = "mean"

    def reads(self) -> tuple[str, ...]:
        return (self.src,)

    def shape_problems(self, sizes) -> list[str]:
        if sizes[self.src] != sizes[self.dst]:
            return [f"sizes differ: {self.dst!r} has {sizes[self.dst]}, {self.src!r} has {sizes[self.src]}"]
        return []

    def evaluate(self, values, sizes) -> np.ndarray:
        v = values[self.src]
        counts = np.arange(1, v.shape[1] + 1).reshape(1, -1, 1)
        return np.cumsum(v, axis=1) / counts

    def out_bound(self, bounds, sizes) -> float:
        return bounds[self.src]

    def propagated_error(self, bounds, errors, sizes) -> float:
        return errors[self.src]

    def own_error(self, mech, ctx, layer, read, other, dst_old, out):
        return bd.mean_error(ctx.dtype, ctx.t_max + 1, read[self.src], out) + bd.attention_error(
            ctx.dtype, ctx.t_max, other[self.dst], dst_old, 0.0, 1)

    def evaluation_mass(self, values, sizes):
        v = np.abs(values[self.src])
        counts = np.arange(1, v.shape[1] + 1).reshape(1, -1, 1)
        return v.shape[1] + 1, np.cumsum(v, axis=1) / counts

    def read_magnitudes(self, values):
        """Over columns 0..t."""
        return {self.src: np.maximum.accumulate(column_max(values[self.src]), axis=1)}

    def remainder(self, exact, deviation):
        return 0.0  # linear: its linearisation is exact

    def vjp(self, g, before, bar, sizes, absolute):
        counts = np.arange(1, g.shape[1] + 1).reshape(1, -1, 1)
        bar[self.src] += np.flip(np.cumsum(np.flip(g / counts, axis=1), axis=1), axis=1)

    def out_terms(self, sizes):
        return 2  # the mean and minus the old value

    def lower(self, spec, sizes, mech, P, width, levels):
        spec.head(None, sizes).add(self.src, self.dst, np.eye(sizes[self.dst]))
        spec.head(0, sizes).add(self.dst, self.dst, -np.eye(sizes[self.dst]))  # overwrite: minus the old value

    def expected_weights(self, sink, sizes, mech, levels):
        sink.map(None, self.src, self.dst, np.eye(sizes[self.dst]))
        sink.map(0, self.dst, self.dst, -np.eye(sizes[self.dst]))
