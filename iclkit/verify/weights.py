"""What the tensors themselves show: every attention head's column selection, read from W_Q, W_K
and the positional table alone (issue 11, item 3; the value, output and MLP maps are not yet
proven from the weights).

Queries and keys read only units no layer writes (``one``, ``pos``, ``pos2``: checked on W_E,
every W_O, W_out and b_out), so each head's logits are a fixed T x T matrix of the weights.
For query column t the head selects the column j* with the largest logit; the softmax mass
off j* is at most ``sum_{j != j*} e^{l_j - l_j*}``, which must be within the leak the compiler's
error bounds assume (:func:`bounds.attention_leak`, which covers the model's own logit
rounding). A head whose logits are equal in every row is a causal mean."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from iclkit.primitives import bounds as bd
from iclkit.primitives.layout import Layout
from iclkit.transformer import Transformer

POSITIONAL = ("one", "pos", "pos2")


@dataclass(frozen=True)
class Selection:
    """What one head attends to, as its weights show: ``shift`` k (column t-k, BOS where
    t < k) or None (uniform over the prefix), and the largest off-target softmax mass."""

    layer: int
    head: int
    shift: int | None
    off_target: float


class WeightProofError(ValueError):
    """The weights do not show what they should; names the first layer and head."""


def positional_rows(model: Transformer, layout: Layout) -> list[int]:
    """The residual rows queries and keys may read, after checking that nothing writes them."""
    rows = [layout.rows(name).start for name in POSITIONAL]
    writers = [("W_E", model.W_E[:, rows])]
    for i, layer in enumerate(model.layers):
        writers += [(f"layer {i} W_O", layer.W_O[..., rows]), (f"layer {i} W_out", layer.W_out[:, rows]),
                    (f"layer {i} b_out", layer.b_out[rows])]
    for name, w in writers:
        if torch.any(w != 0):
            raise WeightProofError(f"{name} writes a positional unit ({', '.join(POSITIONAL)}): attention "
                                   "logits would depend on the data")
    for i, layer in enumerate(model.layers):
        for name, W in (("W_Q", layer.W_Q), ("W_K", layer.W_K)):
            other = W.clone()
            other[:, rows] = 0
            if torch.any(other != 0):
                raise WeightProofError(f"stored layer {i} {name} reads a unit other than {', '.join(POSITIONAL)}")
    return rows


def selections(model: Transformer, layout: Layout) -> list[Selection]:
    """Every applied layer's heads, recognised from W_Q, W_K and the positional table."""
    rows = positional_rows(model, layout)
    P = model.pos.detach()[:, rows].double()
    T = P.shape[0]
    out = []
    for i, layer in enumerate(model.applied_layers):
        for h in range(layer.W_Q.shape[0]):
            q = P @ layer.W_Q[h, rows].detach().double()
            k = P @ layer.W_K[h, rows].detach().double()
            logits = (model.cfg.attn_scale * q @ k.T).numpy()
            out.append(_recognise(i, h, logits, T))
    return out


def _recognise(layer: int, head: int, logits: np.ndarray, T: int) -> Selection:
    shifts, worst = set(), 0.0
    uniform = all(np.ptp(logits[t, : t + 1]) == 0 for t in range(T))
    if uniform:
        return Selection(layer, head, None, 0.0)
    for t in range(1, T):
        row = logits[t, : t + 1]
        j = int(np.argmax(row))
        worst = max(worst, float(np.exp(np.delete(row, j) - row[j]).sum()) * (1 + 1e-12))
        shifts.add(t - j if j > 0 else None)
    fixed = {s for s in shifts if s is not None}
    if len(fixed) != 1:
        raise WeightProofError(f"layer {layer} head {head} attends to no fixed offset: selected offsets {sorted(fixed)}")
    return Selection(layer, head, fixed.pop(), worst)


def prove_attention(model: Transformer, layout: Layout, expected: list[list[int | None]]) -> list[Selection]:
    """Check every applied layer's heads against the program: head h of layer i must select
    ``expected[i][h]`` (a shift, or None for a causal mean) with off-target mass within the
    leak the compiler's error bounds assume (:func:`bounds.attention_leak`). Heads beyond a
    layer's expected ones must write nothing (zero W_O). Raises WeightProofError at the first
    layer and head that fails."""
    t_max = max(model.cfg.max_len - 1, 1)
    # this check's own float64 logits err like the model's (bounds.logit_error): its mass is
    # within e^{2 eps} of the exact logits' mass, which is what the compiler's leak bounds
    leak = bd.attention_leak(model.cfg.dtype, t_max) * math.exp(2 * bd.logit_error("float64", t_max))
    found = selections(model, layout)
    by_layer: dict[int, list[Selection]] = {}
    for s in found:
        by_layer.setdefault(s.layer, []).append(s)
    layers = model.applied_layers
    for i, heads in sorted(by_layer.items()):
        for s in heads:
            if s.head >= len(expected[i]):
                if torch.any(layers[i].W_O[s.head] != 0):
                    raise WeightProofError(f"layer {i} head {s.head}: writes, but the program has no such head")
                continue
            want = expected[i][s.head]
            if s.shift != want:
                raise WeightProofError(f"layer {i} head {s.head}: the weights select "
                                       f"{'a causal mean' if s.shift is None else f'column t-{s.shift}'}, the "
                                       f"program reads {'a causal mean' if want is None else f'column t-{want}'}")
            if s.off_target > leak:
                raise WeightProofError(f"layer {i} head {s.head}: off-target softmax mass up to {s.off_target:.3g} "
                                       f"exceeds the {leak:.3g} the error bounds allow (logit gap too small)")
    return found


