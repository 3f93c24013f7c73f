"""Certificates at issue 9's size (d = 8, n = 40, float64, x, w ~ N(0, I)): the error, the
per-prompt certificate (largest, and its ratio to the largest error; median of the
per-prompt ratios) and the domain-wide bound (marked run-time where the a-priori bound cannot
promise the accuracy target and predict certifies each prediction as it runs), for the paper's
learning rates and lambdas.
Errors are against the program's exact value in extended precision (Construction.reference).
Prints a markdown table; ``--out FILE`` also writes it (the README includes docs/tables/)."""

import argparse
import time

import numpy as np

from iclkit import constructions as C
from iclkit.primitives import BoundError
from iclkit.verify.numeric import closed_form, sample_problems
from tables import emit  # benchmarks/tables.py, beside this script

parser = argparse.ArgumentParser()
parser.add_argument("--d", type=int, default=8)
parser.add_argument("--n", type=int, default=40)
parser.add_argument("--trials", type=int, default=16)
parser.add_argument("--out", default=None)
args = parser.parse_args()

CASES = [("sgd", {"lr": 0.01}), ("sgd", {"lr": 0.05}), ("sgd", {"lr": 0.1}), ("sgd", {"lr": 0.2}),
         ("gd", {"lr": 0.1}), ("gd", {"lr": 0.2}), ("ridge", {"lam": 0.1}), ("ridge", {"lam": 0.01})]
lines = [f"Made by `python benchmarks/certificates.py` (d = {args.d}, n = {args.n}, float64, {args.trials} prompts "
         "per row, x, w ~ N(0, I), seed 0).", "",
         "| construction | mode | parameters | max rel. error | largest error | largest certificate | ratio | "
         "median per-prompt ratio | domain-wide bound | certify s |",
         "|---|---|---|---|---|---|---|---|---|---|"]
print("\n".join(lines), flush=True)
X, y, xq = sample_problems(args.d, args.n, args.trials, 0)
for name, kw in CASES:
    for mode in ("fused", "faithful"):
        c = C.REGISTRY[name](args.d, args.n, mode=mode, **kw)
        label = f"{name}({', '.join(f'{k} {v}' for k, v in kw.items())})"
        try:
            pred = c.predict(X, y, xq)
        except BoundError as e:
            line = f"| {label} | {mode} | refused: {str(e).split(':')[0]} |||||||"
        else:
            exact = closed_form(c, X, y, xq)
            err = np.abs(pred - c.reference(X, y, xq)).astype(float)
            t0 = time.perf_counter()
            cert = c.certify(X, y, xq)
            dt = time.perf_counter() - t0
            assert np.all(err <= cert), label  # a table of an unsound certificate is never written
            rel = (np.abs(pred - exact) / (1 + np.abs(exact))).max()
            bound = f"{c.error_bound:.1e}" + (f" (run-time; a priori {c.a_priori_bound:.1e})" if c.guarded else "")
            line = (f"| {label} | {mode} | {c.model.num_parameters():,} | {rel:.1e} | {err.max():.1e} | {cert.max():.1e} | "
                    f"{cert.max() / err.max():.1f} | {np.median(cert / err):.1f} | {bound} | {dt:.1f} |")
        print(line, flush=True)
        lines.append(line)
emit(lines, args.out)
