"""Theorem 1: a transformer that takes one SGD step per in-context example.

Builds the paper's 9-layer chain for one example, shows the residual stream layer by layer
as named slots, then stacks the block over 6 examples and compares with iclkit.algorithms.sgd."""

import numpy as np

from iclkit import algorithms, constructions

np.set_printoptions(precision=5, suppress=True)
d, lr, lam = 2, 0.05, 0.05
x_norm = 4.0  # certified domain |x| <= 4: there 2 lr (|x|^2 + lam) < 2, so every step contracts
w0 = np.array([0.5, -0.25])
rng = np.random.default_rng(0)
X, y, xq = rng.standard_normal((1, d)), rng.standard_normal(1), rng.standard_normal(d)

c = constructions.sgd(d, 1, lr=lr, lam=lam, w0=w0, mode="faithful", x_norm=x_norm)
print(f"Theorem 1, faithful: {c.num_layers} layers, residual width {c.width}, bound {c.error_bound:.1e}")
for layer, state in enumerate(c.trace(X, y, xq)):
    y_col, q_col = 2, 3  # the example's y column and the query column
    print(f"after layer {layer}: x(y col)={state['x'][y_col]}  w.x-y={state['err'][y_col]: .5f}  "
          f"x(w.x-y)={state['xerr'][y_col]}  w(y col)={state['w'][y_col]}  w(query)={state['w'][q_col]}  "
          f"yhat(query)={state['yhat'][q_col]: .6f}")
exact = xq @ algorithms.sgd(X, y, lr=lr, lam=lam, w0=w0)
print(f"transformer {c.predict(X, y, xq):.12f}   closed form {exact:.12f}")

n = 6
X, y = rng.standard_normal((n, d)), rng.standard_normal(n)
fused = constructions.sgd(d, n, lr=lr, lam=lam, w0=w0, x_norm=x_norm)
print(f"\nstacked over n={n}: {fused.num_layers} layers (fused), "
      f"transformer {fused.predict(X, y, xq):.12f}   closed form {xq @ algorithms.sgd(X, y, lr=lr, lam=lam, w0=w0):.12f}")
