"""Numeric verification: each construction against its closed form on seeded random prompts."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from iclkit.constructions import REGISTRY, Construction
from iclkit.primitives import BoundError

# The paper's step sizes and regulariser (Sec. 4.3): SGD(0.01), GD(0.01), Ridge(0.1); beyond the
# paper, four steps of preconditioned GD and of Newton, OLS by Newton's default steps, five of ISTA.
DEFAULT_PARAMS = {"sgd": {"lr": 0.01, "lam": 0.1}, "gd": {"lr": 0.01, "lam": 0.1}, "ridge": {"lam": 0.1},
                  "pgd": {"lr": 0.01, "steps": 4}, "newton": {"steps": 4}, "ols": {}, "lasso": {"lr": 0.01, "l1": 1.0, "steps": 5}}


def default_preconditioner(d: int) -> np.ndarray:
    """pgd's default P: diagonal, from 0.5 to 1.5 (1 at d = 1), a preconditioner that is not I."""
    return np.diag(np.linspace(0.5, 1.5, d)) if d > 1 else np.eye(1)


def default_params(name: str, d: int) -> dict:
    """The parameters ``iclkit verify``, ``sizes`` and ``build`` use for construction ``name`` at d."""
    params = dict(DEFAULT_PARAMS[name])
    if name == "pgd":
        params["P"] = default_preconditioner(d)
    return params


def targets(n: int, dtype: str) -> float:
    """The issue's accuracy targets, relative to 1 + |y_hat|."""
    if dtype == "float32":
        return 1e-3
    return 1e-10 if n == 1 else 1e-8


def sample_problems(d: int, n: int, batch: int, seed: int, noise: float = 0.0):
    """x, w ~ N(0, I); y = w.x (+ noise). Returns X (B,n,d), y (B,n), xq (B,d)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, n, d))
    w = rng.standard_normal((batch, d))
    y = np.einsum("bnd,bd->bn", X, w) + noise * rng.standard_normal((batch, n))
    return X, y, rng.standard_normal((batch, d))


def domain_problems(c: Construction, batch: int, seed: int):
    """:func:`sample_problems` brought inside construction ``c``'s certified domain: each x
    (and x_q) longer than 0.9 x_norm scaled to that length, each |y| above 0.9 y_bound clipped
    to it (prompts for a construction whose domain is smaller than N(0, I) prompts reach)."""
    X, y, xq = sample_problems(c.d, c.n, batch, seed)
    def shrink(v):
        norm = np.linalg.norm(v, axis=-1, keepdims=True)
        return v * np.minimum(1.0, 0.9 * c.x_norm / np.maximum(norm, 1e-300))
    return shrink(X), np.clip(y, -0.9 * c.y_bound, 0.9 * c.y_bound), shrink(xq)


def closed_form(c: Construction, X, y, xq) -> np.ndarray:
    """What the construction must predict, per prompt: its closed form (for a shipped one, the
    algorithm of the same name and parameters in numpy); for one without a closed form (a
    user's construction read from its file), its program's exact value."""
    if c.closed_form is None:
        return np.atleast_1d(c.reference(X, y, xq)).astype(float)
    return np.array([c.closed_form(X[b], y[b], xq[b]) for b in range(X.shape[0])])


@dataclass
class Row:
    construction: str
    mode: str
    dtype: str
    d: int
    n: int
    layers: int
    width: int
    parameters: int
    max_error: float  # max |y_hat - exact| over the prompts
    max_relative: float  # max |y_hat - exact| / (1 + |exact|)
    bound: float  # domain-wide certified bound on |y_hat - exact|
    certificate: float  # largest per-prompt certificate (Construction.certify)
    within_certificate: bool  # every prompt's error <= its own certificate
    target: float
    build_s: float
    run_s: float
    output_bound: float = float("inf")  # the domain's bound on |y_hat|: a domain-wide bound this large says nothing
    runtime_guard: bool = False  # predict certifies each prediction to the target as it runs (see Construction.guarded)
    refused: str = ""  # why predict refused these in-domain prompts, if it did (then the row fails)
    outside: int = 0  # sampled prompts the construction's own domain excludes, by name (not checked, not a failure)

    @property
    def within_bound(self) -> bool:
        """Every prompt within its (finite) per-prompt certificate, and within the domain-wide bound."""
        return bool(self.within_certificate and np.isfinite(self.certificate) and self.max_error <= self.bound)

    @property
    def status(self) -> str:
        """``pass``; ``no bound`` (every prompt certified, but the domain-wide bound is infinite,
        or vacuous: at least the domain's bound on |y_hat|; not a pass); or ``FAIL`` (also when
        predict refused some of these in-domain prompts)."""
        if self.refused or not (self.within_bound and self.meets_target):
            return "FAIL"
        return "pass" if self.bound < self.output_bound else "no bound"

    @property
    def meets_target(self) -> bool:
        return bool(self.max_relative <= self.target)


def check(name: str, d: int, n: int, *, dtype: str = "float64", mode: str = "fused", seed: int = 0,
          trials: int = 32, params: dict | None = None) -> Row:
    """Build one construction, run it on ``trials`` seeded prompts, compare with the closed form."""
    params = default_params(name, d) if params is None else params
    t0 = time.perf_counter()
    c = REGISTRY[name](d, n, dtype=dtype, mode=mode, **params)
    return check_construction(c, seed=seed, trials=trials, build_s=time.perf_counter() - t0)


def check_construction(c: Construction, *, seed: int = 0, trials: int = 32, build_s: float = 0.0) -> Row:
    """Run a construction (shipped, or a user's from ``from_program``) on ``trials`` seeded
    prompts and hold it against its closed form (:func:`closed_form`), its per-prompt
    certificates and its domain-wide bound."""
    d, n, dtype = c.d, c.n, c.model.cfg.dtype
    t1 = time.perf_counter()
    X, y, xq = sample_problems(d, n, trials, seed)
    outside = _outside(c, X, y, xq)  # prompts the construction's own domain excludes (e.g. ill-conditioned for ols)
    X, y, xq = X[~outside], y[~outside], xq[~outside]
    if not len(X):
        raise ValueError(f"{c.name} d={d} n={n}: every one of {trials} sampled prompts is outside its domain")
    try:
        yhat, refused = c.predict(X, y, xq), ""
    except BoundError as e:  # in-domain prompts refused: measured unguarded, and the row fails
        yhat, refused = c.predict(X, y, xq, strict=False), str(e)
    t2 = time.perf_counter()
    exact = closed_form(c, X, y, xq)
    err = np.abs(yhat - exact)
    cert = c.certify(X, y, xq)
    within = bool(np.all(np.abs(yhat - c.reference(X, y, xq)) <= cert))
    return Row(c.name, c.mode, dtype, d, n, c.num_layers, c.width, c.model.num_parameters(), float(err.max()),
               float((err / (1 + np.abs(exact))).max()), c.error_bound, float(cert.max()), within,
               targets(n, dtype), build_s, t2 - t1, float(c.compiled.slot_bounds["yhat"]), c.guarded, refused,
               int(outside.sum()))


def _outside(c: Construction, X, y, xq) -> np.ndarray:
    """Per prompt: whether the construction's own domain check (``prompt_check``) refuses it."""
    if c.prompt_check is None:
        return np.zeros(len(X), dtype=bool)
    out = np.zeros(len(X), dtype=bool)
    for b in range(len(X)):
        try:
            c.prompt_check(X[b : b + 1], y[b : b + 1], xq[b : b + 1])
        except BoundError:
            out[b] = True
    return out
