"""Benchmark cases: a construction, its prompts, and the ground truth its program implies.

A case directory holds ``model.safetensors`` (the iclkit model, ``Construction.load``),
``gpt2/`` (the stock GPT-2 export with ``labels.json`` and ``embed.safetensors``; optional,
with the ``[export]`` extra), ``circuit.json`` (nodes, every scored edge, the truth),
``variables.json`` (the causal variables: slot, residual rows, the layers holding them),
``prompts.npz`` (clean and corrupted held-out prompts) and ``README.md`` (the case card).
docs/benchmark.md states the format."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iclkit.constructions import REGISTRY, Construction
from iclkit.primitives.circuit import Circuit, circuit_of
from iclkit.verify.numeric import closed_form, default_params, domain_problems

FORMAT = "iclkit-bench/1"
PROMPTS = 16  # held-out clean prompts, and as many corrupted ones (resample ablation)
SAMPLE_SEED, CLEAN_SEED, CORRUPT_SEED = 3, 1, 2


@dataclass(frozen=True)
class CaseSpec:
    """One benchmark case: a shipped construction, its size, mode and parameters."""

    name: str
    d: int
    n: int
    mode: str = "fused"
    params: dict = field(default_factory=dict)

    @property
    def case_id(self) -> str:
        steps = f"-k{self.params['steps']}" if "steps" in self.params else ""
        return f"{self.name}{steps}-d{self.d}-n{self.n}-{self.mode}"

    def build(self) -> Construction:
        params = default_params(self.name, self.d) | self.params
        return REGISTRY[self.name](self.d, self.n, mode=self.mode, **params)


def default_specs() -> list[CaseSpec]:
    """The default grid: the paper's three constructions and the literature's, gd at 1 and 3
    steps; each fused at (d, n) = (2, 2) and (3, 3), and faithful at (2, 2). Small enough that
    every baseline scores every edge of every case in minutes on two cores."""
    algorithms = [("sgd", {}), ("gd", {"steps": 1}), ("gd", {"steps": 3}), ("ridge", {}), ("pgd", {"steps": 2}),
                  ("newton", {"steps": 2}), ("lasso", {"steps": 2})]
    grid = (("fused", 2, 2), ("faithful", 2, 2), ("fused", 3, 3))
    return [CaseSpec(name, d, n, mode, params) for name, params in algorithms for mode, d, n in grid]


@dataclass
class Case:
    """A built case in memory: the construction, its circuit and its prompts."""

    spec_id: str
    construction: Construction
    circuit: Circuit
    clean: tuple[np.ndarray, np.ndarray, np.ndarray]
    corrupt: tuple[np.ndarray, np.ndarray, np.ndarray]
    check: dict | None = None  # the truth check's figures (iclkit.bench.suite.check_truth), once run

    @property
    def exact(self) -> np.ndarray:
        """The closed form's prediction on the clean prompts."""
        return closed_form(self.construction, *self.clean)

    @property
    def bound(self) -> float:
        """The certified bound an ablation outside the circuit must stay within."""
        return float(self.construction.error_bound)


