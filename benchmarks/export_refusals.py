"""What the stock GPT-2 export returns where iclkit's predict refuses: at d = 8, n = 40,
float64, fused and faithful, 32 prompts x, w ~ N(0, I) (seed 0) per row. For each
construction and parameter: the prompts predict accepts, the export's largest error relative
to 1 + |y_hat| against iclkit.algorithms on those prompts, and on the refused ones. Prints a
markdown table; ``--out FILE`` also writes it (docs/export.md includes docs/tables/).
Needs the [export] extra."""

import argparse

import numpy as np
import torch

from iclkit import constructions as C
from iclkit.export import to_hf_gpt2
from iclkit.verify.numeric import closed_form, sample_problems
from tables import emit  # benchmarks/tables.py, beside this script

CASES = [("sgd", {"lr": 0.01, "lam": 0.1}), ("sgd", {"lr": 0.1, "lam": 0.1}), ("sgd", {"lr": 0.2, "lam": 0.1}),
         ("gd", {"lr": 0.2, "lam": 0.1}), ("ridge", {"lam": 4.0})]


def relative(pred: np.ndarray, exact: np.ndarray) -> str:
    return f"{np.max(np.abs(pred - exact) / (1 + np.abs(exact))):.1e}" if len(pred) else "-"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lines = [f"Made by `python benchmarks/export_refusals.py` (d = {args.d}, n = {args.n}, float64, "
             f"{args.prompts} prompts x, w ~ N(0, I) per row, seed 0). Accepted: prompts iclkit's predict answers; "
             "error: max |y_hat - y_hat*| / (1 + |y_hat*|) of the exported GPT-2 (transformers) against "
             "iclkit.algorithms, on the accepted and on the refused prompts.", "",
             "| construction | parameters | mode | accepted | error, accepted | error, refused |",
             "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    X, y, xq = sample_problems(args.d, args.n, args.prompts, seed=0)
    for name, params in CASES:
        for mode in ("fused", "faithful"):
            c = C.REGISTRY[name](args.d, args.n, mode=mode, **params)
            _, reasons = c.predict_each(X, y, xq)
            accepted = np.array([r is None for r in reasons])
            model, W_E = to_hf_gpt2(c)
            with torch.no_grad():
                gpt2 = model(inputs_embeds=c.encode(X, y, xq) @ W_E).logits[:, -1, 0].numpy()
            exact = closed_form(c, X, y, xq)
            row = (f"| {name} | {', '.join(f'{k} {v:g}' for k, v in params.items())} | {mode} | "
                   f"{accepted.sum()} of {len(accepted)} | {relative(gpt2[accepted], exact[accepted])} | "
                   f"{relative(gpt2[~accepted], exact[~accepted])} |")
            lines.append(row)
            print(row, flush=True)
    emit(lines, args.out)
