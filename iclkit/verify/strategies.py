"""Hypothesis strategies for users' own tests: regression problems and random valid programs."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from iclkit.primitives import Mean, Parallel, Program, absolute, aff, clip, div, dot, mov, mul, relu, soft_threshold


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


OP_KINDS = ("mov", "aff", "mean", "mul", "dot", "div", "divisor by attention", "divisor by mlp", "parallel", "hinge")


@st.composite
def programs(draw, max_ops: int = 6, size=st.integers(1, 3), kinds=st.sampled_from(OP_KINDS)):
    """A random valid program of the shapes users write: inputs ``a``, ``b`` (vectors), ``c``
    (a scalar) and ``e`` (a scalar divisor, |e| >= 1), then ops reading earlier slots: moves
    (some accumulating), affine maps, causal means, products (some in place), dots, divisions
    by ``e`` or by a divisor the program computes (in attention, ``1.5 + s / (4 B_s)``; in an
    MLP, ``u.u + 1``, ridge's pattern), back-to-back divisions, hinges (relu, abs, clip,
    soft_threshold; some in place), overwrites of an earlier slot and :class:`Parallel` pairs."""
    k = draw(size)
    slots: dict[str, tuple] = {"a": (k,), "b": (k,), "c": (), "e": ()}
    inputs = {"a": 1.0, "b": 1.0, "c": 1.0, "e": 2.0}
    vectors, scalars, steps = ["a", "b"], ["c", "e"], []
    divisors = {"e": 1.0}  # scalar slot -> the lower bound on its |value| (never overwritten)
    # coefficients 0 or of magnitude >= 1e-3 (a tiny one is refused where it would be subnormal in float32)
    coef = st.floats(-1, 1).filter(lambda x: x == 0 or abs(x) >= 1e-3)

    def target(fresh: str, avoid: str = "") -> tuple[str, bool]:
        """A fresh vector slot, or now and then an earlier written one (an overwrite; never ``avoid``)."""
        written = [s for s in vectors if s not in inputs and s != avoid]
        if written and draw(st.integers(0, 3)) == 0:
            return draw(st.sampled_from(written)), False
        slots[fresh] = (k,)
        vectors.append(fresh)
        return fresh, True

    def divisor(i: int, kind: str) -> str:
        """A scalar slot whose |value| the program guarantees (the lower bound in ``divisors``)."""
        name = f"den{i}"
        slots[name] = ()
        if kind == "attention":  # written by an aff: 1.5 + s / (4 B_s) >= 1.25
            s = draw(st.sampled_from(scalars))
            bound = Program(dict(slots), inputs, steps).bounds()[0][s]
            steps.append(aff(name, (s, 0.25 / bound if bound > 0 else 0.0), bias=1.5))
            divisors[name] = 1.25
        else:  # written by an MLP dot: u.u + 1 >= 1
            u = draw(st.sampled_from(vectors))
            steps.append(dot(name, u, u, k, bias=1.0))
            divisors[name] = 1.0
        scalars.append(name)
        return name

    for i in range(draw(st.integers(1, max_ops))):
        kind = draw(kinds)
        u, v = draw(st.sampled_from(vectors)), draw(st.sampled_from(vectors))
        s = draw(st.sampled_from(scalars))
        if kind == "mov":
            dst, fresh = target(f"v{i}")
            steps.append(mov(dst, u, draw(st.integers(0, 3)), accumulate=not fresh and dst != u and draw(st.booleans())))
        elif kind == "aff":
            steps.append(aff(target(f"v{i}")[0], (u, draw(coef)), (v, draw(coef)), bias=draw(coef)))
        elif kind == "mean":
            steps.append(Mean(target(f"v{i}")[0], src=u))
        elif kind == "mul":  # (k x 1) @ (1 x 1): a vector times a scalar, now and then in place
            in_place = u not in inputs and draw(st.booleans())
            steps.append(mul(u if in_place else target(f"v{i}")[0], u, s, (k, 1, 1)))
        elif kind == "dot":
            slots[f"s{i}"] = ()
            scalars.append(f"s{i}")
            steps.append(dot(f"s{i}", u, v, k))
        elif kind == "div":  # by a divisor written earlier (back to back, if it was just written), or by e
            den = draw(st.sampled_from(sorted(divisors)))
            steps.append(div(target(f"v{i}", avoid=u)[0], u, den, den_min=divisors[den]))
        elif kind.startswith("divisor by"):
            den = divisor(i, kind.split()[-1])
            steps.append(div(target(f"v{i}", avoid=u)[0], u, den, den_min=divisors[den]))
        elif kind == "hinge":  # relu, abs, clip or soft_threshold, now and then in place
            dst = u if u not in inputs and draw(st.booleans()) else target(f"v{i}")[0]
            t = draw(st.floats(0.0, 0.75))
            steps.append(draw(st.sampled_from([relu(dst, u), absolute(dst, u), clip(dst, u, -t, t + 0.1),
                                               soft_threshold(dst, u, t)])))
        else:  # two ops in one layer, each writing a fresh slot from earlier ones
            first, second = f"p{i}", f"q{i}"
            slots[first], slots[second] = (k,), ()
            steps.append(Parallel(aff(first, (u, draw(coef)), bias=draw(coef)), dot(second, u, v, k)))
            vectors.append(first)
            scalars.append(second)
    return Program(slots, inputs, steps)


def program_inputs(program: Program, batch: int, T: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs filling each input's bound (the divisor ``e`` kept at |e| >= 1)."""
    rng = np.random.default_rng(seed)
    vals = {n: rng.uniform(-b, b, (batch, T, *program.slots[n])) for n, b in program.inputs.items()}
    if "e" in vals:
        vals["e"] = np.sign(vals["e"]) * np.maximum(np.abs(vals["e"]), 1.0)
    return vals
