"""Which algorithm do the learner's layers follow? Fu et al. 2023's layer-wise comparison.

For each layer l and each algorithm's prediction after k iterations (GD's steps, Newton's
iterations), a linear read-out (least squares with an intercept) is fitted on training
prompts from the residual at the query's position after layer l to that prediction; on
held-out prompts its error is the paper's squared prediction difference per dimension
(SPD/d). The best-decoded k per layer says how far along each algorithm the layer is (a
read-out fitted to y instead would rescale an iterate towards y and blur k); Fu et al. found trained transformers track Newton's iterations layer by layer, k growing about
linearly with depth, where GD would need exponentially many steps.
"""

from __future__ import annotations

import numpy as np

from iclkit import algorithms
from iclkit.empirical.learners import Learner

GD_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
NEWTON_STEPS = tuple(range(0, 17))


def gd_rate(d: int, n: int) -> float:
    """A GD step size that converges on typical prompts: ``2 lr lambda_max <= 1`` for
    lambda_max(X^T X) about n (1 + sqrt(d/n))^2 (Marchenko–Pastur), x ~ N(0, I)."""
    return 0.5 / (n * (1 + np.sqrt(d / n)) ** 2)


def _states_at_query(learner: Learner, X: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """The residual at the last x token (the query x_n, read after n - 1 examples), after every layer."""
    _, states = learner.run(X, y, return_states=True)
    q = 2 * X.shape[1] - 1
    return [s[:, q].double().numpy() for s in states[1:]]


def _decoding_errors(train: list[np.ndarray], targets_train: np.ndarray, test: list[np.ndarray],
                     targets_test: np.ndarray, d: int) -> np.ndarray:
    """(layers, targets): SPD/d on the test prompts of each layer's least-squares read-out
    ([state, 1] to the target) fitted on the training prompts, all targets at once."""
    out = []
    for H, H_test in zip(train, test):
        A = np.concatenate([H, np.ones((len(H), 1))], 1)
        coef = np.linalg.lstsq(A, targets_train, rcond=None)[0]
        pred = np.concatenate([H_test, np.ones((len(H_test), 1))], 1) @ coef
        out.append(np.mean((pred - targets_test) ** 2, axis=0) / d)
    return np.array(out)


def layerwise(learner: Learner, train_prompts: int = 4096, test_prompts: int = 512, seed: int = 4321,
              gd_steps=GD_STEPS, newton_steps=NEWTON_STEPS) -> dict:
    """Per layer, how well a linear read-out of its residual at the query reproduces GD's
    prediction after k steps (lr :func:`gd_rate`), Newton's after k iterations (default
    alpha) and OLS's (SPD/d on held-out prompts), with the best k of each; and whether the
    layers follow Newton more closely than GD (the best Newton match beats the best GD match
    at more layers than not)."""
    spec = learner.spec
    d, n = spec.d, spec.n
    rng = np.random.default_rng(seed)
    lr = gd_rate(d, n - 1)
    fits = [("gd", k, lambda X, y, k=k: algorithms.gd(X, y, lr=lr, steps=k)) for k in gd_steps]
    fits += [("newton", k, lambda X, y, k=k: algorithms.newton(X, y, steps=k)) for k in newton_steps]
    fits.append(("ols", None, algorithms.ols))

    def sample(count: int):
        X, y, _ = spec.prompts.sample(rng, count, n)
        targets = np.array([[X[b, -1] @ fit(X[b, :-1], y[b, :-1]) for _, _, fit in fits] for b in range(count)])
        return _states_at_query(learner, X, y), targets

    (H_tr, T_tr), (H_te, T_te) = sample(train_prompts), sample(test_prompts)
    errors = _decoding_errors(H_tr, T_tr, H_te, T_te, d)
    rows = []
    for layer, err in enumerate(errors, start=1):
        to_gd = {k: float(e) for (name, k, _), e in zip(fits, err) if name == "gd"}
        to_newton = {k: float(e) for (name, k, _), e in zip(fits, err) if name == "newton"}
        best_gd, best_newton = min(to_gd, key=to_gd.get), min(to_newton, key=to_newton.get)
        rows.append({"layer": layer, "gd_best_k": best_gd, "gd_spd": to_gd[best_gd], "newton_best_k": best_newton,
                     "newton_spd": to_newton[best_newton], "ols_spd": float(err[-1]), "to_gd": to_gd,
                     "to_newton": to_newton})
    newton_closer = sum(r["newton_spd"] < r["gd_spd"] for r in rows)
    return {"examples": n - 1, "gd_lr": lr, "train_prompts": train_prompts, "test_prompts": test_prompts, "seed": seed,
            "layers": rows, "newton_closer_layers": newton_closer, "follows_newton": newton_closer > len(rows) / 2}
