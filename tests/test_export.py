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
for case in sys.argv[1:]:  # each a directory holding gpt2/ and tokens.npy; writes yhat.npy there
    model = GPT2LMHeadModel.from_pretrained(case + "/gpt2", torch_dtype=torch.float64).eval()
    W_E = load_file(case + "/gpt2/embed.safetensors")["W_E"]
    with torch.no_grad():
        yhat = model(inputs_embeds=torch.from_numpy(np.load(case + "/tokens.npy")) @ W_E).logits[:, -1, 0].numpy()
    norms = {type(m).__module__ + "." + type(m).__name__ for n, m in model.named_modules() if "ln" in n.split(".")[-1]}
    assert norms == {"torch.nn.modules.normalization.LayerNorm"}, norms
    np.save(case + "/yhat.npy", yhat)
assert "iclkit" not in sys.modules
"""

CASES = [("sgd", {"lr": 0.1, "lam": 0.1}, "fused"), ("sgd", {"lr": 0.05}, "faithful"), ("gd", {"lr": 0.1, "lam": 0.1}, "fused"),
         ("ridge", {"lam": 0.1}, "faithful"), ("newton", {"steps": 2}, "fused"),
         ("lasso", {"lr": 0.05, "l1": 1.0, "steps": 3}, "faithful")]


def test_a_process_without_iclkit_reproduces_the_closed_form(tmp_path):
    """The saved directories alone, in one fresh process that never imports iclkit, with
    GPT-2's own LayerNorm modules: sgd (both modes), gd, ridge and newton (divisions) and lasso
    (soft thresholds) each within the 1e-8 (1 + |yhat|) target of iclkit.algorithms."""
    X, y, xq = sample_problems(3, 4, 8, seed=4)
    built = []
    for k, (name, kw, mode) in enumerate(CASES):
        c = C.REGISTRY[name](3, 4, mode=mode, **kw)
        to_hf_gpt2(c, tmp_path / str(k) / "gpt2")
        np.save(tmp_path / str(k) / "tokens.npy", c.compiled.tokens(c.inputs(X, y, xq)).numpy())
        built.append(c)
    subprocess.run([sys.executable, "-c", FRESH, *(str(tmp_path / str(k)) for k in range(len(CASES)))],
                   check=True, capture_output=True, cwd=tmp_path)
    for k, c in enumerate(built):
        exact = closed_form(c, X, y, xq)
        error = np.max(np.abs(np.load(tmp_path / str(k) / "yhat.npy") - exact) / (1 + np.abs(exact)))
        assert error <= 1e-8, (CASES[k], error)


def _gpt2_error(c, model, W_E, prompts: int, seed: int) -> float:
    X, y, xq = sample_problems(c.d, c.n, prompts, seed=seed)
    with torch.no_grad():
        yhat = model(inputs_embeds=c.compiled.tokens(c.inputs(X, y, xq)) @ W_E).logits[:, -1, 0].numpy()
    exact = closed_form(c, X, y, xq)
    return float(np.max(np.abs(yhat - exact) / (1 + np.abs(exact))))


def test_ridge_over_a_long_context_keeps_its_pads():
    """40 divisions in a row (ridge, d = 2, n = 40): each swaps the pads out by ``P · one`` read
    through GPT-2's ln_1, which doubles their excess; without the second sweep's re-centring
    the excess reaches 4e-4 P and the prediction misses by 4e-4."""
    c = C.ridge(2, 40, lam=0.1)
    assert _gpt2_error(c, *to_hf_gpt2(c), prompts=4, seed=1) <= 1e-8


def test_ridge_export_sweeps_the_division_pads_itself():
    """Each division's block is followed by the two sweeps, its MLP bias writes the hold pads
    and the first sweep's attention bias removes them; the construction's own removal (in the
    next applied layer) writes nothing to div±, and the sweeps' weights matter: a hold pad
    Q too small to fix ln_1's scale breaks the prediction."""
    from iclkit import export

    c = C.ridge(3, 3, lam=0.1)
    plan = export.blocks(c)
    roles = [b.role for b in plan]
    divisions = [i for i in range(c.num_layers) if export._division(c, i) is not None]
    assert len(plan) == c.num_layers + 2 * len(divisions)
    for i in divisions:
        at = roles.index(("layer", i))
        assert roles[at + 1: at + 3] == [("sweep", i, 1), ("sweep", i, 2)]
        assert plan[at].mlp_hold > 1e3 * c.compiled.ln_pad and plan[at + 1].attn_hold == -plan[at].mlp_hold
        assert plan[at + 3].drop == ("div+", "div-")
    sd, _, _ = export.gpt2_state_dict(c)
    E = export.gpt2_shape(c)[0]
    for g, b in enumerate(plan):
        if b.drop:
            proj = sd[f"transformer.h.{g}.attn.c_proj.weight"]
            assert not proj[:, c.layout.rows("div+")].any() and not proj[:, c.layout.rows("div-")].any()
    assert E >= c.width + 2
    assert _gpt2_error(c, *to_hf_gpt2(c), prompts=8, seed=2) <= 1e-8
    held, export.HOLD_RATIO = export.HOLD_RATIO, 1.0
    try:
        assert _gpt2_error(c, *to_hf_gpt2(c), prompts=8, seed=2) > 1e-6
    finally:
        export.HOLD_RATIO = held


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
    assert labels["padding"]["note"] == "never written"  # no division, no hold pads


