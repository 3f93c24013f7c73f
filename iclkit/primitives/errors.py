"""Each op's own error, from the magnitudes it reads: one formula for both certificates.

An op's *own error* bounds |what the transformer writes - the op's exact result on the values
the transformer actually holds|. Given scalars (slot bounds) it is the domain-wide bound used
by :func:`~iclkit.primitives.compile.compile_program`; given arrays of shape (batch, T, 1)
(a prompt's own magnitudes, column by column) it is the per-prompt bound used by
:mod:`iclkit.primitives.certify`. The formulas are in :mod:`iclkit.primitives.bounds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from iclkit.primitives.ops import Op


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
    """Own error of ``op`` (:meth:`Op.own_error`, each op family's formula): ``read`` maps each
    slot it reads to the magnitude read (scalar, or array broadcasting over (batch, T,
    entries)); ``other`` the largest magnitude over all columns of the same slots (what
    attention can leak); ``dst_old`` the magnitude of the target before the write (cleared by
    attention), ``out`` the magnitude of the result."""
    return op.own_error(mech, ctx, layer, read, other, dst_old, out)
