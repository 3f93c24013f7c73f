"""The standard interpretability methods, as baselines on a case.

- activation patching per node: resample one node's output (all its edges at once);
- activation patching per edge: resample one edge (batched: one run per receiver);
- edge attribution patching (EAP): the first-order estimate of the edge effect, (corrupted
  output of the sender - clean) . d y_hat / d (the receiver's input), from one backward pass;
- linear probes: least squares from the residual at the query column after each layer to
  each causal variable there, R^2 on held-out prompts. The residual's units are standardised
  first and its constant ones dropped: the LayerNorm pads (up to 1e17) would otherwise swamp
  the least-squares fit's conditioning.

Each returns scores for :func:`iclkit.bench.score.score` (or ``score_variables``): the mean
over prompts of |change in y_hat|, or of |EAP estimate|, or R^2."""

from __future__ import annotations

import numpy as np
import torch

from iclkit.bench.cases import Case
from iclkit.bench.patching import run
from iclkit.verify.numeric import domain_problems

PROBE_PROMPTS = 256  # prompts per probe: three quarters fit it, one quarter scores it


def _tokens(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    c = case.construction
    return c.encode(*case.clean), c.encode(*case.corrupt)


def node_patching(case: Case) -> dict[str, float]:
    """Per head and MLP: the mean |change in y_hat| when its output is resampled everywhere."""
    model, circuit = case.construction.model, case.circuit
    clean, corrupt = _tokens(case)
    with torch.no_grad():
        base, bad = run(model, circuit, clean).yhat, run(model, circuit, corrupt)
        scores, every = {}, circuit.all_edges()
        for node in circuit.nodes:
            if node.kind in ("head", "mlp"):
                edges = {e for e in every if e[0] == node.name}
                scores[node.name] = float((run(model, circuit, clean, bad, edges).yhat - base).abs().mean())
    return scores


def edge_patching(case: Case) -> dict[tuple[str, str], float]:
    """Per edge: the mean |change in y_hat| when that edge alone is resampled. The edges into
    one receiver run as one batch, each prompt block with its own edge ablated."""
    model, circuit = case.construction.model, case.circuit
    clean, corrupt = _tokens(case)
    B = clean.shape[0]
    by_receiver: dict[str, list[tuple[str, str]]] = {}
    for e in circuit.all_edges():
        by_receiver.setdefault(e[1], []).append(e)
    scores = {}
    with torch.no_grad():
        base, corrupted = run(model, circuit, clean).yhat, run(model, circuit, corrupt)
        for receiver, edges in by_receiver.items():
            k = len(edges)
            bad = corrupted.tiled(k)
            masks = {e: torch.repeat_interleave(torch.eye(k, dtype=clean.dtype)[j], B) for j, e in enumerate(edges)}
            yhat = run(model, circuit, clean.repeat(k, 1, 1), bad, masks).yhat.reshape(k, B)
            for j, e in enumerate(edges):
                scores[e] = float((yhat[j] - base).abs().mean())
    return scores


def edge_attribution_patching(case: Case) -> dict[tuple[str, str], float]:
    """Per edge (u, v): mean over prompts of |sum over columns and units of (u's corrupted
    output - its clean output) * d y_hat / d (v's input)|, from one forward and backward pass."""
    model, circuit = case.construction.model, case.circuit
    clean, corrupt = _tokens(case)
    with torch.no_grad():
        bad = run(model, circuit, corrupt)
    good = run(model, circuit, clean, grad_inputs=True)
    good.yhat.sum().backward()
    model.zero_grad(set_to_none=True)  # the weights' own gradients are a by-product
    scores = {}
    for u, v in circuit.all_edges():
        grad = good.inputs[v].grad
        if grad is None:  # y_hat does not depend on this input at all
            scores[(u, v)] = 0.0
            continue
        delta = (bad.outputs[u] - good.outputs[u]).detach()
        scores[(u, v)] = float((delta * grad).sum(dim=(1, 2)).abs().mean())
    return scores


def probe_values(case: Case, count: int = PROBE_PROMPTS, seed: int = 5) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """The residual at the query column after each applied layer, (count, width) per layer,
    and each variable's value there, (count, size), from the program's own interpreter."""
    c = case.construction
    comp = c.compiled
    X, y, xq = domain_problems(c, count, seed)
    inputs = c.inputs(X, y, xq)
    with torch.no_grad():
        _, states = c.model(comp.tokens(inputs), return_states=True)
    resid = [s[:, -1].numpy() for s in states[1:]]
    writes: dict[str, int] = {}
    values = {}
    placement = {id(op): i for i, layer in enumerate(comp.schedule) for op in (*layer.attn, *layer.mlp)}
    order = sorted(((placement[id(op)], k, op, result) for k, (op, result) in enumerate(
        comp.program.interpret(inputs, trace=True, t_max=comp.t_max)[1])), key=lambda r: (r[0], r[1]))
    for _, _, op, result in order:
        writes[op.dst] = writes.get(op.dst, 0) + 1
        values[f"{op.dst}@{writes[op.dst]}"] = np.asarray(result, dtype=float).reshape(count, result.shape[1], -1)[:, -1]
    return resid, values


def linear_probes(case: Case, variables: list[dict]) -> dict[tuple[str, int], float]:
    """R^2 (averaged over the variable's entries) of a least-squares read-out of each variable
    from the residual at the query column, after every applied layer. Variables that do not
    vary at the query column (nothing to decode) are left out."""
    resid, values = probe_values(case)
    scores = {}
    fit = 3 * len(resid[0]) // 4
    for v in variables:
        target = values[v["name"]]
        spread = target[fit:].var(axis=0)
        if not np.any(spread > 1e-20):
            continue
        for layer, h in enumerate(resid):
            centre, scale = h[:fit].mean(axis=0), h[:fit].std(axis=0)
            live = scale > 1e-12 * np.abs(centre).clip(1.0)  # the pads (about 1e17 here) are constant
            A = np.hstack([(h[:, live] - centre[live]) / scale[live], np.ones((len(h), 1))])
            coef, *_ = np.linalg.lstsq(A[:fit], target[:fit], rcond=None)
            err = ((A[fit:] @ coef - target[fit:]) ** 2).mean(axis=0)
            keep = spread > 1e-20
            scores[(v["name"], layer)] = float(np.mean(1 - err[keep] / spread[keep]))
    return scores
