"""Edge-level resample ablation (path patching) on a compiled model's nodes.

The residual before a node is the sum of every earlier node's output (embedding included).
Ablating edge u -> v replaces u's term in v's input by u's output on a corrupted prompt, as ACDC
and edge attribution patching define it; everything else v reads, and every other node's
input, keeps the patched run's own outputs. With nothing ablated the run is the model's
forward pass with its heads summed one by one (tests/test_bench.py holds the two within the
certified bound)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iclkit.primitives.circuit import Circuit

Edge = tuple[str, str]


@dataclass
class Run:
    """A patched run: every node's output (B, T, width) and the readout at the query column."""

    outputs: dict[str, torch.Tensor]
    inputs: dict[str, torch.Tensor]  # each receiving node's input (the residual it read)
    yhat: torch.Tensor  # (B,)

    def tiled(self, k: int) -> "Run":
        """The same run for a batch of k copies of its prompts, block after block (the
        corrupted side of k ablations batched together)."""
        tile = lambda t: t.repeat(k, *([1] * (t.ndim - 1)))  # noqa: E731
        return Run({n: tile(o) for n, o in self.outputs.items()}, {n: tile(h) for n, h in self.inputs.items()},
                   tile(self.yhat))


def run(model, circuit: Circuit, tokens: torch.Tensor, corrupt: Run | None = None, ablated=frozenset(),
        grad_inputs: bool = False) -> Run:
    """The model on ``tokens`` with the ``ablated`` edges' senders taken from ``corrupt``.

    ``ablated``: a set of edges, or a dict from edge to a mask of shape (batch,) that ablates
    the edge in the prompts where it is 1 (many single-edge ablations in one batch).
    ``grad_inputs``: every receiving node's input keeps its gradient, so one backward pass
    gives d yhat / d input for every node (edge attribution patching)."""
    masks = dict(ablated) if isinstance(ablated, dict) else {e: 1.0 for e in ablated}
    if masks and corrupt is None:
        raise ValueError("ablating edges needs the corrupted run")
    into: dict[str, list[tuple[str, torch.Tensor | float]]] = {}
    for (u, v), mask in masks.items():
        into.setdefault(v, []).append((u, mask.reshape(-1, 1, 1) if torch.is_tensor(mask) else mask))
    outputs: dict[str, torch.Tensor] = {"embed": model.embed(tokens)}
    inputs: dict[str, torch.Tensor] = {}
    resid = outputs["embed"]

    def input_of(name: str) -> torch.Tensor:
        h = resid
        for u, mask in into.get(name, ()):
            h = h + mask * (corrupt.outputs[u] - outputs[u])
        if grad_inputs:  # its own tensor, so its gradient is this node's alone (through everything after it)
            h = h.clone()
            h.retain_grad()
        inputs[name] = h
        return h

    heads_of: dict[int, list] = {}
    for node in circuit.nodes:
        if node.kind == "head":
            heads_of.setdefault(node.layer, []).append(node)
    for i, layer in enumerate(model.applied_layers):
        shared = None  # heads whose input is the plain residual share one evaluation
        total = resid
        for node in heads_of.get(i, ()):
            h = input_of(node.name)
            if h is resid:  # neither ablated nor kept for its gradient
                shared = layer.head_outputs(resid) if shared is None else shared
                out = shared[:, node.head]
            else:
                out = layer.head_outputs(h)[:, node.head]
            outputs[node.name] = out
            total = total + out
        resid = total
        name = f"L{i}.MLP"
        outputs[name] = layer.mlp(input_of(name))
        resid = resid + outputs[name]
    final = input_of("out")
    if model.final_ln is not None:
        final = model.final_ln(final)
    yhat = (final @ model.readout + model.readout_bias)[:, -1]
    return Run(outputs, inputs, yhat)


def predictions(model, circuit: Circuit, clean: torch.Tensor, corrupt_run: Run, ablated) -> torch.Tensor:
    """y_hat on the clean tokens with ``ablated`` resampled from the corrupted run."""
    with torch.no_grad():
        return run(model, circuit, clean, corrupt_run, ablated).yhat
