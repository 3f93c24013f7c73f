"""iclkit: transformers that provably run learning algorithms in context (Akyürek et al. 2023)."""

__version__ = "0.1.0"
