"""The op protocol: what every primitive owns, and the helpers the op families share.

An op writes slot ``dst`` and says which slots it reads, whether a layer realises it in the
attention sublayer (``kind == "attn"``; exact) or in the MLP (``kind == "mlp"``; approximate),
and every piece of its behaviour (:data:`PIECES`): reference semantics, bounds, own error, the
certificate's evaluation model, remainder and adjoint, its lowering to weights and the weights
the proof expects. :meth:`Op.evaluate` is the plain-numpy meaning on per-column values of
shape ``(batch, T, size)``; it also works on numpy ``object`` arrays of sympy expressions,
which is how ``iclkit.verify`` proves programs symbolically. A class that lacks a piece is
refused at compile time, naming the op and the piece (:func:`check_protocol`).

Columns are numbered from 0 (BOS). A read at ``offset`` k takes column ``max(t - k, 0)``:
before the start of the sequence it falls back to the BOS column.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

Values = dict[str, np.ndarray]
OPS: dict[str, type] = {}  # op class name -> class: how a program saved with a model is read back

PIECES = {  # what every op owns: a class lacking one is refused at compile time
    "reads": "the slots it reads",
    "evaluate": "its reference semantics (numpy, and sympy on object arrays)",
    "out_bound": "a bound on its result from the bounds of what it reads",
    "propagated_error": "how input errors move its exact result",
    "own_error": "its own error under the rounding model (errors.own_error)",
    "evaluation_mass": "the certificate's model of evaluating it in floating point",
    "read_magnitudes": "the magnitudes it reads per column (certificate)",
    "remainder": "the certificate's second-order remainder",
    "vjp": "the certificate's adjoint",
    "out_terms": "the output terms summed into one written entry",
    "lower": "its lowering to a layer's weights",
    "expected_weights": "the weights the proof from the weights expects",
}


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
    sets_layer_norm = False  # a division: its layer's LayerNorm scale is set by its divisor

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

    def _missing(self, piece: str):
        raise NotImplementedError(f"op {type(self).__name__} has no {piece}: {PIECES[piece]}")

    # ---- reference semantics and bounds ----------------------------------------------------
    def reads(self) -> tuple[str, ...]:
        self._missing("reads")

    def evaluate(self, values: Values, sizes: dict[str, int]) -> np.ndarray:
        self._missing("evaluate")

    def shape_problems(self, sizes: dict[str, int]) -> list[str]:
        return []

    def out_bound(self, bounds: dict[str, float], sizes: dict[str, int]) -> float:
        """Max |entry| of the result, given max |entry| of every slot read."""
        self._missing("out_bound")

    def propagated_error(self, bounds: dict[str, float], errors: dict[str, float], sizes: dict[str, int]) -> float:
        """How much input errors can move the exact result (first-order rigorous bounds)."""
        self._missing("propagated_error")

    # ---- error model and certificate -------------------------------------------------------
    def own_error(self, mech, ctx, layer: int, read, other, dst_old, out):
        """Own error (:func:`iclkit.primitives.errors.own_error`): what the layer writes minus
        the op's exact result on the values it holds, from the magnitudes it reads."""
        self._missing("own_error")

    def evaluation_mass(self, values: Values, sizes: dict[str, int]) -> tuple[int, np.ndarray]:
        """(roundings per entry, sum of |terms|) of evaluating the op in floating point: the
        standard model's ``gamma(terms) mass`` bounds the evaluation's error."""
        self._missing("evaluation_mass")

    def read_magnitudes(self, values: Values) -> Values:
        """Per column t, the largest |entry| of each slot as the op reads it there."""
        self._missing("read_magnitudes")

    def remainder(self, exact: Values, deviation: Values):
        """Bound on the exact second-order remainder of the op's linearisation, from the
        operands' exact values and the bounds on their deviations (0 for a linear op)."""
        self._missing("remainder")

    def vjp(self, g: np.ndarray, before: Values, bar: Values, sizes: dict[str, int], absolute: bool) -> None:
        """Add ``g`` pulled back through the op (at the exact values ``before``) into ``bar``;
        ``absolute``: through |J| instead (g >= 0 then, and so is the result)."""
        self._missing("vjp")

    # ---- weights ---------------------------------------------------------------------------
    def out_terms(self, sizes: dict[str, int]) -> int:
        """Nonzero output coefficients summed into one entry the op writes."""
        self._missing("out_terms")

    def lower(self, spec, sizes: dict[str, int], mech, P: float, width: int, levels: int) -> None:
        """Write the op into a layer's weight spec (``iclkit.primitives.compile``): heads for an
        attention op, GeLU units for an MLP op (the MLP's clearing of its target is the layer's)."""
        self._missing("lower")

    def expected_weights(self, sink, sizes: dict[str, int], mech, levels: int) -> None:
        """The weights the proof from the weights expects for the op (``iclkit.verify.weights``),
        derived from its meaning, not from :meth:`lower`: ``sink.map(shift, src, dst, W)`` for
        an attention op, ``sink.unit(terms, outputs, balanced)`` and ``sink.bias(slot, i, value)``
        for an MLP op."""
        self._missing("expected_weights")

    def describe(self) -> str:
        return f"{self.name}({self.dst} <- {', '.join(self.reads())})"



def missing_pieces(cls: type) -> list[str]:
    """The protocol pieces op class ``cls`` does not implement itself (inherits from Op)."""
    return [piece for piece in PIECES if getattr(cls, piece) is getattr(Op, piece)]


def check_protocol(ops) -> None:
    """Refuse a program whose ops lack a protocol piece, naming the op and the piece."""
    for op in ops:
        missing = missing_pieces(type(op))
        if missing:
            raise NotImplementedError(f"{op.describe() if 'reads' not in missing else type(op).__name__}: op class "
                                      f"{type(op).__name__} lacks {', '.join(missing)} "
                                      f"({'; '.join(PIECES[p] for p in missing)})")


def column_max(v: np.ndarray) -> np.ndarray:
    """Largest |entry| of each column: (B, T, 1)."""
    return np.abs(v).max(axis=-1, keepdims=True)


def unshift_add(target: np.ndarray, g: np.ndarray, offset: int) -> None:
    """Transpose of :func:`shifted`: column t of g goes to column max(t - offset, 0)."""
    if offset == 0:
        target += g
        return
    T = g.shape[1]
    np.add.at(target, (slice(None), np.maximum(np.arange(T) - offset, 0)), g)


def current_reads(op: Op, values: Values) -> Values:
    """:meth:`Op.read_magnitudes` of an op that reads every slot at its own column (an MLP op)."""
    return {s: column_max(values[s]) for s in op.reads()}


def target_clear_error(op: Op, ctx, other, dst_old):
    """An MLP op's part of its own error for its target: the attention clears it first (the
    attention's rounding of that write), unless the op updates it in place (then the MLP
    subtracts the old value, which :meth:`Op.own_error` counts)."""
    from iclkit.primitives import bounds as bd

    if op.dst in op.reads():
        return 0.0
    return bd.attention_error(ctx.dtype, ctx.t_max, other[op.dst], dst_old, 0.0, 1)


@dataclass(frozen=True)
class Parallel:
    """Several ops in one layer (Lemma 7). Refused if they clash."""

    ops: tuple[Op, ...] = field(default_factory=tuple)

    def __init__(self, *ops: Op) -> None:
        object.__setattr__(self, "ops", tuple(ops))

