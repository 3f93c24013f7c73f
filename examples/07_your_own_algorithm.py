"""Your own algorithm, end to end: two steps of full-batch GD, written outside the package with
only the public API (docs/authoring.md explains every line).

The contract: the program reads the prompt through input slots ``x`` (d,) and ``y`` (scalar),
one token per column (BOS, [0, x_i], [y_i, 0] for each example, [0, x_q]), and writes the
prediction to the scalar slot ``yhat``. Causal attention sees only the columns so far, so the
second step cannot recompute per-example residuals; it works on the prefix sufficient
statistics S = X^T X and b = X^T y instead:

    w1 = w0 - 2 lr (S w0 - b + lam w0),   w2 = w1 - 2 lr (S w1 - b + lam w1),   w0 = 0.

Run: python examples/07_your_own_algorithm.py [OUT_DIR]   (it writes its files into OUT_DIR)
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from iclkit.constructions import from_program
from iclkit.primitives import Mean, Program, aff, dot, mov, mul


def two_step_gd(d: int, n: int, lr, lam, x_bound: float, y_bound: float) -> Program:
    """Two full-batch GD steps from w0 = 0; lr and lam may be sympy symbols (for the proof)."""
    T_max = 2 * n + 1  # the pos unit holds t / T_max
    slots = {"x": (d,), "y": (), "x_ex": (d,), "count": (), "outer": (d, d), "xy": (d,),
             "S_mean": (d, d), "b_mean": (d,), "S": (d, d), "b": (d,), "w": (d,), "Sw": (d,), "yhat": ()}
    steps = [
        mov("x_ex", "x", 1),                                   # at y column 2i: x_i (0 elsewhere)
        aff("count", ("pos", float(T_max)), bias=1.0),         # t + 1 columns so far
        mul("outer", "x_ex", "x_ex", (d, 1, d)),               # x_i x_i^T
        mul("xy", "x_ex", "y", (d, 1, 1)),                     # x_i y_i
        Mean("S_mean", src="outer"), Mean("b_mean", src="xy"),  # means over columns 0..t
        mul("S", "S_mean", "count", (d * d, 1, 1)),            # prefix sums: X^T X, X^T y
        mul("b", "b_mean", "count", (d, 1, 1)),
        aff("w", ("b", 2 * lr)),                               # step 1 from w0 = 0
        mul("Sw", "S", "w", (d, d, 1)),
        aff("w", ("w", 1 - 2 * lr * lam), ("Sw", -2 * lr), ("b", 2 * lr)),  # step 2 (w updated in place)
        dot("yhat", "w", "x", d),                              # predict at the query column
    ]
    return Program(slots, {"x": x_bound, "y": y_bound}, steps, name=f"two_step_gd(d={d}, n={n})")


def closed_form(lr, lam):
    """What the program must compute, for one prompt; numpy and sympy alike."""
    def predict(X, y, xq):
        w = 0 * xq
        for _ in range(2):
            w = w - 2 * lr * (X.T @ (X @ w - y) + lam * w)
        return xq @ w
    return predict


def main(out: Path) -> None:
    d, n, lr, lam = 2, 4, 0.05, 0.1
    x_bound = 4.0  # the certified domain: |x| <= 4, |y| <= 16
    program = two_step_gd(d, n, lr, lam, x_bound, x_bound**2)
    c = from_program(program, name="two_step_gd", d=d, n=n, params={"lr": lr, "lam": lam},
                     closed_form=closed_form(lr, lam))
    print(f"built: {c.num_layers} layers, width {c.width}, {c.model.num_parameters():,} parameters; "
          f"error bound {c.error_bound:.2e}{' (run-time guard)' if c.guarded else ''}")

    rng = np.random.default_rng(0)
    X, w = rng.uniform(-1, 1, (16, n, d)), rng.standard_normal((16, d))
    y, xq = np.einsum("bnd,bd->bn", X, w), rng.uniform(-1, 1, (16, d))
    yhat = c.predict(X, y, xq)
    exact = np.array([c.closed_form(X[b], y[b], xq[b]) for b in range(16)])
    cert = c.certify(X, y, xq)
    print(f"predict vs numpy closed form: max |error| {np.abs(yhat - exact).max():.2e}, largest certificate "
          f"{cert.max():.2e}")
    assert np.all(np.abs(yhat - c.reference(X, y, xq)) <= cert)

    import sympy as sp

    from iclkit.verify.symbolic import prove_program

    lr_s, lam_s = sp.symbols("lr lam", positive=True)
    proved = prove_program(two_step_gd(d, 3, lr_s, lam_s, 1.0, 1.0), closed_form(lr_s, lam_s), d=d, n=3)
    print(f"sympy: program = closed form for d = {d}, n = 3, every lr and lam: {proved}")
    assert proved

    path = out / "two_step_gd.safetensors"
    c.save(path)
    proof = subprocess.run([sys.executable, "-m", "iclkit.cli", "prove", str(path)], capture_output=True, text=True)
    print(f"iclkit prove {path.name} (a fresh process, without this script's code): exit {proof.returncode}: "
          f"{proof.stdout.splitlines()[0] if proof.stdout else proof.stderr}")
    assert proof.returncode == 0

    try:
        from iclkit.export import load_export, to_hf_gpt2
    except ImportError:
        print("export skipped: needs the [export] extra")
        return
    to_hf_gpt2(c, out / "two_step_gd_gpt2")
    reloaded, gpt2, W_E = load_export(out / "two_step_gd_gpt2")
    import torch

    with torch.no_grad():
        got = gpt2(inputs_embeds=c.encode(X, y, xq) @ W_E).logits[:, -1, 0].numpy()
    print(f"GPT-2 export reloaded ({gpt2.config.n_layer} blocks): max |error| {np.abs(got - exact).max():.2e}")
    assert np.abs(got - exact).max() <= 1e-8 * (1 + np.abs(exact).max())


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
