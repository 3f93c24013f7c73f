"""Wall-clock time of iclkit's workloads with one torch thread (iclkit's default) against one
per core (torch's default), on an idle machine and on one loaded by another job of that many
torch threads (a busy loop of matrix products). Each run is its own process, with the thread
count set through ICLKIT_NUM_THREADS (iclkit/threads.py). Prints a markdown table; ``--out
FILE`` also writes it (the README includes docs/tables/)."""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from tables import emit  # benchmarks/tables.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
CORES = os.cpu_count() or 1
WORKLOADS = {
    "verify": ("`iclkit verify --trials 8`", [sys.executable, "-m", "iclkit.cli", "verify", "--trials", "8"]),
    "train": ("example 05 (trains a learner)", [sys.executable, "examples/05_trained_vs_constructed.py"]),
    "suite": ("the test suite (`pytest -n 2`)", [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider"]),
}
LOAD = (f"import torch\ntorch.set_num_threads({CORES})\na = torch.randn(768, 768)\n"
        "while True:\n    a @ a")


def timed(command: list[str], threads: int) -> float:
    """Seconds one run of `command` takes with `threads` torch threads; a failed run is an error."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["ICLKIT_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with {threads} thread(s):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds


def measure(command: list[str], threads: int, loaded: bool) -> float:
    """One timed run, with the load job running beside it when `loaded`."""
    if not loaded:
        return timed(command, threads)
    load = subprocess.Popen([sys.executable, "-c", LOAD], env={**os.environ, "OMP_NUM_THREADS": str(CORES)})
    try:
        time.sleep(2.0)  # let the load job reach its loop
        return timed(command, threads)
    finally:
        load.kill()
        load.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lines = [f"Made by `python benchmarks/threads.py` ({CORES} cores; loaded: another job runs {CORES} torch "
             f"threads of 768 x 768 matrix products throughout; one run each). The test suite sets one "
             "thread per worker itself, so it is measured with iclkit's default only.", "",
             "| workload | torch threads | idle s | loaded s | loaded / idle | loaded / idle with 1 thread |",
             "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name in args.workloads:
        label, command = WORKLOADS[name]
        settings = [1] if name == "suite" else [1, CORES]
        idle_one = None
        for threads in settings:
            idle = measure(command, threads, loaded=False)
            loaded = measure(command, threads, loaded=True)
            idle_one = idle if threads == 1 else idle_one
            who = "1 (iclkit's default)" if threads == 1 else f"{threads} (torch's default)"
            row = (f"| {label} | {who} | {idle:.0f} | {loaded:.0f} | {loaded / idle:.1f}x | "
                   f"{loaded / idle_one:.1f}x |")
            lines.append(row)
            print(row, flush=True)
    emit(lines, args.out)
