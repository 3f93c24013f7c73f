"""Trained in-context learners: a GPT-style causal decoder, built from iclkit's own
:class:`~iclkit.transformer.Transformer`, trained to predict y_i at each x_i token (Eq. 8).

Training follows the paper's recipe at CPU scale: fresh prompts every step, squared error on
the y predictions only, Adam (b2 = 0.98, gradient norm clipped at 1) with linear warmup over
the first fifth of the steps and cosine decay. Everything is seeded: the same spec gives the same weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from iclkit.empirical.predictors import Predictor
from iclkit.empirical.prompts import Prompts, tokens
from iclkit.transformer import Transformer, TransformerConfig


@dataclass(frozen=True)
class LearnerSpec:
    """Architecture, task distribution and optimisation of one trained learner."""

    d: int = 4
    n: int = 8  # examples per training prompt
    layers: int = 6
    width: int = 64
    heads: int = 4
    tau: float = 1.0
    sigma: float = 0.0
    steps: int = 20000
    batch: int = 64
    lr: float = 1e-3
    warmup: float = 0.2  # fraction of the steps
    weight_decay: float = 0.0
    curriculum: float = 0.0  # fraction of the steps over which the task dimension grows 1 -> d
    seed: int = 0
    start: str = ""  # fine-tuning: the id (:func:`spec_id`) of the learner it starts from; "" = fresh init

    def __post_init__(self) -> None:
        for name in ("d", "n", "layers", "width", "heads", "steps", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"LearnerSpec.{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"LearnerSpec.width ({self.width}) must be a multiple of heads ({self.heads})")
        if not (self.lr > 0 and 0 <= self.warmup < 1 and self.weight_decay >= 0):
            raise ValueError(f"LearnerSpec: need lr > 0, 0 <= warmup < 1, weight_decay >= 0; got {self}")

    @property
    def prompts(self) -> Prompts:
        return Prompts(self.d, tau=self.tau, sigma=self.sigma)

    def model_config(self) -> TransformerConfig:
        head = self.width // self.heads
        return TransformerConfig(
            token_dim=self.d + 1, width=self.width, num_layers=self.layers, num_heads=self.heads,
            head_dim=head, value_dim=head, mlp_width=4 * self.width, max_len=2 * self.n + 1,
            attn_scale=1 / math.sqrt(head), ln_eps=1e-5, ln_affine=True, exact_mean=False, attn_ln=True, final_ln=True,
            dtype="float32",
        )


def spec_id(spec: LearnerSpec) -> str:
    """A short stable id of a spec (its fields, hashed): names cache files and fine-tuning parents."""
    return hashlib.sha1(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:12]


def init_model(spec: LearnerSpec) -> Transformer:
    """GPT-2 initialisation: N(0, 0.02^2) weights, residual outputs scaled by 1/sqrt(2L)."""
    gen = torch.Generator().manual_seed(spec.seed)
    model = Transformer(spec.model_config())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("W_O", "W_out")):
                p.normal_(0, 0.02 / math.sqrt(2 * spec.layers), generator=gen)
            elif p.ndim >= 2 or name == "readout":
                p.normal_(0, 0.02, generator=gen)
    return model


@dataclass
class Learner:
    """A trained model, its spec, and its training record."""

    model: Transformer
    spec: LearnerSpec
    steps_done: int = 0
    losses: list[float] = field(default_factory=list)  # running loss / d, every `log_every` steps
    seconds: float = 0.0

    def run(self, X, y, return_states: bool = False):
        """The model on the prompts (B,n,d),(B,n), without gradients: its readout at every
        token, and with ``return_states`` the residual after every layer."""
        n = X.shape[1]
        if X.shape[-1] != self.spec.d or 2 * n + 1 > self.model.cfg.max_len:
            raise ValueError(f"this learner reads d = {self.spec.d} and at most {(self.model.cfg.max_len - 1) // 2} "
                             f"examples; got X of shape {tuple(X.shape)}")
        with torch.no_grad():
            return self.model(tokens(torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)),
                              return_states=return_states)

    def predict(self, X, y) -> np.ndarray:
        """At each x_i, the prediction of y_i from the examples before it: (B,n,d),(B,n) -> (B,n)."""
        return self.run(X, y)[:, 1::2].double().numpy()

    def predictor(self, chunk: int = 8192) -> Predictor:
        """The learner in the prefix interface of :mod:`iclkit.empirical.predictors`: the
        prompt of the first i examples, then each query at x_{i+1}'s position."""

        def predict(X: np.ndarray, y: np.ndarray, queries: np.ndarray) -> np.ndarray:
            B, n, K, d = queries.shape
            out = np.zeros((B, n, K))
            for i in range(n):
                Xi = np.concatenate([np.repeat(X[:, None, :i], K, 1), queries[:, i, :, None]], 2)
                yi = np.concatenate([np.repeat(y[:, None, :i], K, 1), np.zeros((B, K, 1))], 2)
                Xi, yi = Xi.reshape(B * K, i + 1, d), yi.reshape(B * K, i + 1)
                preds = [self.predict(Xi[s : s + chunk], yi[s : s + chunk])[:, -1] for s in range(0, B * K, chunk)]
                out[:, i] = np.concatenate(preds).reshape(B, K)
            return out

        return predict

    def save(self, path: str | Path) -> None:
        """One safetensors file: weights, with spec and training record in the header."""
        self.model.save(path, {"spec": asdict(self.spec), "steps_done": self.steps_done,
                               "losses": self.losses, "seconds": self.seconds})

    @classmethod
    def load(cls, path: str | Path) -> "Learner":
        model, meta = Transformer.load(path)
        if "spec" not in meta:
            raise ValueError(f"{path} holds a transformer but not a trained learner (no spec in its header)")
        return cls(model, LearnerSpec(**meta["spec"]), meta["steps_done"], meta["losses"], meta["seconds"])


