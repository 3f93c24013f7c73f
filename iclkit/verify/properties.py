"""Property suites (hypothesis): compiled == interpreter, constructions == closed forms,
metamorphic relations. Used by the tests with a small budget and by
``iclkit verify --property --examples N`` with a large one."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from iclkit import algorithms as A
from iclkit import constructions as C
from iclkit.constructions.base import default_y_bound
from iclkit.primitives import BoundError, ProgramError, compile_program
from iclkit.verify.strategies import problems, program_inputs, programs

T = 6


@given(program=programs(), dtype=st.sampled_from(["float64", "float32"]), mode=st.sampled_from(["fused", "faithful"]),
       seed=st.integers(0, 2**16))
def compiled_equals_interpreter(program, dtype, mode, seed):
    """A random valid program (computed divisors, in-place and accumulating writes, overwrites,
    back-to-back divisions, means, Parallel groups) compiled to a transformer, fused or
    faithful, equals its numpy interpreter within its finite bound, or is refused by name: in
    float32 for a coefficient float32 cannot hold, in either dtype for an op no constants can
    make accurate (e.g. a 1e-158 operand beside 1)."""
    try:
        compiled = compile_program(program, max_len=T, dtype=dtype, mode=mode)
    except ProgramError as e:
        assert dtype == "float32" and "in float32" in str(e), e
        return
    except ValueError as e:
        assert f"cannot be made accurate in {dtype}" in str(e), e
        return
    vals = program_inputs(program, 4, T, seed)
    out, ref = compiled.run(vals), compiled.interpret(vals)
    for slot in program.slots:
        err = np.abs(out[slot] - ref[slot]).max()
        assert np.isfinite(compiled.error_bounds[slot]) and err <= compiled.error_bounds[slot], \
            (mode, slot, err, compiled.error_bounds[slot], [op.describe() for op in program.ops])


@lru_cache(maxsize=48)
def _construction(name: str, d: int, n: int, params: tuple) -> C.Construction:
    """Constructions are deterministic in their arguments: build each once per run."""
    kw = {k: np.array(v) if k == "P" else v for k, v in params}
    return C.REGISTRY[name](d, n, **kw)


CONTEXT_SIZES = [1, 2, 3, 4, 5, 6, 8, 10, 16, 24, 40]


@given(problem=problems(d=st.integers(1, 8), n=st.sampled_from(CONTEXT_SIZES), scale=st.sampled_from([0.5, 1.0, 2.5])),
       lam=st.sampled_from([0.01, 0.1, 0.5, 1.0, 4.0]), lr=st.sampled_from([0.01, 0.02, 0.05, 0.1, 0.2]))
def constructions_within_certificate_or_refused(problem, lam, lr):
    """sgd, gd and ridge, d <= 8, n <= 40, over the paper's lr and lam grids and three data
    scales: each prediction is within its per-prompt certificate, or the prompt is refused
    (BoundError): never a silent wrong number. Within the domain, the float64 target
    1e-8 (1 + |y_hat|) holds too, and every op's measured own error obeys the rounding model."""
    X, y, xq = problem
    n, d = X.shape
    for name, kw in (("sgd", {"lr": lr, "lam": lam}), ("gd", {"lr": lr, "lam": lam}), ("ridge", {"lam": lam})):
        _held_or_refused(_construction(name, d, n, tuple(sorted(kw.items()))), X, y, xq)


def _held_or_refused(c: C.Construction, X, y, xq) -> None:
    """One prompt: refused (BoundError), or within its certificate of the program's exact
    value, within the float64 target and the domain-wide bound of the closed form, and every
    op's measured own error within the rounding model."""
    try:
        pred = c.predict(X, y, xq)
    except BoundError:
        return
    exact = c.closed_form(X, y, xq)
    certificate, ratios = c.audit(X, y, xq)
    assert abs(pred - c.reference(X, y, xq)) <= certificate[0], c.name
    assert abs(pred - exact) <= 1e-8 * (1 + abs(exact)), (c.name, pred, exact)
    assert abs(pred - exact) <= c.error_bound, c.name  # the domain-wide bound, where finite
    worst = max(ratios.items(), key=lambda kv: kv[1])
    assert worst[1] <= 1.0, (c.name, worst)


@given(problem=problems(d=st.integers(1, 3), n=st.sampled_from([1, 2, 3, 5]), scale=st.sampled_from([0.5, 1.0, 2.5])),
       steps=st.sampled_from([2, 3]), lr=st.sampled_from([0.01, 0.05, 0.1]), seed=st.integers(0, 3))
def literature_within_certificate_or_refused(problem, steps, lr, seed):
    """The algorithms beyond the paper, d <= 3, n <= 5: gd with several steps, pgd with a
    random preconditioner, newton, ols, lasso: each prediction is within its per-prompt certificate of
    the program's exact value, within the float64 target of its closed form, every op's own
    error within the rounding model, or the prompt is refused (BoundError), never a wrong number."""
    X, y, xq = problem
    n, d = X.shape
    P = np.round(np.random.default_rng(seed).uniform(-1, 1, (d, d)) + 2 * np.eye(d), 2)
    cases = (("gd", {"lr": lr, "lam": 0.1, "steps": steps}), ("pgd", {"lr": lr, "P": P, "steps": steps}),
             ("newton", {"steps": steps}), ("ols", {}), ("lasso", {"lr": lr, "l1": 1.0, "steps": steps}))
    for name, kw in cases:
        key = tuple(sorted((k, tuple(map(tuple, v)) if k == "P" else v) for k, v in kw.items()))
        _held_or_refused(_construction(name, d, n, key), X, y, xq)


