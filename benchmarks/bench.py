"""The interpretability benchmark at its default grid: build every case (its circuit checked by
resample ablation) and run every baseline on it, as `iclkit bench build` and `iclkit bench
run` do. Prints both markdown tables; ``--out-cases FILE`` and ``--out FILE`` also write them
(docs/benchmark.md includes docs/tables/), and ``--out-summary FILE`` the README's
summary. Needs the [export] extra unless
``--no-export``."""

import argparse
import tempfile
import time

from tables import emit  # benchmarks/tables.py, beside this script

from iclkit.bench import suite

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", default=None, help="where to build the cases (default: a temporary directory)")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--out-cases", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--out-summary", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        where = args.dir or scratch
        start = time.perf_counter()
        checks = suite.build(where, export=not args.no_export, progress=lambda name: print("building", name, flush=True))
        built = time.perf_counter() - start
        cases = [f"Made by `python benchmarks/bench.py` ({len(checks)} cases, built in {built:.0f} s with their "
                 "GPT-2 exports and these checks). Resample ablation on each case's 16 held-out prompts against 16 "
                 "corrupted ones: smallest break, the least that resampling one circuit edge alone moves y_hat "
                 "(max over prompts); largest deviation, what resampling every other edge at once moves it; "
                 "both against the closed form, beside the certified bound (that deviation is rounding, and its "
                 "last digits vary between runs).", "", *suite.check_table(checks)]
        print("\n".join(cases), flush=True)
        start = time.perf_counter()
        rows = suite.run_all(where, progress=lambda name: print("running", name, flush=True))
        ran = time.perf_counter() - start
    results = [f"Made by `python benchmarks/bench.py` (every baseline on every case, {ran:.0f} s in all on 2 cores). "
               "AUC: ROC area of the method's scores against the truth at its level (edges, nodes, or "
               "variable x layer); TPR at FPR 0.1: the most true positives found with at most a tenth of the "
               "negatives; true / scored: positives / candidates.", "", *suite.table(rows)]
    print("\n".join(results), flush=True)
    brief = [f"Made by `python benchmarks/bench.py` (the ROC AUC of each baseline against each case's truth; the "
             "range over an algorithm's cases: fused at (d, n) = (2, 2) and (3, 3), faithful at (2, 2); "
             "docs/benchmark.md has every case).", "", *suite.summary(rows)]
    print("\n".join(brief), flush=True)
    emit(cases, args.out_cases)
    emit(results, args.out)
    emit(brief, args.out_summary)
