"""Per-prompt certificates: an a-posteriori error analysis of one run of a compiled program.

Write z_j for the exact value op j writes and z~_j for the transformer's. The transformer's
op j computes ``z~_j = f_j(z~_in) + r_j``, where ``r_j`` is the op's own error at the inputs
the transformer actually holds (:func:`iclkit.primitives.errors.own_error`, fed with the
prompt's own magnitudes, column by column). So the deviations obey, exactly,

    e_j = J_j e_in + q_j(e_in) + r_j,

with J_j the Jacobian of f_j at the exact inputs and q_j the exact remainder: 0 for the
linear ops (mov, aff, mean), ``e_a e_b`` for mul, and for div
``-(e_n c - n e_c) e_c / (c^2 (c + e_c))``. This recursion is linear in e, so the error of
the output is ``sum_j lambda_j . (q_j + r_j)`` with ``lambda_j`` the adjoint (reverse-mode
derivative) of the output with respect to z_j along the exact run: every cancellation of
the algorithm (the contraction of an SGD step, Sherman-Morrison's) is kept, which is what a
forward bound cannot see. The remainders q_j need |e| of the operands of mul and div: the
deviation of the transformer's state from the float64 reference, doubled, plus
``REFERENCE_SLACK`` per op of the reference's own rounding (they enter only at second order).
The inputs' rounding to the model's dtype is an error at the inputs, carried the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from iclkit.primitives import bounds as bd
from iclkit.primitives.errors import Context, own_error
from iclkit.primitives.ops import Aff, Div, Mean, Mul, Op
from iclkit.transformer.model import compensated_mean

REFERENCE_SLACK = 16 * 2.0**-53  # per op, relative: the float64 reference's own rounding (second order only)
CHUNK = 8  # prompts per pass (bounds memory: every op's residuals are kept for the reverse pass)


def certify(compiled, inputs: dict[str, np.ndarray], output: str, column: int = -1) -> np.ndarray:
    """Rigorous bound, one per prompt, on |transformer - exact| of slot ``output`` (a scalar
    slot) at ``column``. ``inputs`` are per-column slots (batch, T, *shape)."""
    batch = np.asarray(inputs[compiled.input_order[0]]).shape[0]
    parts = [_certify_chunk(compiled, {k: np.asarray(v)[i:i + CHUNK] for k, v in inputs.items()}, output, column)
             for i in range(0, batch, CHUNK)]
    return np.concatenate(parts)


def _certify_chunk(compiled, inputs, output: str, column: int) -> np.ndarray:
    program, model, layout = compiled.program, compiled.model, compiled.layout
    sizes = program.sizes()
    dtype = model.cfg.dtype
    u = bd.roundoff(dtype)
    steps = list(program.execute(inputs, compiled.t_max))
    exact_before = {id(op): before for group, before, _ in steps for op in group}
    # the transformer, sublayer by sublayer: the state before and after each
    states: dict[tuple[int, str], tuple[dict, dict]] = {}
    with torch.no_grad():
        h = model.embed(compiled.tokens(inputs))
        for i, layer in enumerate(model.layers):
            a = h + layer.attention(h)
            m = a + layer.mlp(a)
            states[(i, "attn")] = (h, a)
            states[(i, "mlp")] = (a, m)
            h = m
    ln = {i: _layer_norm_read(compiled, i, states[(i, "mlp")][0]) for i, layer in enumerate(compiled.schedule)
          if layer.mlp}
    ctx = Context(dtype, compiled.t_max, compiled.context.levels, sizes, ln)
    named = {}

    def slots(t: torch.Tensor) -> dict[str, np.ndarray]:  # flat (B, T, size) float64, cached per tensor
        if id(t) not in named:
            arr = t.to(torch.float64).numpy()
            named[id(t)] = (t, {n: arr[..., layout.rows(n)] for n in layout.slots})
        return named[id(t)][1]

    residual = {}  # id(op) -> |q_j| + r_j, shape (B, T, size)
    for op in program.ops:
        layer = compiled.placement[id(op)]
        before, after = states[(layer, op.kind)]
        got_in, got_out = slots(before), slots(after)
        read = {s: _column_max(got_in[s]) for s in op.reads()}
        if isinstance(op, Mean):
            read[op.src] = np.maximum.accumulate(read[op.src], axis=1)
        other = {s: _column_max(got_in[s]).max(axis=1, keepdims=True) for s in set(op.reads()) | {op.dst}}
        r = own_error(op, compiled.mechanisms[id(op)], ctx, layer, read, other, _column_max(got_in[op.dst]),
                      np.abs(got_out[op.dst]))
        residual[id(op)] = r + _remainder(op, exact_before[id(op)], got_in)
    # reverse pass along the exact run
    bar = {n: np.zeros_like(v) for n, v in steps[-1][1].items()}
    bar[output][:, column] = 1.0
    total = np.zeros(bar[output].shape[0])
    for group, before, _ in reversed(steps[:-1]):
        grads = [bar[op.dst] for op in group]
        for op in group:
            bar[op.dst] = np.zeros_like(bar[op.dst])
        for op, g in zip(group, grads):
            total += (np.abs(g) * residual[id(op)]).sum(axis=(1, 2))
            _vjp(op, g, before, bar, sizes)
    for name, value in steps[-1][1].items():  # inputs (and pos) are rounded to the dtype on the way in
        if name in program.inputs or name == "pos":
            total += (np.abs(bar[name]) * u * np.abs(value)).sum(axis=(1, 2))
    return total * (1 + 1e-10)  # the adjoint's own float64 rounding, far below this


def _column_max(v: np.ndarray) -> np.ndarray:
    """Largest |entry| of each column: (B, T, 1)."""
    return np.abs(v).max(axis=-1, keepdims=True)


def _layer_norm_read(compiled, layer: int, h: torch.Tensor) -> bd.LayerNormRead:
    """The LayerNorm read of this MLP layer on the actual state: its exact scale against the
    nominal one, the stored residual's mean, and the rounding of the normalisation."""
    dtype = compiled.model.cfg.dtype
    L = h.shape[-1]
    h64 = h.to(torch.float64)
    mean = compensated_mean(h64)
    sigma = torch.sqrt(((h64 - mean) ** 2).mean(-1, keepdim=True)).numpy()
    mean = mean.numpy()
    spec = compiled.schedule[layer]
    divs = [op for op in spec.mlp if isinstance(op, Div)]
    if divs:
        den = np.abs(h64[..., compiled.layout.rows(divs[0].den)].numpy())
        nominal = compiled.mechanisms[id(divs[0])].scale * np.sqrt(2 / L)
        scale = nominal / sigma
        ideal = scale * den  # reads h/|den| ideally
    else:
        scale = compiled.ln_pad * np.sqrt(2 / L) / sigma
        ideal = scale
    u = bd.roundoff(dtype)
    pads = np.zeros(L, dtype=bool)
    for name in ("pad+", "pad-", "div+", "div-"):
        pads[compiled.layout.rows(name)] = True
    arr = h64.numpy()
    pad2 = (arr[..., pads] ** 2).sum(-1, keepdims=True) / 2
    R2 = (arr[..., ~pads] ** 2).sum(-1, keepdims=True)
    mean_sum = np.abs(arr).mean(-1, keepdims=True)
    mean_err = np.abs(mean) * (1 + u) + 4 * u * u * mean_sum * np.log2(max(L, 2))
    return bd.LayerNormRead(scale_error=np.abs(1 - ideal) + 8 * L * 2.0**-53, rel_error=bd.layer_norm_rel(dtype, R2 * (1 + 1e-12) / pad2),
                            abs_error=2 * mean_err * scale + 4 * bd.UNDERFLOW[dtype])


