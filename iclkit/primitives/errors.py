"""Each op's own error, from the magnitudes it reads: one formula for both certificates.

An op's *own error* bounds |what the transformer writes - the op's exact result on the values
the transformer actually holds|. Given scalars (slot bounds) it is the domain-wide bound used
by :func:`~iclkit.primitives.compile.compile_program`; given arrays of shape (batch, T, 1)
(a prompt's own magnitudes, column by column) it is the per-prompt bound used by
:mod:`iclkit.primitives.certify`. The formulas are in :mod:`iclkit.primitives.bounds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from iclkit.primitives import bounds as bd
from iclkit.primitives.ops import Aff, Div, Mean, Mul, Op


@dataclass
class Mechanism:
    """The constants the compiler chose for one op (what its own error depends on)."""

    scale: float = 1.0  # product scale S (mul) or division scale M (div)
    kappa: float = 1.0  # operand balance (mul)
    out_terms: int = 1  # nonzero output coefficients feeding one written entry (attention ops)


@dataclass
class Context:
    """What every op's error needs besides its operands: dtype, context length, Richardson
    levels, slot sizes, and the LayerNorm read of each MLP sublayer (keyed by layer index)."""

    dtype: str
    t_max: int
    levels: int
    sizes: dict[str, int]
    ln: dict = field(default_factory=dict)  # layer index -> bounds.LayerNormRead (scalars or per column)


def own_error(op: Op, mech: Mechanism, ctx: Context, layer: int, read, other, dst_old, out):
    """Own error of ``op``: ``read`` maps each slot it reads to the magnitude read (scalar, or
    array broadcasting over (batch, T, entries)); ``other`` the largest magnitude over all
    columns of the same slots (what attention can leak); ``dst_old`` the magnitude of the
    target before the write (cleared by attention), ``out`` the magnitude of the result."""
    dtype, t_max = ctx.dtype, ctx.t_max
    if isinstance(op, Mean):
        return bd.mean_error(dtype, t_max + 1, read[op.src], out) + bd.attention_error(
            dtype, t_max, other[op.dst], dst_old, 0.0, 1)
    if isinstance(op, Aff):
        mass = op.input_mass(read, ctx.sizes)
        other_mass = op.input_mass(other, ctx.sizes)
        if not op.accumulate:
            mass, other_mass = mass + dst_old, other_mass + other[op.dst]
        return bd.attention_error(dtype, t_max, other_mass, mass, out, mech.out_terms)
    ln = ctx.ln[layer]
    in_place = op.dst in op.reads()
    clear = 0.0 if in_place else bd.attention_error(dtype, t_max, other[op.dst], dst_old, 0.0, 1)
    if isinstance(op, Mul):
        err = bd.mul_error(dtype, ln, read[op.a], read[op.b], op.shape[1], ctx.levels, mech.scale, mech.kappa, out)
        if in_place:  # the MLP subtracts the old value, read through LayerNorm and a linear pair
            err = err + bd.linear_read_error(dtype, ln, dst_old)
        return err + clear
    if isinstance(op, Div):
        return bd.div_error(dtype, ln, read[op.num], read[op.den], out) + clear
    raise TypeError(f"no error model for {type(op).__name__}")

