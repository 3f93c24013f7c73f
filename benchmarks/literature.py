"""The algorithms beyond the paper, as constructions: accuracy against iclkit.algorithms, size,
certificate and refusals (fused mode, x, w ~ N(0, I), y = w.x). gd and pgd at k = 1, 2, 4, 8
steps; newton at k = 1..6 with its distance to OLS; lasso at 1, 5, 20; ols. Prints a markdown table; ``--out
FILE`` also writes it (the README includes docs/tables/)."""

import argparse
import time

import numpy as np

from iclkit import algorithms as A
from iclkit import constructions as C
from iclkit.constructions.base import ACCURACY
from iclkit.constructions.descent import gd_steps
from iclkit.constructions.newton import DEFAULT_OLS_STEPS
from iclkit.verify.numeric import default_preconditioner, sample_problems
from tables import emit  # benchmarks/tables.py, beside this script

parser = argparse.ArgumentParser()
parser.add_argument("--d", type=int, default=8)
parser.add_argument("--n", type=int, default=40)
parser.add_argument("--trials", type=int, default=32)
parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
parser.add_argument("--out", default=None)
args = parser.parse_args()
d, n = args.d, args.n
P = default_preconditioner(d)
LR, LAM, L1 = 0.01, 0.1, 1.0

lines = [f"Made by `python benchmarks/literature.py` (d = {d}, n = {n}, fused, {args.trials} prompts x, w ~ N(0, I), "
         f"y = w.x, seed 0; gd lr {LR} lam {LAM}; pgd lr {LR}, P = diag(0.5 .. 1.5); newton and ols with the default "
         f"alpha = 1 / (|X^T X|_F^2 + 1); lasso (ISTA) lr {LR}, l1 {L1}). Error: max over the accepted prompts of |y_hat - y_hat*| / (1 + |y_hat*|) against "
         "iclkit.algorithms; certificate: the largest per-prompt certificate (|transformer - program|); refused: prompts "
         "predict refused, by name; stored ×1: stored parameters over those of one step of the same looped program "
         "(gd's one-step row is the paper's per-example construction; its looped program at one step is the ×1 "
         "reference for gd's k-step rows); to OLS: max |newton - OLS| / (1 + |OLS|), the iteration's own distance.", "",
         "| algorithm | k | dtype | layers (stored) | stored parameters | stored ×1 | error | target | certificate | "
         "refused | to OLS | build s | run s |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
print("\n".join(lines), flush=True)
X, y, xq = sample_problems(d, n, args.trials, seed=0)
ols = np.array([xq[b] @ A.ols(X[b], y[b]) for b in range(len(X))])


def row(name: str, k, dtype: str, build, closed, one_step_params: int | None) -> int:
    t0 = time.perf_counter()
    try:
        c = build(dtype)
    except ValueError as e:  # a size the dtype cannot hold: refused at build
        line = f"| {name} | {k} | {dtype} | refused at build: {str(e).split(' (')[0]} ||||||||||"
        print(line, flush=True)
        lines.append(line)
        return 0
    t1 = time.perf_counter()
    values, reasons = c.predict_each(X, y, xq)
    cert = c.certify(X, y, xq)
    t2 = time.perf_counter()
    exact = np.array([xq[b] @ closed(X[b], y[b]) for b in range(len(X))])
    ok = ~np.isnan(values)
    err = float(np.max(np.abs(values - exact)[ok] / (1 + np.abs(exact[ok])))) if ok.any() else float("nan")
    params = c.model.num_parameters()
    ratio = f"{params / one_step_params:.2f}" if one_step_params else "1"
    to_ols = f"{np.max(np.abs(exact - ols) / (1 + np.abs(ols))):.1e}" if name == "newton" else "-"
    line = (f"| {name} | {k} | {dtype} | {c.num_layers} ({c.model.cfg.stored_layers}) | {params:,} | {ratio} | "
            f"{err:.1e} | {ACCURACY[dtype]:.0e} | {np.max(cert[ok]) if ok.any() else float('nan'):.1e} | "
            f"{int((~ok).sum())} | {to_ols} | {t1 - t0:.1f} | {t2 - t1:.1f} |")
    print(line, flush=True)
    lines.append(line)
    return params


for dtype in args.dtypes:
    ks = (1, 2, 4, 8) if dtype == "float64" else (1, 4)
    looped_one = gd_steps(d, n, lr=LR, lam=LAM, w0=None, steps=1, x_norm=None, y_bound=None, w_bound=None,
                          dtype=dtype, mode="fused", levels=None).model.num_parameters()
    for k in ks:
        row("gd", k, dtype, lambda dt, k=k: C.gd(d, n, lr=LR, lam=LAM, steps=k, dtype=dt),
            lambda X, y, k=k: A.gd(X, y, lr=LR, lam=LAM, steps=k), None if k == 1 else looped_one)
    one = None
    for k in ks:
        p = row("pgd", k, dtype, lambda dt, k=k: C.pgd(d, n, lr=LR, P=P, steps=k, dtype=dt),
                lambda X, y, k=k: A.pgd(X, y, lr=LR, P=P, steps=k), one)
        one = one or p
    one = None
    for k in (range(1, 7) if dtype == "float64" else (1, 2)):
        p = row("newton", k, dtype, lambda dt, k=k: C.newton(d, n, steps=k, dtype=dt),
                lambda X, y, k=k: A.newton(X, y, steps=k), one)
        one = one or p
    one = None
    for k in ((1, 5, 20) if dtype == "float64" else (1, 5)):
        p = row("lasso", k, dtype, lambda dt, k=k: C.lasso(d, n, lr=LR, l1=L1, steps=k, dtype=dt),
                lambda X, y, k=k: A.lasso(X, y, lr=LR, l1=L1, steps=k), one)
        one = one or p
    row("ols", DEFAULT_OLS_STEPS, dtype, lambda dt: C.ols(d, n, dtype=dt), lambda X, y: A.ols(X, y), None)
emit(lines, args.out)