def test_ridge_labels_list_every_gpt2_block_with_its_role(tmp_path):
    """One labels entry per GPT-2 block: the applied layers in order, each division's block
    naming its hold pads and followed by its two sweeps; the next applied layer's heads no
    longer claim to write div±."""
    c = C.ridge(2, 2, lam=0.1)
    model, _ = to_hf_gpt2(c, tmp_path)
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert labels["format"] == "iclkit-labels/3" and len(labels["layers"]) == model.config.n_layer
    roles = [layer["role"] for layer in labels["layers"]]
    assert [r for r in roles if r.startswith("applied")] == [f"applied layer {i}" for i in range(c.num_layers)]
    held = [g for g, layer in enumerate(labels["layers"]) if "hold_pads" in layer]
    assert held and all(roles[g + 1].startswith("export sweep 1") and roles[g + 2].startswith("export sweep 2")
                        and not any({"div+", "div-"} & set(h["writes"]) for h in labels["layers"][g + 3]["heads"])
                        for g in held)


@pytest.mark.parametrize("make", [lambda: C.sgd(3, 3, lr=0.1), lambda: C.ridge(3, 3, lam=0.1)], ids=["sgd", "ridge"])
def test_transformer_lens_bridge_matches_and_caches_every_residual(tmp_path, make):
    """Through TransformerLens' bridge: the closed form within 1e-8 (1 + |yhat|), and after every
    applied layer (ridge: the export's sweeps in between) the cached residual holds iclkit's w."""
    pytest.importorskip("transformer_lens")
    from iclkit.export import blocks, to_transformer_lens

    c = make()
    bridge, W_E = to_transformer_lens(c, tmp_path)
    X, y, xq = sample_problems(3, 3, 4, seed=6)
    tokens = c.compiled.tokens(c.inputs(X, y, xq))
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(tokens @ W_E)
    exact = closed_form(c, X, y, xq)
    assert np.max(np.abs(logits[:, -1, 0].numpy() - exact) / (1 + np.abs(exact))) <= 1e-8
    norms = {n: type(m).__module__ + "." + type(m).__name__ for n, m in bridge.named_modules()
             if n.split(".")[-1] in ("ln_1", "ln_2", "ln_final")}  # TransformerLens' wrappers around torch's LayerNorm
    assert set(norms.values()) == {"transformer_lens.model_bridge.generalized_components.normalization.NormalizationBridge"}
    assert len(norms) == 2 * len(blocks(c)) + 1
    trace = c.trace(X[0], y[0], xq[0])  # iclkit's own named states, after every layer
    w = c.layout.rows("w")
    applied = [(g, b.role[1]) for g, b in enumerate(blocks(c)) if b.role[0] == "layer"]
    assert [i for _, i in applied] == list(range(c.num_layers))
    for g, i in applied:
        resid = cache[f"blocks.{g}.hook_resid_post"][0, :, w].numpy()
        assert np.allclose(resid, trace[i + 1]["w"].reshape(resid.shape), rtol=0, atol=1e-10)


