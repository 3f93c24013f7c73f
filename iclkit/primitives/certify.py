"""Per-prompt certificates: an a-posteriori error analysis of one run of a compiled program.

Write z_j for the exact value op j writes and z~_j for the transformer's. The transformer's
op j writes ``z~_j = f_j(z~_in) + r_j``: ``r_j`` is the op's *own error*, what it writes
minus the op's exact meaning on the values the transformer actually holds. Both sides are
known on a run, so ``r_j`` is **measured**: f_j is re-evaluated on the transformer's own
state in extended precision (``numpy.longdouble``, 64-bit significand) and subtracted, with
the extended evaluation's rounding bounded in the standard model and added. The deviations
then obey, exactly,

    e_j = J_j e_in + q_j(e_in) + r_j,

with J_j the Jacobian of f_j at the exact inputs and q_j the exact remainder: 0 for the
linear ops (mov, aff, mean), ``e_a e_b`` for mul, and for div
``-(e_n c - n e_c) e_c / (c^2 (c + e_c))``. This recursion is linear in e, so the error of
the output is ``sum_j lambda_j . (q_j + r_j)`` with ``lambda_j`` the adjoint (reverse-mode
derivative) of the output with respect to z_j along the exact run: every cancellation of
the algorithm (the contraction of an SGD step, Sherman-Morrison's) is kept, which is what a
forward bound cannot see. The certificate is ``sum_j |lambda_j| (|q_j| + |r_j|)``, plus the
adjoint's own float64 rounding (bounded by the same sum over the absolute adjoint). The
remainders q_j need |e| of the operands of mul and div: the deviation of the transformer's
state from the float64 reference, doubled, plus ``REFERENCE_SLACK`` per op of the reference's
own rounding (they enter only at second order). The inputs' rounding to the model's dtype is
measured the same way, as the embedding's own error.

Because r_j is measured, the certificate holds whatever the weights are: a corrupted weight
makes it large, not wrong. :func:`own_error_ratios` compares each measured r_j with the
op's *modelled* own error (:func:`iclkit.primitives.errors.own_error` at the prompt's
magnitudes): at most 1 when the weights implement the compiled mechanisms, which checks the
derived rounding model of :mod:`iclkit.primitives.bounds` on every run it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from iclkit.primitives import bounds as bd
from iclkit.primitives.errors import Context, own_error
from iclkit.primitives.ops import Op
from iclkit.primitives.ops.base import column_max
from iclkit.transformer.model import compensated_mean

REFERENCE_SLACK = 16 * 2.0**-53  # per op, relative: the float64 reference's own rounding (second order only)
EXTENDED_U = float(np.finfo(np.longdouble).eps) / 2  # unit roundoff of the re-evaluation
CHUNK = 8  # prompts per pass (bounds memory: every op's residuals are kept for the reverse pass)


def certify(compiled, inputs: dict[str, np.ndarray], output: str, column: int = -1, values=None) -> np.ndarray:
    """Rigorous bound, one per prompt, on |transformer - exact| of slot ``output`` (a scalar
    slot) at ``column``. ``inputs`` are per-column slots (batch, T, *shape). With ``values``
    (what another run of the same weights returned for these prompts), the bound is on
    |values - exact|: this run's bound plus the distance between the two runs' results (a
    batch of another size may round differently)."""
    bounds, got = [], []
    for chunk in _chunks(compiled, inputs):
        run = _Run(compiled, chunk)
        bounds.append(_certify_run(run, output, column))
        got.append(run.result(output, column))
    bound = np.concatenate(bounds)
    return bound if values is None else bound + np.abs(np.asarray(values, dtype=float) - np.concatenate(got))


def certified_run(compiled, inputs: dict[str, np.ndarray], output: str, column: int = -1,
                  check=None) -> tuple[np.ndarray, np.ndarray]:
    """(the transformer's ``output`` at ``column``, its certificate), one per prompt, from one
    run: the forward pass the certificate measures is the one whose values are returned, and
    ``check(steps)`` (if given) vets the program's reference run of each chunk before its
    certificate is computed (the run-time guard's domain checks)."""
    values, bounds = [], []
    for chunk in _chunks(compiled, inputs):
        run = _Run(compiled, chunk)
        if check is not None:
            check(run.steps)
        values.append(run.result(output, column))
        bounds.append(_certify_run(run, output, column))
    return np.concatenate(values), np.concatenate(bounds)


def own_error_ratios(compiled, inputs: dict[str, np.ndarray]) -> dict[str, float]:
    """For each op (by position and description): the largest measured own error over the
    prompts, divided by its modelled own error. At most 1 means the weights do what the
    compiler's error model says; above 1 names the op whose weights do not."""
    worst: dict[str, float] = {}
    for chunk in _chunks(compiled, inputs):
        _worst_ratios(_Run(compiled, chunk), worst)
    return worst


def audit(compiled, inputs: dict[str, np.ndarray], output: str, column: int = -1) -> tuple[np.ndarray, dict[str, float]]:
    """:func:`certify` and :func:`own_error_ratios` from one run of the transformer."""
    bounds, worst = [], {}
    for chunk in _chunks(compiled, inputs):
        run = _Run(compiled, chunk)
        bounds.append(_certify_run(run, output, column))
        _worst_ratios(run, worst)
    return np.concatenate(bounds), worst


def _worst_ratios(run: _Run, worst: dict[str, float]) -> None:
    """Raise ``worst`` (op key -> ratio) to this run's measured over modelled own errors."""
    modelled = run.modelled_own_errors()
    for i, op in enumerate(run.compiled.program.ops):
        measured, rounding = run.measured[id(op)]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(measured > rounding, (measured - rounding) / modelled[id(op)], 0.0)
        key = f"{i}: {op.describe()}"
        worst[key] = max(worst.get(key, 0.0), float(np.max(ratio, initial=0.0)))


def _chunks(compiled, inputs):
    batch = np.asarray(inputs[compiled.input_order[0]]).shape[0]
    return [{k: np.asarray(v)[i:i + CHUNK] for k, v in inputs.items()} for i in range(0, batch, CHUNK)]


@dataclass
class _Sublayer:
    before: dict[str, np.ndarray]  # program slot -> (B, T, size) float64 (exact copies of the state)
    after: dict[str, np.ndarray]


class _Run:
    """One run of the transformer beside the exact program, and each op's measured own error."""

    def __init__(self, compiled, inputs: dict[str, np.ndarray]) -> None:
        self.compiled = compiled
        program, model, layout = compiled.program, compiled.model, compiled.layout
        wrong = next((p for p in model.parameters() if p.dtype != model.dtype), None)
        if wrong is not None:
            raise ValueError(compiled.model_problem())
        self.sizes = program.sizes()
        self.steps = list(program.execute(inputs, compiled.t_max))
        self.sublayers: dict[tuple[int, str], _Sublayer] = {}
        self.residuals: dict[tuple[int, str], torch.Tensor] = {}
        names = list(self.sizes)

        def named(h: torch.Tensor) -> dict[str, np.ndarray]:
            arr = h.to(torch.float64).numpy()
            return {n: arr[..., layout.rows(n)] for n in names}

        with torch.no_grad():
            h = model.embed(compiled.tokens(inputs))
            self.embedded = named(h)
            for i, layer in enumerate(model.applied_layers):
                a = h + layer.attention(h)
                m = a + layer.mlp(a)
                self.residuals[(i, "mlp")] = a
                self.sublayers[(i, "attn")] = _Sublayer(named(h), named(a))
                self.sublayers[(i, "mlp")] = _Sublayer(self.sublayers[(i, "attn")].after, named(m))
                h = m
        self._check_untouched()
        self.measured = {id(op): self._measure(op) for op in program.ops}

    def result(self, output: str, column: int) -> np.ndarray:
        """The scalar slot ``output`` at ``column`` after the last layer, one per prompt."""
        return self.sublayers[(len(self.compiled.schedule) - 1, "mlp")].after[output][:, column, 0]

    def _check_untouched(self) -> None:
        """Slots that no op of a sublayer writes must come out of it bit for bit unchanged
        (the compiled weights write nowhere else); otherwise the run is not the program's."""
        writes: dict[tuple[int, str], set[str]] = {key: set() for key in self.sublayers}
        for op in self.compiled.program.ops:
            layer = self.compiled.placement[id(op)]
            writes[(layer, op.kind)].add(op.dst)
            if op.kind == "mlp" and op.dst not in op.reads():
                writes[(layer, "attn")].add(op.dst)  # cleared by the layer's attention
        for (layer, kind), sub in self.sublayers.items():
            for name in self.compiled.program.slots:
                if name not in writes[(layer, kind)] and not np.array_equal(sub.before[name], sub.after[name]):
                    raise ValueError(f"layer {layer} {kind} changes slot {name!r}, which no op of the program "
                                     "writes there: these weights do not implement the compiled program")

    def _measure(self, op: Op) -> tuple[np.ndarray, np.ndarray]:
        """(|r_j| as re-evaluated in extended precision, a bound on that re-evaluation's own
        rounding), each (B, T, size)."""
        sub = self.sublayers[(self.compiled.placement[id(op)], op.kind)]
        held = {n: v.astype(np.longdouble) for n, v in sub.before.items()}
        exact = op.evaluate(held, self.sizes)
        diff = np.abs(sub.after[op.dst].astype(np.longdouble) - exact).astype(np.float64)
        terms, mass = op.evaluation_mass(sub.before, self.sizes)
        rounding = bd.gamma(terms + 1, "float64") * (EXTENDED_U / 2.0**-53) * mass * (1 + 1e-3) + 2 * EXTENDED_U * diff
        return diff, rounding

    def modelled_own_errors(self) -> dict[int, np.ndarray]:
        """Each op's own error as the rounding model bounds it at this run's magnitudes."""
        compiled = self.compiled
        ln = {i: _layer_norm_read(compiled, i, self.residuals[(i, "mlp")]) for i, layer in enumerate(compiled.schedule)
              if layer.mlp}
        ctx = Context(compiled.model.cfg.dtype, compiled.t_max, compiled.context.levels, self.sizes, ln)
        out = {}
        for op in compiled.program.ops:
            layer = compiled.placement[id(op)]
            sub = self.sublayers[(layer, op.kind)]
            read = op.read_magnitudes(sub.before)
            other = {s: column_max(sub.before[s]).max(axis=1, keepdims=True) for s in set(op.reads()) | {op.dst}}
            out[id(op)] = own_error(op, compiled.mechanisms[id(op)], ctx, layer, read, other,
                                    column_max(sub.before[op.dst]), np.abs(sub.after[op.dst]))
        return out


def _certify_run(run: _Run, output: str, column: int) -> np.ndarray:
    """``sum_j |lambda~_j| (|r_j| + |q_j|) + sum_k |rho_k| |e_k|``: the adjoint lambda~ as
    computed (in extended precision), and the price of its rounding.

    Why the second sum: with L the (lower-triangular) linear map of the recursion, e = L^-1 s
    (s_j = q_j + r_j) and the output error is c.e. For the computed adjoint, with residual
    ``rho = L^T lambda~ - c``, ``c.e = lambda~.s - rho.e`` exactly. Each step of the reverse
    pass rounds locally (|rho| <= gamma of that step's absolute terms, nothing compounds), and
    e_k is the deviation of the state the step pulls back into (bounded like the remainders'),
    so this term is second order."""
    steps = run.steps
    exact_before = {id(op): before for group, before, _ in steps for op in group}
    residual = {}
    deviation = {}
    for op in run.compiled.program.ops:
        measured, rounding = run.measured[id(op)]
        before = exact_before[id(op)]
        sub = run.sublayers[(run.compiled.placement[id(op)], op.kind)]
        deviation[id(op)] = {s: _deviation(sub.before[s], before[s]) for s in op.reads()}
        residual[id(op)] = measured + rounding + op.remainder(before, deviation[id(op)])
    bar = {n: np.zeros(v.shape, dtype=np.longdouble) for n, v in steps[-1][1].items()}
    bar[output][:, column] = 1.0
    T = bar[output].shape[1]
    step_rounding = bd.gamma(max(run.sizes.values()) + T + 3, "float64") * (EXTENDED_U / 2.0**-53) * (1 + 1e-3)
    total = np.zeros(bar[output].shape[0], dtype=np.longdouble)
    adjoint_error = np.zeros(bar[output].shape[0])
    for group, before, _ in reversed(steps[:-1]):
        grads = [bar[op.dst] for op in group]
        for op in group:
            bar[op.dst] = np.zeros_like(bar[op.dst])
        for op, g in zip(group, grads):
            total += (np.abs(g) * residual[id(op)]).sum(axis=(1, 2))
            op.vjp(g, before, bar, run.sizes, absolute=False)
            local = {s: np.zeros(bar[s].shape) for s in op.reads()}
            op.vjp(np.abs(g).astype(np.float64), before, local, run.sizes, absolute=True)
            for s, mass in local.items():
                rho = step_rounding * (mass + np.abs(bar[s]).astype(np.float64))
                adjoint_error += (rho * deviation[id(op)][s]).sum(axis=(1, 2))
    initial = steps[0][1]
    for name in (*run.compiled.program.inputs, "pos"):  # the embedding's own error (inputs rounded to the dtype)
        embedded = np.abs(run.embedded[name].astype(np.longdouble) - initial[name]).astype(np.float64)
        total += (np.abs(bar[name]) * embedded).sum(axis=(1, 2))
    # total: a longdouble sum of positive terms (relative rounding far below 1e-12)
    bound = (total.astype(np.float64) + adjoint_error) * (1 + 1e-12)
    return np.where(np.isnan(bound), np.inf, bound)  # an infinite residual times a zero adjoint: no bound


def _deviation(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Bound on |transformer - exact| of a slot from the float64 reference run: the observed
    gap doubled plus the reference's own rounding (used only at second order)."""
    return 2 * np.abs(got - exact) + REFERENCE_SLACK * np.abs(exact)


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
    divs = [op for op in spec.mlp if op.sets_layer_norm]
    if divs:
        den = np.abs(h64[..., compiled.layout.rows(divs[0].den)].numpy())
        nominal = compiled.mechanisms[id(divs[0])].scale * np.sqrt(2 / L)
        scale = nominal / sigma
        ideal = scale * den  # reads h/|den| ideally
    else:
        scale = compiled.ln_pad * np.sqrt(2 / L) / sigma
        ideal = scale
    pads = ~compiled.layout.unpadded()
    arr = h64.numpy()
    pad2 = (arr[..., pads] ** 2).sum(-1, keepdims=True) / 2
    R2 = (arr[..., ~pads] ** 2).sum(-1, keepdims=True)
    mean_sum = np.abs(arr).mean(-1, keepdims=True)
    return bd.LayerNormRead(scale_error=np.abs(1 - ideal) + 8 * L * 2.0**-53, rel_error=bd.layer_norm_rel(dtype, R2 * (1 + 1e-12) / pad2),
                            abs_error=bd.centring_error(dtype, mean * scale, mean_sum * scale, L))
