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

A division sets LayerNorm's scale with pads ±M·den (``div±``), hundreds of times P, which
iclkit's next attention removes unnormalised; in GPT-2 that attention's ``ln_1`` would see
them. The export drops that removal and follows each division's block with two sweeps of its
own (:func:`blocks`): the first under hold pads ±Q >> M·den (so ln_1's scale is known),
the second under the ordinary pads, which also re-centres them.

``to_hf_gpt2`` needs the ``[export]`` extra (transformers); ``to_transformer_lens`` also
transformer-lens. Contract for the saved directory: ``tokens`` in iclkit's prompt format
(B, 2n+2, d+1), ``yhat = model(inputs_embeds=tokens @ W_E).logits[:, -1, 0]`` with W_E from
``embed.safetensors``."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from iclkit.constructions.base import Construction
from iclkit.primitives.compile import available_memory
from iclkit.primitives.ops import Div, Mul


# Q / (M den_max): ln_1 of the held block sees its known scale up to a relative
# (M den / Q)^2 / 2 <= 5e-9, so the first sweep leaves at most 5e-9 M den_max in div± (its
# plain mean's rounding, about u Q / n_embd, the zero unit cancels to u^2 Q). The second
# sweep, under the ordinary pads, reads that remainder to u. Measured (ridge d = 2, n = 40;
# d = 4, n = 10 faithful; d = 8, n = 10): at most 1.2e-10 M den_max after the first sweep,
# 2.6e-24 after the second, and the pads within 1.8e-15 P of ±P.
HOLD_RATIO = 1e4


@dataclass
class Block:
    """One exported GPT-2 block: an iclkit layer's weights, the LayerNorm scale its attention
    reads through, and the hold pads its attention (``attn_hold``) and MLP (``mlp_hold``)
    biases add. ``role`` is ``("layer", i)`` for applied layer i of the construction, or
    ``("sweep", i, stage)`` for the export's own removal of layer i's division pads."""

    layer: torch.nn.Module | None  # None for a sweep of a plan built without weights
    sigma: float
    role: tuple
    attn_hold: float = 0.0
    mlp_hold: float = 0.0
    drop: tuple[str, ...] = ()  # residual slots this block's attention must not write (its own pads' removal)


def _division(c: Construction, i: int) -> Div | None:
    divs = [op for op in c.compiled.schedule[i].mlp if isinstance(op, Div)]
    return divs[0] if divs else None  # divisions in one layer share their divisor


def blocks(c: Construction, weights: bool = True) -> list[Block]:
    """The exported stack (``weights=False``: its plan alone, the sweeps without weights). GPT-2's ln_1 sees a division's pads ±M·den in the layer after it,
    where they would set its scale. So the division's own block is followed by two sweeps
    that remove them, and the construction's removal in the next layer is dropped:

    1. the division's MLP bias also writes the hold pads ±Q (Q = HOLD_RATIO · M den_max), so
       the first sweep's ln_1 has a known scale; its attention subtracts M·den from div± (its
       own column) and its bias takes the hold pads out again;
    2. the second sweep, under the ordinary pads ±P, subtracts what is left of div±, and
       puts the pads back at ±P: the division's attention swaps them out by ``P · one`` read
       through ln_1, which reads ``one`` low by the pads' own excess e/P, so unswept the excess
       would double at every division (to 2e-4 P, and a 4e-4 miss, over ridge's 40 blocks at d = 2).

    Both read their own column with the positional scores of the division layer's head 0 (every
    layer spec opens with the column's own head, which resets the balance unit)."""
    comp = c.compiled
    E = gpt2_shape(c)[0]
    P = comp.ln_pad
    scale = lambda Q: math.sqrt(2 * (P**2 + Q**2) / E)  # noqa: E731 (the pads dominate every ln_1 and ln_f)
    r = c.layout.rows
    out = []
    for i, layer in enumerate(c.model.applied_layers):  # a looped block's layers once per repeat
        div = _division(c, i)
        cleans = bool(comp.schedule[i].cleanups)
        if cleans and div is not None:
            raise ValueError(f"{c.name}: layer {i} both removes and sets division pads; the export cannot sweep them")
        M = comp.mechanisms[id(div)].scale if div is not None else 0.0
        Q = HOLD_RATIO * M * comp.read_bounds[id(div)][div.den] if div is not None else 0.0
        out.append(Block(layer, scale(0.0), ("layer", i), mlp_hold=Q, drop=("div+", "div-") if cleans else ()))
        if div is None:
            continue
        for stage, (src, weight, hold) in enumerate(((div.den, M, Q), ("div+", 1.0, 0.0)), start=1):
            if not weights:
                out.append(Block(None, scale(hold), ("sweep", i, stage), attn_hold=-hold))
                continue
            sweep = type(layer)(c.model.cfg).to(torch.float64)
            with torch.no_grad():
                sweep.W_Q[0], sweep.W_K[0] = layer.W_Q[0], layer.W_K[0]
                sweep.W_V[0, r(src).start, 0] = 1.0
                sweep.W_O[0, 0, r("div+").start] = -weight
                sweep.W_O[0, 0, r("div-").start] = weight
                if stage == 2:  # re-centre the pads: P·one, read back through ln_1, leaves pad+ - P
                    sweep.W_V[0, r("pad+").start, 1] = 1.0
                    sweep.W_V[0, r("one").start, 1] = -P
                    sweep.W_O[0, 1, r("pad+").start] = -1.0
                    sweep.W_O[0, 1, r("pad-").start] = 1.0
            out.append(Block(sweep, scale(hold), ("sweep", i, stage), attn_hold=-hold))
    return out


def _refuse_unexportable(c: Construction) -> None:
    if c.model.cfg.dtype != "float64":
        raise ValueError("export needs a float64 construction (the absorbed LayerNorm scales are sized for it)")


def _has_division(c: Construction) -> bool:
    return any(isinstance(op, Div) for op in c.compiled.program.ops)


def gpt2_shape(c: Construction) -> tuple[int, int, int]:
    """(n_embd, n_head, head_dim): heads as the construction's, head_dim >= its query and value
    widths, and n_embd = n_head * head_dim >= its residual width (and the hold pads)."""
    cfg = c.model.cfg
    heads = cfg.num_heads
    width = cfg.width + (2 if _has_division(c) else 0)  # the hold pads ±Q follow the construction's units
    head_dim = max(cfg.head_dim, cfg.value_dim, math.ceil(width / heads))
    return heads * head_dim, heads, head_dim


def _through_layer_norm(W: torch.Tensor, sigma: float, zero: int, E: int) -> torch.Tensor:
    """Weights on the raw residual (L, k) as weights on its LayerNorm (E, k): ``h = sigma (n - n_zero)``."""
    out = torch.zeros(E, W.shape[1], dtype=torch.float64)
    out[: W.shape[0]] = sigma * W
    out[zero] -= sigma * W.sum(0)
    return out


def gpt2_parameters(E: int, F: int, n_layer: int, n_positions: int) -> int:
    """A GPT-2's parameter count: per block c_attn, attention c_proj, c_fc, MLP c_proj and the
    two LayerNorms; then wte (vocabulary 1), wpe, ln_f and the untied head."""
    block = (E * 3 * E + 3 * E) + (E * E + E) + (E * F + F) + (F * E + E) + 4 * E
    return n_layer * block + E + n_positions * E + 2 * E + E


def _check_memory(c: Construction, E: int, n_layer: int) -> None:
    """Refuse, before allocating, an export that would not fit: the state dict, the model and
    its save hold about 3 copies of the weights (measured 3.0x: ridge d = 8, n = 40 faithful,
    365 million parameters, 8.7 GB peak)."""
    count = gpt2_parameters(E, c.model.cfg.mlp_width, n_layer, c.model.cfg.max_len)
    need, free = 3.2 * 8 * count, available_memory()
    if free is not None and need > free:
        raise ValueError(f"exporting {c.name}(d={c.d}, n={c.n}, {c.mode}) makes a GPT-2 of {n_layer} blocks, n_embd {E}, "
                         f"{count:,} parameters: about {need / 2**30:.1f} GB to write and {free / 2**30:.1f} GB is "
                         "available; use a smaller d or n, or the fused mode")


def gpt2_state_dict(c: Construction) -> tuple[dict, torch.Tensor, dict]:
    """(GPT-2 state dict, W_E (d+1, n_embd), GPT-2 config fields) for construction ``c``."""
    _refuse_unexportable(c)
    model, cfg = c.model, c.model.cfg
    E, H, D = gpt2_shape(c)
    L = cfg.width
    zero = c.layout.rows("zero").start
    _check_memory(c, E, len(blocks(c, weights=False)))
    plan = blocks(c)
    sd: dict[str, torch.Tensor] = {}
    pad = lambda t, rows, cols: torch.nn.functional.pad(t, (0, cols - t.shape[1], 0, rows - t.shape[0]))  # noqa: E731

    def hold(bias: torch.Tensor, Q: float) -> torch.Tensor:  # the hold pads ±Q at units L, L + 1
        if Q:
            bias[L], bias[L + 1] = Q, -Q
        return bias

    sd["transformer.wpe.weight"] = pad(model.pos.detach(), cfg.max_len, E)
    sd["transformer.wte.weight"] = torch.zeros(1, E, dtype=torch.float64)
    for i, block in enumerate(plan):
        p, layer, sigma = f"transformer.h.{i}.", block.layer, block.sigma
        q, k, v = (torch.zeros(E, E, dtype=torch.float64) for _ in range(3))
        proj = torch.zeros(E, E, dtype=torch.float64)
        for h in range(H):
            cols = slice(h * D, (h + 1) * D)
            Wq = layer.W_Q[h].detach() * (cfg.attn_scale * math.sqrt(D))  # GPT-2 divides scores by sqrt(head_dim)
            q[:, cols][:, : cfg.head_dim] = _through_layer_norm(Wq, sigma, zero, E)
            k[:, cols][:, : cfg.head_dim] = _through_layer_norm(layer.W_K[h].detach(), sigma, zero, E)
            v[:, cols][:, : cfg.value_dim] = _through_layer_norm(layer.W_V[h].detach(), sigma, zero, E)
            proj[h * D: h * D + cfg.value_dim, :L] = layer.W_O[h].detach()
        for slot in block.drop:
            proj[:, c.layout.rows(slot)] = 0.0
        sd[p + "attn.c_attn.weight"] = torch.cat([q, k, v], dim=1)
        sd[p + "attn.c_attn.bias"] = torch.zeros(3 * E, dtype=torch.float64)
        sd[p + "attn.c_proj.weight"] = proj
        sd[p + "attn.c_proj.bias"] = hold(torch.zeros(E, dtype=torch.float64), block.attn_hold)
        # ln_2 normalises over E units, the construction's LayerNorm over L: reads are sqrt(E / L) larger
        sd[p + "mlp.c_fc.weight"] = pad(layer.W_in.detach() * math.sqrt(L / E), E, cfg.mlp_width)
        sd[p + "mlp.c_fc.bias"] = layer.b_in.detach().clone()
        sd[p + "mlp.c_proj.weight"] = pad(layer.W_out.detach(), cfg.mlp_width, E)
        sd[p + "mlp.c_proj.bias"] = hold(pad(layer.b_out.detach()[None], 1, E)[0], block.mlp_hold)
        for ln in ("ln_1", "ln_2"):
            sd[p + f"{ln}.weight"] = torch.ones(E, dtype=torch.float64)
            sd[p + f"{ln}.bias"] = torch.zeros(E, dtype=torch.float64)
    sd["transformer.ln_f.weight"] = torch.ones(E, dtype=torch.float64)
    sd["transformer.ln_f.bias"] = torch.zeros(E, dtype=torch.float64)
    readout = model.readout.detach()[:, None].clone()
    readout[c.layout.rows("one").start] += model.readout_bias.detach()  # the constant unit carries the bias
    sd["lm_head.weight"] = _through_layer_norm(readout, plan[0].sigma, zero, E).T.contiguous()
    W_E = pad(model.W_E.detach(), cfg.token_dim, E)
    config = {"vocab_size": 1, "n_positions": cfg.max_len, "n_embd": E, "n_layer": len(plan), "n_head": H,
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
    for g, block in enumerate(blocks(c, weights=False)):  # GPT-2's blocks: the applied layers and the export's sweeps
        if block.role[0] == "sweep":
            i, stage = block.role[1:]
            den = _division(c, i).den
            sources, writes = (([den], ["div+", "div-"]) if stage == 1
                               else (["div+", "pad+ - P one"], ["div+", "div-", "pad+", "pad-"]))
            layers.append({"layer": g, "role": f"export sweep {stage} of layer {i}'s division pads",
                           "attention_ops": [f"div± -= ±{'M·' + den if stage == 1 else 'div+'}"]
                           + (["pad± -= ±(pad+ - P)"] if stage == 2 else []), "mlp_ops": [],
                           "heads": [{"head": 0, "reads": "column t-0", "sources": sources, "writes": writes,
                                      "value_dims": len(sources), "qkv_columns": [0, D]}], "mlp_units": []})
            continue
        i = block.role[1]
        sched, spec = comp.schedule[i], comp.layer_spec(i)
        heads = []
        for h, (shift, head) in enumerate(spec.heads.items()):
            heads.append({"head": h, "reads": "causal mean" if shift is None else f"column t-{shift}",
                          "sources": head.sources + (["sum of the column (balance reset)"] if shift == 0 else []),
                          "writes": sorted({dst for _, _, dst, _, _ in head.outputs} - set(block.drop)),
                          "value_dims": head.value_dim, "qkv_columns": [h * D, (h + 1) * D]})
        units = []
        for u, (terms, dst, idx, coef) in enumerate(spec.hidden):
            units.append({"unit": u, "reads": [f"{s}[{j}]" for s, j, _ in terms], "writes": f"{dst}[{idx}]",
                          "kind": "product" if u in spec.products else "linear pair", "output_coefficient": coef})
        layers.append({"layer": g, "role": f"applied layer {i}", "attention_ops": [op.describe() for op in sched.attn],
                       "mlp_ops": [op.describe() for op in sched.mlp], "heads": heads, "mlp_units": units,
                       **({"hold_pads": block.mlp_hold} if block.mlp_hold else {})})
    mul_scales = {op.describe(): comp.mechanisms[id(op)].scale for op in comp.program.ops if isinstance(op, Mul)}
    return {"format": "iclkit-labels/3", "construction": c.name, "origin": c.origin, "d": c.d, "n": c.n,
            "mode": c.mode, "dtype": c.model.cfg.dtype, "levels": c.compiled.context.levels,
            "program": c.compiled.program.to_dict(),
            "params": {k: np.asarray(v).tolist() for k, v in c.params.items()},
            "domain": {"x_norm": c.x_norm, "y_bound": c.y_bound, **c.domain}, "certified_bound": c.a_priori_bound,
            "n_embd": E, "n_head": H, "head_dim": D, "residual": slots,
            "padding": {"start": c.layout.width, "stop": E,
                        "note": "never written, except units start and start + 1: the hold pads ±Q (labels of a "
                                "division layer: hold_pads) between a division's MLP and the next block's attention"
                                if _has_division(c) else "never written"},
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


def load_export(out: str | Path):
    """(construction, GPT-2 model, W_E) of an exported directory, checked: the construction its
    labels.json names is rebuilt, and every tensor of ``model.safetensors`` and W_E must equal
    the rebuilt export bit for bit, else ``ValueError`` naming the first that differs (edited or
    corrupted weights carry no guarantee). The exported model has no run-time guard: the
    construction's ``predict`` and ``certify`` refuse or certify a prompt before its GPT-2
    output is trusted (a prompt outside the domain gets a wrong number from GPT-2, silently)."""
    from safetensors.torch import load_file
    from transformers import GPT2LMHeadModel

    from iclkit.constructions.saved import rebuild

    out = Path(out)
    try:
        labels = json.loads((out / "labels.json").read_text())
        W_E = load_file(str(out / "embed.safetensors"))["W_E"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{out}: not an iclkit export (labels.json and embed.safetensors with W_E): {e}") from None
    domain = dict(labels.get("domain", {}))
    meta = {**labels, "x_norm": domain.pop("x_norm", None), "y_bound": domain.pop("y_bound", None), "domain": domain}
    try:
        c = rebuild(meta)
    except ValueError as e:
        raise ValueError(f"{out}/labels.json: {e}") from None
    sd, W_E_built, fields = gpt2_state_dict(c)
    problem = config_difference(out, fields)
    if problem:
        raise ValueError(f"{out}/config.json: {problem}")
    try:
        model = GPT2LMHeadModel.from_pretrained(out, torch_dtype=torch.float64).eval()
    except (OSError, ValueError) as e:
        raise ValueError(f"{out}: transformers cannot load the GPT-2 model ({type(e).__name__}: {e})") from None
    loaded = model.state_dict()
    for name, tensor in [*sd.items(), ("embed.safetensors W_E", W_E_built)]:
        got = W_E if name.startswith("embed") else loaded.get(name)
        if got is None or got.shape != tensor.shape or not torch.equal(got, tensor):
            raise ValueError(f"{out}: tensor {name} differs from the {c.name} export its labels.json names "
                             "(edited or corrupted weights carry no guarantee)")
    return c, model, W_E


# config.json keys that record where a file came from, not what the model computes
PROVENANCE = {"transformers_version", "architectures", "_name_or_path"}
SAVED_DTYPE = "float64"  # the dtype save_pretrained records (a stock loader builds the model in it)


def config_difference(out: Path, fields: dict) -> str | None:
    """The first field of config.json, as transformers reads it (an absent key takes its
    default), whose value is not the export's, or None. Every field but the provenance keys
    changes what GPT-2 computes or how a stock loader builds it; the dtype must be the one the
    weights are sized for."""
    from transformers import GPT2Config

    path = out / "config.json"
    try:
        found = json.loads(path.read_text())
        effective = GPT2Config.from_dict(found).to_dict()
    except (OSError, ValueError, TypeError) as e:
        return f"cannot be read ({type(e).__name__}: {e})"
    want = GPT2Config(**fields).to_dict()
    if found.get("model_type") != "gpt2":
        return f"sets model_type = {found.get('model_type')!r} where the export has 'gpt2': a stock loader builds another model"
    dtypes = {key: found[key] for key in ("dtype", "torch_dtype") if found.get(key) is not None}
    if set(dtypes.values()) != {SAVED_DTYPE}:  # transformers versions record it under either key
        return (f"sets the dtype to {dtypes or 'nothing'} where the export has {SAVED_DTYPE!r}: a stock loader would "
                "build the model in another dtype, for which its weights are not sized")
    for key in sorted((set(effective) | set(want)) - PROVENANCE - {"dtype", "torch_dtype", "model_type"}):
        if key.startswith("_") or effective.get(key) == want.get(key):
            continue
        if key not in want:
            return f"sets {key} = {found.get(key)!r}, which the export does not have: edited config.json carries no guarantee"
        how = f"sets {key} = {found[key]!r}" if key in found else f"lacks {key}, so transformers takes {effective.get(key)!r}"
        return (f"{how} where the export has {want[key]!r}: it changes what the model computes (edited config.json "
                "carries no guarantee)")
    return None


def to_transformer_lens(c: Construction, out: str | Path):
    """(TransformerLens ``TransformerBridge`` on the exported GPT-2, W_E): ``yhat = bridge(tokens @ W_E)[:, -1, 0]``."""
    from transformer_lens.model_bridge import TransformerBridge

    model, W_E = to_hf_gpt2(c, out)
    bridge = TransformerBridge.boot_transformers(str(out), hf_model=model, dtype=torch.float64)
    return bridge, W_E
