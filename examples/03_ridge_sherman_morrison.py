"""Theorem 2: a transformer doing one Sherman–Morrison update per example: ridge regression.

Shows A^-1 evolving over the examples (read from each y column), compares with the closed
form, and shows the approach to OLS as lambda shrinks."""

import numpy as np

from iclkit import algorithms, constructions

np.set_printoptions(precision=4, suppress=True)
d, n = 2, 4
rng = np.random.default_rng(1)
X, y, xq = rng.standard_normal((n, d)), rng.standard_normal(n), rng.standard_normal(d)

c = constructions.ridge(d, n, lam=0.5)
state = c.trace(X, y, xq)[-1]
print(f"ridge construction, n={n}: {c.num_layers} layers, residual width {c.width}")
for j in range(1, n + 1):  # A_inv at y column j holds the inverse before example j's update
    exact = np.linalg.inv(0.5 * np.eye(d) + X[: j - 1].T @ X[: j - 1])
    print(f"A^-1 entering example {j}:\n{state['A_inv'][2 * j]}\n   exact:\n{exact}")
print(f"transformer {c.predict(X, y, xq):.12f}   closed form {xq @ algorithms.ridge(X, y, lam=0.5):.12f}")

print("\napproach to OLS (n >= d):")
ols = xq @ algorithms.ols(X, y)
for lam in (1.0, 0.1, 0.01, 0.001):
    c = constructions.ridge(d, n, lam=lam, x_norm=5.0, y_bound=5.0)
    print(f"  lam={lam:<6} transformer {c.predict(X, y, xq): .8f}   OLS {ols: .8f}")
