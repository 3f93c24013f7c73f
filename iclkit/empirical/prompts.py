"""Seeded in-context regression prompts (Sec. 4.1) and their token format.

x ~ N(x_shift, x_scale^2 I), w ~ N(0, tau^2 I), y = w.x + N(0, sigma^2). The defaults are the
paper's training distribution; ``x_scale = 2.5`` or ``x_shift = 2.5`` are the shifted test
distributions of its code. Tokens are the constructions' format: BOS (zeros), then ``[0, x_i]``
and ``[y_i, 0_d]`` per example; a learner predicts y_i at the x_i token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Prompts:
    """A distribution over regression tasks and their inputs."""

    d: int
    tau: float = 1.0
    sigma: float = 0.0
    x_scale: float = 1.0
    x_shift: float = 0.0

    def __post_init__(self) -> None:
        if self.d < 1:
            raise ValueError(f"Prompts.d must be >= 1, got {self.d}")
        for name in ("tau", "x_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Prompts.{name} must be > 0, got {getattr(self, name)}")
        if self.sigma < 0:
            raise ValueError(f"Prompts.sigma must be >= 0, got {self.sigma}")

    @property
    def bayes_lam(self) -> float:
        """The ridge regulariser of the Bayes predictor (Eqs. 18-19): sigma^2 / tau^2."""
        return self.sigma**2 / self.tau**2

    def to_dict(self) -> dict:
        return asdict(self)

    def x(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return self.x_shift + self.x_scale * rng.standard_normal((*shape, self.d))

    def sample(self, rng: np.random.Generator, batch: int, n: int, queries: int = 0):
        """X (B,n,d), y (B,n), w (B,d); with ``queries = K`` also fresh unlabeled inputs
        (B,n,K,d), K per prefix, for SPD and ILWD."""
        X = self.x(rng, (batch, n))
        w = self.tau * rng.standard_normal((batch, self.d))
        y = np.einsum("bnd,bd->bn", X, w) + self.sigma * rng.standard_normal((batch, n))
        if queries:
            return X, y, w, self.x(rng, (batch, n, queries))
        return X, y, w

    def sample_tensors(self, gen: torch.Generator, batch: int, n: int, dim: int | None = None):
        """The same distribution as float32 torch tensors X (B,n,d), y (B,n), for training;
        ``dim = k`` zeroes all but the first k coordinates of x (a curriculum stage)."""
        X = self.x_shift + self.x_scale * torch.randn(batch, n, self.d, generator=gen)
        if dim is not None:
            X[..., dim:] = 0
        w = self.tau * torch.randn(batch, self.d, generator=gen)
        return X, torch.einsum("bnd,bd->bn", X, w) + self.sigma * torch.randn(batch, n, generator=gen)


def tokens(X: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B,n,d), (B,n) -> tokens (B, 2n+1, d+1): BOS, [0, x_1], [y_1, 0], ..., [y_n, 0].
    The learner's prediction for y_i is read at x_i's position, 2i - 1."""
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    B, n, d = X.shape
    out = torch.zeros(B, 2 * n + 1, d + 1, dtype=X.dtype)
    out[:, 1::2, 1:] = X
    out[:, 2::2, 0] = y
    return out