def within_certificate_or_refused(c: C.Construction):
    """The property "within its certificate or refused" for one construction (shipped, or a
    user's from ``from_program``), as a hypothesis test over prompts of its n examples at three
    data scales: each prediction is within its per-prompt certificate of the program's exact
    value, within the domain-wide bound of its closed form (:func:`~iclkit.verify.numeric.closed_form`)
    and every op's measured own error within the rounding model, or the prompt is refused."""
    from iclkit.verify.numeric import closed_form

    @given(problem=problems(d=st.just(c.d), n=st.just(c.n), scale=st.sampled_from([0.5, 1.0, 2.5])))
    def prop(problem):
        X, y, xq = problem
        try:
            pred = c.predict(X, y, xq)
        except BoundError:
            return
        certificate, ratios = c.audit(X, y, xq)
        assert abs(pred - c.reference(X, y, xq)) <= certificate[0], c.name
        assert abs(pred - closed_form(c, X[None], y[None], xq[None])[0]) <= c.error_bound, c.name
        worst = max(ratios.items(), key=lambda kv: kv[1])
        assert worst[1] <= 1.0, (c.name, worst)

    return prop


def _ridge_whole_domain(d: int, n: int, lam: float, **domain) -> C.Construction:
    """Ridge sized for every iterate of its domain, ``|w_k| <= sqrt(n) Y / (2 sqrt lam)``, not
    only the noiseless ones the default w_bound covers: metamorphic properties use noisy prompts."""
    Y = domain.get("y_bound") or default_y_bound(d)
    return C.ridge(d, n, lam=lam, w_bound=np.sqrt(n) * Y / (2 * np.sqrt(lam)), **domain)


@given(problem=problems(), seed=st.integers(0, 2**16))
def ridge_ignores_example_order(problem, seed):
    """Metamorphic: permuting the examples leaves the ridge transformer's prediction unchanged."""
    X, y, xq = problem
    perm = np.random.default_rng(seed).permutation(len(y))
    c = _ridge_whole_domain(X.shape[1], len(y), 0.5)
    assert abs(c.predict(X, y, xq) - c.predict(X[perm], y[perm], xq)) <= 1e-8


@given(problem=problems(), k=st.floats(-2.0, 2.0))
def scaling_y_scales_yhat(problem, k):
    """Metamorphic: y -> k y gives y_hat -> k y_hat for ridge and for sgd from w0 = 0."""
    X, y, xq = problem
    for c in (_ridge_whole_domain(X.shape[1], len(y), 0.5), C.sgd(X.shape[1], len(y), lr=0.02)):
        assert abs(c.predict(X, k * y, xq) - k * c.predict(X, y, xq)) <= 1e-8 * (1 + abs(c.predict(X, y, xq)))


@given(problem=problems(n=st.integers(4, 6), d=st.integers(1, 3)))
def ridge_approaches_ols(problem):
    """Metamorphic: with n >= d, as lam -> 0 the ridge transformer tends to OLS:
    |y_hat(lam) - y_hat_ols| <= lam |x_q| |w_ols| / lambda_min(X^T X) (plus the 1e-8 target)."""
    X, y, xq = problem
    w_ols = A.ols(X, y)
    smallest = np.linalg.eigvalsh(X.T @ X)[0]
    x_norm = 1.01 * max(np.linalg.norm(X, axis=1).max(), np.linalg.norm(xq))
    for lam in (1e-1, 1e-3):
        c = _ridge_whole_domain(X.shape[1], len(y), lam, x_norm=x_norm, y_bound=1.01 * np.abs(y).max() + 1e-9)
        gap = abs(c.predict(X, y, xq) - xq @ w_ols)
        assert gap <= lam * np.linalg.norm(xq) * np.linalg.norm(w_ols) / smallest + 1e-8 * (1 + abs(xq @ w_ols))


PROPERTIES = [compiled_equals_interpreter, constructions_within_certificate_or_refused,
              literature_within_certificate_or_refused, ridge_ignores_example_order,
              scaling_y_scales_yhat, ridge_approaches_ols]


def run_properties(examples: int, console, only: list[str] | None = None) -> int:
    """Run every property (or those named in ``only``) with ``examples`` examples; print
    failures as shrunk counterexamples."""
    names = [p.__name__ for p in PROPERTIES]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ValueError(f"no property named {', '.join(unknown)}; the properties are {', '.join(names)}")
    failed = 0
    for prop in [p for p in PROPERTIES if not only or p.__name__ in only]:
        test = settings(max_examples=examples, deadline=None, database=None)(prop)
        try:
            test()
            console.print(f"[green]holds[/]  {prop.__name__} ({examples} examples)")
        except Exception as e:  # hypothesis re-raises the shrunk counterexample's failure
            failed += 1
            console.print(f"[red]FAILS[/]  {prop.__name__}: {type(e).__name__}: {e}")
            for note in getattr(e, "__notes__", []):  # hypothesis's falsifying example
                console.print(f"        {note}", markup=False)
    return 1 if failed else 0
