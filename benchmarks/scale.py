"""Looped constructions at scale: ridge (fused) at n = 40, float64, for growing d. Each size
runs in its own process so its peak memory (max RSS) is its own. Columns: build time,
applied and stored layers, stored parameters against what the unrolled stack would hold,
peak memory, run time per prompt, and the largest error against iclkit.algorithms.ridge
relative to 1 + |y_hat| (target 1e-8) on x, w ~ N(0, I). Prints a markdown table; ``--out
FILE`` also writes it (the README includes docs/tables/)."""

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

from tables import emit  # benchmarks/tables.py, beside this script


def measure(d: int, n: int, lam: float, prompts: int) -> dict:
    """Build, run and score one size (in this process)."""
    import numpy as np

    from iclkit import constructions as C
    from iclkit.verify.numeric import closed_form, sample_problems

    t = time.perf_counter()
    c = C.ridge(d, n, lam=lam)
    build = time.perf_counter() - t
    X, y, xq = sample_problems(d, n, prompts, seed=0)
    t = time.perf_counter()
    c.check_domain(X, y, xq)  # predict's checks and forward pass, without its run-time certificate:
    with warnings.catch_warnings():  # non-strict, its intermediate checks warn; here they refuse
        warnings.simplefilter("error")
        pred = c.predict(X, y, xq, strict=False)
    run = (time.perf_counter() - t) / prompts
    exact = closed_form(c, X, y, xq)
    cfg = c.model.cfg
    per_layer = sum(p.numel() for p in c.model.layers[0].parameters())
    unrolled = c.model.num_parameters() + (cfg.num_layers - cfg.stored_layers) * per_layer
    return {"build": build, "layers": cfg.num_layers, "stored": cfg.stored_layers, "params": c.model.num_parameters(),
            "unrolled": unrolled, "run": run, "rel": float(np.max(np.abs(pred - exact) / (1 + np.abs(exact)))),
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--d", nargs="+", type=int, default=[8, 16, 20, 32])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--memory-gb", type=float, default=20.0, help="address-space limit per size")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child: measure one d
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.one is not None:
        limit = int(args.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(measure(args.one, args.n, args.lam, args.prompts)))
        sys.exit(0)
    lines = [f"Made by `python benchmarks/scale.py` (ridge, fused, n = {args.n}, lam = {args.lam}, float64, "
             f"{args.prompts} prompts, seed 0; one process per size, address space capped at {args.memory_gb:g} GB). "
             "Stored parameters: each distinct tensor once (the looped block once); unrolled: what a plain stack of "
             "the applied layers holds. Relative error: max |y_hat - y_hat*| / (1 + |y_hat*|) against "
             "iclkit.algorithms.ridge. Run: predict's domain checks and forward pass; its run-time certificate "
             "(ridge d = 8: about 0.6 s per prompt) is not included.", "",
             "| d | build s | layers applied | layers stored | parameters stored | parameters unrolled | "
             "peak memory GB | run s / prompt | max rel. error |",
             "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for d in args.d:
        child = subprocess.run([sys.executable, __file__, "--one", str(d), "--n", str(args.n), "--lam", str(args.lam),
                                "--prompts", str(args.prompts), "--memory-gb", str(args.memory_gb)],
                               capture_output=True, text=True)
        if child.returncode:
            reason = (child.stderr.strip().splitlines() or ["killed"])[-1][:80]
            line = f"| {d} | - | - | - | - | - | > {args.memory_gb:g} (refused: {reason}) | - | - |"
        else:
            r = json.loads(child.stdout.strip().splitlines()[-1])
            line = (f"| {d} | {r['build']:.1f} | {r['layers']} | {r['stored']} | {r['params']:,} | {r['unrolled']:,} | "
                    f"{r['peak_gb']:.2f} | {r['run']:.2f} | {r['rel']:.1e} |")
        print(line, flush=True)
        lines.append(line)
    emit(lines, args.out)
