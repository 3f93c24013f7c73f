"""Compile a :class:`Program` into a :class:`~iclkit.transformer.Transformer` with certified bounds.

Pipeline, in stage order: validate -> schedule into layers -> bound every slot -> choose the
constants (LayerNorm pad P, product scales S, division scales M) that minimise the stated
bounds -> write each layer's weights -> propagate the error bounds through the schedule.

How a layer realises its ops (see ``bounds`` for the numbers):

- attention ops (mov, aff, mean) are one head per read pattern (shift by k columns, or the
  causal mean); the value/output maps carry the linear map, the bias (read from ``one``)
  and minus the old content of the target slot, so the write overwrites. Exact up to
  rounding: no LayerNorm, no GeLU.
- MLP ops (mul, div) read through LayerNorm, pinned by the ±P pads; the layer's attention
  first clears the target slot. A div's attention swaps the ±P pads for ±M·den, its MLP
  restores ±P through its bias, and the next layer's attention removes ±M·den.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from iclkit.primitives import bounds as bd
from iclkit.primitives.errors import Context, Mechanism, own_error
from iclkit.primitives.layout import Layout
from iclkit.primitives.ops import Div, Mean, Mul, Op, check_protocol
from iclkit.primitives.program import READABLE_SYSTEM, Layer, Program
from iclkit.transformer import DTYPES, Transformer, TransformerConfig

class BoundError(ValueError):
    """Input outside the domain the error bound is certified for."""


@dataclass
class Compiled:
    """A compiled program: the torch model, its layout and schedule, constants and bounds."""

    program: Program
    model: Transformer
    layout: Layout
    schedule: list[Layer]
    input_order: list[str]
    slot_bounds: dict[str, float]  # max |entry| of each slot anywhere in the program
    error_bounds: dict[str, float]  # certified max |entry error| of each slot at the end
    constants: dict[str, float] = field(default_factory=dict)
    output: str | None = None
    write_bounds: dict[int, float] = field(default_factory=dict)  # id(op) -> bound on what it writes
    read_bounds: dict[int, dict[str, float]] = field(default_factory=dict)  # id(op) -> slot bounds it reads
    op_errors: dict[int, float] = field(default_factory=dict)  # id(op) -> its own error (exact inputs)
    mechanisms: dict[int, Mechanism] = field(default_factory=dict)  # id(op) -> its constants
    placement: dict[int, int] = field(default_factory=dict)  # id(op) -> its layer
    context: Context | None = None  # domain-wide error context (LayerNorm reads per MLP layer)
    ln_pad: float = 1.0  # the LayerNorm pad P
    fingerprint: dict[str, str] = field(default_factory=dict)  # tensor name -> digest of the compiled weights

    def __post_init__(self) -> None:
        self.config = self.model.cfg
        self.fingerprint = weight_digests(self.model)

    def check_model(self, strict: bool = True) -> None:
        """Refuse to answer from a module whose weights are no longer the compiled ones (an
        in-place edit, ``.float()``, ``.half().double()``): the bounds are for those weights
        (``strict=False``: warn instead). Costs one hash of every tensor (benchmarks/guard.py
        measures it against the forward pass)."""
        problem = self.model_problem()
        if problem and strict:
            raise ValueError(problem)
        if problem:
            warnings.warn(problem + " (non-strict mode: the error bound does not hold)", stacklevel=3)

    def model_problem(self) -> str | None:
        """Why the module no longer holds the compiled weights, or None."""
        model, name = self.model, self.program.name
        if model.cfg != self.config:
            return f"{name}: the model's configuration is no longer the compiled one; rebuild it"
        wrong = next((p for p in model.parameters() if p.dtype != model.dtype), None)
        if wrong is not None:
            dtype = str(wrong.dtype).removeprefix("torch.")
            return (f"{name}: the model's weights are {dtype}, it was compiled in {model.cfg.dtype} (e.g. after "
                    f".float() or .half()); its bounds are for the compiled weights: build it with dtype='{dtype}' "
                    "instead")
        digests = weight_digests(model)
        changed = sorted(set(digests) ^ set(self.fingerprint)) or [k for k, v in digests.items() if self.fingerprint[k] != v]
        if changed:
            return (f"{name}: tensor {changed[0]} is no longer the compiled one (edited in place or replaced); "
                    "its bounds and certificates are for the compiled weights: rebuild it")
        return None

    def propagate(self, ops: list[Op], errors: dict[str, float], slack: dict[str, float] | None = None) -> dict[str, float]:
        """Run the error analysis along a chain of ops, each reading the previous ones' results,
        from the given starting errors: the tool for per-construction (e.g. contraction) bounds.
        Each op's own error is taken at its read bounds inflated by the current errors (and by
        ``slack``: deviations of slots that the chain treats as exact inputs)."""
        errors = dict(errors)
        sizes = self.program.sizes()
        slack = slack or {}
        for op in ops:
            reads = {s: b + errors.get(s, 0.0) + slack.get(s, 0.0) for s, b in self.read_bounds[id(op)].items()}
            other = {s: b + errors.get(s, 0.0) + slack.get(s, 0.0) for s, b in self.slot_bounds.items()}
            out = self.write_bounds[id(op)] + errors.get(op.dst, 0.0)
            own = float(own_error(op, self.mechanisms[id(op)], self.context, self.placement[id(op)], reads, other,
                                  reads[op.dst], out))
            errors[op.dst] = op.propagated_error(reads, errors, sizes) + own
        return errors

    def block_start(self, block: list[Op], carried: tuple[str, ...]) -> dict[str, float]:
        """Errors as a stacked block starts: x and y as the compiler bounds them, the ``carried``
        slots (the iterate) exact, and every scratch slot with the error one pass of ``block``
        leaves in it (each block clears it, but its old value is what the clear reads)."""
        start = {s: 0.0 for s in self.error_bounds} | {s: self.error_bounds[s] for s in ("x", "y")}
        keep = (*carried, "x", "y")
        return start | {s: e for s, e in self.propagate(block, start).items() if s not in keep}

    def describe(self) -> str:
        """The schedule, one line per applied layer: its attention-side ops, its MLP-side ops and
        the division pads it removes (the compiler's plan, which the weights implement)."""
        lines = [f"{self.program.name}: {len(self.schedule)} layers, residual width {self.layout.width}"]
        for i, layer in enumerate(self.schedule):
            parts = [f"attention: {', '.join(op.describe() for op in layer.attn) or '-'}",
                     f"MLP: {', '.join(op.describe() for op in layer.mlp) or '-'}"]
            if layer.cleanups:
                parts.append(f"removes the pads of {', '.join(op.describe() for op in layer.cleanups)}")
            lines.append(f"  layer {i}: " + "; ".join(parts))
        return "\n".join(lines)

    def layer_spec(self, i: int) -> "_LayerSpec":
        """What applied layer ``i``'s weights are made of: its heads (read pattern, sources,
        outputs) and MLP hidden units (terms read, entry written, product or linear pair)."""
        return _layer_spec(self.schedule[i], self.layout, self.program.sizes(), self.ln_pad, self.mechanisms,
                           self.context.levels)

    @property
    def t_max(self) -> int:
        """Column index that the ``pos`` unit maps to 1."""
        return max(self.model.cfg.max_len - 1, 1)

    def interpret(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The program's reference semantics on these inputs (what :meth:`run` must match)."""
        return self.program.interpret(inputs, t_max=self.t_max)

    @property
    def num_layers(self) -> int:
        return self.model.cfg.num_layers

    def tokens(self, inputs: dict[str, np.ndarray]) -> torch.Tensor:
        """Concatenate input slots (batch, T, *shape) into the token tensor (batch, T, token_dim)."""
        parts = []
        for name in self.input_order:
            v = np.asarray(inputs[name], dtype=float)
            parts.append(v.reshape(*v.shape[:2], -1))
        return torch.from_numpy(np.concatenate(parts, axis=-1)).to(self.model.dtype)

    def check_inputs(self, inputs: dict[str, np.ndarray], strict: bool = True) -> None:
        """Refuse wrong shapes, NaN/inf, and values beyond the certified input bounds."""
        missing = sorted(set(self.input_order) - set(inputs))
        if missing:
            raise ValueError(f"missing inputs: {missing}")
        lead = None
        for name in self.input_order:
            v = np.asarray(inputs[name], dtype=float)
            want = self.program.slots[name]
            if v.ndim != 2 + len(want) or tuple(v.shape[2:]) != want:
                raise ValueError(f"input {name!r} must have shape (batch, T, {', '.join(map(str, want))}), got {v.shape}")
            if lead is None:
                lead = v.shape[:2]
            elif v.shape[:2] != lead:
                raise ValueError(f"input {name!r} has (batch, T) = {v.shape[:2]}, others have {lead}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"input {name!r} contains NaN or inf")
            worst = float(np.abs(v).max(initial=0.0))
            if worst > self.program.inputs[name]:
                msg = f"input {name!r} has |entry| {worst:.4g} > certified bound {self.program.inputs[name]:.4g}"
                if strict:
                    raise BoundError(msg)
                warnings.warn(msg + " (non-strict mode: the error bound does not hold)", stacklevel=3)
        if lead[1] > self.model.cfg.max_len:
            raise ValueError(f"sequence length {lead[1]} exceeds the compiled max_len {self.model.cfg.max_len}")

    def run(self, inputs: dict[str, np.ndarray], strict: bool = True, states: bool = False):
        """Run the transformer; return every slot's final value as (batch, T, *shape).

        ``strict`` (default) raises :class:`BoundError` when an input, or any intermediate
        value of the reference run, leaves the domain the bound is certified for; with
        ``strict=False`` it warns instead. ``states=True`` also returns the named residual
        after every layer.
        """
        self.check_model(strict)
        self.check_inputs(inputs, strict)
        self.check_intermediates(inputs, strict)
        with torch.no_grad():
            _, hs = self.model(self.tokens(inputs), return_states=True)
        final = self.layout.read(hs[-1])
        out = {n: final[n] for n in self.program.slots}
        return (out, [self.layout.read(h) for h in hs]) if states else out

    def check_intermediates(self, inputs: dict[str, np.ndarray], strict: bool = True, steps=None) -> None:
        """Asserted slot bounds and divisor lower bounds must hold on this input (``steps``:
        the program's :meth:`Program.execute` on it, if already run)."""
        for group, before, results in steps if steps is not None else self.program.execute(inputs, self.t_max):
            for op, value in zip(group, results):
                problems = []
                worst = float(np.abs(value).max(initial=0))
                bound = self.write_bounds[id(op)]
                if worst > bound * (1 + 1e-12):
                    problems.append(f"slot {op.dst!r} reaches {worst:.4g} > its bound {bound:.4g}")
                if isinstance(op, Div) and np.abs(before[op.den]).min() < op.den_min:
                    problems.append(f"divisor {op.den!r} reaches {np.abs(before[op.den]).min():.4g} < den_min "
                                    f"{op.den_min:.4g}")
                for msg in problems:
                    if strict:
                        raise BoundError(f"{op.describe()}: {msg}; this input is outside the certified domain")
                    warnings.warn(msg + " (non-strict mode: the error bound does not hold)", stacklevel=3)


def compile_program(
    program: Program,
    *,
    max_len: int,
    dtype: str = "float64",
    mode: str = "fused",
    levels: int = 2,
    output: str | None = None,
    max_width: int | None = None,
) -> Compiled:
    """Compile ``program`` for sequences up to ``max_len`` columns (BOS included)."""
    bd.roundoff(dtype)
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if levels < 1:
        raise ValueError(f"levels (Richardson scales per product) must be >= 1, got {levels}")
    if max_len > bd.max_len(dtype):
        raise ValueError(f"max_len {max_len} exceeds the longest context {dtype} positional attention resolves "
                         f"({bd.max_len(dtype)} columns: beyond it the logits' rounding can reach the gap between "
                         f"columns); use float64 or a shorter context")
    program.validate(max_width, dtype)
    check_protocol(program.ops)
    if output is not None and (output not in program.slots or program.slots[output] not in ((), (1,))):
        raise ValueError(f"output must be a scalar slot of the program, got {output!r}")
    layout = program.layout()
    layers = program.schedule(mode)
    slot_bounds, read_bounds = program.bounds()
    sizes = program.sizes()
    L = layout.width
    R1 = sum(sizes[n] * slot_bounds[n] for n in program.slots) + 4.0  # + one, pos, pos2, bos
    R2 = sum(sizes[n] * slot_bounds[n] ** 2 for n in program.slots) + 4.0 + R1**2  # + the balance unit

    check_memory(_least_parameters(L, layers, sizes, levels), dtype, program.name, at_least=True)

    # ---- constants ----------------------------------------------------------------------
    mlp_ops = [op for layer in layers for op in layer.mlp]
    muls = [op for op in mlp_ops if isinstance(op, Mul)]
    placement = {id(op): i for i, layer in enumerate(layers) for op in (*layer.attn, *layer.mlp)}
    mechs = {id(op): Mechanism(out_terms=op.out_terms(sizes)) for op in program.ops}
    for op in muls:  # each product's scale and balance from the bounds of its operands as it reads them
        mechs[id(op)].scale, mechs[id(op)].kappa = bd.choose_mul_scale(
            dtype, read_bounds[id(op)][op.a], read_bounds[id(op)][op.b], op.shape[1], levels)
    T_max = max(max_len - 1, 1)
    drift = bd.residual_drift(dtype, R1, L, T_max, max(_value_dims(layer, sizes) for layer in layers))
    ctx = Context(dtype, T_max, levels, sizes)

    # The pads add exactly 0 to the residual's sum: each pair is written by negated weights
    # from one value, and rounding is sign-symmetric (tests check it on every state).
    def mul_read(P: float) -> bd.LayerNormRead:
        return bd.layer_norm_read(dtype, P, R2, drift / L, L, (2 * P + 2 * R1) / L)

    signatures = {}  # muls that read and write alike share their error (stacked blocks repeat them)
    for m in muls:
        b = read_bounds[id(m)]
        key = (b[m.a], b[m.b], b[m.dst], slot_bounds[m.dst], m.shape[1], m.dst in m.reads(),
               mechs[id(m)].scale, mechs[id(m)].kappa)
        signatures.setdefault(key, m)

    hinges = [op for op in mlp_ops if hasattr(op, "sharpness")]
    for op in hinges:  # a hinge's sharpness from the bound of what it reads
        mechs[id(op)].scale = op.sharpness(dtype, read_bounds[id(op)][op.src])
    readers = [*signatures.values(), *hinges]  # every MLP op that reads through the pads ±P

    def worst_relative(P: float) -> float:  # one pad P serves them all: the worst error relative to scale
        ln = mul_read(P)
        return max(float(own_error(m, mechs[id(m)], Context(dtype, T_max, levels, sizes, {placement[id(m)]: ln}),
                                   placement[id(m)], read_bounds[id(m)], slot_bounds, read_bounds[id(m)][m.dst],
                                   slot_bounds[m.dst])) / max(slot_bounds[m.dst], 1e-300) for m in readers)

    P = float(min(bd.LOG_GRID[::4], key=worst_relative)) if readers else 1.0
    for i, layer in enumerate(layers):
        divs = [op for op in layer.mlp if isinstance(op, Div)]
        if layer.mlp and not divs:
            ctx.ln[i] = mul_read(P)
        if divs:  # divisions in one layer share their divisor, hence one scale M
            den_min = divs[0].den_min
            num = max(read_bounds[id(op)][op.num] for op in divs)
            den_max = read_bounds[id(divs[0])][divs[0].den]
            M = bd.best_div_scale(dtype, R2, drift, L, num, den_min, 2 * den_max / L)
            for op in divs:
                mechs[id(op)].scale = M
            ctx.ln[i] = bd.layer_norm_read(dtype, M * den_min, R2, drift / (L * den_min),
                                           L, (2 * M * den_max + 2 * R1) / (L * den_min))

    # ---- weights ------------------------------------------------------------------------
    G = bd.attention_gap(dtype)
    scales = {k: m.scale for k, m in mechs.items()}
    layer_specs = [_layer_spec(layer, layout, sizes, P, mechs, levels) for layer in layers]
    heads = max((len(s.heads) for s in layer_specs), default=1) or 1
    value_dim = max((h.value_dim for s in layer_specs for h in s.heads.values()), default=1) or 1
    mlp_width = max((len(s.hidden) for s in layer_specs), default=1) or 1
    cfg = TransformerConfig(
        token_dim=sum(sizes[n] for n in program.inputs),
        width=L,
        num_layers=len(layers),
        num_heads=heads,
        head_dim=3,
        value_dim=value_dim,
        mlp_width=mlp_width,
        max_len=max_len,
        dtype=dtype,
        loop=find_loop([spec.key() for spec in layer_specs]),
    )
    check_memory(cfg.num_parameters(), dtype, program.name)
    model = Transformer(cfg)
    with torch.no_grad():
        _write_embedding(model, layout, list(program.inputs), sizes, P, T_max)
        written: set[int] = set()  # a looped block's layer is written at its first application
        for s, spec in zip(cfg.applied_index(), layer_specs):
            if s not in written:
                spec.write(model.layers[s], layout, G, T_max, P)
                written.add(s)
        if output is not None:
            model.readout[layout.rows(output)] = 1.0

    write_bounds = {id(op): op.out_bound(read_bounds[id(op)], sizes) for op in program.ops}
    own = {id(op): float(own_error(op, mechs[id(op)], ctx, placement[id(op)], read_bounds[id(op)], slot_bounds,
                                   read_bounds[id(op)][op.dst], write_bounds[id(op)])) for op in program.ops}
    unsized = next((op for op in program.ops if not math.isfinite(own[id(op)])), None)
    if unsized is not None:
        remedy = "float64, " if dtype != "float64" else ""
        raise ValueError(f"{unsized.describe()} cannot be made accurate in {dtype} for these bounds (no finite error "
                         f"bound at any LayerNorm pad or product scale: the residual's rounding swamps the reads); "
                         f"use {remedy}slot bounds of similar magnitudes, a smaller input domain or a shorter context")
    errors = _propagate_errors(program, layers, read_bounds, sizes, own, dtype)
    constants = {"ln_pad": P, "attention_gap": G, "levels": levels, "residual_drift": drift}
    for op in mlp_ops:
        constants[f"{op.describe()}: {getattr(op, 'scale_name', 'product scale' if isinstance(op, Mul) else 'division scale')}"] = scales[id(op)]
    return Compiled(program, model, layout, layers, list(program.inputs), slot_bounds, errors, constants, output,
                    write_bounds, read_bounds, own, mechs, placement, ctx, P)


def weight_digests(model: Transformer) -> dict[str, str]:
    """A digest of every tensor of ``model`` (its bytes, dtype and shape)."""
    out = {}
    for name, tensor in model.state_dict().items():
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{tensor.dtype} {tuple(tensor.shape)}".encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        out[name] = h.hexdigest()
    return out


def available_memory() -> float | None:
    """Bytes the OS could give this process now (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(parameters: int, dtype: str, name: str, at_least: bool = False) -> None:
    """Refuse, before allocating, a model whose weights would not fit in memory: building one
    takes about 1.5 times its weights' bytes (measured: 1.1x to 1.4x for ridge at d = 8 to 32).
    ``at_least``: ``parameters`` is a lower bound, known from the schedule before any weight
    is planned (so a model far too large is refused in seconds)."""
    need = 1.5 * parameters * torch.finfo(DTYPES[dtype]).bits / 8
    free = available_memory()
    if free is not None and need > free:
        raise ValueError(f"{name} would hold {'at least ' if at_least else ''}{parameters:,} parameters in {dtype}: "
                         f"building it takes {'at least ' if at_least else 'about '}{need / 2**30:.1f} GB and "
                         f"{free / 2**30:.1f} GB is available; use a smaller d or n")


def _least_parameters(width: int, layers: list[Layer], sizes: dict[str, int], levels: int) -> int:
    """A lower bound on a compiled model's stored parameters from its schedule alone, before
    any weight is planned: every stored layer holds the widest layer's W_V, W_O (one head per
    read pattern, a value entry per source entry) and W_in, W_out (a product's 4 GeLU units per
    scale and entry pair; linear pairs for a division or an in-place update), and layers
    that differ in their ops are stored apart."""
    def units(op: Op) -> int:
        own = 4 * levels * math.prod(op.shape) if isinstance(op, Mul) else 2 * sizes[op.dst]
        return own + 2 * sizes[op.dst] * (op.dst in op.reads())

    heads, values, hidden, kinds = 1, 1, 0, set()
    for layer in layers:
        patterns: dict = {0: set()}
        for op in layer.attn:
            for src, shift in ((op.src, None),) if isinstance(op, Mean) else zip(op.reads(), op.term_offsets()):
                patterns.setdefault(shift, set()).add(src)
        heads = max(heads, len(patterns))
        values = max(values, max(sum(sizes[s] for s in sources) for sources in patterns.values()))
        hidden = max(hidden, sum(units(op) for op in layer.mlp))
        kinds.add(tuple((type(op).__name__, op.dst, op.reads()) for op in (*layer.attn, *layer.mlp, *layer.cleanups)))
    return len(kinds) * 2 * width * (heads * values + hidden)


def find_loop(keys: list[str]) -> tuple[int, int, int] | None:
    """The (first, period, repeats) that stores fewest layers: layers ``first + r period + j``
    (r < repeats, j < period) all have the key of layer ``first + j``. Equal keys mean equal
    layer specs, hence bit-identical weights (writing a spec is deterministic)."""
    best, saved = None, 0
    N = len(keys)
    for period in range(1, N // 2 + 1):
        start = 0
        while start + 2 * period <= N:
            repeats = 1
            while start + (repeats + 1) * period <= N and \
                    keys[start + repeats * period:start + (repeats + 1) * period] == keys[start:start + period]:
                repeats += 1
            if period * (repeats - 1) > saved:
                best, saved = (start, period, repeats), period * (repeats - 1)
            start += 1
    return best


def _value_dims(layer: Layer, sizes: dict[str, int]) -> int:
    """Most value dimensions a layer's heads can carry (the sources its attention ops read,
    old and new values of every written slot, the division pads, the reset's sum): the
    number of terms the output map sums into the balance unit."""
    return sum(sizes[s] for op in layer.attn for s in op.reads()) + sum(
        2 * sizes[op.dst] for op in (*layer.attn, *layer.mlp)) + 2 * len(layer.cleanups) + 8


# ---- per-layer weight specs ---------------------------------------------------------------
@dataclass
class _Head:
    """One attention head: a read pattern, the slots its value copies, and output coefficients."""

    shift: int | None  # None: causal mean
    sources: list[str] = field(default_factory=list)
    outputs: list[tuple[str, int, str, int, float]] = field(default_factory=list)  # (src, src_idx, dst, dst_idx, coef)
    sizes: dict[str, int] = field(default_factory=dict)

    def add(self, src: str, dst: str, matrix: np.ndarray) -> None:
        if src not in self.sources:
            self.sources.append(src)
        for i, j in zip(*np.nonzero(matrix)):
            coef = matrix[i, j]  # a float, or a sympy expression when iclkit.verify proves a layer
            self.outputs.append((src, int(j), dst, int(i), float(coef) if isinstance(coef, (int, float, np.number)) else coef))

    @property
    def value_dim(self) -> int:
        """The sources' entries, and for the column's own head (shift 0) the reset's sum."""
        return sum(self.sizes[s] for s in self.sources) + (self.shift == 0)


@dataclass
class _LayerSpec:
    heads: dict = field(default_factory=dict)
    hidden: list[tuple[list[tuple[str, int, float]], str, int, float]] = field(default_factory=list)
    # hidden unit: (input terms (slot, idx, coef) on h/sigma*scale, output slot, idx, output coef)
    out_bias: list[tuple[str, int, float]] = field(default_factory=list)
    read_scale: float = 1.0  # multiplies normalised units to undo LayerNorm's 1/sigma
    dividing: bool = False  # the layer's LayerNorm is taken over by division pads
    products: set[int] = field(default_factory=set)  # hidden units of GeLU products (left unbalanced)

    def key(self) -> str:
        """A digest of everything :meth:`write` reads from this spec (floats by their exact repr)."""
        heads = [(shift, h.sources, h.outputs) for shift, h in self.heads.items()]
        data = (heads, self.hidden, self.out_bias, self.read_scale, self.dividing, sorted(self.products))
        return hashlib.sha256(repr(data).encode()).hexdigest()

    def head(self, shift: int | None, sizes: dict[str, int]) -> _Head:
        if shift not in self.heads:
            self.heads[shift] = _Head(shift, sizes=sizes)
        return self.heads[shift]

    def write(self, layer, layout: Layout, G: float, T_max: int, P: float) -> None:
        r = layout.rows
        for h_idx, head in enumerate(self.heads.values()):
            if head.shift is not None:
                k = head.shift / T_max
                c = G * T_max**2
                # q.k_j = -G (j - (t - k))^2 with keys [pos2, pos, one].
                layer.W_K[h_idx, r("pos2").start, 0] = 1.0
                layer.W_K[h_idx, r("pos").start, 1] = 1.0
                layer.W_K[h_idx, r("one").start, 2] = 1.0
                layer.W_Q[h_idx, r("one").start, 0] = -c
                layer.W_Q[h_idx, r("pos").start, 1] = 2 * c
                layer.W_Q[h_idx, r("one").start, 1] = -2 * c * k
                layer.W_Q[h_idx, r("pos2").start, 2] = -c
                layer.W_Q[h_idx, r("pos").start, 2] = 2 * c * k
                layer.W_Q[h_idx, r("one").start, 2] = -c * k * k
            offset = 0
            starts = {}
            for src in head.sources:
                starts[src] = offset
                for i in range(head.sizes[src]):
                    layer.W_V[h_idx, r(src).start + i, offset + i] = 1.0
                offset += head.sizes[src]
            for src, j, dst, i, coef in head.outputs:
                layer.W_O[h_idx, starts[src] + j, r(dst).start + i] += coef
            if head.shift == 0:  # the reset's value: the column's sum, pads left out (they cancel exactly)
                layer.W_V[h_idx, torch.from_numpy(layout.unpadded()), offset] = 1.0
        for unit, (terms, dst, idx, out_coef) in enumerate(self.hidden):
            for slot, i, coef in terms:
                layer.W_in[r(slot).start + i, unit] += coef * self.read_scale
                layer.W_in[r("zero").start, unit] -= coef * self.read_scale  # LayerNorm'd 0 is -mean/sigma
            layer.W_out[unit, r(dst).start + idx] += out_coef
        for slot, i, value in self.out_bias:
            layer.b_out[r(slot).start + i] += value
        _balance(layer.W_O, layout)
        linear = torch.tensor([u not in self.products for u in range(layer.W_out.shape[0])])
        W_out = layer.W_out[linear]
        _balance(W_out, layout)
        layer.W_out[linear] = W_out
        reset = list(self.heads).index(0)  # the balance unit minus the column's sum: the residual sums to 0 again
        layer.W_O[reset, self.heads[0].value_dim - 1, layout.rows("bal").start] = -1.0


def _layer_spec(layer: Layer, layout: Layout, sizes: dict[str, int], P: float, mechs: dict, levels: int) -> _LayerSpec:
    """The weights of one layer. GeLU product units do not write the balance unit: their
    outputs are large cancelling terms, and rounding their sum there would move the
    residual's mean (LayerNorm's centre) by far more than the products' own error. Every
    layer's attention resets the balance unit to minus the column's sum instead, which also
    clears the rounding drift of the layers before. (Linear units, whose terms are as small
    as their results, stay balanced in the MLP.)"""
    spec = _LayerSpec()
    spec.head(0, sizes)  # every layer's attention resets the residual's sum (the balance unit)
    for op in layer.attn:
        op.lower(spec, sizes, mechs[id(op)], P, layout.width, levels)
    for div in layer.cleanups:  # the previous layer's division pads
        div.lower_cleanup(spec, sizes, mechs[id(div)])
    for op in layer.mlp:
        if op.dst in op.reads():  # in place: the MLP subtracts the old value, GeLU(z) - GeLU(-z) = z
            for i in range(sizes[op.dst]):
                spec.hidden.append(([(op.dst, i, 1.0)], op.dst, i, -1.0))
                spec.hidden.append(([(op.dst, i, -1.0)], op.dst, i, 1.0))
        else:
            spec.head(0, sizes).add(op.dst, op.dst, -np.eye(sizes[op.dst]))  # clear the target first
        op.lower(spec, sizes, mechs[id(op)], P, layout.width, levels)
    return spec


def _write_embedding(model: Transformer, layout: Layout, inputs: list[str], sizes: dict[str, int], P: float, T_max: int) -> None:
    r = layout.rows
    col = 0
    for name in inputs:
        for i in range(sizes[name]):
            model.W_E[col + i, r(name).start + i] = 1.0
        col += sizes[name]
    t = torch.arange(model.cfg.max_len, dtype=model.dtype)
    model.pos[:, r("one").start] = 1.0
    model.pos[:, r("pos").start] = t / T_max
    model.pos[:, r("pos2").start] = (t / T_max) ** 2
    model.pos[0, r("bos").start] = 1.0
    model.pos[:, r("pad+").start] = P
    model.pos[:, r("pad-").start] = -P
    _balance(model.W_E, layout)
    _balance(model.pos, layout)


def _balance(W: torch.Tensor, layout: Layout) -> None:
    """Make every write move the balance unit by minus its sum (pads left out), so the residual sums to 0."""
    keep = torch.from_numpy(layout.unpadded())
    keep[layout.rows("bal")] = False
    W[..., layout.rows("bal").start] = -W[..., keep].sum(-1)


def _propagate_errors(program: Program, layers: list[Layer], read_bounds: dict, sizes: dict, own: dict,
                      dtype: str) -> dict[str, float]:
    """Forward error analysis through the schedule: exact-input error + each op's own error,
    with every op's Lipschitz constants taken from the bounds of the slots as it reads them."""
    u = bd.roundoff(dtype)  # inputs are rounded to the model's dtype on the way in
    errors = {n: u * program.inputs.get(n, 0.0) for n in program.slots} | {n: 0.0 for n in READABLE_SYSTEM}
    for layer in layers:
        for ops in (layer.attn, layer.mlp):  # a sublayer's ops all read the state before it
            before = dict(errors)
            for op in ops:
                errors[op.dst] = op.propagated_error(read_bounds[id(op)], before, sizes) + own[id(op)]
    return errors
