"""The ground-truth circuit of a compiled program: which node reads which slot where, and which
edges carry the prompt to the prediction.

Nodes are the model's parts: ``embed`` (token embedding and positions), ``L{i}.H{h}`` (head h of
applied layer i), ``L{i}.MLP`` and ``out`` (the readout at the query column). A node *reads*
slot s when its weights read s: a head's value map, an MLP unit's input map, and every MLP's
LayerNorm scale, which a division sets through the pads ``div±``. It *writes* s when its output
map writes s from something it reads. The residual is a sum, so a node reading s reads every
earlier write to s, and an edge u -> v joins each of them to v (ablating u -> v resamples u's
term in v's input, as ACDC and edge attribution patching define it).

:func:`circuit_of` traces this column by column on sample prompts, with the program's own
interpreter telling which values carry the prompt, and keeps the edges through which the prompt
reaches y_hat at the query column; its docstring states how cancelling writes (clears, a
division's pads and their removal) are followed.

Left out, as the construction's infrastructure: the constant units (``one``, ``pos``, ``pos2``,
``bos``, the pads ±P, ``zero``), the balance unit and every layer's reset of it, the query and key
maps (they read positions only), and what a LayerNorm's scale takes from the content slots (the
pads pin it; the certified bounds cover the rest). ``iclkit.bench.suite.check_truth`` checks the
result by ablation: resampling any one edge of the circuit breaks the prediction, resampling
every other edge at once keeps it within its certified bound."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from iclkit.primitives.compile import Compiled
from iclkit.primitives.ops import Mean

INFRASTRUCTURE = frozenset({"one", "pos", "pos2", "bos", "pad+", "pad-", "zero", "bal"})
LAYER_NORM_READS = ("div+", "div-")  # the pads a division sets; every MLP's LayerNorm scale reads them


@dataclass(frozen=True)
class Node:
    """One part of the model: its kind, applied layer, head index, and slot flows."""

    name: str
    kind: str  # "embed", "head", "mlp" or "out"
    layer: int | None = None
    head: int | None = None
    flows: frozenset[tuple[str, str]] = frozenset()  # (slot read, slot written), infrastructure left out
    shift: int | None = 0  # a head's read pattern: column t - shift, or None for the causal mean
    ops: tuple[str, ...] = ()  # the program's ops this node carries
    clears: frozenset[str] = frozenset()  # slots this head overwrites: it adds minus their whole old value
    removes_pads: bool = False  # this head removes a division's pads div± (minus what set them)

    @property
    def pattern(self) -> str:
        """A head's read pattern in words ("own column", "2 back", "causal mean"); "" otherwise."""
        if self.kind != "head":
            return ""
        return "causal mean" if self.shift is None else "own column" if self.shift == 0 else f"{self.shift} back"

    @property
    def reads(self) -> set[str]:
        return {src for src, _ in self.flows}

    @property
    def writes(self) -> set[str]:
        return {dst for _, dst in self.flows}


@dataclass
class Circuit:
    """Every node of the model, every possible edge between them, and the ground truth."""

    nodes: list[Node]
    edges: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (u, v) -> slots the prompt flows through
    truth: set[tuple[str, str]] = field(default_factory=set)  # the edges on a path from embed to out
    carried: set[tuple[str, str, int]] = field(default_factory=set)  # (node, slot, column): writes that reach out

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @property
    def truth_nodes(self) -> set[str]:
        return {u for u, _ in self.truth} | {v for _, v in self.truth}

    def all_edges(self) -> list[tuple[str, str]]:
        """Every pair (u, v) with u before v: what a circuit-discovery method scores."""
        order = [n.name for n in self.nodes]
        position = {name: i for i, name in enumerate(order)}
        layer = {n.name: (-1 if n.kind == "embed" else 10**9 if n.kind == "out" else n.layer) for n in self.nodes}
        side = {n.name: 0 if n.kind == "head" else 1 for n in self.nodes}
        return [(u, v) for u in order for v in order
                if position[u] < position[v] and (layer[u], side[u]) < (layer[v], side[v])]

    def to_dict(self) -> dict:
        """Nodes, and every edge a method scores, each with the slots the prompt flows through on
        it (none for most) and whether it is in the circuit."""
        return {"nodes": [{"name": n.name, "kind": n.kind, "layer": n.layer, "head": n.head, "pattern": n.pattern,
                           "ops": list(n.ops), "reads": sorted(n.reads), "writes": sorted(n.writes)} for n in self.nodes],
                "edges": [{"from": u, "to": v, "slots": sorted(self.edges.get((u, v), ())), "in_circuit": (u, v) in self.truth}
                          for u, v in self.all_edges()]}


