"""Symbolic proofs and the property suites (small budget here; `iclkit verify --property` runs more)."""

import pytest
import torch
from hypothesis import settings

from iclkit.verify import properties, symbolic


def test_theorems_prove_and_the_paper_sign_is_caught():
    assert symbolic.prove_sgd(2, 1, "faithful")
    assert symbolic.prove_ridge(2, 1, "faithful")
    assert symbolic.prove_sgd(2, 2, "fused") and symbolic.prove_ridge(1, 2, "fused")
    assert not symbolic.prove_sgd(2, 1, "faithful", mistake=True)


@pytest.mark.parametrize("name, fn", [(name, fn) for name, fn in symbolic.claims(2)], ids=lambda x: x if isinstance(x, str) else "")
def test_every_claim_proves(name, fn):
    assert fn()[0], name


def test_compiled_layer_check_catches_a_wrong_weight():
    from iclkit.primitives import Program, compile_program, mov

    compiled = compile_program(Program({"a": (2,), "z": (2,)}, {"a": 1.0}, [mov("z", "a", 1)]), max_len=4)
    assert symbolic.attention_layer_matches(compiled, 4)
    with torch.no_grad():
        compiled.model.layers[0].W_O[0] *= 1.5  # a wrong output scale in the moving head
    assert not symbolic.attention_layer_matches(compiled, 4)


@pytest.mark.parametrize("prop", properties.PROPERTIES, ids=lambda p: p.__name__)
def test_property(prop):
    settings(max_examples=8, deadline=None, derandomize=True)(prop)()


# ---- attention proven from the weights -------------------------------------------------------
@pytest.mark.parametrize("name, kw", [("sgd", {"lr": 0.1}), ("gd", {"lr": 0.1}), ("ridge", {"lam": 0.1})])
def test_attention_is_proven_from_the_weights_and_every_query_or_key_mutant_dies(name, kw):
    """Each head's column selection is read from W_Q, W_K and the positional table; zeroing the
    query or the key of any positional head, or halving its query (the logit gap halves: the
    off-target mass rises from 1e-20 to about 1e-10), fails the proof at that layer and head."""
    import torch

    from iclkit import constructions as C
    from iclkit.verify.weights import WeightProofError, prove_attention

    c = C.REGISTRY[name](2, 2, **kw)
    expected = [list(c.compiled.layer_spec(i).heads) for i in range(len(c.compiled.schedule))]
    prove_attention(c.model, c.layout, expected)
    applied = c.model.cfg.applied_index()
    for stored, layer in enumerate(c.model.layers):
        i = applied.index(stored)
        for h, shift in enumerate(expected[i]):
            if shift is None:
                continue
            for tensor, change in (("W_Q", 0.0), ("W_K", 0.0), ("W_Q", 0.5)):
                W = getattr(layer, tensor)
                kept = W.data[h].clone()
                with torch.no_grad():
                    W[h] *= change
                with pytest.raises(WeightProofError, match=rf"layer \d+ head {h}"):
                    prove_attention(c.model, c.layout, expected)
                with torch.no_grad():
                    W[h] = kept
    with torch.no_grad():
        c.model.layers[0].W_out[0, c.layout.rows("pos").start] = 1e-3  # data-dependent logits
    with pytest.raises(WeightProofError, match="writes a positional unit"):
        prove_attention(c.model, c.layout, expected)


@pytest.mark.parametrize("name, kw, mode", [("sgd", {"lr": 0.1}, "fused"), ("gd", {"lr": 0.1}, "fused"),
                                            ("ridge", {"lam": 0.1}, "faithful")])
def test_every_harmful_value_or_output_weight_mutant_dies(name, kw, mode):
    """W_V W_O, per layer and read pattern, must equal the program's linear map, overwrite,
    balance and pad mirroring: scaling any entry of W_V or W_O by 1.5 fails the proof, except
    an entry of a value dimension that no output reads (W_O row 0: the model is unchanged)."""
    import torch

    from iclkit import constructions as C
    from iclkit.verify.weights import WeightProofError, prove_attention, prove_attention_maps

    c = C.REGISTRY[name](2, 2, mode=mode, **kw)
    expected = [list(c.compiled.layer_spec(i).heads) for i in range(len(c.compiled.schedule))]
    found = prove_attention(c.model, c.layout, expected)
    proof = lambda: prove_attention_maps(c.model, c.compiled, found)  # noqa: E731
    proof()
    harmful = 0
    for layer in c.model.layers:
        for W in (layer.W_V, layer.W_O):
            entries = [tuple(t.tolist()) for t in torch.nonzero(W.data)]
            for j in entries[:: max(1, len(entries) // 8)]:  # a spread of each tensor's entries (suite time)
                h, v = j[0], (j[2] if W is layer.W_V else j[1])
                if not torch.any(layer.W_O[h, v] != 0):
                    continue  # feeds no output
                kept = W.data[j].item()
                with torch.no_grad():
                    W[j] = 1.5 * kept
                with pytest.raises(WeightProofError):
                    proof()
                with torch.no_grad():
                    W[j] = kept
                harmful += 1
    assert harmful > 20


def test_prove_file_exits_1_on_a_weakened_query(tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from iclkit.cli import main

    path, bad = tmp_path / "m.safetensors", tmp_path / "bad.safetensors"
    assert main(["build", "sgd", "--d", "2", "--n", "2", "--out", str(path)]) == 0
    assert main(["prove", str(path)]) == 0
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.endswith("W_Q"))
    tensors[key] = tensors[key] * 0.5
    save_file(tensors, str(bad), metadata=meta)
    assert main(["prove", str(bad)]) == 1
    assert "FAILS  attention, from the weights: layer" in capsys.readouterr().out
