"""Transformers that run learning algorithms in context, one per algorithm in :mod:`iclkit.algorithms`.

Same names and parameters as the closed forms, plus the context size n: ``sgd(d, n, lr=...)``,
``gd(d, n, lr=..., steps=k)``, ``ridge(d, n, lam=...)``; beyond the paper, ``pgd(d, n, lr=..., P=...)``,
``newton(d, n, steps=k)``, ``ols(d, n)``, ``lasso(d, n, lr=..., l1=..., steps=k)``. Each returns a :class:`Construction`;
:func:`from_program` makes one from a program you write (docs/authoring.md).
"""

from iclkit.constructions.base import Construction, from_program
from iclkit.constructions.descent import lasso, pgd
from iclkit.constructions.gd import gd
from iclkit.constructions.newton import newton, ols
from iclkit.constructions.ridge import ridge
from iclkit.constructions.sgd import sgd

REGISTRY = {"sgd": sgd, "gd": gd, "ridge": ridge, "pgd": pgd, "newton": newton, "ols": ols, "lasso": lasso}

__all__ = ["REGISTRY", "Construction", "from_program", "gd", "lasso", "newton", "ols", "pgd", "ridge", "sgd"]