def test_cli_export_checks_its_directory_and_refuses_float32(tmp_path, capsys):
    """``iclkit export`` writes the directory, reloads it, and exits 0 only within the 1e-8
    target (ridge, a division, included); a float32 construction is refused in one line, status 2."""
    from iclkit.cli import main

    assert main(["export", "ridge", "--d", "2", "--n", "2", "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "labels.json").exists() and (tmp_path / "r" / "embed.safetensors").exists()
    assert "measured: the export adds no certificate" in " ".join(capsys.readouterr().out.split())
    assert main(["export", "sgd", "--d", "2", "--n", "2", "--dtype", "float32", "--out", str(tmp_path / "s")]) == 2
    assert "export needs a float64 construction" in " ".join(capsys.readouterr().out.split())


def test_an_export_that_would_not_fit_is_refused_before_allocating(monkeypatch):
    """The GPT-2's parameter count is known from its shape (checked exactly against the built
    model); an export needing more memory than is available is refused by name, not attempted."""
    from iclkit import export

    c = C.ridge(2, 3, lam=0.1)
    model, _ = to_hf_gpt2(c)
    E = export.gpt2_shape(c)[0]
    count = export.gpt2_parameters(E, c.model.cfg.mlp_width, model.config.n_layer, c.model.cfg.max_len)
    assert count == sum(p.numel() for p in model.parameters())
    monkeypatch.setattr(export, "available_memory", lambda: 3.0 * 8 * count)  # below the 3.2 copies it takes
    with pytest.raises(ValueError, match=r"makes a GPT-2 of \d+ blocks, n_embd \d+, [\d,]+ parameters: about .* GB"):
        export.gpt2_state_dict(c)


def test_the_sweeps_leave_what_their_analysis_states():
    """In GPT-2's own residual stream: after the hold sweep, div± hold at most the stated
    5e-9 M den_max ((M den / Q)^2 / 2 at Q = 1e4 M den_max); after the clean sweep, div+ and
    div- are both rounding-level (< 1e-16 M den_max; measured 2.6e-24) and the pads are ±P to
    1e-14 (measured 1.8e-15); the pads, div± and the hold pads cancel in pairs exactly. A
    one-sided slip in a sweep shifts the prediction by only ~1e-10 (or, for pad-, grows 1.5x per
    division), under the 1e-8 target, so it is caught here, not by accuracy."""
    from iclkit import export

    c = C.ridge(2, 3, lam=0.1)
    model, W_E = to_hf_gpt2(c)
    X, y, xq = sample_problems(2, 3, 8, seed=7)
    with torch.no_grad():
        states = model(inputs_embeds=c.compiled.tokens(c.inputs(X, y, xq)) @ W_E, output_hidden_states=True).hidden_states
    r, P = c.layout.rows, c.compiled.ln_pad
    checked = 0
    for g, block in enumerate(export.blocks(c)):
        after = states[g + 1]
        if block.mlp_hold:
            scale = block.mlp_hold / export.HOLD_RATIO  # M den_max
        elif block.role[0] == "sweep":
            left = after[..., [r("div+").start, r("div-").start]].abs().max() / scale
            if block.role[2] == 1:
                assert left <= 5e-9
            else:
                assert left <= 1e-16
                assert (after[..., r("pad+").start] - P).abs().max() <= 1e-14 * P
                assert (after[..., r("pad-").start] + P).abs().max() <= 1e-14 * P
                checked += 1
    assert checked == c.n
    # every pair is written by negated weights from one value, so it cancels exactly in every
    # state GPT-2 computes (hidden_states[-1] is after ln_f); a one-sided slip breaks this
    held = [g + 1 for g, block in enumerate(export.blocks(c)) if block.mlp_hold]  # states holding ±Q
    for g, h in enumerate(states[:-1]):
        for a, b in (("pad+", "pad-"), ("div+", "div-")):
            assert torch.equal(h[..., r(a).start], -h[..., r(b).start]), (g, a)
        hold = h[..., c.width:c.width + 2]
        assert torch.equal(hold[..., 0], -hold[..., 1]) and (hold.abs().max() > 0) == (g in held), g


def test_load_export_rebuilds_and_refuses_a_corrupted_weight(tmp_path):
    """load_export rebuilds the construction labels.json names and checks every exported tensor
    bit for bit: the clean directory loads (its construction predicts what the GPT-2 does, to
    the target), one weight off by 1e-7 relative is refused naming its tensor, and a directory
    that is not an export is refused in one line."""
    from safetensors.torch import load_file, save_file

    from iclkit.export import load_export

    c = C.ridge(2, 3, lam=0.1)
    to_hf_gpt2(c, tmp_path / "ok")
    rebuilt, model, W_E = load_export(tmp_path / "ok")
    assert (rebuilt.name, rebuilt.d, rebuilt.n, rebuilt.params["lam"]) == ("ridge", 2, 3, 0.1)
    assert _gpt2_error(rebuilt, model, W_E, prompts=4, seed=8) <= 1e-8
    weights = tmp_path / "ok" / "model.safetensors"
    tensors = load_file(str(weights))
    name = "transformer.h.2.attn.c_attn.weight"
    tensors[name].view(-1)[tensors[name].abs().argmax()] *= 1 + 1e-7
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"tensor {name} differs from the ridge export"):
        load_export(tmp_path / "ok")
    with pytest.raises(ValueError, match="not an iclkit export"):
        load_export(tmp_path)


def test_load_export_rebuilds_the_literature_constructions_from_their_labels(tmp_path):
    """pgd (a matrix parameter) and ols (a closed form other than its program's iteration): the
    labels carry the parameters, load_export rebuilds by name and the reloaded GPT-2 meets the
    closed form on every prompt the construction accepts (the export has no guard: ols refuses
    prompts too ill-conditioned for its Newton steps, and GPT-2 answers them unchecked)."""
    from iclkit.export import load_export

    X, y, xq = sample_problems(2, 3, 16, seed=5)
    for c in (C.pgd(2, 3, lr=0.05, P=np.array([[1.0, 0.2], [0.0, 0.5]]), steps=2), C.ols(2, 3)):
        to_hf_gpt2(c, tmp_path / c.name)
        rebuilt, model, W_E = load_export(tmp_path / c.name)
        assert rebuilt.name == c.name and rebuilt.params.keys() == c.params.keys()
        accepted = ~np.isnan(rebuilt.predict_each(X, y, xq)[0])
        assert accepted.sum() >= 8
        with torch.no_grad():
            yhat = model(inputs_embeds=c.encode(X, y, xq) @ W_E).logits[:, -1, 0].numpy()
        exact = closed_form(c, X, y, xq)
        assert np.all((np.abs(yhat - exact) <= 1e-8 * (1 + np.abs(exact)))[accepted])
