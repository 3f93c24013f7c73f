"""One op, one place: every op class implements every piece of the protocol, the property
suite's generator produces it, and `iclkit prove` has a claim proving its mechanism and its
compiled layer; a class that lacks a piece is refused at compile time, naming it."""

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from iclkit.primitives import Program, compile_program
from iclkit.primitives.ops import OPS, PIECES, Op, missing_pieces
from iclkit.verify import symbolic
from iclkit.verify.strategies import programs


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_class_owns_every_piece(name):
    assert missing_pieces(OPS[name]) == [], name


def test_the_generator_produces_every_op_class():
    seen: Counter = Counter()

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(program=programs())
    def collect(program):
        seen.update(type(op).__name__ for op in program.ops)

    collect()
    assert set(OPS) <= set(seen), sorted(set(OPS) - set(seen))


def test_every_op_class_has_its_proofs():
    claims = dict(symbolic.claims(max_d=1))
    for name in OPS:
        assert name in symbolic.OP_PROOFS, name
        for claim in symbolic.OP_PROOFS[name]:
            ok, _ = claims[claim]()
            assert ok, (name, claim)


def test_an_op_lacking_a_piece_is_refused_at_compile_time_by_name():
    """A new nonlinear op with reference semantics and bounds but no error model, certificate
    pieces or lowering: compile_program names the op and every piece it lacks (before, the
    certificate's remainder silently returned 0 for any op but a division)."""

    @dataclass(frozen=True)
    class Relu(Op):
        src: str = ""
        kind = "mlp"
        name = "relu"

        def reads(self):
            return (self.src,)

        def evaluate(self, values, sizes):
            return np.maximum(values[self.src], 0)

        def out_bound(self, bounds, sizes):
            return bounds[self.src]

        def propagated_error(self, bounds, errors, sizes):
            return errors[self.src]

    try:
        program = Program({"a": (2,), "z": (2,)}, {"a": 1.0}, [Relu("z", src="a")])
        with pytest.raises(NotImplementedError) as info:
            compile_program(program, max_len=3)
        message = str(info.value)
        assert message.startswith("relu(z <- a): op class Relu lacks ")
        for piece in ("own_error", "evaluation_mass", "read_magnitudes", "remainder", "vjp", "out_terms", "lower",
                      "expected_weights"):
            assert piece in message and PIECES[piece] in message, piece
    finally:
        OPS.pop("Relu", None)
