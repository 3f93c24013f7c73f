"""The architecture: the paper's decoder layer as a torch module."""

from iclkit.transformer.model import DTYPES, DecoderLayer, Transformer, TransformerConfig

__all__ = ["DTYPES", "DecoderLayer", "Transformer", "TransformerConfig"]
