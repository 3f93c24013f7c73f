"""Constructions as stock Hugging Face GPT-2 (and TransformerLens) models, with ground-truth labels.

GPT-2's block differs from the paper's in its LayerNorms: ``ln_1`` before attention, ``ln_f``
before the head, each with a plain mean. They are absorbed in the weights, never replaced:

- every state a LayerNorm sees holds the pads ±P and the balance unit, so its standard
  deviation is the known ``sigma = P sqrt(2/E)`` (E: GPT-2's width) up to a relative
  ``R^2 / (4 P^2)`` (R^2: the other units' squares), and reads are scaled back by sigma;
- every read also subtracts the normalised ``zero`` unit (``-mean / sigma``), so whatever the
  (plain) mean comes to cancels, as in the construction's own MLP reads;
- attention scores are divided by sqrt(head_dim) (GPT-2's default), folded into W_Q;
- the residual is padded with never-written units so that E = n_head * head_dim.

Division layers cannot be exported: their LayerNorm divides by |den| through the units
``div±`` = ±M·den, which the *next* attention removes. At the compiled LayerNorm pad P,
M·den reaches 700 to 2300 P (ridge, d = 3 to 8), so GPT-2's ``ln_1`` before that attention
normalises by a standard deviation set by den, which no fixed weight undoes. Ridge is refused.

``to_hf_gpt2`` needs the ``[export]`` extra (transformers); ``to_transformer_lens`` also
transformer-lens. Contract for the saved directory: ``tokens`` in iclkit's prompt format
(B, 2n+2, d+1), ``yhat = model(inputs_embeds=tokens @ W_E).logits[:, -1, 0]`` with W_E from
``embed.safetensors``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from iclkit.constructions.base import Construction
from iclkit.primitives.ops import Div, Mul


def _refuse_unexportable(c: Construction) -> None:
    if c.model.cfg.dtype != "float64":
        raise ValueError("export needs a float64 construction (the absorbed LayerNorm scales are sized for it)")
    divs = [op for op in c.compiled.program.ops if isinstance(op, Div)]
    if divs:
        comp = c.compiled
        ratio = max(comp.mechanisms[id(op)].scale * comp.read_bounds[id(op)][op.den] for op in divs) / comp.ln_pad
        raise ValueError(f"{c.name} cannot be exported to GPT-2: {divs[0].describe()} divides through LayerNorm pads "
                         f"±M·den that the next attention removes; M·den reaches {ratio:.0f} times the LayerNorm pad "
                         "P, so GPT-2's ln_1 before that attention normalises by a standard deviation set by den, "
                         "which no fixed weight undoes; only constructions without div (sgd, gd) export")


def gpt2_shape(c: Construction) -> tuple[int, int, int]:
    """(n_embd, n_head, head_dim): heads as the construction's, head_dim >= its query and value
    widths, and n_embd = n_head * head_dim >= its residual width."""
    cfg = c.model.cfg
    heads = cfg.num_heads
    head_dim = max(cfg.head_dim, cfg.value_dim, math.ceil(cfg.width / heads))
    return heads * head_dim, heads, head_dim


def _through_layer_norm(W: torch.Tensor, sigma: float, zero: int, E: int) -> torch.Tensor:
    """Weights on the raw residual (L, k) as weights on its LayerNorm (E, k): ``h = sigma (n - n_zero)``."""
    out = torch.zeros(E, W.shape[1], dtype=torch.float64)
    out[: W.shape[0]] = sigma * W
    out[zero] -= sigma * W.sum(0)
    return out


def gpt2_state_dict(c: Construction) -> tuple[dict, torch.Tensor, dict]:
    """(GPT-2 state dict, W_E (d+1, n_embd), GPT-2 config fields) for construction ``c``."""
    _refuse_unexportable(c)
    model, cfg = c.model.unroll(), c.model.cfg
    E, H, D = gpt2_shape(c)
    L = cfg.width
    zero = c.layout.rows("zero").start
    sigma = c.compiled.ln_pad * math.sqrt(2 / E)  # every ln_1 and ln_f sees the pads ±P and nothing as large
    sd: dict[str, torch.Tensor] = {}
    pad = lambda t, rows, cols: torch.nn.functional.pad(t, (0, cols - t.shape[1], 0, rows - t.shape[0]))  # noqa: E731
    sd["transformer.wpe.weight"] = pad(model.pos.detach(), cfg.max_len, E)
    sd["transformer.wte.weight"] = torch.zeros(1, E, dtype=torch.float64)
    for i, layer in enumerate(model.layers):
        p = f"transformer.h.{i}."
        q, k, v = (torch.zeros(E, E, dtype=torch.float64) for _ in range(3))
        proj = torch.zeros(E, E, dtype=torch.float64)
        for h in range(H):
            cols = slice(h * D, (h + 1) * D)
            Wq = layer.W_Q[h].detach() * (cfg.attn_scale * math.sqrt(D))  # GPT-2 divides scores by sqrt(head_dim)
            q[:, cols][:, : cfg.head_dim] = _through_layer_norm(Wq, sigma, zero, E)
            k[:, cols][:, : cfg.head_dim] = _through_layer_norm(layer.W_K[h].detach(), sigma, zero, E)
            v[:, cols][:, : cfg.value_dim] = _through_layer_norm(layer.W_V[h].detach(), sigma, zero, E)
            proj[h * D: h * D + cfg.value_dim, :L] = layer.W_O[h].detach()
        sd[p + "attn.c_attn.weight"] = torch.cat([q, k, v], dim=1)
        sd[p + "attn.c_attn.bias"] = torch.zeros(3 * E, dtype=torch.float64)
        sd[p + "attn.c_proj.weight"] = proj
        sd[p + "attn.c_proj.bias"] = torch.zeros(E, dtype=torch.float64)
        # ln_2 normalises over E units, the construction's LayerNorm over L: reads are sqrt(E / L) larger
        sd[p + "mlp.c_fc.weight"] = pad(layer.W_in.detach() * math.sqrt(L / E), E, cfg.mlp_width)
        sd[p + "mlp.c_fc.bias"] = layer.b_in.detach().clone()
        sd[p + "mlp.c_proj.weight"] = pad(layer.W_out.detach(), cfg.mlp_width, E)
        sd[p + "mlp.c_proj.bias"] = pad(layer.b_out.detach()[None], 1, E)[0]
        for ln in ("ln_1", "ln_2"):
            sd[p + f"{ln}.weight"] = torch.ones(E, dtype=torch.float64)
            sd[p + f"{ln}.bias"] = torch.zeros(E, dtype=torch.float64)
    sd["transformer.ln_f.weight"] = torch.ones(E, dtype=torch.float64)
    sd["transformer.ln_f.bias"] = torch.zeros(E, dtype=torch.float64)
    readout = model.readout.detach()[:, None].clone()
    readout[c.layout.rows("one").start] += model.readout_bias.detach()  # the constant unit carries the bias
    sd["lm_head.weight"] = _through_layer_norm(readout, sigma, zero, E).T.contiguous()
    W_E = pad(model.W_E.detach(), cfg.token_dim, E)
    config = {"vocab_size": 1, "n_positions": cfg.max_len, "n_embd": E, "n_layer": cfg.num_layers, "n_head": H,
              "n_inner": cfg.mlp_width, "activation_function": "gelu", "resid_pdrop": 0.0, "embd_pdrop": 0.0,
              "attn_pdrop": 0.0, "layer_norm_epsilon": cfg.ln_eps, "scale_attn_weights": True,
              "tie_word_embeddings": False, "use_cache": False, "bos_token_id": 0, "eos_token_id": 0}
    return sd, W_E, config


def labels(c: Construction) -> dict:
    """Ground truth for interpretability methods: what every residual coordinate, head and MLP
    hidden unit of the exported model is (see docs/export.md for the format)."""
    E, H, D = gpt2_shape(c)
    comp = c.compiled
    slots = [{"slot": name, "shape": list(s.shape), "start": c.layout.rows(name).start, "size": s.size}
             for name, s in c.layout.slots.items()]
    layers = []
    for i, sched in enumerate(comp.schedule):  # applied layers, as the export unrolls them
        spec = comp.layer_spec(i)
        heads = []
        for h, (shift, head) in enumerate(spec.heads.items()):
            heads.append({"head": h, "reads": "causal mean" if shift is None else f"column t-{shift}",
                          "sources": head.sources + (["sum of the column (balance reset)"] if shift == 0 else []),
                          "writes": sorted({dst for _, _, dst, _, _ in head.outputs}),
                          "value_dims": head.value_dim, "qkv_columns": [h * D, (h + 1) * D]})
        units = []
        for u, (terms, dst, idx, coef) in enumerate(spec.hidden):
            units.append({"unit": u, "reads": [f"{s}[{j}]" for s, j, _ in terms], "writes": f"{dst}[{idx}]",
                          "kind": "product" if u in spec.products else "linear pair", "output_coefficient": coef})
        layers.append({"layer": i, "attention_ops": [op.describe() for op in sched.attn],
                       "mlp_ops": [op.describe() for op in sched.mlp], "heads": heads, "mlp_units": units})
    mul_scales = {op.describe(): comp.mechanisms[id(op)].scale for op in comp.program.ops if isinstance(op, Mul)}
    return {"format": "iclkit-labels/1", "construction": c.name, "d": c.d, "n": c.n, "mode": c.mode,
            "params": {k: np.asarray(v).tolist() for k, v in c.params.items()},
            "domain": {"x_norm": c.x_norm, "y_bound": c.y_bound, **c.domain}, "certified_bound": c.a_priori_bound,
            "n_embd": E, "n_head": H, "head_dim": D, "residual": slots,
            "padding": {"start": c.layout.width, "stop": E, "note": "never written"},
            "system_units": {"one": 1.0, "pos": "t / T_max", "pos2": "(t / T_max)^2", "bos": "1 at column 0",
                             "pad+": comp.ln_pad, "pad-": -comp.ln_pad, "bal": "minus the sum of the other units",
                             "zero": 0.0},
            "product_scales": mul_scales, "layers": layers}


def to_hf_gpt2(c: Construction, out: str | Path | None = None):
    """A ``transformers.GPT2LMHeadModel`` (float64) computing construction ``c``, and W_E. With
    ``out``, also ``save_pretrained(out)``, ``out/embed.safetensors`` and ``out/labels.json``."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    sd, W_E, fields = gpt2_state_dict(c)
    config = GPT2Config(**fields)
    config._attn_implementation = "eager"
    model = GPT2LMHeadModel(config).to(torch.float64)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or [m for m in missing if not m.endswith("attn.bias") and not m.endswith("masked_bias")]:
        raise RuntimeError(f"GPT-2 state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.eval()
    if out is not None:
        from safetensors.torch import save_file

        out = Path(out)
        model.save_pretrained(out)
        save_file({"W_E": W_E.contiguous()}, str(out / "embed.safetensors"))
        (out / "labels.json").write_text(json.dumps(labels(c), indent=1))
    return model, W_E


def to_transformer_lens(c: Construction, out: str | Path):
    """(TransformerLens ``TransformerBridge`` on the exported GPT-2, W_E): ``yhat = bridge(tokens @ W_E)[:, -1, 0]``."""
    from transformer_lens.model_bridge import TransformerBridge

    model, W_E = to_hf_gpt2(c, out)
    bridge = TransformerBridge.boot_transformers(str(out), hf_model=model, dtype=torch.float64)
    return bridge, W_E
