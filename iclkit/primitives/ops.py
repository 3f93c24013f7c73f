"""The primitives as operations on named slots, with their reference semantics.

Each op says which slots it reads and writes, whether a layer realises it in the attention
sublayer (``kind == "attn"``: mov, aff, mean; exact) or in the MLP (``kind == "mlp"``: mul,
div; approximate), and what it must compute: :meth:`Op.evaluate` is the plain-numpy meaning
on per-column values of shape ``(batch, T, size)``. It also works on numpy ``object`` arrays
of sympy expressions, which is how ``iclkit.verify`` proves programs symbolically.

Columns are numbered from 0 (BOS). A read at ``offset`` k takes column ``max(t - k, 0)``:
before the start of the sequence it falls back to the BOS column.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

Values = dict[str, np.ndarray]
OPS: dict[str, type] = {}  # op class name -> class: how a program saved with a model is read back


def shifted(value: np.ndarray, offset: int) -> np.ndarray:
    """Column t of the result is column max(t - offset, 0) of ``value`` (axis 1 is time)."""
    if offset == 0:
        return value
    T = value.shape[1]
    return value[:, np.maximum(np.arange(T) - offset, 0)]


def _as_matrix(W, out_size: int, in_size: int) -> np.ndarray:
    """A term's coefficient as an (out, in) matrix; a scalar means scalar * identity."""
    arr = np.asarray(W, dtype=object if _is_symbolic(W) else float)
    if arr.ndim == 0:
        if out_size != in_size:
            raise ValueError(f"a scalar coefficient needs equal sizes, got {out_size} <- {in_size}")
        eye = np.eye(out_size, dtype=arr.dtype)
        return eye * arr[()] if arr.dtype == object else eye * float(arr)
    arr = np.atleast_2d(arr)
    if arr.shape != (out_size, in_size):
        raise ValueError(f"coefficient has shape {arr.shape}, the slots need ({out_size}, {in_size})")
    return arr


def _is_symbolic(W) -> bool:
    return np.asarray(W).dtype == object


def _check_coefficient(W, out_size: int, in_size: int) -> None:
    """What :func:`_as_matrix` checks, without building a scalar's identity matrix."""
    if np.ndim(W) == 0:
        if out_size != in_size:
            raise ValueError(f"a scalar coefficient needs equal sizes, got {out_size} <- {in_size}")
    else:
        _as_matrix(W, out_size, in_size)


def _row_mass(W, out_size: int, in_size: int) -> float:
    """The largest absolute row sum of a term's (out, in) matrix (|W| for a scalar W)."""
    if np.ndim(W) == 0:
        return abs(float(W))
    return float(np.abs(_as_matrix(W, out_size, in_size)).sum(axis=1).max())


def _encode(value, where: str):
    """JSON-ready: arrays as ``{"array": nested lists}``, tuples as lists, numpy scalars as Python
    numbers (floats round-trip exactly through JSON's shortest repr)."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise ValueError(f"{where} is symbolic: a program of sympy expressions cannot be saved")
        return {"array": value.tolist()}
    if isinstance(value, (tuple, list)):
        return [_encode(v, where) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"{where} is a {type(value).__name__}, which a saved program cannot hold (numbers and arrays)")


def _decode(value):
    if isinstance(value, dict) and set(value) == {"array"}:
        return np.asarray(value["array"], dtype=float)
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    return value


@dataclass(frozen=True)
class Op:
    """Base class: one primitive operation writing slot ``dst``."""

    dst: str

    kind = "attn"
    name = "op"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        OPS[cls.__name__] = cls

    def to_dict(self) -> dict:
        """The op as JSON-ready data (its class and every field), for a saved model's header."""
        return {"op": type(self).__name__, **{f.name: _encode(getattr(self, f.name), f"{self.describe()}: {f.name}")
                                               for f in fields(self)}}

    @staticmethod
    def from_dict(data: dict) -> "Op":
        """The op :meth:`to_dict` wrote."""
        data = dict(data)
        kind = data.pop("op", None)
        if kind not in OPS:
            raise ValueError(f"unknown op {kind!r} (known: {', '.join(sorted(OPS))})")
        return OPS[kind](**{k: _decode(v) for k, v in data.items()})

    def reads(self) -> tuple[str, ...]:
        raise NotImplementedError

    def evaluate(self, values: Values, sizes: dict[str, int]) -> np.ndarray:
        raise NotImplementedError

    def shape_problems(self, sizes: dict[str, int]) -> list[str]:
        return []

    def out_bound(self, bounds: dict[str, float], sizes: dict[str, int]) -> float:
        """Max |entry| of the result, given max |entry| of every slot read."""
        raise NotImplementedError

    def propagated_error(self, bounds: dict[str, float], errors: dict[str, float], sizes: dict[str, int]) -> float:
        """How much input errors can move the exact result (first-order rigorous bounds)."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name}({self.dst} <- {', '.join(self.reads())})"


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


def mul(dst: str, a: str, b: str, shape: tuple[int, int, int], bound: float | None = None, bias: float = 0.0) -> Mul:
    """``dst <- a @ b + bias`` with a (p x q), b (q x r) read row-major from their slots."""
    return Mul(dst, a=a, b=b, shape=tuple(shape), bound=bound, bias=bias)


def dot(dst: str, u: str, v: str, n: int, bound: float | None = None, bias: float = 0.0) -> Mul:
    """``dst <- u . v + bias`` for length-n slots: mul with shape (1, n, 1)."""
    return Mul(dst, a=u, b=v, shape=(1, n, 1), bound=bound, bias=bias)


@dataclass(frozen=True)
class Div(Op):
    """``dst <- num / |den|`` in every column (Lemma 8), certified for ``|den| >= den_min``."""

    num: str = ""
    den: str = ""
    den_min: float = 1.0
    bound: float | None = None

    kind = "mlp"
    name = "div"

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


def div(dst: str, num: str, den: str, den_min: float, bound: float | None = None) -> Div:
    """``dst <- num / |den|``; ``den_min`` is the lower bound on |den| the error bound is certified for."""
    return Div(dst, num=num, den=den, den_min=den_min, bound=bound)


@dataclass(frozen=True)
class Parallel:
    """Several ops in one layer (Lemma 7). Refused if they clash."""

    ops: tuple[Op, ...] = field(default_factory=tuple)

    def __init__(self, *ops: Op) -> None:
        object.__setattr__(self, "ops", tuple(ops))
