"""The paper's decoder (Akyürek et al. 2023, Sec. 2.1) as a torch module.

One layer::

    h <- h + W_O [softmax(causal(q k^T)) v]_heads          (attention, added to the residual)
    h <- h + W_out GeLU(W_in LN(h) + b_in) + b_out          (MLP on the LayerNorm'ed residual)

GeLU is the exact erf form; LN is ``(x - mean) / sqrt(var + eps)`` over the whole residual
vector (the mean summed with compensation, see :func:`compensated_mean`). Position 0 holds a
BOS token, the attention sink. A *looped* model (``loop = (first, period, repeats)``) stores a
block of ``period`` layers once and applies it ``repeats`` times after ``first`` prologue
layers (weight tying, as in looped transformers): ``num_layers`` counts applied layers,
``layers`` holds each distinct one once. Trained learners switch on the GPT-style options: a learned LN
gain and bias, LN on the attention input (``attn_ln``) and before the readout (``final_ln``),
and the plain mean; constructions use none of them. This file is the only implementation of
the layer math in iclkit: constructed and trained models both run here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes and numerical options of a :class:`Transformer`."""

    token_dim: int
    width: int
    num_layers: int
    num_heads: int
    head_dim: int  # query/key size per head
    value_dim: int  # value size per head
    mlp_width: int
    max_len: int
    attn_scale: float = 1.0  # logits are scale * q.k (the paper uses 1)
    ln_eps: float = 0.0
    ln_affine: bool = False
    exact_mean: bool = True  # LayerNorm's mean by compensated summation (constructions need it)
    attn_ln: bool = False  # also LayerNorm the attention input (GPT-style pre-LN; trained learners)
    final_ln: bool = False  # LayerNorm before the readout (GPT-style; trained learners)
    dtype: str = "float64"
    loop: tuple[int, int, int] | None = None  # (first, period, repeats): layers first.. first+period-1 repeated

    @property
    def stored_layers(self) -> int:
        """Distinct layers held: the applied ones less the repeats of the looped block."""
        return self.num_layers if self.loop is None else self.num_layers - self.loop[1] * (self.loop[2] - 1)

    def num_parameters(self) -> int:
        """Entries of the stored tensors, from the sizes alone (what a :class:`Transformer`
        with this config holds; a looped block counts once)."""
        H, D, F = self.num_heads, self.width, self.mlp_width
        ln = 2 * D if self.ln_affine else 0
        layer = H * D * (2 * self.head_dim + 2 * self.value_dim) + 2 * D * F + F + D + ln * (2 if self.attn_ln else 1)
        return self.stored_layers * layer + (self.token_dim + self.max_len + 1) * D + 1 + (ln if self.final_ln else 0)

    def applied_index(self) -> list[int]:
        """For each applied layer, the index of the stored layer it runs."""
        if self.loop is None:
            return list(range(self.num_layers))
        first, period, repeats = self.loop
        block = [first + j for _ in range(repeats) for j in range(period)]
        tail = range(first + period, self.stored_layers)
        return [*range(first), *block, *tail]

    def __post_init__(self) -> None:
        for name in ("token_dim", "width", "num_heads", "head_dim", "value_dim", "mlp_width", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"TransformerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_layers < 0:
            raise ValueError(f"TransformerConfig.num_layers must be >= 0, got {self.num_layers}")
        if self.dtype not in DTYPES:
            raise ValueError(f"TransformerConfig.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.loop is not None:
            object.__setattr__(self, "loop", tuple(int(v) for v in self.loop))  # JSON gives a list
            first, period, repeats = self.loop
            if first < 0 or period < 1 or repeats < 1 or first + period * repeats > self.num_layers:
                raise ValueError(f"TransformerConfig.loop (first, period, repeats) = {self.loop} does not fit "
                                 f"{self.num_layers} applied layers")


def compensated_mean(h: torch.Tensor) -> torch.Tensor:
    """Mean over the last axis by pairwise summation with exact error terms (TwoSum).

    Mathematically the plain mean; numerically its error is ``u |sum| + O(u^2 sum |h|)``
    instead of ``u sum |h|``. This matters when the residual holds large cancelling entries
    (the ±P LayerNorm pads): a plain sum loses ``u P`` to rounding, this one does not.
    """
    s = h
    err = torch.zeros_like(h)
    while s.shape[-1] > 1:
        if s.shape[-1] % 2:
            s = F.pad(s, (0, 1))
            err = F.pad(err, (0, 1))
        a, b = s[..., 0::2], s[..., 1::2]
        total = a + b
        b_virtual = total - a
        e = (a - (total - b_virtual)) + (b - b_virtual)
        err = err[..., 0::2] + err[..., 1::2] + e
        s = total
    return (s + err) / h.shape[-1]


class LayerNorm(nn.Module):
    """``(x - mean) / sqrt(var + eps)`` over the residual, optionally with a learned gain and bias."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.eps = cfg.ln_eps
        self.mean = compensated_mean if cfg.exact_mean else (lambda h: h.mean(-1, keepdim=True))
        if cfg.ln_affine:
            self.gain = nn.Parameter(torch.ones(cfg.width, dtype=DTYPES[cfg.dtype]))
            self.bias = nn.Parameter(torch.zeros(cfg.width, dtype=DTYPES[cfg.dtype]))
        else:
            self.gain = self.bias = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        centred = h - self.mean(h)
        out = centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + self.eps)
        return out if self.gain is None else out * self.gain + self.bias


class DecoderLayer(nn.Module):
    """One attention sublayer and one LayerNorm'ed GeLU MLP sublayer, both residual."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        dt = DTYPES[cfg.dtype]
        H, D, k, v, Fw = cfg.num_heads, cfg.width, cfg.head_dim, cfg.value_dim, cfg.mlp_width
        self.cfg = cfg
        self.W_Q = nn.Parameter(torch.zeros(H, D, k, dtype=dt))
        self.W_K = nn.Parameter(torch.zeros(H, D, k, dtype=dt))
        self.W_V = nn.Parameter(torch.zeros(H, D, v, dtype=dt))
        self.W_O = nn.Parameter(torch.zeros(H, v, D, dtype=dt))
        self.W_in = nn.Parameter(torch.zeros(D, Fw, dtype=dt))
        self.b_in = nn.Parameter(torch.zeros(Fw, dtype=dt))
        self.W_out = nn.Parameter(torch.zeros(Fw, D, dtype=dt))
        self.b_out = nn.Parameter(torch.zeros(D, dtype=dt))
        self.ln = LayerNorm(cfg)
        self.attn_ln = LayerNorm(cfg) if cfg.attn_ln else None

    def attention(self, h: torch.Tensor) -> torch.Tensor:
        """Causal multi-head softmax attention output (not yet added to ``h``)."""
        return torch.einsum("bhtv,hvd->btd", self._mixed_values(h), self.W_O)

    def head_outputs(self, h: torch.Tensor) -> torch.Tensor:
        """Each head's output apart, shape (B, heads, T, width): they sum to :meth:`attention`
        (up to the order of that sum's rounding). Circuit analysis patches them one by one."""
        return torch.einsum("bhtv,hvd->bhtd", self._mixed_values(h), self.W_O)

    def _mixed_values(self, h: torch.Tensor) -> torch.Tensor:
        """Each head's attention-weighted values, shape (B, heads, T, value_dim)."""
        if self.attn_ln is not None:
            h = self.attn_ln(h)
        q = torch.einsum("btd,hdk->bhtk", h, self.W_Q)
        k = torch.einsum("btd,hdk->bhtk", h, self.W_K)
        v = torch.einsum("btd,hdv->bhtv", h, self.W_V)
        logits = self.cfg.attn_scale * q @ k.transpose(-1, -2)
        T = h.shape[1]
        future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=h.device), diagonal=1)
        weights = torch.softmax(logits.masked_fill(future, float("-inf")), dim=-1)
        return weights @ v

    def mlp(self, h: torch.Tensor) -> torch.Tensor:
        """MLP output (not yet added to ``h``)."""
        return F.gelu(self.ln(h) @ self.W_in + self.b_in) @ self.W_out + self.b_out

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attention(h)
        return h + self.mlp(h)


