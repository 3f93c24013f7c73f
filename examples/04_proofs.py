"""Proofs: Theorem 1 symbolically for d = 2, the property suite briefly, and a shrunk
counterexample for a deliberately broken chain (the paper's λ sign)."""

import numpy as np
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from iclkit import algorithms
from iclkit.constructions.sgd import sgd_program
from iclkit.verify import symbolic
from iclkit.verify.properties import compiled_equals_interpreter
from iclkit.verify.symbolic import LAM, LR

# 1. Theorem 1, d = 2: the faithful op chain on symbols equals the closed form exactly.
X, y, xq, w0 = symbolic.symbolic_prompt(2, 1)
program = sgd_program(2, 1, lr=LR, lam=LAM, w0=w0, x_norm=1.0, y_bound=1.0, mode="faithful")
chain = sp.expand(symbolic.program_prediction(program, X, y, xq))
closed = sp.expand(symbolic.sgd_closed_form(X, y, xq, w0, LR, LAM))
print("transformer program y_hat =", chain)
print("closed form            =", closed)
print("difference simplifies to", sp.simplify(chain - closed))

# 2. A property suite, briefly: random valid programs compiled to transformers equal their
#    interpreter within their bounds (`iclkit verify --property --examples 1000` runs all five).
settings(max_examples=5, deadline=None, database=None)(compiled_equals_interpreter)()
print("property holds on 5 examples: compiled_equals_interpreter")

# 3. A broken chain: the paper's summary sign (gradient x(w.x - y) - lam w). Hypothesis finds
#    a counterexample and shrinks it.
shrunk = []


@settings(max_examples=200, deadline=None, database=None)
@given(x=st.floats(-3, 3), y_=st.floats(-3, 3), w=st.floats(-3, 3), q=st.floats(-3, 3))
def broken_chain_matches_sgd(x, y_, w, q):
    prog = symbolic.with_paper_sign_mistake(sgd_program(1, 1, lr=0.1, lam=1.0, w0=np.array([w]), x_norm=10.0,
                                                        y_bound=10.0, mode="faithful"))
    inputs = {"y": np.array([[0.0, 0.0, y_, 0.0]]), "x": np.array([[[0.0], [x], [0.0], [q]]])}
    got = prog.interpret(inputs)["yhat"][0, -1]
    exact = q * algorithms.sgd(np.array([[x]]), np.array([y_]), lr=0.1, lam=1.0, w0=np.array([w]))[0]
    if abs(got - exact) > 1e-9:
        shrunk.append(dict(x=x, y=y_, w0=w, xq=q, got=got, exact=exact))
        raise AssertionError


try:
    broken_chain_matches_sgd()
except AssertionError:
    print("broken chain refuted; shrunk counterexample:", shrunk[-1])