def nodes_of(compiled: Compiled) -> list[Node]:
    """The model's nodes in the order they run, with the slot flows their weights implement."""
    program, sizes = compiled.program, compiled.program.sizes()
    nodes = [Node("embed", "embed", flows=frozenset((s, s) for s in program.inputs))]
    for i, layer in enumerate(compiled.schedule):
        spec = compiled.layer_spec(i)
        by_pattern: dict[int | None, list[str]] = {}
        for op in layer.attn:
            terms = [(op.src, None)] if isinstance(op, Mean) else list(zip(op.reads(), op.term_offsets()))
            for shift in {shift for _, shift in terms}:
                by_pattern.setdefault(shift, []).append(op.describe())
        for h, head in enumerate(spec.heads.values()):
            net: dict[tuple[str, int, str, int], float] = {}  # an in-place term and its clear cancel
            for src, j, dst, k, coef in head.outputs:
                net[src, j, dst, k] = net.get((src, j, dst, k), 0.0) + coef
            flows = {(src, dst) for (src, _, dst, _), coef in net.items() if coef != 0}
            clears = {dst for src, dst in flows if src == dst and all(
                net.get((dst, j, dst, k), 0.0) == (-1.0 if j == k else 0.0)
                for j in range(sizes[dst]) for k in range(sizes[dst]))}
            nodes.append(Node(f"L{i}.H{h}", "head", i, h, _content(flows), head.shift,
                              tuple(by_pattern.get(head.shift, ())), frozenset(clears) - INFRASTRUCTURE,
                              removes_pads=h == 0 and bool(layer.cleanups)))
        flows = {(slot, dst) for terms, dst, _, _ in spec.hidden for slot, _, _ in terms}
        if spec.hidden:  # the LayerNorm scale reads the division pads
            flows |= {(pad, dst) for _, dst, _, _ in spec.hidden for pad in LAYER_NORM_READS}
        nodes.append(Node(f"L{i}.MLP", "mlp", i, flows=_content(flows), ops=tuple(op.describe() for op in layer.mlp)))
    if compiled.output is None:
        raise ValueError(f"{program.name}: compiled without an output slot; a circuit is traced back from the output")
    nodes.append(Node("out", "out", flows=frozenset({(compiled.output, compiled.output)})))
    return nodes


