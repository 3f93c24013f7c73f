"""Primitive precision: measured error vs certified bound, float64 / float32, per Richardson level.

Inputs fill their bounds uniformly (|a|, |b| <= 2; divisor 0.5 <= |c| <= 2); errors are
relative to the output scale (the output slot's bound). Prints a markdown table."""

import argparse
import time

import numpy as np

from iclkit.primitives import Program, aff, compile_program, div, dot, mov, mul
from tables import emit  # benchmarks/tables.py, beside this script

T, BATCH = 9, 512
OPS = {
    "mov": (mov("z", "a", 1), {"a": (3,), "z": (3,)}),
    "aff": (aff("z", ("a", 0.5), ("b", -1.0), bias=0.25), {"a": (3,), "b": (3,), "z": (3,)}),
    "mul (3x3 @ 3x1)": (mul("z", "A", "b", (3, 3, 1)), {"A": (3, 3), "b": (3,), "z": (3,)}),
    "dot (length 3)": (dot("z", "a", "b", 3), {"a": (3,), "b": (3,), "z": ()}),
    "div": (div("z", "a", "c", den_min=0.5), {"a": (3,), "c": (), "z": (3,)}),
}


def measure(op, slots, dtype, levels):
    prog = Program(slots, {s: 2.0 for s in slots if s != "z"}, [op])
    compiled = compile_program(prog, max_len=T, dtype=dtype, levels=levels)
    rng = np.random.default_rng(0)
    vals = {s: rng.uniform(-2, 2, (BATCH, T, *slots[s])) for s in slots if s != "z"}
    if "c" in vals:
        vals["c"] = np.sign(vals["c"]) * np.maximum(np.abs(vals["c"]), 0.5)
    t0 = time.perf_counter()
    out = compiled.run(vals)
    dt = time.perf_counter() - t0
    err = np.abs(out["z"] - compiled.interpret(vals)["z"]).max()
    scale = compiled.slot_bounds["z"]
    return err / scale, compiled.error_bounds["z"] / scale, compiled.model.cfg.mlp_width, dt


parser = argparse.ArgumentParser()
parser.add_argument("--out", default=None)
args = parser.parse_args()
lines = [f"Made by `python benchmarks/primitives.py` ({BATCH} prompts x {T} columns, seed 0).", "",
         "| primitive | dtype | levels | measured error / scale | certified bound / scale | bound / measured | MLP width |",
         "|---|---|---|---|---|---|---|"]
for name, (op, slots) in OPS.items():
    for dtype in ("float64", "float32"):
        for levels in ((1, 2, 3, 4) if name.startswith(("mul", "dot")) else (2,)):
            e, b, w, _ = measure(op, slots, dtype, levels)
            ratio = f"{b / e:.1f}" if e > 0 else "exact (0 error)"
            lines.append(f"| {name} | {dtype} | {levels} | {e:.2e} | {b:.2e} | {ratio} | {w} |")
print("\n".join(lines))
emit(lines, args.out)
