"""Export to stock Hugging Face GPT-2 and TransformerLens (the [export] extra; skipped without it)."""

import json
import subprocess
import sys

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402

from iclkit import constructions as C  # noqa: E402
from iclkit.export import to_hf_gpt2  # noqa: E402
from iclkit.verify.numeric import closed_form, sample_problems  # noqa: E402

FRESH = """
import sys, numpy as np, torch
from transformers import GPT2LMHeadModel
from safetensors.torch import load_file
model = GPT2LMHeadModel.from_pretrained(sys.argv[1], torch_dtype=torch.float64).eval()
W_E = load_file(sys.argv[1] + "/embed.safetensors")["W_E"]
with torch.no_grad():
    yhat = model(inputs_embeds=torch.from_numpy(np.load(sys.argv[2])) @ W_E).logits[:, -1, 0].numpy()
norms = {type(m).__module__ + "." + type(m).__name__ for n, m in model.named_modules() if "ln" in n.split(".")[-1]}
assert norms == {"torch.nn.modules.normalization.LayerNorm"}, norms
assert "iclkit" not in sys.modules
np.save(sys.argv[3], yhat)
"""


@pytest.mark.parametrize("name, kw, mode", [("sgd", {"lr": 0.1, "lam": 0.1}, "fused"), ("sgd", {"lr": 0.05}, "faithful"),
                                            ("gd", {"lr": 0.1, "lam": 0.1}, "fused")])
def test_a_process_without_iclkit_reproduces_the_closed_form(tmp_path, name, kw, mode):
    """The saved directory alone, in a fresh process that never imports iclkit, with GPT-2's own
    LayerNorm modules: within the 1e-8 (1 + |yhat|) target of iclkit.algorithms."""
    c = C.REGISTRY[name](3, 4, mode=mode, **kw)
    to_hf_gpt2(c, tmp_path / "gpt2")
    X, y, xq = sample_problems(3, 4, 8, seed=4)
    np.save(tmp_path / "tokens.npy", c.compiled.tokens(c.inputs(X, y, xq)).numpy())
    subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "gpt2"), str(tmp_path / "tokens.npy"),
                    str(tmp_path / "yhat.npy")], check=True, capture_output=True, cwd=tmp_path)
    exact = closed_form(c, X, y, xq)
    assert np.max(np.abs(np.load(tmp_path / "yhat.npy") - exact) / (1 + np.abs(exact))) <= 1e-8


def test_ridge_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"div\(g <- u, den\) divides through LayerNorm pads"):
        to_hf_gpt2(C.ridge(2, 2, lam=0.1))


def test_labels_cover_the_residual_and_name_what_each_head_writes(tmp_path):
    """labels.json: the slots tile the residual exactly (then never-written padding up to
    n_embd), and per layer the heads and units are listed with what they read and write; the
    head that brings w from two columns back writes w."""
    c = C.sgd(2, 3, lr=0.1)
    to_hf_gpt2(c, tmp_path)
    labels = json.loads((tmp_path / "labels.json").read_text())
    spans = sorted((s["start"], s["size"]) for s in labels["residual"])
    assert spans[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(spans, spans[1:]))
    assert spans[-1][0] + spans[-1][1] == labels["padding"]["start"] == c.width <= labels["n_embd"]
    assert len(labels["layers"]) == c.num_layers
    movers = [h for layer in labels["layers"] for h in layer["heads"] if h["reads"] == "column t-2" and "w" in h["writes"]]
    assert len(movers) == c.n - 1  # one update read per block after the first
    assert labels["certified_bound"] == c.a_priori_bound  # no run-time guard outside iclkit


def test_transformer_lens_bridge_matches_and_caches_every_residual(tmp_path):
    pytest.importorskip("transformer_lens")
    from iclkit.export import to_transformer_lens

    c = C.sgd(3, 3, lr=0.1)
    bridge, W_E = to_transformer_lens(c, tmp_path)
    X, y, xq = sample_problems(3, 3, 4, seed=6)
    tokens = c.compiled.tokens(c.inputs(X, y, xq))
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(tokens @ W_E)
    exact = closed_form(c, X, y, xq)
    assert np.max(np.abs(logits[:, -1, 0].numpy() - exact) / (1 + np.abs(exact))) <= 1e-8
    trace = c.trace(X[0], y[0], xq[0])  # iclkit's own named states, after every layer
    w = c.layout.rows("w")
    for i in range(c.num_layers):
        resid = cache[f"blocks.{i}.hook_resid_post"][0, :, w].numpy()
        assert np.allclose(resid, trace[i + 1]["w"].reshape(resid.shape), rtol=0, atol=1e-10)
