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


# ---- proofs that read the weights ----------------------------------------------------------
@pytest.mark.parametrize("name, kw", [("sgd", {"lr": 0.1}), ("gd", {"lr": 0.1}), ("ridge", {"lam": 0.1})])
def test_attention_is_proven_from_the_weights_and_every_query_or_key_mutant_dies(name, kw):
    """Each head's column selection is read from W_Q, W_K and the positional table; zeroing the
    query or the key of any writing positional head, or halving its query (the logit gap halves:
    the off-target mass rises from 1e-20 to about 1e-10), fails the proof at that layer."""
    import torch

    from iclkit import constructions as C
    from iclkit.verify.weights import WeightProofError, prove_weights, selections

    c = C.REGISTRY[name](2, 2, **kw)
    prove_weights(c.model, c.compiled)
    applied = c.model.cfg.applied_index()
    heads = {(s.layer, s.head): s.shift for s in selections(c.model, c.layout)}
    for stored, layer in enumerate(c.model.layers):
        i = applied.index(stored)
        for h in range(layer.W_Q.shape[0]):
            if heads[(i, h)] is None or not torch.any(layer.W_O[h] != 0):
                continue
            for tensor, change in (("W_Q", 0.0), ("W_K", 0.0), ("W_Q", 0.5)):
                W = getattr(layer, tensor)
                kept = W.data[h].clone()
                with torch.no_grad():
                    W[h] *= change
                with pytest.raises(WeightProofError, match=r"layer \d+"):
                    prove_weights(c.model, c.compiled)
                with torch.no_grad():
                    W[h] = kept
    with torch.no_grad():
        c.model.layers[0].W_out[0, c.layout.rows("pos").start] = 1e-3  # data-dependent logits
    with pytest.raises(WeightProofError, match="writes a positional unit"):
        prove_weights(c.model, c.compiled)


@pytest.mark.parametrize("name, kw, mode", [("sgd", {"lr": 0.1}, "fused"), ("gd", {"lr": 0.1}, "fused"),
                                            ("ridge", {"lam": 0.1}, "fused")])
def test_every_harmful_weight_mutant_dies(name, kw, mode):
    """Scaling any entry of W_V, W_O, W_in, W_out or b_out by 1.5, or giving a hidden unit a
    bias, fails the proof, except a W_V entry of a value dimension no output reads (W_O row 0:
    the model is unchanged). A spread of each tensor's entries, for suite time."""
    import torch

    from iclkit import constructions as C
    from iclkit.verify.weights import WeightProofError, prove_weights

    c = C.REGISTRY[name](2, 2, mode=mode, **kw)
    prove_weights(c.model, c.compiled)
    harmful = 0
    for layer in c.model.layers:
        for W in (layer.W_V, layer.W_O, layer.W_in, layer.W_out, layer.b_out, layer.b_in):
            entries = [tuple(t.tolist()) for t in torch.nonzero(W.data)] if W is not layer.b_in else [(0,)]
            for j in entries[:: max(1, len(entries) // 6)]:
                if W is layer.W_V and not torch.any(layer.W_O[j[0], j[2]] != 0):
                    continue  # feeds no output
                kept = W.data[j].item()
                with torch.no_grad():
                    W[j] = 1.5 * kept if kept else 0.25
                with pytest.raises(WeightProofError):
                    prove_weights(c.model, c.compiled)
                with torch.no_grad():
                    W[j] = kept
                harmful += 1
    for W in (c.model.W_E, c.model.pos, c.model.readout):
        j = tuple(torch.nonzero(W.data)[0].tolist())
        kept = W.data[j].item()
        with torch.no_grad():
            W[j] = 1.5 * kept
        with pytest.raises(WeightProofError):
            prove_weights(c.model, c.compiled)
        with torch.no_grad():
            W[j] = kept
    assert harmful > 30


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
    assert "FAILS layer" in " ".join(capsys.readouterr().out.split())


def test_loop_induction_holds_and_fails_for_a_wrong_block(monkeypatch):
    """The all-n claims (sgd and ridge, fused) hold; a block whose update scales w by 1.001
    more than SGD's shrink must not prove."""
    from iclkit.primitives import Aff, Program
    from iclkit.verify import symbolic

    assert symbolic.prove_sgd_loop(2) and symbolic.prove_ridge_loop(2)
    real = symbolic.sgd_program

    def drifted(*args, **kw):
        p = real(*args, **kw)
        steps = [Aff(op.dst, terms=tuple((s, W * 1.001 if s == "w" else W) for s, W in op.terms), offset=op.offset,
                     bound=op.bound) if isinstance(op, Aff) and op.dst == "w" and op.offset == 2 else op for op in p.steps]
        return Program(p.slots, p.inputs, steps, name=p.name, regions=p.regions)

    monkeypatch.setattr(symbolic, "sgd_program", drifted)
    assert not symbolic.prove_sgd_loop(2)


def test_faithful_ridge_loop_induction_holds_and_fails_for_a_wrong_block(monkeypatch):
    """The faithful (b-form) all-n claim holds for an unsymmetric P and arbitrary stale values
    in the new column; a looped block whose b update adds 1.001 x y must not prove, nor one
    that reads a stale slot (the new column's b before the block writes it)."""
    from iclkit.primitives import Aff, Program
    from iclkit.verify import symbolic

    assert symbolic.prove_ridge_loop(2, "faithful")
    real = symbolic.ridge_program

    def mutated(change):
        def program(*args, **kw):
            p = real(*args, **kw)
            a, b = p.span("carry 2", "sherman-morrison 3")  # the looped block
            return Program(p.slots, p.inputs, p.steps[:a] + [change(op) for op in p.steps[a:b]] + p.steps[b:],
                           name=p.name, regions=p.regions)
        return program

    for change in (lambda op: Aff("b", terms=(("b_prev", 1.0), ("xy", 1.001)), bound=op.bound) if getattr(op, "dst", None) == "b" else op,
                   lambda op: Aff("b", terms=(("b_prev", 1.0), ("xy", 1.0), ("b", 1e-3)), bound=op.bound)
                   if getattr(op, "dst", None) == "b" else op):
        monkeypatch.setattr(symbolic, "ridge_program", mutated(change))
        assert not symbolic.prove_ridge_loop(2, "faithful")
