"""What the tensors themselves show, checked against the program they should run (issue 11):
every attention head's column selection, read from W_Q, W_K and the positional table alone;
each layer's value/output maps; each MLP's hidden units; the embedding, positions and readout.

Queries and keys read only units no layer writes (``one``, ``pos``, ``pos2``: checked on W_E,
every W_O, W_out and b_out), so each head's logits are a fixed T x T matrix of the weights.
For query column t the head selects the column j* with the largest logit; the softmax mass
off j* is at most ``sum_{j != j*} e^{l_j - l_j*}``, which must be within the leak the compiler's
error bounds assume (:func:`bounds.attention_leak`, which covers the model's own logit
rounding). A head whose logits are equal in every row is a causal mean."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

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
    stored = []  # a looped block's layer is recognised once
    for layer in model.layers:
        heads = []
        for h in range(layer.W_Q.shape[0]):
            q = P @ layer.W_Q[h, rows].detach().double()
            k = P @ layer.W_K[h, rows].detach().double()
            heads.append(_recognise(0, h, (model.cfg.attn_scale * q @ k.T).numpy(), T))
        stored.append(heads)
    return [replace(s, layer=i) for i, j in enumerate(model.cfg.applied_index()) for s in stored[j]]


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


def prove_attention(model: Transformer, compiled) -> list[Selection]:
    """Check every applied layer's heads against the program's read patterns (the column
    shifts, or None for the causal mean, of :func:`expected_attention_maps`; the query column
    itself always: overwrites, biases, the balance reset): every head that
    writes (nonzero W_O) must select one of its layer's patterns, every
    pattern must have a head, and off-target mass must be within the leak the compiler's error
    bounds assume (:func:`bounds.attention_leak`). Raises WeightProofError at the first layer
    and head that fails."""
    t_max = max(model.cfg.max_len - 1, 1)
    # this check's own float64 logits err like the model's (bounds.logit_error): its mass is
    # within e^{2 eps} of the exact logits' mass, which is what the compiler's leak bounds
    leak = bd.attention_leak(model.cfg.dtype, t_max) * math.exp(2 * bd.logit_error("float64", t_max))
    found = selections(model, compiled.layout)
    layers = model.applied_layers
    for i, program_layer in enumerate(compiled.schedule):
        want = set(expected_attention_maps(program_layer, compiled))
        served = set()
        for s in (s for s in found if s.layer == i):
            if not torch.any(layers[i].W_O[s.head] != 0):
                continue  # writes nothing
            name = "a causal mean" if s.shift is None else f"column t-{s.shift}"
            if s.shift not in want:
                raise WeightProofError(f"layer {i} head {s.head}: the weights select {name}, which the program's "
                                       f"layer does not read")
            if s.off_target > leak:
                raise WeightProofError(f"layer {i} head {s.head}: off-target softmax mass up to {s.off_target:.3g} "
                                       f"exceeds the {leak:.3g} the error bounds allow (logit gap too small)")
            served.add(s.shift)
        if want - served:
            raise WeightProofError(f"layer {i}: no head reads {sorted(want - served, key=str)} (column offsets; None: mean)")
    return found


UNWRITTEN = ("one", "pos", "pos2", "bos", "zero")


class _Sink:
    """What an op's :meth:`~iclkit.primitives.ops.Op.expected_weights` writes into: per read
    pattern, the linear map on the residual (attention); GeLU units and b_out (MLP)."""

    def __init__(self, layout: Layout, read: float = 1.0) -> None:
        self.layout, self.read = layout, read
        self.maps: dict = {0: np.zeros((layout.width, layout.width))}
        self.units: list[tuple[dict, dict]] = []
        self.b_out: dict = {}
        self.zero, self.bal = layout.rows("zero").start, layout.rows("bal").start

    def row(self, slot: str, i: int) -> int:
        return self.layout.rows(slot).start + i

    def map(self, shift, src: str, dst: str, W) -> None:
        M = self.maps.setdefault(shift, np.zeros((self.layout.width, self.layout.width)))
        M[self.layout.rows(src), self.layout.rows(dst)] += np.asarray(W, dtype=float).T

    def unit(self, terms: list[tuple[int, float]], outputs: dict, balanced: bool) -> None:
        """A GeLU unit reading rows at LayerNorm's scale, minus the normalised zero unit."""
        inputs: dict = {}
        for row, coef in terms:
            inputs[row] = inputs.get(row, 0.0) + coef * self.read
            inputs[self.zero] = inputs.get(self.zero, 0.0) - coef * self.read
        if balanced:
            outputs = outputs | {self.bal: -sum(outputs.values())}
        self.units.append((inputs, outputs))

    def bias(self, slot: str, i: int, value: float) -> None:
        row = self.row(slot, i)
        self.b_out[row] = self.b_out.get(row, 0.0) + value


