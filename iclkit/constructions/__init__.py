"""Transformers that run learning algorithms in context, one per algorithm in :mod:`iclkit.algorithms`."""

from iclkit.constructions.base import Construction
from iclkit.constructions.sgd import sgd

__all__ = ["Construction", "sgd"]
