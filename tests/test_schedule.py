"""Fused scheduling hazards: a division whose divisor the same layer's attention writes, and a
write-after-read inside one layer. Each is compiled correctly (within its bound) in both modes,
and the schedule checker refuses, naming the layer, the schedules that computed them wrong."""

import numpy as np
import pytest

from iclkit.primitives import Layer, Program, ProgramError, aff, compile_program, div, mul
from iclkit.primitives.certify import certify

T = 5


def computed_divisor() -> Program:
    """The issue's minimal case: c2 = 1 + c/4 (an aff), z = a / |c2|, s = z[0]."""
    return Program({"a": (2,), "c": (), "c2": (), "z": (2,), "s": ()}, {"a": 2.0, "c": 2.0}, [
        aff("c2", ("c", 0.25), bias=1.0), div("z", "a", "c2", den_min=0.5), aff("s", ("z", np.array([[1.0, 0.0]])))])


def write_after_read() -> Program:
    """z <- a; u <- z; z <- z c: u must hold a, not a c."""
    return Program({"a": (), "c": (), "z": (), "u": ()}, {"a": 1.0, "c": 1.0},
                   [aff("z", ("a", 1.0)), aff("u", ("z", 1.0)), mul("z", "z", "c", (1, 1, 1))])


def inputs(program: Program, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {n: rng.uniform(-b, b, (3, T, *program.slots[n])) for n, b in program.inputs.items()}


@pytest.mark.parametrize("make, output", [(computed_divisor, "s"), (write_after_read, "u")])
@pytest.mark.parametrize("mode", ["fused", "faithful"])
def test_hazards_compile_within_their_bounds(make, output, mode):
    program = make()
    compiled = compile_program(program, max_len=T, mode=mode, output=output)
    vals = inputs(program)
    out, ref = compiled.run(vals), compiled.interpret(vals)
    for slot in program.slots:  # the bound is the compiler's a-priori one; before the fix the error was 4e16 and 1.6
        assert np.abs(out[slot] - ref[slot]).max() <= compiled.error_bounds[slot], slot
    # the per-prompt certificate bounds the distance to the program's exact value (extended precision)
    exact = compiled.program.interpret({k: v.astype(np.longdouble) for k, v in vals.items()}, t_max=compiled.t_max)
    assert np.all(np.abs(out[output][:, -1] - exact[output][:, -1]) <= certify(compiled, vals, output))


def test_a_division_waits_for_its_computed_divisor():
    fused = compile_program(computed_divisor(), max_len=T, mode="fused")
    where = {op.describe(): i for i, layer in enumerate(fused.schedule) for op in (*layer.attn, *layer.mlp)}
    assert where["div(z <- a, c2)"] > where["aff(c2 <- W·c + b)"]


def test_the_schedule_checker_names_the_layer_of_each_hazard():
    """The two schedules the fused scheduler used to produce are refused, naming layer 0."""
    program = computed_divisor()
    c2, z, s = program.steps
    bad = [Layer(attn=[c2], mlp=[z]), Layer(attn=[s], cleanups=[z])]
    found = " | ".join(map(str, program.schedule_problems(bad)))
    assert "layer 0 attention (the division's pad swap) reads 'c2' holding the zero value" in found, found
    assert "layer 1 attention removes the division pads with another value of 'c2'" in found, found

    program = write_after_read()
    za, u, zc = program.steps
    found = " | ".join(map(str, program.schedule_problems([Layer(attn=[za], mlp=[zc]), Layer(attn=[u])])))
    assert "layer 1 attention reads 'z' holding step 2's result; the program reads step 0's result" in found, found
    assert program.schedule_problems([Layer(attn=[za]), Layer(attn=[u], mlp=[zc])]) == []


def test_the_schedule_checker_catches_a_write_sublayers_twice_and_a_lost_op():
    program = write_after_read()
    za, u, zc = program.steps
    found = " | ".join(map(str, program.schedule_problems([Layer(attn=[za, u], mlp=[zc])])))
    assert "reads 'z' holding the zero value" in found
    assert "exactly once" in " ".join(map(str, program.schedule_problems([Layer(attn=[za])])))
    twice = Program({"a": (), "z": ()}, {"a": 1.0}, [aff("z", ("a", 1.0)), aff("z", ("a", 2.0))])
    z1, z2 = twice.steps
    assert "writes ['z'] more than once" in " ".join(map(str, twice.schedule_problems([Layer(attn=[z1, z2])])))
    with pytest.raises(ProgramError):  # a scheduler that produced one would be refused at compile time
        raise ProgramError(twice.schedule_problems([Layer(attn=[z1, z2])]))


def test_the_proof_from_the_weights_fails_a_miscompiled_schedule(monkeypatch):
    """A model compiled from the old fused schedule of the minimal case (division packed with
    the aff that writes its divisor) has weights equal to that schedule's plan; the proof must
    still fail it, naming layer 0, because the layers do not compute the program."""
    from iclkit.verify.weights import WeightProofError, prove_weights

    program = computed_divisor()
    c2, z, s = program.steps
    monkeypatch.setattr(Program, "schedule", lambda self, mode="fused": [Layer(attn=[c2], mlp=[z]),
                                                                          Layer(attn=[s], cleanups=[z])])
    miscompiled = compile_program(program, max_len=T, output="s")
    vals = inputs(program)
    assert np.abs(miscompiled.run(vals)["s"] - miscompiled.interpret(vals)["s"]).max() > 1.0  # it is wrong
    with pytest.raises(WeightProofError, match="layer 0 attention \\(the division's pad swap\\) reads 'c2'"):
        prove_weights(miscompiled.model, miscompiled)
    monkeypatch.undo()
    right = compile_program(program, max_len=T, output="s")
    prove_weights(right.model, right)


@pytest.mark.parametrize("mode", ["fused", "faithful"])
def test_the_shipped_programs_regions_tile_their_steps(mode):
    """Prologue, per-example blocks and epilogue cover every step once, in order, so the
    contraction bounds and loop proofs that find ops by region see every op; each example's
    block of a stacked program does the same ops."""
    from iclkit import constructions as C

    for c in (C.sgd(2, 4, lr=0.05, mode=mode), C.ridge(2, 4, lam=0.1, mode=mode), C.gd(2, 4, lr=0.05, mode=mode)):
        program = c.compiled.program
        spans = sorted(program.regions.values())
        assert spans[0][0] == 0 and spans[-1][1] == len(program.steps), c.name
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), c.name
        for prefix in ("example", "gradient", "gain", "sherman-morrison"):
            blocks = [program.ops_of(name) for name in program.regions if name.startswith(prefix + " ")]
            shapes = [[(type(op).__name__, op.dst, op.reads()) for op in block] for block in blocks[1:]]
            assert all(s == shapes[0] for s in shapes), (c.name, prefix)
    with pytest.raises(KeyError, match="no region 'example 9'"):
        C.sgd(2, 4, lr=0.05, mode="faithful").compiled.program.steps_of("example 9")


@pytest.mark.parametrize("kind", ["divisor by attention", "divisor by mlp"])
def test_computed_divisors_compile_within_their_bounds(kind):
    """The property suite's generator, restricted to programs that compute a divisor (with
    products, moves and means around them), fused and faithful: 12 examples each in CI."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from iclkit.verify import properties
    from iclkit.verify.strategies import programs

    kinds = st.sampled_from([kind, "mul", "mov", "mean", "div"])
    test = given(program=programs(kinds=kinds), dtype=st.just("float64"), mode=st.sampled_from(["fused", "faithful"]),
                 seed=st.integers(0, 2**16))(properties.compiled_equals_interpreter.hypothesis.inner_test)
    settings(max_examples=12, deadline=None, derandomize=True, database=None)(test)()