def _content(flows: set[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    return frozenset((s, d) for s, d in flows if s not in INFRASTRUCTURE and d not in INFRASTRUCTURE)


def _sources(shift: int | None, t: int) -> range:
    """The columns a head of this read pattern reads for column t (ops.base.shifted; Mean)."""
    return range(t + 1) if shift is None else range(max(t - shift, 0), max(t - shift, 0) + 1)


def _varies(value: np.ndarray) -> np.ndarray:
    """Per column (T,): whether a slot's value differs between the sample prompts."""
    flat = np.asarray(value, dtype=float).reshape(value.shape[0], value.shape[1], -1)
    return (flat.max(axis=0) != flat.min(axis=0)).any(axis=-1)


def circuit_of(compiled: Compiled, inputs: dict[str, np.ndarray]) -> Circuit:
    """The circuit of a compiled program (module docstring), traced column by column.

    ``inputs``: a batch of at least two sample prompts (per-column input slots, as
    ``Construction.inputs`` makes them). The program's own interpreter runs on them, and a
    value is taken to carry the prompt where it differs between them. This includes an input
    slot at a column and an op's result at a column. So a product whose other factor is a
    constant 0 carries nothing, and nor does a shifted read of an empty column.

    Forward: ``writers[s][t]`` lists the writes of slot s at column t from the prompt so far,
    each with its standing. It is ``live``, or ``cleared`` (a later head subtracted the whole
    old value), or ``cancelling`` (a clear, or a division's pads and their removal, which read
    the same divisor). Nodes of one sublayer read the state before it. Backward, from ``out``
    at the query column: every write a carried read sees is an edge of the circuit, since
    resampling any one of them alone moves the read. Only live writes carry the need back to
    their own inputs. A perturbation upstream of a cleared write, or of a cancelling pair,
    reaches both terms and cancels. A cancelling write's own input edges are in the circuit,
    but nothing before them."""
    program = compiled.program
    first = next(iter(inputs.values()))
    if np.shape(first)[0] < 2:
        raise ValueError("circuit_of needs at least two sample prompts, to tell what carries the prompt")
    T = np.shape(first)[1]
    varies: dict[int, np.ndarray] = {}  # id(op) -> (T,): its result differs between prompts
    for group, _, results in program.execute(inputs, t_max=compiled.t_max):
        for op, result in zip(group, results):
            varies[id(op)] = _varies(result)
    nodes = nodes_of(compiled)
    writers: dict[tuple[str, int], list[list[str]]] = {}  # (slot, column) -> [[node, standing], ...]
    for s in program.inputs:  # the embedding writes the prompt where the prompt sets the slot
        for t, v in enumerate(_varies(np.asarray(inputs[s]))):
            if v:
                writers[s, t] = [["embed", "live"]]
    carried: list[tuple[Node, list[tuple]]] = []  # per node: (src, c, dst, t, clear?, writes it saw)
    edges: dict[tuple[str, str], set[str]] = {}

    for group in _sublayers(nodes[1:-1]):
        layer = compiled.schedule[group[0].layer]
        writes: list[tuple[str, int, str, str]] = []  # (slot, column, node, standing) this sublayer adds
        cancelled: set[tuple[str, int]] = set()  # (slot, column) whose earlier writes this sublayer cancels
        for n in group:
            flows = []
            for src, dst, shift, op in _flows(n, layer):
                clear = src == dst and dst in n.clears
                for t in range(T):
                    if op is not None and not clear and not varies[id(op)][t]:
                        continue  # this op writes a constant at t (e.g. a product with a zero factor)
                    for c in _sources(shift, t):
                        seen = [tuple(w) for w in writers.get((src, c), ())]
                        if seen:
                            flows.append((src, c, dst, t, clear, seen))
            for src, c, dst, t, clear, seen in flows:
                cancels = clear or (n.removes_pads and dst in LAYER_NORM_READS)
                writes.append((dst, t, n.name, "cancelling" if cancels else "live"))
                if cancels:
                    cancelled.add((dst, t))
                for u, _ in seen:
                    edges.setdefault((u, n.name), set()).add(src)
            carried.append((n, flows))
        new: dict[tuple[str, int], dict[str, str]] = {}  # (slot, column) -> node -> its standing
        for dst, t, name, standing in writes:  # a head that clears a slot and writes it anew is live
            mine = new.setdefault((dst, t), {})
            mine[name] = "live" if "live" in (standing, mine.get(name)) else standing
        for (dst, t), mine in new.items():
            old = writers.setdefault((dst, t), [])
            if (dst, t) in cancelled:  # a clear subtracts every earlier write; a removal, the pads' setting
                for w in old:
                    w[1] = "cleared" if dst not in LAYER_NORM_READS else "cancelling"
            old.extend([name, standing] for name, standing in mine.items())
    output, q = compiled.output, T - 1
    seen = [tuple(w) for w in writers.get((output, q), ())]
    carried.append((nodes[-1], [(output, q, output, q, False, seen)]))
    for u, _ in seen:
        edges.setdefault((u, "out"), set()).add(output)

    needed = {("out", output, q)}  # (node, slot, column): writes whose value reaches out
    inputs_only: set[tuple[str, str, int]] = set()  # cancelling writes: their input edges, nothing before
    truth: set[tuple[str, str]] = set()
    for n, flows in reversed(carried):
        for src, c, dst, t, clear, seen in flows:
            full = (n.name, dst, t) in needed
            if not full and (n.name, dst, t) not in inputs_only:
                continue
            for u, standing in seen:
                truth.add((u, n.name))
                if full and not clear and standing == "live":
                    needed.add((u, src, c))
                elif full and not clear and standing == "cancelling":
                    inputs_only.add((u, src, c))
    return Circuit(nodes, edges, truth, needed)


def _sublayers(nodes: list[Node]):
    """The nodes grouped by sublayer: a layer's heads together, then its MLP."""
    group: list[Node] = []
    for n in nodes:
        if group and (n.kind != "head" or group[0].kind != "head" or n.layer != group[0].layer):
            yield group
            group = []
        group.append(n)
    if group:
        yield group


def _flows(node: Node, layer):
    """(src, dst, read pattern, the op whose result the write is, or None) for each flow of a
    node. A head's flow is an attention op's term when one writes dst there, else the clear of
    an MLP op's target or a division's pads (their values follow their sources). An MLP's
    flows are its hidden units' reads, and the division pads through the LayerNorm scale,
    each the write of the op whose target it is."""
    if node.kind == "head":
        by_dst = {op.dst: op for op in layer.attn}
        return [(src, dst, node.shift, by_dst.get(dst)) for src, dst in node.flows]
    by_dst = {op.dst: op for op in layer.mlp}
    return [(src, dst, 0, by_dst[dst]) for src, dst in node.flows]
