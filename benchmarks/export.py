"""Exported constructions in stock Hugging Face GPT-2 and TransformerLens, float64, against
iclkit.algorithms on x, w ~ N(0, I): the largest error relative to 1 + |y_hat| in iclkit's own
module, in transformers (reloaded from the saved directory) and in the TransformerLens bridge,
beside the construction's a-priori bound (the exported model has no run-time guard), and the
same directory run in float32. Prints a markdown table; ``--out FILE`` also
writes it (the README includes docs/tables/). Needs the [export] extra."""

import argparse
import tempfile

import numpy as np
import torch
from transformers import GPT2LMHeadModel

from iclkit import constructions as C
from iclkit.export import to_transformer_lens
from iclkit.verify.numeric import closed_form, sample_problems
from tables import emit  # benchmarks/tables.py, beside this script

parser = argparse.ArgumentParser()
parser.add_argument("--prompts", type=int, default=16)
parser.add_argument("--out", default=None)
args = parser.parse_args()

CASES = [("sgd", 4, 10, {"lr": 0.1, "lam": 0.1}), ("sgd", 4, 10, {"lr": 0.01, "lam": 0.1}),
         ("gd", 4, 10, {"lr": 0.1, "lam": 0.1}), ("ridge", 4, 10, {"lam": 0.1}), ("ridge", 3, 6, {"lam": 0.1}),
         ("ridge", 4, 10, {"lam": 0.01}), ("ridge", 2, 40, {"lam": 0.1})]
lines = [f"Made by `python benchmarks/export.py` (fused and faithful, {args.prompts} prompts per row, "
         "x, w ~ N(0, I), seed 0). Errors: max |y_hat - y_hat*| / (1 + |y_hat*|) against iclkit.algorithms; "
         "transformers: GPT2LMHeadModel.from_pretrained on the saved directory (float64; float32: the same "
         "directory loaded with torch_dtype=torch.float32); TransformerLens: TransformerBridge.boot_transformers "
         "on it (float64). Layers: GPT-2 blocks (ridge: the applied layers and two export sweeps per division).", "",
         "| construction | d | n | mode | layers | n_embd | iclkit | transformers | TransformerLens | transformers float32 "
         "| a-priori bound (iclkit model) |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
print("\n".join(lines), flush=True)
for name, d, n, kw in CASES:
    for mode in ("fused", "faithful"):
        c = C.REGISTRY[name](d, n, mode=mode, **kw)
        label = f"{name}({', '.join(f'{k} {v}' for k, v in kw.items())})"
        with tempfile.TemporaryDirectory() as out:
            bridge, W_E = to_transformer_lens(c, out)
            hf = GPT2LMHeadModel.from_pretrained(out, torch_dtype=torch.float64).eval()
            hf32 = GPT2LMHeadModel.from_pretrained(out, torch_dtype=torch.float32).eval()
        X, y, xq = sample_problems(d, n, args.prompts, seed=0)
        exact = closed_form(c, X, y, xq)
        embeds = c.compiled.tokens(c.inputs(X, y, xq)) @ W_E
        with torch.no_grad():
            got = {"iclkit": c.predict(X, y, xq), "transformers": hf(inputs_embeds=embeds).logits[:, -1, 0].numpy(),
                   "lens": bridge(embeds)[:, -1, 0].numpy(),
                   "float32": hf32(inputs_embeds=embeds.float()).logits[:, -1, 0].double().numpy()}
        rel = {k: float(np.max(np.abs(v - exact) / (1 + np.abs(exact)))) for k, v in got.items()}
        line = (f"| {label} | {d} | {n} | {mode} | {hf.config.n_layer} | {hf.config.n_embd} | {rel['iclkit']:.1e} | "
                f"{rel['transformers']:.1e} | {rel['lens']:.1e} | {rel['float32']:.1e} | {c.a_priori_bound:.1e} |")
        print(line, flush=True)
        lines.append(line)
emit(lines, args.out)
