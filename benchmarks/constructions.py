"""Construction accuracy against iclkit.algorithms on x, w ~ N(0, I): error vs d, n, dtype,
with build and run times. Prints a markdown table (the README's)."""

import argparse

from iclkit.verify.numeric import check

parser = argparse.ArgumentParser()
parser.add_argument("--d", nargs="+", type=int, default=[1, 2, 4, 8, 16])
parser.add_argument("--n", nargs="+", type=int, default=[1, 10, 40])
parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
parser.add_argument("--trials", type=int, default=64)
parser.add_argument("--max-params", type=float, default=3e8, help="skip models larger than this")
args = parser.parse_args()

print("| construction | dtype | d | n | layers | width | parameters | max rel. error | target | certified bound | build s | run s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for name in ("sgd", "gd", "ridge"):
    for dtype in args.dtypes:
        for d in args.d:
            for n in args.n:
                if name == "ridge" and d >= 16 and n > 10:
                    print(f"| {name} | {dtype} | {d} | {n} | skipped: over {args.max_params:.0e} parameters |||||||||")
                    continue
                r = check(name, d, n, dtype=dtype, trials=args.trials)
                flag = "" if r.meets_target else " (misses)"
                print(f"| {name} | {dtype} | {d} | {n} | {r.layers} | {r.width} | {r.parameters:,} | {r.max_relative:.1e}{flag} "
                      f"| {r.target:.0e} | {r.bound:.1e} | {r.build_s:.1f} | {r.run_s:.1f} |", flush=True)
