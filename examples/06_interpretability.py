"""A constructed in-context learner inside TransformerLens, read and ablated against its labels.

Exports stacked ridge regression (Theorem 2 over 6 examples: a Sherman–Morrison update of
A^-1 and w per example) as a stock GPT-2, boots it as a TransformerLens bridge, reads w and
A^-1 from the cached residual stream through labels.json after every applied layer and
compares them with iclkit's own trace, then zero-ablates the head that carries w to the
query column and shows the prediction break, and which slots change. Needs the [export] extra."""

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from iclkit import algorithms, constructions
from iclkit.export import to_transformer_lens
from iclkit.verify.numeric import sample_problems

d, n, lam = 3, 6, 0.1
c = constructions.ridge(d, n, lam=lam)
X, y, xq = sample_problems(d, n, 1, seed=0)
tokens = c.compiled.tokens(c.inputs(X, y, xq))

with tempfile.TemporaryDirectory() as out:
    bridge, W_E = to_transformer_lens(c, out)
    labels = json.loads((Path(out) / "labels.json").read_text())
embeds = tokens @ W_E
with torch.no_grad():
    logits, cache = bridge.run_with_cache(embeds)
exact = float(xq[0] @ algorithms.ridge(X[0], y[0], lam=lam))
print(f"TransformerLens {logits[0, -1, 0].item():.12f}   closed form {exact:.12f}")
print(f"{len(labels['layers'])} GPT-2 blocks: {c.num_layers} applied layers and "
      f"{sum(layer['role'].startswith('export sweep') for layer in labels['layers'])} sweeps of the division pads")

# w and A^-1 through the labels: their residual coordinates, every column, after every applied layer
slots = {s["slot"]: slice(s["start"], s["start"] + s["size"]) for s in labels["residual"]}
trace = c.trace(X[0], y[0], xq[0])
worst = {}
for layer in labels["layers"]:
    if layer["role"].startswith("applied layer"):
        i = int(layer["role"].split()[-1])
        resid = cache[f"blocks.{layer['layer']}.hook_resid_post"][0]
        for name in ("w", "A_inv"):
            gap = np.abs(resid[:, slots[name]].numpy() - trace[i + 1][name].reshape(resid.shape[0], -1)).max()
            worst[name] = max(worst.get(name, 0.0), float(gap))
print(f"read through labels.json after all {c.num_layers} applied layers: max gap to iclkit's trace "
      f"w {worst['w']:.1e}, A_inv {worst['A_inv']:.1e}")
assert max(worst.values()) <= 1e-9
assert abs(logits[0, -1, 0].item() - exact) <= 1e-8 * (1 + abs(exact))

# ablate the head that carries w to the next column: the last update's, from the last example's
# y column to the query column
block, head = next((layer["layer"], h["head"]) for layer in reversed(labels["layers"]) for h in layer["heads"]
                   if h["reads"] == "column t-1" and "w" in h["writes"])


def ablate(z, hook):
    z[..., head, :] = 0.0
    return z


with torch.no_grad(), bridge.hooks(fwd_hooks=[(f"blocks.{block}.attn.hook_z", ablate)]):
    broken, broken_cache = bridge.run_with_cache(embeds)
query = -1
changed = [name for name, rows in slots.items()
           if torch.any(torch.abs(broken_cache[f"blocks.{block}.hook_resid_post"][0, query, rows]
                                  - cache[f"blocks.{block}.hook_resid_post"][0, query, rows]) > 1e-9)]
print(f"ablating block {block} head {head} (reads column t-1, writes {labels['layers'][block]['heads'][head]['writes']}): "
      f"prediction {broken[0, -1, 0].item():.6f} instead of {exact:.6f}; slots changed at the query column: {changed}")
assert abs(broken[0, -1, 0].item() - exact) > 1e-3
assert "w" in changed