def _remainder(op: Op, exact: dict, got: dict) -> np.ndarray | float:
    """Bound on the exact second-order remainder q_j of a mul or a div."""
    if not isinstance(op, (Mul, Div)):
        return 0.0

    def deviation(s):
        return 2 * np.abs(got[s] - exact[s]) + REFERENCE_SLACK * np.abs(exact[s])

    if isinstance(op, Mul):
        ea, eb = _column_max(deviation(op.a)), _column_max(deviation(op.b))
        return op.shape[1] * ea * eb
    c = np.abs(exact[op.den])
    ec, en = deviation(op.den), deviation(op.num)
    n = np.abs(exact[op.num])
    with np.errstate(divide="ignore", invalid="ignore"):
        q = (en * c + n * ec) * ec / (c * c * (c - ec))
    return np.where(ec < c, q, np.inf)


def _vjp(op: Op, g: np.ndarray, before: dict, bar: dict, sizes: dict) -> None:
    """Add ``g`` pulled back through ``op`` (at the exact values ``before``) into ``bar``."""
    if isinstance(op, Mean):
        counts = np.arange(1, g.shape[1] + 1).reshape(1, -1, 1)
        bar[op.src] += np.flip(np.cumsum(np.flip(g / counts, axis=1), axis=1), axis=1)
    elif isinstance(op, Aff):
        for (src, W), offset in zip(op.matrices(sizes), op.term_offsets()):
            _unshift_add(bar[src], g @ W, offset)
        if op.accumulate:
            bar[op.dst] += g
    elif isinstance(op, Mul):
        p, q, r = op.shape
        B, T = g.shape[:2]
        G = g.reshape(B, T, p, r)
        A = before[op.a].reshape(B, T, p, q)
        Bm = before[op.b].reshape(B, T, q, r)
        bar[op.a] += (G @ np.swapaxes(Bm, -1, -2)).reshape(B, T, p * q)
        bar[op.b] += (np.swapaxes(A, -1, -2) @ G).reshape(B, T, q * r)
    elif isinstance(op, Div):
        c = before[op.den]
        bar[op.num] += g / np.abs(c)
        bar[op.den] += -(g * before[op.num]).sum(-1, keepdims=True) * np.sign(c) / c**2
    else:
        raise TypeError(f"no adjoint for {type(op).__name__}")


def _unshift_add(target: np.ndarray, g: np.ndarray, offset: int) -> None:
    """Transpose of :func:`iclkit.primitives.ops.shifted`: column t of g goes to column max(t - offset, 0)."""
    if offset == 0:
        target += g
        return
    T = g.shape[1]
    np.add.at(target, (slice(None), np.maximum(np.arange(T) - offset, 0)), g)

