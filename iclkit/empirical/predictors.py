"""Predictors evaluated prefix by prefix: predict y_i from the first i-1 examples (Sec. 4.3).

A predictor is a function ``(X (B,n,d), y (B,n), queries (B,n,K,d)) -> (B,n,K)``: the
prediction for query k at prefix i uses only examples 0..i-1. Algorithms from
:mod:`iclkit.algorithms`, kNN, and constructed transformers all share this interface.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from iclkit import algorithms

Predictor = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def from_weights(fit: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Predictor:
    """A predictor from a weight-fitting algorithm; with no examples it predicts w = 0."""

    def predict(X: np.ndarray, y: np.ndarray, queries: np.ndarray) -> np.ndarray:
        B, n, d = X.shape
        out = np.zeros(queries.shape[:3])
        for b in range(B):
            for i in range(1, n):
                out[b, i] = queries[b, i] @ fit(X[b, :i], y[b, :i])
        return out

    return predict


def algorithm(name: str, **params) -> Predictor:
    """``algorithm("ridge", lam=0.1)`` etc., any function of :mod:`iclkit.algorithms`."""
    fn = getattr(algorithms, name)
    return from_weights(lambda X, y: fn(X, y, **params))


def knn(k: int = 3, weighted: bool = False) -> Predictor:
    """Mean of the y of the k nearest previous x (uniform), or weighted by |x - x_j|^-2."""

    def predict(X: np.ndarray, y: np.ndarray, queries: np.ndarray) -> np.ndarray:
        B, n, _ = X.shape
        out = np.zeros(queries.shape[:3])
        for b in range(B):
            for i in range(1, n):
                dist = np.linalg.norm(queries[b, i][:, None, :] - X[b, :i][None], axis=-1)  # (K, i)
                nearest = np.argsort(dist, axis=1)[:, :k]
                near_y = y[b, :i][nearest]
                if weighted:
                    w = 1.0 / np.maximum(np.take_along_axis(dist, nearest, axis=1), 1e-12) ** 2
                    out[b, i] = (w * near_y).sum(1) / w.sum(1)
                else:
                    out[b, i] = near_y.mean(1)
        return out

    return predict


def constructed(construction) -> Predictor:
    """A constructed transformer as a predictor: one construction built for at least n - 1
    examples (e.g. ``constructions.ridge(d, n - 1, lam=0.1)``) runs every prefix, since a
    model built for n predicts any prompt of n' <= n examples; prefix 0 predicts 0."""

    def predict(X: np.ndarray, y: np.ndarray, queries: np.ndarray) -> np.ndarray:
        B, n, d = X.shape
        out = np.zeros(queries.shape[:3])
        K = queries.shape[2]
        for i in range(1, n):
            Xi = np.repeat(X[:, :i], K, axis=0)
            yi = np.repeat(y[:, :i], K, axis=0)
            out[:, i] = construction.predict(Xi, yi, queries[:, i].reshape(B * K, d)).reshape(B, K)
        return out

    return predict