def lr_at(spec: LearnerSpec, step: int) -> float:
    """Linear warmup over ``warmup * steps``, then cosine decay to zero."""
    warm = max(1, int(spec.warmup * spec.steps))
    if step < warm:
        return spec.lr * (step + 1) / warm
    return spec.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, spec.steps - warm)))


def dim_at(spec: LearnerSpec, step: int) -> int:
    """The curriculum (Garg et al. 2022): tasks use the first k coordinates only, k growing
    evenly from 1 to d over ``curriculum * steps`` steps."""
    if spec.curriculum == 0 or spec.d == 1:
        return spec.d
    stage = spec.curriculum * spec.steps / spec.d
    return min(spec.d, 1 + int(step / stage))


def loss_on(model: Transformer, X: torch.Tensor, y: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean squared error of the y predictions at the x tokens (Eq. 8), divided by the task
    dimension (so predicting 0 scores tau^2 and OLS scores the under-determined share)."""
    pred = model(tokens(X, y))[:, 1::2]
    return ((pred - y) ** 2).mean() / (dim or X.shape[-1])


def ols_loss(spec: LearnerSpec) -> float | None:
    """The training loss / d of min-norm OLS, the optimum on noiseless prompts: with i < d
    examples it misses the (d - i)/d share of y's variance that the examples leave open;
    None for noisy prompts."""
    if spec.sigma != 0:
        return None
    return sum(max(0, spec.d - i) for i in range(spec.n)) / (spec.d * spec.n)


def train(spec: LearnerSpec, checkpoint: str | Path | None = None, progress: bool = True,
          log_every: int = 100, checkpoint_every: int = 2000, start: Learner | None = None) -> Learner:
    """Train a learner, from scratch or (``spec.start`` set) from the weights of ``start``;
    save to ``checkpoint`` every ``checkpoint_every`` steps and at the end. The running loss
    is shown (rich) when ``progress``."""
    learner = Learner(init_model(spec), spec)
    if spec.start:
        if start is None or spec_id(start.spec) != spec.start:
            raise ValueError(f"spec.start = {spec.start!r} names the learner to fine-tune; pass that learner as start")
        if start.model.cfg != spec.model_config():
            raise ValueError("a fine-tuned learner must keep its parent's architecture (d, n, layers, width, heads)")
        learner.model.load_state_dict(start.model.state_dict())
    model = learner.model
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.98), eps=1e-9,
                            weight_decay=spec.weight_decay)
    gen = torch.Generator().manual_seed(spec.seed + 1)
    t0, running = time.perf_counter(), []

    def step(i: int) -> float:
        for group in opt.param_groups:
            group["lr"] = lr_at(spec, i)
        dim = dim_at(spec, i)
        X, y = spec.prompts.sample_tensors(gen, spec.batch, spec.n, dim)
        loss = loss_on(model, X, y, dim)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    columns = [TextColumn("train {task.fields[name]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss/d {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("train", total=spec.steps, name=f"L={spec.layers} H={spec.width}", loss="-")
        for i in range(spec.steps):
            running.append(step(i))
            if (i + 1) % log_every == 0 or i + 1 == spec.steps:
                learner.losses.append(float(np.mean(running)))
                running = []
                bar.update(task, completed=i + 1, loss=f"{learner.losses[-1]:.4f}")
            learner.steps_done = i + 1
            learner.seconds = time.perf_counter() - t0
            if checkpoint and ((i + 1) % checkpoint_every == 0 or i + 1 == spec.steps):
                learner.save(checkpoint)
    return learner


