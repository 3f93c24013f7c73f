"""Each primitive as one transformer layer: its weights, the named slots before and after,
and the measured error beside the certified bound."""

import numpy as np

from iclkit.primitives import Mean, Program, aff, compile_program, div, dot, mov, mul

T = 5  # BOS + 4 columns
rng = np.random.default_rng(0)
inputs = {"a": rng.uniform(-2, 2, (1, T, 2)), "b": rng.uniform(-2, 2, (1, T, 2)),
          "c": rng.uniform(1, 2, (1, T)) * rng.choice([-1, 1], (1, T))}
slots = {"a": (2,), "b": (2,), "c": (), "z": (2,), "s": ()}
bounds = {"a": 2.0, "b": 2.0, "c": 2.0}
examples = {
    "mov  z <- a[t-1]": mov("z", "a", 1),
    "aff  z <- W a - b + 1": aff("z", ("a", np.array([[1.0, 2.0], [0.0, -1.0]])), ("b", -1.0), bias=1.0),
    "mul  z <- a (2x1) * c": mul("z", "a", "c", (2, 1, 1)),
    "dot  s <- a . b": dot("s", "a", "b", 2),
    "div  z <- a / |c|": div("z", "a", "c", den_min=1.0),
    "mean z <- mean(a[0..t])": Mean("z", src="a"),
}
for title, op in examples.items():
    compiled = compile_program(Program(slots, bounds, [op]), max_len=T)
    layer = compiled.model.layers[0]
    out = compiled.run(inputs)
    ref = compiled.interpret(inputs)
    dst = op.dst
    err = np.abs(out[dst] - ref[dst]).max()
    print(f"\n== {title}: {compiled.num_layers} layer(s), residual width {compiled.layout.width}, "
          f"W_Q {tuple(layer.W_Q.shape)}, W_V {tuple(layer.W_V.shape)}, W_in {tuple(layer.W_in.shape)}")
    print(f"   inputs a[:, 1] = {inputs['a'][0, 1]}, b[:, 1] = {inputs['b'][0, 1]}, c[1] = {inputs['c'][0, 1]:.4f}")
    print(f"   {dst} (transformer, column 1) = {out[dst][0, 1]}")
    print(f"   {dst} (reference,   column 1) = {ref[dst][0, 1]}")
    print(f"   max error {err:.2e}   certified bound {compiled.error_bounds[dst]:.2e}")
