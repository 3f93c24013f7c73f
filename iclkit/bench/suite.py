"""The whole benchmark: build every case (``iclkit bench build``), run every baseline on every
case and score it (``iclkit bench run``), and check that each case's truth is true."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from iclkit.bench import methods
from iclkit.bench.cases import Case, CaseSpec, default_specs, load_case, make_case, variables, write_case
from iclkit.bench.patching import predictions, run
from iclkit.bench.score import score, score_variables

METHODS = {
    "node patching": ("node", methods.node_patching),
    "edge patching": ("edge", methods.edge_patching),
    "EAP": ("edge", methods.edge_attribution_patching),
    "linear probes": ("variable", None),
}


def check_truth(case: Case) -> dict:
    """The two checks of a case's ground truth, by resample ablation on its held-out prompts:
    every circuit edge, resampled alone, moves some prediction beyond the certified bound;
    every other edge, all resampled at once, leaves every prediction within it. Returns the
    figures (the smallest break, the largest deviation outside, the bound) and the edges
    that fail either check."""
    c, circuit = case.construction, case.circuit
    clean, corrupt = c.encode(*case.clean), c.encode(*case.corrupt)
    exact = torch.tensor(case.exact, dtype=clean.dtype)
    bound = case.bound
    with torch.no_grad():
        bad = run(c.model, circuit, corrupt)
    others = set(circuit.all_edges()) - circuit.truth
    outside = float((predictions(c.model, circuit, clean, bad, others) - exact).abs().max())
    breaks = {}
    for e in sorted(circuit.truth):
        breaks[e] = float((predictions(c.model, circuit, clean, bad, {e}) - exact).abs().max())
    weak = sorted(e for e, dev in breaks.items() if not dev > bound)
    return {"bound": bound, "outside_max": outside, "outside_ok": outside <= bound,
            "smallest_break": min(breaks.values(), default=float("inf")), "weak_edges": weak,
            "truth_edges": len(circuit.truth), "other_edges": len(others)}


def build(out: str | Path, sources: list | None = None, export: bool = True, progress=None) -> list[dict]:
    """Write every case under ``out`` (one directory per case) and an index. A source is a
    :class:`CaseSpec` or a construction (a user's included); the default is the default grid.
    Each case is written only after its truth passes :func:`check_truth` (a case whose truth
    fails is an error naming the edges). Returns each case's check figures."""
    out = Path(out)
    checks = []
    for source in sources or default_specs():
        if progress:
            progress(source.case_id if isinstance(source, CaseSpec) else source.name)
        case = make_case(source)  # checked: a case whose truth fails is refused, naming why
        check = case.check
        write_case(case, out / case.spec_id, export, check)
        checks.append({"case": case.spec_id, "layers": case.construction.num_layers,
                       "nodes": len(case.circuit.nodes), "truth_nodes": len(case.circuit.truth_nodes), **check})
    (out / "index.json").write_text(json.dumps({"cases": [c["case"] for c in checks]}, indent=1))
    return checks


def check_table(checks: list[dict]) -> list[str]:
    """The truth checks as markdown rows."""
    lines = ["| case | layers | circuit nodes | circuit edges / all | bound | smallest break | largest deviation, "
             "every other edge resampled |", "|---|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c['case']} | {c['layers']} | {c['truth_nodes']} / {c['nodes']} | {c['truth_edges']} / "
                     f"{c['truth_edges'] + c['other_edges']} | {c['bound']:.1e} | {c['smallest_break']:.1e} | "
                     f"{c['outside_max']:.1e} |")
    return lines


def run_case(case: Case) -> list[dict]:
    """Every baseline on one case, scored: one row per method."""
    rows = []
    for name, (level, fn) in METHODS.items():
        start = time.perf_counter()
        if level == "variable":
            found = variables(case)
            r2 = methods.linear_probes(case, found)
            decodable = [v for v in found if (v["name"], 0) in r2]  # the probes skip what is constant at the query
            result = score_variables(decodable, r2, case.construction.num_layers)
        else:
            result = score(case.circuit, fn(case))
        rows.append({"case": case.spec_id, "method": name, "level": level, "auc": result["auc"],
                     "tpr_at_fpr_0.1": result["tpr_at_fpr_0.1"], "positives": result["positives"],
                     "negatives": result["negatives"], "seconds": time.perf_counter() - start})
    return rows


def run_all(directory: str | Path, progress=None) -> list[dict]:
    """Every baseline on every case of a built benchmark directory."""
    directory = Path(directory)
    try:
        names = json.loads((directory / "index.json").read_text())["cases"]
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{directory}: not a built benchmark (index.json, from iclkit bench build): {e}") from None
    rows = []
    for name in names:
        if progress:
            progress(name)
        rows.extend(run_case(load_case(directory / name)))
    return rows


def table(rows: list[dict]) -> list[str]:
    """The results as markdown rows: case, method, level, AUC, TPR at FPR 0.1, seconds."""
    lines = ["| case | method | level | AUC | TPR at FPR 0.1 | true / scored | seconds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['method']} | {r['level']} | {r['auc']:.3f} | {r['tpr_at_fpr_0.1']:.3f} | "
                     f"{r['positives']} / {r['positives'] + r['negatives']} | {r['seconds']:.1f} |")
    return lines


def summary(rows: list[dict]) -> list[str]:
    """Per algorithm (its cases' sizes and modes together) and method: the range of AUC, as
    markdown rows."""
    algorithms = list(dict.fromkeys(r["case"].split("-d")[0] for r in rows))
    names = list(METHODS)
    lines = ["| algorithm (cases) | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for a in algorithms:
        mine = [r for r in rows if r["case"].split("-d")[0] == a]
        cells = []
        for m in names:
            aucs = [r["auc"] for r in mine if r["method"] == m]
            low, high = min(aucs), max(aucs)
            cells.append(f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}–{high:.2f}")
        lines.append(f"| {a} ({len(mine) // len(names)}) | " + " | ".join(cells) + " |")
    return lines
