"""Probing a learner's residual stream for X^T y and w_OLS (Sec. 5, Eqs. 20-21).

A probe reads the states ``H`` (T tokens) of one layer after i examples: it attends over the
positions with learned scores, ``alpha = softmax(s)``, projects ``W_v``, and decodes with a
linear map or a 2-layer GeLU MLP: ``v_hat = FF(W_v^T (alpha^T H))``. One probe per layer,
target, prefix and kind; scored on held-out prompts by the fraction of the target's variance
it leaves unexplained (0 = perfect, 1 = no better than the mean).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from iclkit import algorithms
from iclkit.empirical.learners import Learner

TARGETS = ("XTy", "w_OLS")
KINDS = ("linear", "mlp")


def target_values(X: np.ndarray, y: np.ndarray, i: int) -> dict[str, np.ndarray]:
    """X^T y and the min-norm w_OLS of the first i examples, per prompt: (B, d) each."""
    return {"XTy": np.einsum("bnd,bn->bd", X[:, :i], y[:, :i]),
            "w_OLS": np.stack([algorithms.ols(X[b, :i], y[b, :i]) for b in range(X.shape[0])])}


class Probe(nn.Module):
    """Learned attention over positions, a projection, then a linear or MLP decoder."""

    def __init__(self, length: int, width: int, out: int, kind: str, hidden: int = 128) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"probe kind must be one of {KINDS}, got {kind!r}")
        self.scores = nn.Parameter(torch.zeros(length))
        self.W_v = nn.Linear(width, hidden)
        self.ff = nn.Linear(hidden, out) if kind == "linear" else nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        pooled = torch.einsum("t,btw->bw", torch.softmax(self.scores, 0), states)
        return self.ff(self.W_v(pooled))


def fit(states: torch.Tensor, target: torch.Tensor, kind: str, steps: int, seed: int, lr: float = 1e-3,
        batch: int = 512) -> Probe:
    """Adam on the squared error over random minibatches of the prompts."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = Probe(states.shape[1], states.shape[2], target.shape[1], kind)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    for _ in range(steps):
        rows = torch.randint(0, states.shape[0], (min(batch, states.shape[0]),), generator=gen)
        loss = ((probe(states[rows]) - target[rows]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probe


def probe(learner: Learner, prefixes: tuple[int, ...], train_prompts: int = 16384, test_prompts: int = 1024,
          steps: int = 3000, seed: int = 4321, log=print) -> dict:
    """Unexplained variance of every (layer, target, prefix, kind) probe on held-out prompts."""
    spec = learner.spec
    if max(prefixes) > spec.n or min(prefixes) < 1:
        raise ValueError(f"probe prefixes must lie in 1..{spec.n} (the learner's n), got {prefixes}")
    X, y, _ = spec.prompts.sample(np.random.default_rng(seed), train_prompts + test_prompts, spec.n)
    _, states = learner.run(X, y, return_states=True)
    results = []
    for i in prefixes:
        values = target_values(X, y, i)
        for name in TARGETS:
            v = torch.as_tensor(values[name], dtype=torch.float32)
            mean, std = v[:train_prompts].mean(0), v[:train_prompts].std(0)
            v = (v - mean) / std  # standardised per coordinate on the training prompts
            for layer, h in enumerate(states):
                h = h[:, : 2 * i + 1]  # the prompt up to y_i (causal: later tokens do not matter)
                for kind in KINDS:
                    p = fit(h[:train_prompts], v[:train_prompts], kind, steps, seed)
                    with torch.no_grad():
                        err = ((p(h[train_prompts:]) - v[train_prompts:]) ** 2).mean().item()
                        var = v[train_prompts:].var(0).mean().item()
                    results.append({"prefix": i, "target": name, "layer": layer, "kind": kind, "unexplained": err / var})
            log(f"probe: {name} after {i} examples: "
                + ", ".join(f"L{r['layer']} {r['kind'][0]} {r['unexplained']:.3f}" for r in results[-2 * len(states):]))
    return {"spec": asdict(learner.spec), "prefixes": list(prefixes), "train_prompts": train_prompts,
            "test_prompts": test_prompts, "steps": steps, "seed": seed, "results": results}
