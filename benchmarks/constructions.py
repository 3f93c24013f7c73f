"""Construction accuracy against iclkit.algorithms on x, w ~ N(0, I): error, per-prompt
certificate and domain-wide bound vs d, n and dtype, with build and run times (fused mode,
the paper's parameters). Prints a markdown table; ``--out FILE`` also writes it (the README
includes docs/tables/)."""

import argparse

from iclkit.verify.numeric import check
from tables import emit  # benchmarks/tables.py, beside this script

parser = argparse.ArgumentParser()
parser.add_argument("--d", nargs="+", type=int, default=[2, 8])
parser.add_argument("--n", nargs="+", type=int, default=[1, 10, 40])
parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
parser.add_argument("--trials", type=int, default=32)
parser.add_argument("--out", default=None)
args = parser.parse_args()

lines = [f"Made by `python benchmarks/constructions.py` (fused; sgd lr 0.01 lam 0.1, gd lr 0.01 lam 0.1, ridge lam 0.1; "
         f"{args.trials} prompts per row, seed 0). Relative error: max |y_hat - y_hat*| / (1 + |y_hat*|) against "
         "iclkit.algorithms; certificate: the largest per-prompt certificate; domain-wide bound: (run-time) where the a-priori bound cannot promise the target and predict certifies each prediction to 1e-8 (1 + |y_hat|) (1e-3 in float32) as it runs, refusing one above it; status as in `iclkit verify`; run s includes predict's run-time certificates.", "",
         "| construction | dtype | d | n | layers | parameters | max rel. error | target | largest error | "
         "largest certificate | domain-wide bound | status | build s | run s |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
print("\n".join(lines), flush=True)
for name in ("sgd", "gd", "ridge"):
    for dtype in args.dtypes:
        for d in args.d:
            for n in args.n:
                try:
                    r = check(name, d, n, dtype=dtype, trials=args.trials)
                except ValueError as e:  # a construction the dtype cannot size is refused at build
                    line = f"| {name} | {dtype} | {d} | {n} | refused: {str(e).split(' (')[0]} |||||||||"
                    print(line, flush=True)
                    lines.append(line)
                    continue
                line = (f"| {name} | {dtype} | {d} | {n} | {r.layers} | {r.parameters:,} | {r.max_relative:.1e} | "
                        f"{r.target:.0e} | {r.max_error:.1e} | {r.certificate:.1e} | {r.bound:.1e}{' (run-time)' if r.runtime_guard else ''} | "
                        f"{r.status}{': ' + r.refused if r.refused else ''} | "
                        f"{r.build_s:.1f} | {r.run_s:.1f} |")
                print(line, flush=True)
                lines.append(line)
emit(lines, args.out)