def expected_attention_maps(layer, compiled) -> dict:
    """The program's attention sublayer as linear maps on the program's slots, one per read
    pattern: ``{shift or None: (L, L) matrix}``, row = unit read at the selected column,
    column = unit written at the query column (what ``W_V[h] @ W_O[h]``, summed over the heads
    of that pattern, must equal on the program's own slots): each attention op's expected
    weights, the MLP targets' clearing, and a division's pad swap and removal."""
    sizes, mechs = compiled.program.sizes(), compiled.mechanisms
    sink = _Sink(compiled.layout)
    for op in layer.attn:
        op.expected_weights(sink, sizes, mechs[id(op)], compiled.context.levels)
    for op in layer.mlp:
        if op.dst not in op.reads():  # the attention clears the MLP's target
            sink.map(0, op.dst, op.dst, -np.eye(sizes[op.dst]))
    divs = [op for op in layer.mlp if op.sets_layer_norm]
    if divs:  # LayerNorm divides: the pads ±P give way to ±M den (one divisor per layer)
        divs[0].expected_pads(sink, mechs[id(divs[0])], compiled.ln_pad)
    for op in layer.cleanups:  # the previous layer's division pads removed
        op.expected_cleanup(sink, mechs[id(op)])
    return sink.maps


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
    nonpad = layout.unpadded()
    bal = layout.rows("bal").start
    eps = torch.finfo(model.dtype).eps  # the weights are the program's coefficients rounded to the model's dtype
    head_maps: dict = {}  # (stored layer, head) -> W_V W_O, once per stored layer
    for i, (stored, layer) in enumerate(zip(model.cfg.applied_index(), model.applied_layers)):
        maps: dict = {}
        for s in found:
            if s.layer == i:
                if (stored, s.head) not in head_maps:
                    head_maps[(stored, s.head)] = (layer.W_V[s.head].detach().double()
                                                   @ layer.W_O[s.head].detach().double()).numpy()
                maps[s.shift] = maps.get(s.shift, 0) + head_maps[(stored, s.head)]
        want = expected_attention_maps(schedule[i], compiled)
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


def expected_mlp_units(layer, compiled) -> tuple[list[tuple[dict, dict]], dict]:
    """The program's MLP sublayer as GeLU units, derived from its ops and the constructions'
    constants (pad P, product scale S and balance kappa, division scale M, Richardson levels):
    ``([(inputs {row: coefficient}, outputs {row: coefficient})], b_out {row: value})``.

    - each op's expected units (:meth:`~iclkit.primitives.ops.Op.expected_weights`: a mul's
      polarisation units, a div's linear pairs);
    - in place: linear pairs ``GeLU(z) - GeLU(-z) = z`` subtracting the old value (balanced);
    - every read at LayerNorm's scale (``P sqrt(2/L)``, or ``M sqrt(2/L)`` when dividing) and
      minus the normalised zero unit; a dividing layer's bias restores the pads ±P."""
    layout, sizes, mechs = compiled.layout, compiled.program.sizes(), compiled.mechanisms
    divs = [op for op in layer.mlp if op.sets_layer_norm]
    sink = _Sink(layout, (mechs[id(divs[0])].scale if divs else compiled.ln_pad) * math.sqrt(2 / layout.width))
    for op in layer.mlp:
        if op.dst in op.reads():
            for i in range(sizes[op.dst]):
                sink.unit([(sink.row(op.dst, i), 1.0)], {sink.row(op.dst, i): -1.0}, True)
                sink.unit([(sink.row(op.dst, i), -1.0)], {sink.row(op.dst, i): 1.0}, True)
        op.expected_weights(sink, sizes, mechs[id(op)], compiled.context.levels)
    if divs:  # the MLP restores the pads its attention took away
        sink.b_out[layout.rows("pad+").start] = compiled.ln_pad
        sink.b_out[layout.rows("pad-").start] = -compiled.ln_pad
    return sink.units, sink.b_out


def _close(got: np.ndarray, want: np.ndarray, eps: float) -> bool:
    return bool(np.all(np.abs(got - want) <= 8 * eps * np.maximum(np.abs(want), np.abs(got))))