class Transformer(nn.Module):
    """Token embedding + positional table, a stack of :class:`DecoderLayer`, a linear readout.

    ``forward(tokens)`` takes ``(B, T, token_dim)`` and returns the readout at every position,
    shape ``(B, T)``; with ``return_states=True`` also the residual before the first layer and
    after every layer (``num_layers + 1`` tensors of shape ``(B, T, width)``).
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        dt = DTYPES[cfg.dtype]
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.zeros(cfg.token_dim, cfg.width, dtype=dt))
        self.pos = nn.Parameter(torch.zeros(cfg.max_len, cfg.width, dtype=dt))
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.stored_layers))
        self.final_ln = LayerNorm(cfg) if cfg.final_ln else None
        self.readout = nn.Parameter(torch.zeros(cfg.width, dtype=dt))
        self.readout_bias = nn.Parameter(torch.zeros((), dtype=dt))

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.cfg.dtype]

    @property
    def applied_layers(self) -> list["DecoderLayer"]:
        """The layers in the order they run (a looped block's layers appear once per repeat)."""
        return [self.layers[i] for i in self.cfg.applied_index()]

    def num_parameters(self) -> int:
        """Stored (unique) parameters: a looped block counts once."""
        return sum(p.numel() for p in self.parameters())

    def unroll(self) -> "Transformer":
        """The same network as a plain stack, one stored layer per applied layer (copies)."""
        plain = Transformer(replace(self.cfg, loop=None))
        with torch.no_grad():
            for target, layer in zip(plain.layers, self.applied_layers):
                target.load_state_dict(layer.state_dict())
            for name in ("W_E", "pos", "readout", "readout_bias"):
                getattr(plain, name).copy_(getattr(self, name))
            if self.final_ln is not None:
                plain.final_ln.load_state_dict(self.final_ln.state_dict())
        return plain

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3 or tokens.shape[-1] != self.cfg.token_dim:
            raise ValueError(
                f"tokens must have shape (batch, length, {self.cfg.token_dim}), got {tuple(tokens.shape)}"
            )
        T = tokens.shape[1]
        if T > self.cfg.max_len:
            raise ValueError(f"sequence length {T} exceeds the model's max_len {self.cfg.max_len}")
        return tokens.to(self.dtype) @ self.W_E + self.pos[:T]

    def forward(self, tokens: torch.Tensor, return_states: bool = False):
        h = self.embed(tokens)
        states = [h]
        for layer in self.applied_layers:
            h = layer(h)
            if return_states:
                states.append(h)
        if self.final_ln is not None:
            h = self.final_ln(h)
        out = h @ self.readout + self.readout_bias
        return (out, states) if return_states else out

    # ---- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path, metadata: dict | None = None) -> None:
        """Write weights to a safetensors file; the config and ``metadata`` go in its header."""
        meta = {"config": json.dumps(asdict(self.cfg)), "iclkit": json.dumps(metadata or {})}
        tensors = {name: p.detach().contiguous() for name, p in self.state_dict().items()}
        save_file(tensors, str(path), metadata=meta)

    @staticmethod
    def read_header(path: str | Path) -> tuple[TransformerConfig, dict]:
        """The configuration and metadata a file written by :meth:`save` holds, without its
        tensors; ``ValueError`` naming what is wrong with a header that is not one."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a file that is not one
            raise ValueError(f"{path} is not a safetensors model file: {type(e).__name__}: {e}") from None
        if "config" not in header:
            raise ValueError(f"{path} is not an iclkit model file (no config in its header)")
        try:
            config, meta = json.loads(header["config"]), json.loads(header.get("iclkit", "{}"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: its header is not valid JSON ({e})") from None
        try:
            return TransformerConfig(**config), meta
        except TypeError as e:
            raise ValueError(f"{path}: its header's model configuration has a field iclkit does not know ({e})") from None

    @classmethod
    def load(cls, path: str | Path, cfg: TransformerConfig | None = None) -> tuple["Transformer", dict]:
        """Read a model written by :meth:`save` (with ``cfg``: into a model of that
        configuration instead of the header's); returns the model and its metadata.
        ``ValueError`` naming the first tensor that is missing, extra or of another shape or dtype."""
        header_cfg, meta = cls.read_header(path)
        model = cls(cfg or header_cfg)
        tensors = load_file(str(path))
        want = model.state_dict()
        for name in sorted(set(want) | set(tensors)):
            if name not in tensors or name not in want:
                raise ValueError(f"{path}: tensor {name} is {'missing' if name not in tensors else 'not in the model'}"
                                 " (the header's configuration and the tensors disagree)")
            if tensors[name].shape != want[name].shape or tensors[name].dtype != want[name].dtype:
                raise ValueError(f"{path}: tensor {name} has shape {tuple(tensors[name].shape)} and dtype "
                                 f"{tensors[name].dtype}, the configuration needs {tuple(want[name].shape)} and "
                                 f"{want[name].dtype}")
        model.load_state_dict(tensors)
        return model, meta
