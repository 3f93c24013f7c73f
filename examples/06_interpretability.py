"""A constructed in-context learner inside TransformerLens, read and ablated against its labels.

Exports stacked SGD (Theorem 1 over 6 examples) as a stock GPT-2, boots it as a
TransformerLens bridge, reads the iterate w from the cached residual stream through
labels.json at every layer and compares it with iclkit's own trace, then zero-ablates the
head that carries w forward from two columns back and shows the prediction break. (Ridge
cannot be exported: its division pads, hundreds of times GPT-2's LayerNorm pad, would set
the pre-attention LayerNorm's scale; see iclkit/export.py.) Needs the [export] extra."""

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from iclkit import algorithms, constructions
from iclkit.export import to_transformer_lens
from iclkit.verify.numeric import sample_problems

d, n, lr = 3, 6, 0.1
c = constructions.sgd(d, n, lr=lr)
X, y, xq = sample_problems(d, n, 1, seed=0)
tokens = c.compiled.tokens(c.inputs(X, y, xq))

with tempfile.TemporaryDirectory() as out:
    bridge, W_E = to_transformer_lens(c, out)
    labels = json.loads((Path(out) / "labels.json").read_text())
embeds = tokens @ W_E
with torch.no_grad():
    logits, cache = bridge.run_with_cache(embeds)
exact = float(xq[0] @ algorithms.sgd(X[0], y[0], lr=lr))
print(f"TransformerLens {logits[0, -1, 0].item():.12f}   closed form {exact:.12f}")

# w through the labels: its residual coordinates, at the query column, after every layer
w_rows = next(s for s in labels["residual"] if s["slot"] == "w")
rows = slice(w_rows["start"], w_rows["start"] + w_rows["size"])
trace = c.trace(X[0], y[0], xq[0])
worst = max(float(np.abs(cache[f"blocks.{i}.hook_resid_post"][0, :, rows].numpy() - trace[i + 1]["w"]).max())
            for i in range(c.num_layers))
print(f"w read from the cache through labels.json at all {c.num_layers} layers: max gap to iclkit's trace {worst:.1e}")
assert worst <= 1e-10
assert abs(logits[0, -1, 0].item() - exact) <= 1e-8 * (1 + abs(exact))

# ablate the head that brings w from two columns back in the last block's update
layer, head = next((layer["layer"], h["head"]) for layer in reversed(labels["layers"]) for h in layer["heads"]
                   if h["reads"] == "column t-2" and "w" in h["writes"])


def ablate(z, hook):
    z[..., head, :] = 0.0
    return z


with torch.no_grad():
    broken = bridge.run_with_hooks(embeds, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", ablate)])
print(f"ablating layer {layer} head {head} (reads column t-2, writes {labels['layers'][layer]['heads'][head]['writes']}): "
      f"prediction {broken[0, -1, 0].item():.6f} instead of {exact:.6f}")
assert abs(broken[0, -1, 0].item() - exact) > 1e-3
