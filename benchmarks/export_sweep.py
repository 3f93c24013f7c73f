"""Ridge exported to stock GPT-2 over the paper's lam grid and the largest sizes, float64:
the largest error relative to 1 + |y_hat| against iclkit.algorithms.ridge, in transformers,
on 16 prompts x, w ~ N(0, I) (seed 3). Prints a markdown table; ``--out FILE`` also writes it
(docs/export.md links docs/tables/export-sweep.md). Needs the [export] extra."""

import argparse
import time

import numpy as np
import torch

from iclkit import constructions as C
from iclkit.export import to_hf_gpt2
from iclkit.verify.numeric import closed_form, sample_problems
from tables import emit  # benchmarks/tables.py, beside this script

parser = argparse.ArgumentParser()
parser.add_argument("--prompts", type=int, default=16)
parser.add_argument("--out", default=None)
args = parser.parse_args()

CASES = [(2, 40, lam, "fused") for lam in (0.01, 0.1, 1.0, 4.0)] + [
    (8, 40, 0.1, "fused"), (8, 40, 0.01, "fused"), (8, 10, 0.01, "faithful"), (4, 40, 0.1, "faithful"),
    (8, 40, 0.1, "faithful")]
lines = [f"Made by `python benchmarks/export_sweep.py` (float64, {args.prompts} prompts per row, x, w ~ N(0, I), "
         "seed 3). Error: max |y_hat - y_hat*| / (1 + |y_hat*|), transformers against iclkit.algorithms.ridge.", "",
         "| d | n | lam | mode | GPT-2 blocks | n_embd | error | export s |", "|---|---|---|---|---|---|---|---|"]
print("\n".join(lines), flush=True)
for d, n, lam, mode in CASES:
    start = time.perf_counter()
    c = C.ridge(d, n, lam=lam, mode=mode)
    model, W_E = to_hf_gpt2(c)
    seconds = time.perf_counter() - start
    X, y, xq = sample_problems(d, n, args.prompts, seed=3)
    exact = closed_form(c, X, y, xq)
    with torch.no_grad():
        yhat = model(inputs_embeds=c.compiled.tokens(c.inputs(X, y, xq)) @ W_E).logits[:, -1, 0].numpy()
    error = float(np.max(np.abs(yhat - exact) / (1 + np.abs(exact))))
    line = f"| {d} | {n} | {lam} | {mode} | {model.config.n_layer} | {model.config.n_embd} | {error:.1e} | {seconds:.0f} |"
    print(line, flush=True)
    lines.append(line)
emit(lines, args.out)
