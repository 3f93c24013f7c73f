"""Scoring a method's findings against a case's ground truth: ROC, AUC, TPR at a given FPR."""

from __future__ import annotations

import numpy as np

from iclkit.primitives.circuit import Circuit


def candidates(circuit: Circuit, level: str) -> tuple[list, set]:
    """What a method scores at ``level`` ("edge" or "node") and the true ones among them. Nodes
    are the heads and MLPs (the embedding and the readout are in every circuit)."""
    if level == "edge":
        return circuit.all_edges(), set(circuit.truth)
    if level == "node":
        names = [n.name for n in circuit.nodes if n.kind in ("head", "mlp")]
        return names, circuit.truth_nodes & set(names)
    raise ValueError(f"level must be 'edge' or 'node', got {level!r}")


def roc(scores: dict, truth: set, items: list) -> dict:
    """TPR and FPR at every threshold (higher score = more likely in the circuit), the ROC AUC
    (ties count half, as in the Mann-Whitney statistic) and the TPR at FPR <= 0.1."""
    missing = [k for k in items if k not in scores]
    extra = [k for k in scores if k not in set(items)]
    if missing or extra:
        raise ValueError(f"a method must score every candidate and nothing else: {len(missing)} missing "
                         f"(e.g. {missing[:1]}), {len(extra)} unknown (e.g. {extra[:1]})")
    values = np.array([float(scores[k]) for k in items])
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite numbers")
    positive = np.array([k in truth for k in items])
    P, N = int(positive.sum()), int((~positive).sum())
    if P == 0 or N == 0:
        raise ValueError(f"the truth has {P} positives and {N} negatives: ROC needs both")
    thresholds = np.unique(values)[::-1]
    tpr = np.array([(positive & (values >= th)).sum() / P for th in thresholds])
    fpr = np.array([(~positive & (values >= th)).sum() / N for th in thresholds])
    pos, neg = values[positive], values[~positive]
    auc = float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (P * N))
    at = fpr <= 0.1
    return {"auc": auc, "tpr_at_fpr_0.1": float(tpr[at].max()) if at.any() else 0.0,
            "thresholds": thresholds.tolist(), "tpr": tpr.tolist(), "fpr": fpr.tolist(), "positives": P, "negatives": N}


def score(circuit: Circuit, found: dict) -> dict:
    """A method's scores against the truth. ``found`` maps every edge ``(sender, receiver)``
    (circuit.all_edges()) or every node name (heads and MLPs) to a score, higher meaning more
    likely in the circuit; the level is read from the keys."""
    if not isinstance(found, dict) or not found:
        raise ValueError("found must be a non-empty dict from every edge (sender, receiver), or every node name, "
                         "to a score")
    level = "edge" if isinstance(next(iter(found)), tuple) else "node"
    items, truth = candidates(circuit, level)
    return {"level": level, **roc(found, truth, items)}


def score_variables(variables: list[dict], r2: dict[tuple[str, int], float], layers: int) -> dict:
    """Decoding scores against where the variables live: ``r2[(name, layer)]`` is the R^2 of
    decoding variable ``name`` from the residual after applied layer ``layer``, for every
    variable given and every layer ``0 .. layers - 1`` (a method scores all of a variable's
    layers or leaves the variable out of ``variables``); the truth is the layers after which
    the residual holds it (variables.json)."""
    if not variables:
        raise ValueError("no variables to score")
    items = [(v["name"], layer) for v in variables for layer in range(layers)]
    present = {(v["name"], layer) for v in variables for layer in v["layers"]}
    return {"level": "variable", **roc(r2, present & set(items), items)}