def prove_mlp(model: Transformer, compiled) -> None:
    """From W_in, b_in, W_out, b_out: every applied layer's hidden units are, up to order and 8
    ulps of the model's dtype, exactly the program's product units and linear pairs
    (:func:`expected_mlp_units`), which the product and linear-pair lemmas of ``iclkit prove``
    make compute the ops; every other unit writes nothing. Raises WeightProofError at the
    first layer and unit that fails."""
    eps = torch.finfo(model.dtype).eps
    for i, layer in enumerate(model.applied_layers):
        want, want_bias = expected_mlp_units(compiled.schedule[i], compiled)
        W_in, W_out = layer.W_in.detach().double().numpy(), layer.W_out.detach().double().numpy()
        b_in, b_out = layer.b_in.detach().double().numpy(), layer.b_out.detach().double().numpy()
        groups: dict = {}
        for u in range(W_in.shape[1]):
            key = (tuple(np.flatnonzero(W_in[:, u])), tuple(np.flatnonzero(W_out[u])))
            if key[1] or key[0] or b_in[u]:
                groups.setdefault(key, []).append(u)
        expected: dict = {}
        for inputs, outputs in want:
            key = (tuple(sorted(r for r, v in inputs.items() if v)), tuple(sorted(r for r, v in outputs.items() if v)))
            expected.setdefault(key, []).append((inputs, outputs))
        for key in set(groups) | set(expected):
            got, exp = groups.get(key, []), expected.get(key, [])
            if len(got) != len(exp):
                raise WeightProofError(f"layer {i}: {len(got)} hidden units read rows {list(key[0])} and write rows "
                                       f"{list(key[1])}; the program has {len(exp)}")
            actual = sorted((tuple(W_in[list(key[0]), u]) + tuple(W_out[u, list(key[1])]), u) for u in got)
            ideal = sorted(tuple(e[0][r] for r in key[0]) + tuple(e[1][r] for r in key[1]) for e in exp)
            for (values, u), target in zip(actual, ideal):
                if b_in[u] != 0 or not _close(np.array(values), np.array(target), eps):
                    raise WeightProofError(f"layer {i} hidden unit {u}: weights {np.array(values)} (bias {b_in[u]:g}) "
                                           f"are not the program's {np.array(target)}")
        bias = np.zeros_like(b_out)
        for row, value in want_bias.items():
            bias[row] = value
        if not _close(b_out, bias, eps):
            row = int(np.argmax(np.abs(b_out - bias)))
            raise WeightProofError(f"layer {i}: b_out[{compiled.layout.labels()[row]}] is {b_out[row]:.6g}, the "
                                   f"program's {bias[row]:.6g}")


def prove_embedding(model: Transformer, compiled) -> None:
    """W_E copies each token entry into its input slot, the positional table holds one, pos =
    t/T_max, pos2 = pos^2, bos at column 0 and the pads ±P, both keep the residual's sum at 0
    through the balance unit, and the readout reads y_hat alone."""
    layout, program = compiled.layout, compiled.program
    eps = torch.finfo(model.dtype).eps
    keep = layout.unpadded()
    keep[layout.rows("bal")] = False
    W_E = model.W_E.detach().double().numpy()
    want = np.zeros_like(W_E)
    col = 0
    for name in compiled.input_order:
        for i in range(program.sizes()[name]):
            want[col + i, layout.rows(name).start + i] = 1.0
        col += program.sizes()[name]
    T = model.cfg.max_len
    t = np.arange(T) / max(T - 1, 1)
    pos = np.zeros((T, layout.width))
    for name, value in (("one", 1.0), ("pos", t), ("pos2", t**2), ("pad+", compiled.ln_pad), ("pad-", -compiled.ln_pad)):
        pos[:, layout.rows(name).start] = value
    pos[0, layout.rows("bos").start] = 1.0
    for name, table, target in (("W_E", W_E, want), ("the positional table", model.pos.detach().double().numpy(), pos)):
        target[:, layout.rows("bal").start] = -target[:, keep].sum(axis=1)
        if not _close(table, target, eps):
            row, c = np.unravel_index(np.argmax(np.abs(table - target)), table.shape)
            raise WeightProofError(f"{name}[{row}, {layout.labels()[c]}] is {table[row, c]:.6g}, the program's "
                                   f"{target[row, c]:.6g}")
    readout = np.zeros(layout.width)
    readout[layout.rows(compiled.output)] = 1.0
    if not np.array_equal(model.readout.detach().double().numpy(), readout) or float(model.readout_bias.detach()) != 0.0:
        raise WeightProofError(f"the readout reads more than {compiled.output}")


def prove_dataflow(compiled) -> None:
    """The layers the weights were shown to be, run with the decoder layer's semantics
    (attention on the residual before the layer, the MLP on the residual after it), compute
    the program: every op reads the values the program order gives it and every slot ends with
    the program's value (:meth:`Program.schedule_problems`). Raises WeightProofError naming
    the layer of the first read that differs."""
    found = compiled.program.schedule_problems(compiled.schedule)
    if found:
        raise WeightProofError("the layers do not compute the program: " + "; ".join(map(str, found)))


def prove_weights(model: Transformer, compiled) -> list[Selection]:
    """Every tensor of ``model`` against the program of ``compiled``: embedding, positions and
    readout; each applied layer's attention (selection, then W_V W_O) and MLP units; then the
    dataflow of those layers, in the order a layer computes, against the program's order."""
    prove_embedding(model, compiled)
    found = prove_attention(model, compiled)
    prove_attention_maps(model, compiled, found)
    prove_mlp(model, compiled)
    prove_dataflow(compiled)
    return found
