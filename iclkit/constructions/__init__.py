"""Transformers that run learning algorithms in context, one per algorithm in :mod:`iclkit.algorithms`.

Same names and parameters as the closed forms, plus the context size n: ``sgd(d, n, lr=...)``,
``gd(d, n, lr=...)``, ``ridge(d, n, lam=...)``. Each returns a :class:`Construction`.
"""

from iclkit.constructions.base import Construction
from iclkit.constructions.gd import gd
from iclkit.constructions.ridge import ridge
from iclkit.constructions.sgd import sgd

REGISTRY = {"sgd": sgd, "gd": gd, "ridge": ridge}

__all__ = ["REGISTRY", "Construction", "gd", "ridge", "sgd"]
