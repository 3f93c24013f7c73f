"""iclkit: transformers that provably run learning algorithms in context (Akyürek et al. 2023)."""

from iclkit.threads import apply_thread_policy

__version__ = "0.1.0"

apply_thread_policy()
