from fractions import Fraction

import numpy as np
import pytest
import torch

from iclkit.transformer import Transformer, TransformerConfig
from iclkit.transformer.model import compensated_mean


def random_model(dtype="float64", seed=0):
    torch.manual_seed(seed)
    cfg = TransformerConfig(token_dim=3, width=8, num_layers=2, num_heads=2, head_dim=4, value_dim=4,
                            mlp_width=16, max_len=10, ln_eps=1e-5, ln_affine=True, dtype=dtype)
    model = Transformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = random_model()
    model.save(tmp_path / "m.safetensors", {"note": "hello"})
    loaded, meta = Transformer.load(tmp_path / "m.safetensors")
    assert meta == {"note": "hello"}
    for (na, a), (nb, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert na == nb and torch.equal(a, b)
    tokens = torch.randn(2, 7, 3, dtype=torch.float64)
    assert torch.equal(model(tokens), loaded(tokens))


def test_causal_outputs_ignore_later_tokens():
    model = random_model()
    a = torch.randn(1, 6, 3, dtype=torch.float64)
    b = a.clone()
    b[0, 4:] = torch.randn(2, 3, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(model(a)[0, :4], model(b)[0, :4])
        assert not torch.equal(model(a)[0, 4:], model(b)[0, 4:])


def test_states_and_float32():
    model = random_model("float32")
    out, states = model(torch.randn(3, 5, 3), return_states=True)
    assert out.shape == (3, 5) and out.dtype == torch.float32
    assert len(states) == 3 and all(s.shape == (3, 5, 8) for s in states)


def test_bad_tokens_are_refused():
    model = random_model()
    with pytest.raises(ValueError, match="tokens must have shape"):
        model(torch.randn(2, 5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="exceeds the model's max_len"):
        model(torch.randn(1, 11, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="dtype"):
        TransformerConfig(1, 1, 1, 1, 1, 1, 1, 1, dtype="float16")


def test_compensated_mean_survives_cancelling_pads():
    # +P and -P among small numbers: a plain float sum loses u*P; the compensated one does not.
    P = 2.0**40
    rng = np.random.default_rng(0)
    rest = rng.standard_normal(61)
    h = np.concatenate([[P], rest[:30], [-P], rest[30:]])
    exact = float(sum(Fraction(v) for v in h) / len(h))
    got = compensated_mean(torch.tensor(h)[None]).item()
    assert abs(got - exact) <= 4 * 2.0**-53 * abs(exact)


def test_gpt_options_normalise_the_attention_input_and_the_readout():
    """attn_ln and final_ln: attention and readout see LN(h), so h -> 3h + 5 changes neither."""
    cfg = TransformerConfig(token_dim=3, width=8, num_layers=1, num_heads=2, head_dim=4, value_dim=4,
                            mlp_width=8, max_len=6, attn_ln=True, final_ln=True, exact_mean=False)
    torch.manual_seed(0)
    model = Transformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    layer, h = model.layers[0], torch.randn(2, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(layer.attention(3 * h + 5), layer.attention(h), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.final_ln(3 * h + 5) @ model.readout, model.final_ln(h) @ model.readout)
    plain = Transformer(TransformerConfig(**{**cfg.__dict__, "attn_ln": False}))
    plain.load_state_dict(model.state_dict(), strict=False)
    assert not torch.allclose(plain.layers[0].attention(3 * h + 5), plain.layers[0].attention(h))


def test_config_counts_the_parameters_a_model_holds():
    """TransformerConfig.num_parameters (used to refuse models that would not fit in memory
    before allocating them) equals the allocated model's count, looped, pre-LN and affine."""
    from dataclasses import replace

    from iclkit.transformer import Transformer, TransformerConfig

    base = TransformerConfig(token_dim=3, width=7, num_layers=5, num_heads=2, head_dim=3, value_dim=4, mlp_width=11,
                             max_len=6)
    for cfg in (base, replace(base, loop=(1, 2, 2)), replace(base, ln_affine=True, attn_ln=True, final_ln=True)):
        assert cfg.num_parameters() == Transformer(cfg).num_parameters()


def test_a_construction_too_large_for_memory_is_refused_before_allocating(monkeypatch):
    """ridge d = 12, n = 2 holds 19,877,831 parameters (about 0.22 GiB to build): with 0.2 GiB
    available it passes the schedule's lower bound (13,204,800, 0.15 GiB) and is refused by its
    exact count; with 0.1 GB, by the lower bound, before any weight is planned. Neither allocates a
    model (building one here would fail the test)."""
    from iclkit import constructions as C
    from iclkit.primitives import compile as compile_module

    def no_allocation(cfg):
        raise AssertionError("a model was allocated")

    monkeypatch.setattr(compile_module, "Transformer", no_allocation)
    monkeypatch.setattr(compile_module, "available_memory", lambda: 0.2 * 2**30)
    with pytest.raises(ValueError, match=r"would hold 19,877,831 parameters in float64: building it takes about 0.2 GB"):
        C.ridge(12, 2, lam=0.1)
    monkeypatch.setattr(compile_module, "available_memory", lambda: 0.1 * 2**30)
    with pytest.raises(ValueError, match=r"would hold at least 13,204,800 parameters in float64: building it takes at "
                                         r"least 0.1 GB and 0.1 GB is available"):
        C.ridge(12, 2, lam=0.1)