PADS = ("pad+", "pad-", "div+", "div-")
UNWRITTEN = ("one", "pos", "pos2", "bos", "zero")


def expected_attention_maps(layer, sizes: dict[str, int], layout: Layout, P: float, div_scale) -> dict:
    """The program's attention sublayer as linear maps on the program's slots, one per read
    pattern: ``{shift or None: (L, L) matrix}``, row = unit read at the selected column,
    column = unit written at the query column (what ``W_V[h] @ W_O[h]``, summed over the heads
    of that pattern, must equal on the program's own slots)."""
    L = layout.width
    maps: dict = {}

    def add(shift, src: str, dst: str, W: np.ndarray) -> None:
        M = maps.setdefault(shift, np.zeros((L, L)))
        M[layout.rows(src), layout.rows(dst)] += np.asarray(W, dtype=float).T

    maps[0] = np.zeros((L, L))
    for op in layer.attn:
        if op.name == "mean":
            add(None, op.src, op.dst, np.eye(sizes[op.dst]))
        else:
            for (src, W), shift in zip(op.matrices(sizes), op.term_offsets()):
                add(shift, src, op.dst, W)
            b = op.bias_vector(sizes[op.dst])
            if b is not None:
                add(0, "one", op.dst, b.reshape(-1, 1))
        if not getattr(op, "accumulate", False):
            add(0, op.dst, op.dst, -np.eye(sizes[op.dst]))
    for op in layer.mlp:
        if op.dst not in op.reads():  # the attention clears the MLP's target
            add(0, op.dst, op.dst, -np.eye(sizes[op.dst]))
    divs = [op for op in layer.mlp if op.name == "div"]
    if divs:  # LayerNorm divides: the pads ±P give way to ±M den
        M = div_scale(divs[0])
        add(0, divs[0].den, "div+", [[M]])
        add(0, divs[0].den, "div-", [[-M]])
        add(0, "one", "pad+", [[-P]])
        add(0, "one", "pad-", [[P]])
    for op in layer.cleanups:  # the previous layer's division pads removed
        M = div_scale(op)
        add(0, op.den, "div+", [[-M]])
        add(0, op.den, "div-", [[M]])
    return maps


def prove_attention_maps(model: Transformer, compiled, found: list[Selection]) -> None:
    """From W_V and W_O: per applied layer and read pattern, ``sum_h W_V[h] W_O[h]`` must equal
    the program's linear map on its slots (to a few ulps: the products are sums of a few
    floats, at most 8 ulps of the model's dtype); no head writes a constant unit; every row keeps the residual's sum (the balance
    unit takes minus the others, and head 0 also resets it to minus the column's sum); each
    pad pair is written by exactly negated weights, with the pad P and division scales M of
    ``compiled`` (the construction the file names). Raises WeightProofError at the first
    layer that fails."""
    layout, schedule, sizes = compiled.layout, compiled.schedule, compiled.program.sizes()
    program_cols = np.zeros(layout.width, dtype=bool)
    for name in layout.slots:
        if name not in (*UNWRITTEN, "bal"):  # the program's slots and the pads
            program_cols[layout.rows(name)] = True
    nonpad = np.ones(layout.width, dtype=bool)
    for name in PADS:
        nonpad[layout.rows(name)] = False
    bal = layout.rows("bal").start
    eps = torch.finfo(model.dtype).eps  # the weights are the program's coefficients rounded to the model's dtype
    for i, layer in enumerate(model.applied_layers):
        maps: dict = {}
        for s in found:
            if s.layer == i:
                M = (layer.W_V[s.head].detach().double() @ layer.W_O[s.head].detach().double()).numpy()
                maps[s.shift] = maps.get(s.shift, 0) + M
        want = expected_attention_maps(schedule[i], sizes, layout, compiled.ln_pad,
                                       lambda op: compiled.mechanisms[id(op)].scale)
        for shift in set(maps) | set(want):
            got = maps.get(shift, np.zeros((layout.width, layout.width)))
            exp = want.get(shift, np.zeros_like(got))
            where = f"layer {i}, heads reading {'the causal mean' if shift is None else f'column t-{shift}'}"
            gap = np.abs(got[:, program_cols] - exp[:, program_cols])
            if np.any(gap > 8 * eps * np.maximum(np.abs(exp[:, program_cols]), 1.0)):
                r, col = np.unravel_index(np.argmax(gap), gap.shape)
                raise WeightProofError(f"{where}: W_V W_O maps unit {layout.labels()[r]} into "
                                       f"{layout.labels()[np.flatnonzero(program_cols)[col]]} with "
                                       f"{got[:, program_cols][r, col]:.6g}, the program with {exp[:, program_cols][r, col]:.6g}")
            for name in UNWRITTEN:
                if np.any(got[:, layout.rows(name)] != 0):
                    raise WeightProofError(f"{where}: writes the constant unit {name}")
            total = got[nonpad][:, nonpad].sum(axis=1)  # the balance unit included
            reset = -1.0 if shift == 0 else 0.0
            scale = np.abs(got[nonpad][:, nonpad]).sum(axis=1) + 1.0
            if np.any(np.abs(total - reset) > 64 * eps * scale):
                raise WeightProofError(f"{where}: a write does not keep the residual's sum (balance unit {bal})")
            for a, b in (("pad+", "pad-"), ("div+", "div-")):
                if np.any(got[:, layout.rows(a)] != -got[:, layout.rows(b)]):
                    raise WeightProofError(f"{where}: pads {a}, {b} are not written by exactly negated weights")
