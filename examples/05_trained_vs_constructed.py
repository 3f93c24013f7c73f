"""A trained in-context learner beside the algorithms and a constructed transformer.

Trains a small learner briefly (about half a minute on 2 cores), then scores it, prefix by
prefix, against OLS, ridge, one-step GD and the constructed ridge transformer with the paper's
metrics (SPD/d and ILWD/d, Sec. 4.2). The constructed ridge is also scored against
iclkit.algorithms.ridge: the harness checks itself. A brief run is far from converged; `iclkit
train` and `iclkit compare` run the full-size version (see the README)."""

import numpy as np

from iclkit import constructions
from iclkit.empirical import metrics
from iclkit.empirical.learners import LearnerSpec, train
from iclkit.empirical.predictors import algorithm, constructed

spec = LearnerSpec(d=4, n=8, layers=2, width=32, heads=2, steps=1500, curriculum=0.5, lr=1e-3)
learner = train(spec, progress=False)
print(f"trained {learner.model.num_parameters()} parameters for {spec.steps} steps in {learner.seconds:.0f} s; "
      f"loss/d {learner.losses[0]:.3f} -> {learner.losses[-1]:.3f}")

X, y, _, Q = spec.prompts.sample(np.random.default_rng(7), 16, spec.n, 8)  # the constructed ridge certifies each
ours = learner.predictor()(X, y, Q)
others = {
    "OLS": algorithm("ols")(X, y, Q),
    "Ridge(0.1)": algorithm("ridge", lam=0.1)(X, y, Q),
    "GD(0.01), one step": algorithm("gd", lr=0.01)(X, y, Q),
    "constructed ridge(0.1)": constructed(constructions.ridge(spec.d, spec.n - 1, lam=0.1))(X, y, Q),
}
d, n = spec.d, spec.n
print(f"\nlearner vs        {'SPD/d, n = 1..' + str(n - 1):<44} ILWD/d (mean over n >= d)")
for name, pred in others.items():
    spd = metrics.spd(ours, pred)[1:] / d
    ilwd = metrics.ilwd(Q, ours, pred)[d:].mean() / d
    print(f"{name:<22} {' '.join(f'{v:.3f}' for v in spd):<44} {ilwd:.3f}")

self_check = metrics.spd(others["constructed ridge(0.1)"], others["Ridge(0.1)"]).max() / d
print(f"\nconstructed ridge vs iclkit.algorithms.ridge: max SPD/d {self_check:.1e} (the harness checks itself)")
assert self_check < 1e-16