def in_domain(c: Construction, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` prompts inside the construction's domain that ``predict`` answers (a
    construction with its own prompt check, such as ols, refuses some sampled prompts)."""
    X, y, xq = domain_problems(c, 4 * count, seed)
    _, reasons = c.predict_each(X, y, xq)
    keep = [b for b, r in enumerate(reasons) if r is None][:count]
    if len(keep) < count:
        raise ValueError(f"{c.name}: only {len(keep)} of {4 * count} sampled prompts are in its domain")
    return X[keep], y[keep], xq[keep]


def derived_circuit(c: Construction) -> Circuit:
    """The construction's circuit, traced on its sample prompts (seed ``SAMPLE_SEED``): what
    a case holds, ``load_case`` derives again and ``iclkit draw`` shows."""
    return circuit_of(c.compiled, c.inputs(*domain_problems(c, 8, SAMPLE_SEED)))


def make_case(source: CaseSpec | Construction, case_id: str | None = None, check: bool = True) -> Case:
    """A case from a spec of a shipped construction, or from any construction (a user's, from
    ``from_program`` or ``Construction.load``; ``case_id`` names it, by default from its
    name, size and mode). With ``check`` (the default) its derived circuit must pass
    :func:`iclkit.bench.suite.check_truth`, else ``ValueError`` names the edges that fail: a
    construction whose iteration corrects perturbations (ols: Newton run to convergence)
    has edges on the prompt's path that do not move y_hat, and is refused."""
    c = source.build() if isinstance(source, CaseSpec) else source
    case_id = case_id or (source.case_id if isinstance(source, CaseSpec) else f"{c.name}-d{c.d}-n{c.n}-{c.mode}")
    case = Case(case_id, c, derived_circuit(c), in_domain(c, PROMPTS, CLEAN_SEED), in_domain(c, PROMPTS, CORRUPT_SEED))
    if check:
        from iclkit.bench.suite import check_truth

        case.check = check_truth(case)
        weak, result = case.check["weak_edges"], case.check
        if weak or not result["outside_ok"]:
            raise ValueError(f"{case_id}: its derived circuit fails the ablation checks, so it is no benchmark case: "
                             f"{len(weak)} of its {result['truth_edges']} circuit edges do not move y_hat beyond the "
                             f"bound {result['bound']:.3g} (e.g. {weak[:2]}); every other edge at once moves it by "
                             f"{result['outside_max']:.3g}")
    return case


def variables(case: Case) -> list[dict]:
    """The causal variables: every write of a content slot, named ``slot@k`` (its k-th write,
    from 1), with its residual rows, the op that writes it, and the applied layers after which
    the residual holds it (from the write up to the next write of the slot)."""
    comp = case.construction.compiled
    rows = comp.layout.rows
    writes: dict[str, list] = {}
    for i, layer in enumerate(comp.schedule):
        for op in (*layer.attn, *layer.mlp):
            writes.setdefault(op.dst, []).append((i, op))
    out = []
    for slot, history in writes.items():
        for k, (i, op) in enumerate(history):
            until = history[k + 1][0] if k + 1 < len(history) else comp.num_layers
            out.append({"name": f"{slot}@{k + 1}", "slot": slot, "write": k + 1, "rows": [rows(slot).start, rows(slot).stop],
                        "op": op.describe(), "layers": list(range(i, until))})
    return out


def gpt2_nodes(case: Case) -> dict[str, dict]:
    """Where each node sits in the GPT-2 export: its block (an applied layer's block; a
    division adds two sweep blocks after its own, which take over the next layer's removal
    of its pads) and head."""
    from iclkit.export import blocks

    block_of = {b.role[1]: g for g, b in enumerate(blocks(case.construction, weights=False)) if b.role[0] == "layer"}
    out = {}
    for n in case.circuit.nodes:
        if n.kind == "head":
            out[n.name] = {"block": block_of[n.layer], "module": f"transformer.h.{block_of[n.layer]}.attn", "head": n.head}
        elif n.kind == "mlp":
            out[n.name] = {"block": block_of[n.layer], "module": f"transformer.h.{block_of[n.layer]}.mlp"}
        else:
            out[n.name] = {"module": "inputs_embeds (tokens @ W_E) + wpe" if n.kind == "embed" else "lm_head, logit 0"}
    return out


def write_case(case: Case, out: Path, export: bool = True, check: dict | None = None) -> Path:
    """Write a case directory (module docstring); ``export=False`` skips the GPT-2 export;
    ``check``: the truth check's figures (iclkit.bench.suite.check_truth), for the card."""
    out.mkdir(parents=True, exist_ok=True)
    c = case.construction
    c.save(out / "model.safetensors")
    np.savez(out / "prompts.npz", X=case.clean[0], y=case.clean[1], xq=case.clean[2],
             X_corrupt=case.corrupt[0], y_corrupt=case.corrupt[1], xq_corrupt=case.corrupt[2])
    circuit = case.circuit.to_dict() | {"format": FORMAT, "case": case.spec_id, "gpt2": gpt2_nodes(case)}
    (out / "circuit.json").write_text(json.dumps(circuit, indent=1))
    (out / "variables.json").write_text(json.dumps({"format": FORMAT, "variables": variables(case)}, indent=1))
    if export:
        from iclkit.export import to_hf_gpt2

        to_hf_gpt2(c, out / "gpt2")
    (out / "README.md").write_text(card(case, export, check))
    return out


def card(case: Case, export: bool, check: dict | None = None) -> str:
    """The case card: what the case is, its certified error, its truth check, and how to load it."""
    c = case.construction
    params = ", ".join(f"{k} = {np.asarray(v).tolist()}" for k, v in c.params.items())
    truth = case.circuit.truth
    lines = [f"# {case.spec_id}", "",
             f"{c.name} (d = {c.d}, n = {c.n}, {c.mode}; {params}): {c.num_layers} applied layers, "
             f"{c.model.num_parameters():,} stored parameters. Certified error bound on y_hat: {c.error_bound:.3g}"
             f"{' (run-time guard)' if c.guarded else ''}.", "",
             f"Ground truth: {len(case.circuit.truth_nodes)} of {len(case.circuit.nodes)} nodes and {len(truth)} of "
             f"{len(case.circuit.all_edges())} edges, derived from the program (circuit.json; docs/benchmark.md).", "",
             *([f"Checked by resample ablation on the {len(case.clean[0])} held-out prompts: each circuit edge alone moves "
                f"y_hat by at least {check['smallest_break']:.2g}; every other edge at once, by at most "
                f"{check['outside_max']:.2g} (bound {check['bound']:.2g}).", ""] if check else []),
             "```python", "from iclkit.bench import load_case", "",
             'case = load_case(".")  # run in this directory', "yhat = case.construction.predict(*case.clean)",
             "truth = case.circuit.truth  # {(sender, receiver)}", "```"]
    if export:
        lines += ["", "The stock GPT-2 export, in `gpt2/`. TransformerLens loads it with "
                  "`TransformerBridge.boot_transformers(\"./gpt2\", dtype=torch.float64)`; do not call "
                  "`process_weights()`: folding the LayerNorms and centring the weights move the labelled "
                  "coordinates (y_hat is then off by about 0.5).", "", "```python",
                  "import numpy as np, torch; from safetensors.torch import load_file; "
                  "from transformers import GPT2LMHeadModel",
                  'p = np.load("prompts.npz"); X, y, xq = p["X"], p["y"], p["xq"]; B, n, d = X.shape',
                  "tokens = np.zeros((B, 2 * n + 2, d + 1))  # BOS, [0, x_i], [y_i, 0], ..., [0, x_q]",
                  "tokens[:, 1:2 * n:2, 1:], tokens[:, 2:2 * n + 1:2, 0], tokens[:, -1, 1:] = X, y, xq",
                  'model = GPT2LMHeadModel.from_pretrained("./gpt2", torch_dtype=torch.float64)',
                  'W_E = load_file("gpt2/embed.safetensors")["W_E"]',
                  "yhat = model(inputs_embeds=torch.from_numpy(tokens) @ W_E).logits[:, -1, 0]", "```"]
    return "\n".join(lines) + "\n"


