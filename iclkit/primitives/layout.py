"""Named residual stream: every coordinate belongs to a named slot, never a raw row offset.

A :class:`Layout` is an ordered set of :class:`Slot` (name, shape). Besides the program's
slots it always holds the *system units* the primitives rely on:

- ``one``: the constant 1 (biases, LayerNorm pads);
- ``pos``, ``pos2``: t/T_max and (t/T_max)^2, the positional keys and queries of attention;
- ``bos``: 1 at the BOS column (position 0) only;
- ``pad+``, ``pad-``: +P and -P, which pin LayerNorm's standard deviation (Lemma 6);
- ``div+``, ``div-``: ±M·c during a division layer (Lemma 8), zero otherwise;
- ``bal``: minus the sum of every other unit, so LayerNorm's mean is exactly zero;
- ``zero``: the constant 0, never written. Every MLP read subtracts its normalised value
  (minus the mean over the standard deviation), so what rounding leaves of the mean drops out.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np
import torch

SYSTEM_SLOTS = ("one", "pos", "pos2", "bos", "pad+", "pad-", "div+", "div-", "bal", "zero")
PAD_SLOTS = ("pad+", "pad-", "div+", "div-")


@dataclass(frozen=True)
class Slot:
    """A named block of residual units holding one value of ``shape`` per column."""

    name: str
    shape: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        return prod(self.shape)


class Layout:
    """Maps slot names to residual rows and labels every coordinate."""

    def __init__(self, slots: list[Slot]) -> None:
        names = [s.name for s in slots]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"layout has duplicate slot names: {dup}")
        self.slots: dict[str, Slot] = {}
        self.offsets: dict[str, int] = {}
        offset = 0
        for s in [Slot(n) for n in SYSTEM_SLOTS if n not in names] + list(slots):
            self.slots[s.name] = s
            self.offsets[s.name] = offset
            offset += s.size
        self.width = offset

    def rows(self, name: str) -> slice:
        """The residual rows of slot ``name``."""
        if name not in self.slots:
            raise KeyError(f"no slot named {name!r} in the layout (slots: {list(self.slots)})")
        start = self.offsets[name]
        return slice(start, start + self.slots[name].size)

    def unpadded(self) -> np.ndarray:
        """Mask of the units other than the pads. The pads are written in exactly cancelling
        pairs (±P, ±M·c), so sums leave them out: adding P and -P among small numbers would
        round away u·P."""
        keep = np.ones(self.width, dtype=bool)
        for name in PAD_SLOTS:
            keep[self.rows(name)] = False
        return keep

    def labels(self) -> list[str]:
        """One label per residual coordinate, e.g. ``A_inv[1,0]``."""
        out = []
        for s in self.slots.values():
            if s.shape == ():
                out.append(s.name)
            else:
                out.extend(f"{s.name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*s.shape))
        return out

    def read(self, state: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """Split residual states ``(..., width)`` into named values ``(..., *shape)``."""
        arr = state.detach().cpu().numpy() if isinstance(state, torch.Tensor) else np.asarray(state)
        if arr.shape[-1] != self.width:
            raise ValueError(f"state has width {arr.shape[-1]}, layout expects {self.width}")
        return {n: arr[..., self.rows(n)].reshape(*arr.shape[:-1], *s.shape) for n, s in self.slots.items()}

    def to_dict(self) -> list[list]:
        return [[s.name, list(s.shape)] for s in self.slots.values()]

    @classmethod
    def from_dict(cls, data: list[list]) -> "Layout":
        return cls([Slot(name, tuple(shape)) for name, shape in data])

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}{list(s.shape) if s.shape else ''}@{self.offsets[n]}" for n, s in self.slots.items())
        return f"Layout(width={self.width}: {inner})"
