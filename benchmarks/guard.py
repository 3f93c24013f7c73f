"""What the run-time guard costs (d = 8, n = 40, float64, fused, x, w ~ N(0, I)): for sgd, gd
and ridge at the paper's parameters, the unguarded forward pass (the module on the tokens),
strict ``predict`` (the weights' digest, the domain and intermediate checks, and where the
a-priori bound cannot promise the accuracy target the per-prompt certificate) and its ratio;
the weights' digest alone; and the certificate against the error (largest of each over the
prompts, and the smallest per-prompt ratio: a certificate below its error would be unsound).
Errors are against the program's exact value in extended precision (Construction.reference).
Times are medians of ``--repeats`` runs on one thread. Prints a markdown table; ``--out FILE``
also writes it (the README includes docs/tables/)."""

import argparse
import statistics
import time

import numpy as np
import torch

from iclkit import constructions as C
from iclkit.primitives.compile import weight_digests
from iclkit.verify.numeric import DEFAULT_PARAMS, sample_problems
from tables import emit  # benchmarks/tables.py, beside this script

parser = argparse.ArgumentParser()
parser.add_argument("--d", type=int, default=8)
parser.add_argument("--n", type=int, default=40)
parser.add_argument("--trials", type=int, default=16)
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--out", default=None)
args = parser.parse_args()
torch.set_num_threads(1)


def median_seconds(fn) -> float:
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


lines = [f"Made by `python benchmarks/guard.py` (d = {args.d}, n = {args.n}, float64, fused, {args.trials} prompts "
         f"per row, seed 0; median of {args.repeats} runs, one thread). Guarded: the a-priori bound cannot promise "
         "1e-8 (1 + |y_hat|), so predict takes each prediction from the run that certifies it.", "",
         "| construction | guarded | forward s | predict s | predict / forward | digest s | largest error | "
         "largest certificate | smallest certificate / error |",
         "|---|---|---|---|---|---|---|---|---|"]
print("\n".join(lines), flush=True)
X, y, xq = sample_problems(args.d, args.n, args.trials, 0)
for name in ("sgd", "gd", "ridge"):
    c = C.REGISTRY[name](args.d, args.n, **DEFAULT_PARAMS[name])
    tokens = c.encode(X, y, xq)
    with torch.no_grad():
        forward = median_seconds(lambda: c.model(tokens))
    predict = median_seconds(lambda: c.predict(X, y, xq))
    digest = median_seconds(lambda: weight_digests(c.model))
    err = np.abs(c.predict(X, y, xq) - c.reference(X, y, xq)).astype(float)
    cert = c.certify(X, y, xq)
    assert np.all(err <= cert), name  # a table of an unsound certificate is never written
    ratio = np.min(np.where(err > 0, cert / np.where(err > 0, err, 1), np.inf))
    line = (f"| {name} | {'yes' if c.guarded else 'no'} | {forward:.3f} | {predict:.3f} | {predict / forward:.1f} | "
            f"{digest:.4f} | {err.max():.1e} | {cert.max():.1e} | {ratio:.1f} |")
    print(line, flush=True)
    lines.append(line)
emit(lines, args.out)
