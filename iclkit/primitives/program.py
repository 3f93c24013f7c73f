"""Programs of primitive ops on named slots: validation, interpretation, bounds and scheduling.

A :class:`Program` declares its slots (name -> shape), which of them are inputs (with the
bound |entry| <= B the caller promises), and a list of steps (an op, or a
:class:`~iclkit.primitives.ops.Parallel` group that must share one layer). It is the
interpreter side of the tracr/ALTA lesson: the same program runs in plain numpy
(:meth:`Program.interpret`) and compiled to transformer weights
(:func:`iclkit.primitives.compile.compile_program`), and the two must agree within the
certified bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from iclkit.primitives.layout import SYSTEM_SLOTS, Layout, Slot
from iclkit.primitives.ops import Aff, Div, Op, Parallel

READABLE_SYSTEM = {"one": 1.0, "bos": 1.0, "pos": 1.0}  # system units programs may read
MAGNITUDE = 1e30  # input bounds, asserted bounds and coefficients the interval analysis is computed for


@dataclass(frozen=True)
class Problem:
    """One reason a program is refused: the step, the op, what is wrong."""

    step: int
    op: str
    reason: str

    def __str__(self) -> str:
        return f"step {self.step} {self.op}: {self.reason}"


class ProgramError(ValueError):
    """A program failed validation; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("program refused:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class Layer:
    """What one decoder layer does: attention-side ops, MLP-side ops, and division clean-ups."""

    attn: list[Op] = field(default_factory=list)
    mlp: list[Op] = field(default_factory=list)
    cleanups: list[Div] = field(default_factory=list)  # divisions of the previous layer to undo


class Program:
    """Slots, inputs with bounds, and a list of steps."""

    def __init__(
        self,
        slots: dict[str, tuple[int, ...] | int],
        inputs: dict[str, float],
        steps: list[Op | Parallel],
        name: str = "program",
        regions: dict[str, tuple[int, int]] | None = None,
    ) -> None:
        self.name = name
        self.slots = {n: (s,) if isinstance(s, int) else tuple(s) for n, s in slots.items()}
        self.inputs = dict(inputs)
        self.steps = _distinct(steps)
        self.regions = {n: (int(a), int(b)) for n, (a, b) in (regions or {}).items()}  # name -> steps [start, stop)

    # ---- regions -------------------------------------------------------------------------
    def span(self, first: str, last: str | None = None) -> tuple[int, int]:
        """The steps [start, stop) from region ``first`` through region ``last`` (default: the
        same), which must follow one another without a gap; ``KeyError`` naming an unknown one."""
        for name in (first, last or first):
            if name not in self.regions:
                raise KeyError(f"{self.name} has no region {name!r} (regions: {', '.join(self.regions) or 'none'})")
        start, stop = self.regions[first][0], self.regions[last or first][1]
        if stop < start:
            raise KeyError(f"{self.name}: region {last!r} comes before {first!r}")
        return start, stop

    def steps_of(self, first: str, last: str | None = None) -> list[Op | Parallel]:
        """The steps of region ``first`` through region ``last`` (prologue, a block, epilogue)."""
        start, stop = self.span(first, last)
        return self.steps[start:stop]

    def ops_of(self, *names: str) -> list[Op]:
        """The ops of the named regions, one region after another (Parallel groups flattened)."""
        return [op for name in names for step in self.steps_of(name)
                for op in (step.ops if isinstance(step, Parallel) else (step,))]

    # ---- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The program as JSON-ready data: name, slots, input bounds and every step's op
        (a saved model's header carries it, so a fresh process rebuilds it without the code
        that wrote it)."""
        def step(s):
            return {"parallel": [op.to_dict() for op in s.ops]} if isinstance(s, Parallel) else s.to_dict()

        return {"name": self.name, "slots": {n: list(s) for n, s in self.slots.items()},
                "inputs": dict(self.inputs), "steps": [step(s) for s in self.steps],
                "regions": {n: list(r) for n, r in self.regions.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "Program":
        """The program :meth:`to_dict` wrote; ``ValueError`` naming what is malformed."""
        try:
            steps = [Parallel(*map(Op.from_dict, s["parallel"])) if "parallel" in s else Op.from_dict(s)
                     for s in data["steps"]]
            return cls({n: tuple(s) for n, s in data["slots"].items()}, data["inputs"], steps, name=data["name"],
                       regions={n: tuple(r) for n, r in data.get("regions", {}).items()})
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"malformed program data ({type(e).__name__}: {e})") from None

    # ---- structure -----------------------------------------------------------------------
    @property
    def ops(self) -> list[Op]:
        return [op for step in self.steps for op in (step.ops if isinstance(step, Parallel) else (step,))]

    def sizes(self) -> dict[str, int]:
        sizes = {n: int(np.prod(s)) for n, s in self.slots.items()}
        sizes.update({n: 1 for n in SYSTEM_SLOTS})
        return sizes

    def layout(self) -> Layout:
        return Layout([Slot(n, s) for n, s in self.slots.items()])

    # ---- validation ----------------------------------------------------------------------
    def problems(self, max_width: int | None = None, dtype: str = "float64") -> list[Problem]:
        """Every reason this program cannot be compiled (empty when it can)."""
        found: list[Problem] = []
        reserved = [n for n in self.slots if n in SYSTEM_SLOTS]
        for n in reserved:
            found.append(Problem(-1, "slots", f"slot name {n!r} is reserved for a system unit"))
        for n in self.inputs:
            if n not in self.slots:
                found.append(Problem(-1, "inputs", f"input {n!r} is not a declared slot"))
            elif not self.inputs[n] > 0:
                found.append(Problem(-1, "inputs", f"input {n!r} needs a bound > 0, got {self.inputs[n]}"))
            elif not self.inputs[n] <= MAGNITUDE:
                found.append(Problem(-1, "inputs", f"input {n!r} has bound {self.inputs[n]:g}, beyond the magnitudes "
                                                   f"(<= {MAGNITUDE:g}) the bounds are computed for"))
        sizes = self.sizes()
        written = set(self.inputs) | set(READABLE_SYSTEM)
        for i, step in enumerate(self.steps):
            group = step.ops if isinstance(step, Parallel) else (step,)
            for op in group:
                desc = op.describe()
                unknown = [s for s in (op.dst, *op.reads()) if s not in self.slots and s not in READABLE_SYSTEM]
                for s in unknown:
                    found.append(Problem(i, desc, f"slot {s!r} is not declared"))
                if unknown:
                    continue
                for reason in op.shape_problems(sizes):
                    found.append(Problem(i, desc, reason))
                found.extend(Problem(i, desc, reason) for reason in _magnitude_problems(op))
                if isinstance(op, Aff):
                    found.extend(Problem(i, desc, reason) for reason in op.coefficient_problems(dtype))
                for s in op.reads():
                    if s not in written:
                        found.append(Problem(i, desc, f"reads slot {s!r}, which nothing has written"))
                if op.dst in READABLE_SYSTEM or (op.dst in self.inputs and not getattr(op, "accumulate", False)):
                    found.append(Problem(i, desc, f"writes over input slot {op.dst!r} (only an accumulating mov may add to it)"))
                if isinstance(op, Div) and op.dst in op.reads():
                    found.append(Problem(i, desc, f"a div cannot write over its own input {op.dst!r}; use a fresh slot"))
            if isinstance(step, Parallel):
                found.extend(Problem(i, "parallel", r) for r in clashes(group))
            for op in group:
                written.add(op.dst)
        for region, (start, stop) in self.regions.items():
            if not 0 <= start <= stop <= len(self.steps):
                found.append(Problem(-1, "regions", f"region {region!r} = steps [{start}, {stop}) is not within the "
                                                    f"program's {len(self.steps)} steps"))
        if max_width is not None and self.layout().width > max_width:
            found.append(
                Problem(-1, "layout", f"too little room: the slots need width {self.layout().width} > {max_width}")
            )
        return found

    def validate(self, max_width: int | None = None, dtype: str = "float64") -> None:
        """Raise :class:`ProgramError` listing every problem (for weights in ``dtype``), if there is any."""
        found = self.problems(max_width, dtype)
        if found:
            raise ProgramError(found)

    # ---- reference semantics -------------------------------------------------------------
    def interpret(self, inputs: dict[str, np.ndarray], trace: bool = False, t_max: int | None = None):
        """Run the program in numpy on per-column inputs of shape (batch, T, *shape).

        The system slot ``pos`` holds t / t_max (a compiled model's t_max is max_len - 1;
        by default the last column of these inputs).

        Returns the final value of every slot as (batch, T, *shape); with ``trace=True`` also
        the list of (op, value written) in execution order. Object arrays (sympy) work too.
        """
        log = []
        values = None
        for group, values, results in self.execute(inputs, t_max):
            if trace:
                log.extend(zip(group, results))
        first = next(iter(values.values()))
        B, T = first.shape[:2]
        out = {n: values[n].reshape(B, T, *self.slots[n]) for n in self.slots}
        return (out, log) if trace else out

    def execute(self, inputs: dict[str, np.ndarray], t_max: int | None = None):
        """Step by step: yields ``(ops of the step, slot values before it, their results)``;
        slot values are flat ``(batch, T, size)``. After the last step the values dict holds
        the final state (the generator updates it in place after each yield)."""
        sizes = self.sizes()
        missing = sorted(set(self.inputs) - set(inputs))
        if missing:
            raise ValueError(f"missing inputs: {missing}")
        first = np.asarray(inputs[next(iter(self.inputs))]) if self.inputs else None
        B, T = first.shape[:2]
        symbolic = any(np.asarray(v).dtype == object for v in inputs.values())
        # object: sympy; otherwise float64, or wider if the inputs are (an extended-precision reference)
        dtype = object if symbolic else np.result_type(np.float64, *(np.asarray(v).dtype for v in inputs.values()))
        values = {n: np.zeros((B, T, sizes[n]), dtype=dtype) for n in self.slots}
        for n in self.inputs:
            values[n] = np.asarray(inputs[n], dtype=dtype).reshape(B, T, sizes[n])
        values["one"] = np.ones((B, T, 1), dtype=dtype)
        values["bos"] = np.zeros((B, T, 1), dtype=dtype)
        values["bos"][:, 0] = 1
        values["pos"] = np.broadcast_to((np.arange(T) / (t_max or max(T - 1, 1))).reshape(1, T, 1), (B, T, 1)).astype(dtype)
        for step in self.steps:
            group = step.ops if isinstance(step, Parallel) else (step,)
            results = [op.evaluate(values, sizes) for op in group]  # a layer reads the old state
            yield group, dict(values), results
            for op, result in zip(group, results):
                values[op.dst] = result
        yield (), values, []

    # ---- bounds --------------------------------------------------------------------------
    def bounds(self) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
        """Bounds on |entry| from the input bounds: every slot's max anywhere in the program,
        and, per op (keyed by ``id(op)``), the bounds of the slots as that op reads them."""
        sizes = self.sizes()
        current = {n: 0.0 for n in self.slots} | dict(READABLE_SYSTEM) | {n: float(v) for n, v in self.inputs.items()}
        overall = dict(current)
        before: dict[int, dict[str, float]] = {}
        for step in self.steps:
            group = step.ops if isinstance(step, Parallel) else (step,)
            for op in group:
                before[id(op)] = dict(current)
            new = [(op.dst, op.out_bound(current, sizes)) for op in group]
            for dst, value in new:
                current[dst] = value
                overall[dst] = max(overall[dst], value)
        return overall, before

    # ---- scheduling ----------------------------------------------------------------------
    def schedule(self, mode: str = "fused") -> list[Layer]:
        """Assign ops to layers. ``faithful``: one step per layer, as in the paper's chains.
        ``fused``: greedy packing of non-clashing ops (Lemma 7), attention reads feeding the
        same layer's MLP (the RAW pattern), respecting every read/write order."""
        if mode not in ("faithful", "fused"):
            raise ValueError(f"mode must be 'faithful' or 'fused', got {mode!r}")
        self.validate()
        layers = _faithful(self.steps) if mode == "faithful" else _fused(self.ops)
        found = self.schedule_problems(layers)
        if found:  # the scheduler's own invariant: never compile a schedule that computes something else
            raise ProgramError(found)
        return layers

    def schedule_problems(self, layers: list[Layer]) -> list[Problem]:
        """Every way ``layers``, run with a decoder layer's semantics, computes something other
        than the program (empty when it computes the program).

        The semantics: a layer's attention reads the residual as it was before the layer; so
        do a division's pad swap (it reads the divisor) and the removal of the previous
        layer's division pads (which must read the divisor the swap read); each attention
        write overwrites or adds; an MLP op's target is cleared by the attention (unless the
        op updates it in place); the MLP reads the residual after the attention. A sublayer
        writes each slot at most once. Dataflow is compared by *versions*: the program step
        whose result a slot holds. Every read of every op must see the version the program
        order gives it, and every slot must end in the program's final version."""
        index = {id(op): i for i, step in enumerate(self.steps)
                 for op in (step.ops if isinstance(step, Parallel) else (step,))}
        initial = {s: ("input" if s in self.inputs else "zero") for s in (*self.slots, *READABLE_SYSTEM)}
        expected: dict[int, dict[str, object]] = {}  # id(op) -> the version of each slot it reads
        version = dict(initial)
        for i, step in enumerate(self.steps):
            group = step.ops if isinstance(step, Parallel) else (step,)
            for op in group:
                expected[id(op)] = {s: version[s] for s in op.reads()}
            for op in group:
                version[op.dst] = i
        final = version
        found: list[Problem] = []
        scheduled = [op for layer in layers for op in (*layer.attn, *layer.mlp)]
        if sorted(map(id, scheduled)) != sorted(map(id, self.ops)):
            found.append(Problem(-1, "schedule", "the layers do not hold each of the program's ops exactly once"))
            return found

        def reads(op: Op, state: dict, slots, where: str, layer: int) -> None:
            for s in slots:
                if state[s] != expected[id(op)][s]:
                    def name(v):
                        return f"step {v}'s result" if isinstance(v, int) else f"the {v} value"
                    found.append(Problem(index[id(op)], op.describe(),
                                         f"layer {layer} {where} reads {s!r} holding {name(state[s])}; the program "
                                         f"reads {name(expected[id(op)][s])}"))

        version = dict(initial)
        swapped: dict[int, object] = {}  # id(div) -> the divisor version its pad swap read
        for L, layer in enumerate(layers):
            divs = [op for op in layer.mlp if isinstance(op, Div)]
            attn_writes = [op.dst for op in layer.attn] + [op.dst for op in layer.mlp if op.dst not in op.reads()]
            mlp_writes = [op.dst for op in layer.mlp]
            for where, writes in (("attention", attn_writes), ("MLP", mlp_writes)):
                twice = sorted({s for s in writes if writes.count(s) > 1})
                if twice:
                    found.append(Problem(-1, f"layer {L}", f"its {where} writes {twice} more than once"))
            for div in layer.cleanups:
                if version[div.den] != swapped.get(id(div)):
                    found.append(Problem(index[id(div)], div.describe(),
                                         f"layer {L} attention removes the division pads with another value of "
                                         f"{div.den!r} than the one that set them"))
            for op in layer.attn:
                reads(op, version, op.reads(), "attention", L)
            for div in divs:  # the pad swap: LayerNorm's scale is set from the divisor before the layer
                reads(div, version, (div.den,), "attention (the division's pad swap)", L)
                swapped[id(div)] = version[div.den]
            for op in layer.attn:
                version[op.dst] = index[id(op)]
            for op in layer.mlp:
                if op.dst not in op.reads():
                    version[op.dst] = "cleared"
            for op in layer.mlp:
                reads(op, version, [s for s in op.reads() if not (isinstance(op, Div) and s == op.den)], "MLP", L)
            for op in layer.mlp:
                version[op.dst] = index[id(op)]
        for s in self.slots:
            if version[s] != final[s]:
                found.append(Problem(-1, "schedule", f"slot {s!r} ends holding another value than the program's"))
        return found


def _magnitude_problems(op: Op) -> list[str]:
    """An asserted bound that is not a finite number in (0, MAGNITUDE], or a numeric constant
    (coefficient, bias, den_min) that is NaN or beyond MAGNITUDE: the interval analysis would
    overflow or give NaN instead of naming it."""
    problems = []
    bound = getattr(op, "bound", None)
    if bound is not None and not (np.ndim(bound) == 0 and np.asarray(bound).dtype != object
                                  and 0 < float(bound) <= MAGNITUDE):
        problems.append(f"bound= must be a number in (0, {MAGNITUDE:g}], got {bound!r}")
    constants = [("the bias", getattr(op, "bias", None)), ("den_min", getattr(op, "den_min", None))]
    constants += [(f"term {t[0]!r}", t[1]) for t in getattr(op, "terms", ())]
    for what, value in constants:
        if value is None or np.asarray(value).dtype == object:
            continue
        arr = np.abs(np.asarray(value, dtype=float))
        if np.any(np.isnan(arr)) or np.any(arr > MAGNITUDE):
            problems.append(f"{what} has a coefficient ({arr.max():.3g}) that is NaN or beyond {MAGNITUDE:g}, "
                            "the magnitudes the bounds are computed for")
    return problems


def _distinct(steps: list[Op | Parallel]) -> list[Op | Parallel]:
    """The steps with every repeated op object replaced by a copy: bounds, constants and
    certificates are kept per occurrence (keyed by the op object)."""
    seen: set[int] = set()

    def fresh(op: Op) -> Op:
        if id(op) in seen:
            op = replace(op)
        seen.add(id(op))
        return op

    return [Parallel(*map(fresh, s.ops)) if isinstance(s, Parallel) else fresh(s) for s in steps]


def clashes(group: tuple[Op, ...] | list[Op]) -> list[str]:
    """Lemma 7: ops sharing a sublayer must not write what another reads or writes."""
    found = []
    for i, a in enumerate(group):
        for j, b in enumerate(group):
            if i != j and b.dst in {a.dst, *a.reads()}:
                found.append(f"{b.describe()} writes {b.dst!r}, which {a.describe()} also touches")
    divs = [op for op in group if isinstance(op, Div)]
    mlps = [op for op in group if op.kind == "mlp"]
    if divs and (len(mlps) > len(divs) or len({op.den for op in divs}) > 1):
        found.append("a div takes over LayerNorm's scale: its MLP may hold only divisions by the same divisor")
    return found


def _faithful(steps: list[Op | Parallel]) -> list[Layer]:
    layers: list[Layer] = []
    for step in steps:
        group = step.ops if isinstance(step, Parallel) else (step,)
        layer = Layer()
        for op in group:
            (layer.attn if op.kind == "attn" else layer.mlp).append(op)
        layers.append(layer)
    _place_cleanups(layers)
    return layers


def _place_cleanups(layers: list[Layer]) -> None:
    """Each division's pads are removed by the next layer's attention (a new layer if last)."""
    for i in range(len(layers)):
        divs = [op for op in layers[i].mlp if isinstance(op, Div)]
        if divs and i + 1 == len(layers):
            layers.append(Layer())
        if divs:
            layers[i + 1].cleanups.append(divs[0])  # one set of pads per divisor


def _fused(ops: list[Op]) -> list[Layer]:
    """List scheduling on sublayers: 2L is layer L's attention, 2L+1 its MLP."""
    last_write: dict[str, int] = {}
    last_read: dict[str, int] = {}
    # sublayer -> (reads, writes, divisor or None); MLP divisions share a sublayer only with
    # divisions by the same divisor
    occupancy: dict[int, list[tuple[set[str], set[str], str | None]]] = {}

    def fits(sub: int, reads: set[str], writes: set[str], den: str | None) -> bool:
        for r, w, d in occupancy.get(sub, []):
            # every op of a sublayer reads the residual as it was before the sublayer: a later op
            # may not read what an earlier one writes, nor write what it writes; writing what an
            # earlier op reads is safe (it read the old value)
            if writes & w or w & reads:
                return False
            if sub % 2 == 1 and (d or den) and d != den:
                return False
        return True

    def occupy(sub: int, reads: set[str], writes: set[str], den: str | None = None) -> None:
        occupancy.setdefault(sub, []).append((reads, writes, den))

    placed: list[tuple[int, Op]] = []
    for op in ops:
        reads = set(op.reads())
        earliest_read = max((last_write.get(s, -1) for s in reads), default=-1) + 1
        # a write may share the sublayer of the last read of its target (that read sees the old value)
        earliest_write = max(last_write.get(op.dst, -1) + 1, last_read.get(op.dst, -1))
        is_div = isinstance(op, Div)
        den = op.den if is_div else None
        L = max(0, (max(earliest_read, earliest_write) - 1) // 2)  # no earlier layer meets both orders
        while True:
            if op.kind == "attn":
                sub = 2 * L
                ok = sub >= earliest_read and sub >= earliest_write and fits(sub, reads, {op.dst}, None)
            else:
                sub = 2 * L + 1
                in_place = op.dst in reads
                clear_ok = in_place or (fits(2 * L, set(), {op.dst}, None) and 2 * L >= earliest_write)
                # a division's attention swaps the pads for +-M den: it reads the divisor before the layer
                swap_ok = not is_div or (2 * L > last_write.get(op.den, -1) and fits(2 * L, {op.den}, set(), None))
                cleanup_ok = not is_div or fits(2 * L + 2, {op.den}, set(), None)
                ok = (sub >= earliest_read and sub >= earliest_write and clear_ok and swap_ok and cleanup_ok
                      and fits(sub, reads, {op.dst}, den))
            if ok:
                break
            L += 1
        if op.kind == "attn":
            occupy(2 * L, reads, {op.dst})
        else:
            if op.dst not in reads:  # the target is cleared by the layer's attention
                occupy(2 * L, set(), {op.dst})
            occupy(2 * L + 1, reads, {op.dst}, den)
            if is_div:
                occupy(2 * L, {op.den}, set())
                occupy(2 * L + 2, {op.den}, set())
                last_read[op.den] = max(last_read.get(op.den, -1), 2 * L + 2)
        for s in reads:
            last_read[s] = max(last_read.get(s, -1), sub)
        last_write[op.dst] = sub
        placed.append((L, op))
    n_layers = 1 + max((L for L, _ in placed), default=-1)
    layers = [Layer() for _ in range(n_layers)]
    for L, op in placed:
        (layers[L].attn if op.kind == "attn" else layers[L].mlp).append(op)
    _place_cleanups(layers)
    return layers
