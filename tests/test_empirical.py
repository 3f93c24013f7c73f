"""The empirical foundation: metrics on hand-computed cases, kNN, prefix evaluation, and the
harness checking itself on a constructed transformer."""

import numpy as np

from iclkit import algorithms as A
from iclkit import constructions as C
from iclkit.empirical import metrics, predictors


def problem(B=3, n=5, d=2, K=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, n, d))
    w = rng.standard_normal((B, d))
    y = np.einsum("bnd,bd->bn", X, w)
    return X, y, rng.standard_normal((B, n, K, d))


def test_spd_and_ilwd_on_known_cases():
    X, y, Q = problem()
    pred = predictors.algorithm("ridge", lam=0.5)(X, y, Q)
    assert np.all(metrics.spd(pred, pred) == 0)
    # two linear predictors with fixed weights: ILWD is the squared distance of the weights
    w1, w2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    np.testing.assert_allclose(metrics.ilwd(Q, Q @ w1, Q @ w2), np.sum((w1 - w2) ** 2), rtol=1e-10)
    np.testing.assert_allclose(metrics.r_squared(Q, Q @ w1), 1.0, atol=1e-12)
    assert metrics.mspd(np.array([9.0, 1.0, 3.0, 7.0]), d=3) == 2.0


def test_prefix_evaluation_uses_only_earlier_examples():
    X, y, Q = problem()
    pred = predictors.algorithm("ols")(X, y, Q)
    b, i = 1, 3
    np.testing.assert_allclose(pred[b, i], Q[b, i] @ A.ols(X[b, :i], y[b, :i]))
    assert np.all(pred[:, 0] == 0)


def test_knn_on_a_known_prompt():
    X = np.array([[[0.0], [1.0], [2.0], [10.0], [0.0]]])
    y = np.array([[0.0, 1.0, 2.0, 10.0, 0.0]])
    Q = np.full((1, 5, 1, 1), 1.2)
    uniform = predictors.knn(3)(X, y, Q)
    assert uniform[0, 4, 0] == 1.0  # nearest three of {0, 1, 2, 10} to 1.2: 0, 1, 2
    weighted = predictors.knn(3, weighted=True)(X, y, Q)
    w = 1 / np.array([1.2, 0.2, 0.8]) ** 2
    np.testing.assert_allclose(weighted[0, 4, 0], (w * [0, 1, 2]).sum() / w.sum())


def test_harness_checks_itself_on_a_constructed_ridge():
    X, y, Q = problem(B=2, n=4, d=2, K=3)
    exact = predictors.algorithm("ridge", lam=0.5)(X, y, Q)
    built = predictors.constructed(C.ridge(2, 3, lam=0.5))(X, y, Q)  # one model, prefixes 1..3
    assert metrics.spd(built, exact).max() <= 1e-18  # squared errors at the 1e-9 level
    lo, hi = metrics.bootstrap((built - exact) ** 2)
    assert np.all(hi <= 1e-18) and lo.shape == (4, 3)


def test_layerwise_finds_the_iteration_a_layer_holds():
    """A stand-in learner whose layer l holds Newton's prediction after l iterations (and noise):
    the read-out recovers it, the best Newton k is l with SPD ~ 0, and those layers follow Newton."""
    import torch

    from iclkit import algorithms
    from iclkit.empirical.layerwise import layerwise
    from iclkit.empirical.learners import LearnerSpec

    spec = LearnerSpec(d=3, n=8, layers=3)

    class StandIn:
        def __init__(self):
            self.spec = spec

        def run(self, X, y, return_states=False):
            B, n, _ = X.shape
            rng = np.random.default_rng(0)
            states = [torch.zeros(B, 2 * n + 1, 4, dtype=torch.float64)]
            for layer in range(1, spec.layers + 1):
                h = torch.as_tensor(rng.standard_normal((B, 2 * n + 1, 4)))
                h[:, 2 * n - 1, 0] = torch.as_tensor(
                    [X[b, -1] @ algorithms.newton(X[b, :-1], y[b, :-1], steps=layer) for b in range(B)])
                states.append(h)
            return None, states

    result = layerwise(StandIn(), train_prompts=256, test_prompts=64)
    assert [r["newton_best_k"] for r in result["layers"]] == [1, 2, 3]
    assert all(r["newton_spd"] < 1e-20 for r in result["layers"])
    assert result["follows_newton"] and result["newton_closer_layers"] == 3
