"""Hypothesis strategies for users' own tests: regression problems and random valid programs."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from iclkit.primitives import Program, aff, div, dot, mov, mul


@st.composite
def problems(draw, d=st.integers(1, 4), n=st.integers(1, 6), scale=st.floats(0.25, 1.5),
             noise=st.sampled_from([0.0, 0.1])):
    """A regression prompt (X (n,d), y (n,), xq (d,)) with x, w ~ N(0, scale^2 I), y = w.x + noise."""
    d_, n_ = draw(d), draw(n)
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    s = draw(scale)
    X = s * rng.standard_normal((n_, d_))
    w = rng.standard_normal(d_)
    return X, X @ w + draw(noise) * rng.standard_normal(n_), s * rng.standard_normal(d_)


@st.composite
def programs(draw, max_ops: int = 5, size=st.integers(1, 3)):
    """A random valid program: inputs ``a``, ``b`` (vectors) and ``c`` (scalar divisor with
    |c| >= 1), then ops each reading earlier slots and writing a fresh one."""
    k = draw(size)
    slots = {"a": (k,), "b": (k,), "c": ()}
    inputs = {"a": 1.0, "b": 1.0, "c": 2.0}
    vectors, steps = ["a", "b"], []
    for i in range(draw(st.integers(1, max_ops))):
        kind = draw(st.sampled_from(["mov", "aff", "mul", "dot", "div"]))
        u, v = draw(st.sampled_from(vectors)), draw(st.sampled_from(vectors))
        dst = f"s{i}"
        if kind == "dot":  # scalar result, used only as a leaf
            slots[dst] = ()
            steps.append(dot(dst, u, v, k))
            continue
        slots[dst] = (k,)
        if kind == "mov":
            steps.append(mov(dst, u, draw(st.integers(0, 3))))
        elif kind == "aff":
            coef = st.floats(-2, 2, allow_subnormal=False)  # subnormal coefficients are refused (no underflow model)
            steps.append(aff(dst, (u, draw(coef)), (v, draw(coef)), bias=draw(st.floats(-1, 1, allow_subnormal=False))))
        elif kind == "mul":  # elementwise-free: (k x 1) @ (1 x 1) with the divisor as the scalar
            steps.append(mul(dst, u, "c", (k, 1, 1)))
        else:
            steps.append(div(dst, u, "c", den_min=1.0))
        vectors.append(dst)
    return Program(slots, inputs, steps)


def program_inputs(program: Program, batch: int, T: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs filling each input's bound (the divisor kept at |c| >= 1)."""
    rng = np.random.default_rng(seed)
    vals = {n: rng.uniform(-b, b, (batch, T, *program.slots[n])) for n, b in program.inputs.items()}
    vals["c"] = np.sign(vals["c"]) * np.maximum(np.abs(vals["c"]), 1.0)
    return vals