def load_case(path: str | Path) -> Case:
    """A case directory read back: the model (checked against its header), the circuit
    derived again from its program and compared with ``circuit.json``, and its prompts."""
    path = Path(path)
    try:
        stored = json.loads((path / "circuit.json").read_text())
        data = np.load(path / "prompts.npz")
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not an iclkit benchmark case (circuit.json, prompts.npz): {e}") from None
    lacking = [k for k in ("X", "y", "xq", "X_corrupt", "y_corrupt", "xq_corrupt") if k not in data.files]
    if lacking:
        raise ValueError(f"{path}/prompts.npz lacks {', '.join(lacking)}")
    if not isinstance(stored, dict) or stored.get("format") != FORMAT:
        found = stored.get("format") if isinstance(stored, dict) else type(stored).__name__
        raise ValueError(f"{path}/circuit.json: format {found!r}, expected an object of format {FORMAT!r}")
    c = Construction.load(path / "model.safetensors")
    clean = (data["X"], data["y"], data["xq"])
    corrupt = (data["X_corrupt"], data["y_corrupt"], data["xq_corrupt"])
    for name, prompts in (("clean", clean), ("corrupted", corrupt)):
        _, reasons = c.predict_each(*prompts)  # shapes, and the certified domain
        refused = next((r for r in reasons if r is not None), None)
        if refused:
            raise ValueError(f"{path}/prompts.npz: a {name} prompt is outside the construction's domain: {refused}")
    same = [b for b in range(min(len(clean[0]), len(corrupt[0])))
            if all(np.array_equal(a[b], z[b]) for a, z in zip(clean, corrupt))]
    if same or len(clean[0]) != len(corrupt[0]):
        raise ValueError(f"{path}/prompts.npz: each corrupted prompt must pair with a different clean one "
                         f"({len(clean[0])} clean, {len(corrupt[0])} corrupted, {len(same)} identical pairs)")
    case = Case(stored.get("case", path.name), c, derived_circuit(c), clean, corrupt)
    derived = case.circuit.to_dict() | {"gpt2": gpt2_nodes(case)}
    edited = [k for k in ("nodes", "edges", "gpt2") if derived[k] != stored.get(k)]
    if edited:
        raise ValueError(f"{path}/circuit.json: its {' and '.join(edited)} differ from what its model's program "
                         "implies (edited?)")
    return case
