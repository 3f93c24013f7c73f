"""Certified error bounds of the approximate mechanisms, and the constants they choose.

The paper makes each mechanism exact only in a limit (N, M -> infinity, inputs -> 0). Here
every mechanism takes the bounds its inputs obey and a dtype, picks its finite constants
to minimise its stated error bound, and returns that bound. Notation: ``u`` is the unit
roundoff of the dtype (2^-53 or 2^-24).

1. **Hard attention** (mov, aff, mean are attention-only and otherwise exact): positional
   logits ``-G (j - (t - k))^2`` leave the other columns a total weight below
   ``T e^{-G}``; with ``G = ln(1/u) + 10`` that is below ``u``. What remains is rounding of
   the value and output maps, ``4u`` times the magnitudes involved.
2. **LayerNorm read** (Lemma 6): two pads ±P make the MLP see ``h * gamma + eps`` with
   ``1 - gamma <= R^2/(4P^2)`` (R^2: sum of squared bounds of every other unit). A balance
   unit holds minus the sum of the others, so the mean is exactly 0, and LayerNorm sums with
   compensation: ``eps`` is only the balance unit's rounding drift, far below ``uP``. (With a
   plain sum, rounding next to P costs ``uP`` and the error floor is ``u^(2/3)``.)
3. **GeLU product** (Lemma 4, improved): ``sq(z) = sqrt(pi/2) (GeLU(z) + GeLU(-z))`` is even,
   ``sq(z) = sum_n c_n z^{2n+2}`` with ``c_n = (-1)^n / (2^n n! (2n+1))``; the polarisation
   ``ab = S^2/4 (sq((a+b)/S) - sq((a-b)/S))`` + O(S^-2), and Richardson combination of K
   scales cancels the terms up to O(S^-2K). The truncation is summed exactly from the series;
   rounding grows like ``u S (|a|+|b|)``.
4. **Linear units**: ``GeLU(z) - GeLU(-z) = z`` exactly, so no GeLU offset (Lemma 5) is used.
5. **Division** (Lemma 8): pads ±M·c make LayerNorm divide by |c|: relative error
   ``R^2/(4 M^2 c_min^2)`` plus rounding ``4uM``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24}
UNDERFLOW = {"float64": 2.0**-1074, "float32": 2.0**-149}  # the standard model's absolute term
LOG_GRID = 10.0 ** np.arange(-2.0, 18.0, 0.025)


def roundoff(dtype: str) -> float:
    if dtype not in UNIT_ROUNDOFF:
        raise ValueError(f"dtype must be one of {sorted(UNIT_ROUNDOFF)}, got {dtype!r}")
    return UNIT_ROUNDOFF[dtype]


def attention_gap(dtype: str) -> float:
    """Logit gap G between the selected column and the next best: ``e^{-G} = u e^{-10}``."""
    return math.log(1.0 / roundoff(dtype)) + 10.0


def attention_error(dtype: str, T: int, input_mass: float, out_bound: float) -> float:
    """Error of an attention-written entry: leak ``T e^{-G} * mass`` plus ``4u`` rounding."""
    u = roundoff(dtype)
    return T * math.exp(-attention_gap(dtype)) * input_mass + 4 * u * (input_mass + out_bound) + 16 * UNDERFLOW[dtype]


def sq_coefficient(n: int) -> float:
    """Coefficient of z^{2n+2} in sq(z) = sqrt(pi/2) (GeLU(z) + GeLU(-z)) = z erf(z/sqrt 2) sqrt(pi/2)."""
    return (-1) ** n / (2**n * math.factorial(n) * (2 * n + 1))


def richardson_weights(levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale factors 2^m and weights w_m with sum w_m = 1 and sum w_m 2^{-2nm} = 0 for n < levels."""
    factors = 2.0 ** np.arange(levels)
    V = np.array([[f ** (-2 * n) for f in factors] for n in range(levels)])
    rhs = np.zeros(levels)
    rhs[0] = 1.0
    return factors, np.linalg.solve(V, rhs)


@dataclass(frozen=True)
class LayerNormRead:
    """How exactly an MLP reads a unit through LayerNorm: ``h -> gamma h + eps``."""

    scale_error: float  # bound on 1 - gamma (gamma <= 1)
    abs_error: float  # bound on |eps|

    def perturb(self, value_bound: float, other_bound: float) -> float:
        """Bound on |a' b' - a b| when both factors are read this way."""
        e = self.abs_error
        return 2 * self.scale_error * value_bound * other_bound + e * (value_bound + other_bound) + e * e


def layer_norm_read(dtype: str, pad: float, R2: float, R1: float, L: int, layers: int) -> LayerNormRead:
    """Reads through LayerNorm with pads ±``pad``: ``R2``/``R1`` bound the sum of squares / of
    absolute values of every other unit, ``L`` is the width, ``layers`` the depth.

    The balance unit makes the exact mean 0; rounding leaves the residual's sum at most
    ``4 u R1`` per layer, and the compensated mean adds ``u^2 (2 pad + R1) log2 L``."""
    u = roundoff(dtype)
    drift = 4 * u * R1 * (layers + 1) / L + 4 * u * u * (2 * pad + R1) * math.log2(max(L, 2))
    # sigma is a sum of L squares (relative rounding <= (L-1)u), halved by the square root
    return LayerNormRead(scale_error=R2 / (4 * pad**2) + (L / 2 + 4) * u, abs_error=drift)


def linear_read_error(dtype: str, ln: LayerNormRead, bound: float) -> float:
    """Error of passing a unit |h| <= bound through LayerNorm and a GeLU pair (an exact identity):
    LayerNorm's scale and drift, and 32u |h| of rounding as in :func:`div_error`."""
    return ln.scale_error * bound + ln.abs_error + 32 * roundoff(dtype) * bound


def product_error(dtype: str, A: float, B: float, S, levels: int):
    """Bound on |GeLU-polarisation product - a'b'| for |a'| <= A, |b'| <= B (truncation +
    rounding); ``S`` may be an array of candidate scales."""
    u = roundoff(dtype)
    S = np.asarray(S, dtype=float)
    factors, weights = richardson_weights(levels)
    s = A + B
    trunc = np.zeros_like(S)
    for n in range(levels, levels + 40):  # sum_n |c_n| |sum_m w_m (s/S_m)^{2n}| s^2 / 2
        moment = np.abs(sum(w * (s / (S * f)) ** (2.0 * n) for f, w in zip(factors, weights)))
        trunc += abs(sq_coefficient(n)) * moment * s**2 / 2
    # GeLU evaluation (|error| <= 4u|z| per unit, 4 units per level) and the output sum.
    rounding = sum(abs(w) * (S * f) for f, w in zip(factors, weights)) * s * u * (6.3 + 2.0 * 4 * levels)
    return trunc + rounding


def best_product_scale(dtype: str, A: float, B: float, levels: int) -> tuple[float, float]:
    """The scale S minimising :func:`product_error`; returns (S, error)."""
    S = max(A + B, 1e-300) * LOG_GRID[LOG_GRID >= 1.0]
    errs = product_error(dtype, A, B, S, levels)
    i = int(np.argmin(errs))
    return float(S[i]), float(errs[i])


def balance(A: float, B: float) -> float:
    """The factor kappa that feeds the product (kappa a)(b / kappa): both operands then share
    the bound sqrt(AB), which minimises (A' + B')^2, the size of every error term."""
    return math.sqrt(B / A) if A > 0 and B > 0 else 1.0


def mul_error(dtype: str, ln: LayerNormRead, A: float, B: float, q: int, levels: int) -> tuple[float, float]:
    """Mechanism error of one mul output entry (q products) and the chosen product scale,
    for operands balanced by :func:`balance`."""
    A1 = A * (1 + 8 * roundoff(dtype)) + ln.abs_error
    B1 = B * (1 + 8 * roundoff(dtype)) + ln.abs_error
    kappa = balance(A, B)
    S, perr = best_product_scale(dtype, A1 * kappa, B1 / kappa, levels)
    return q * (ln.perturb(A, B) + perr), S


def div_error(dtype: str, M: float, R2: float, R1: float, L: int, layers: int, num_bound: float,
              den_min: float, den_max: float) -> float:
    """Mechanism error of ``num/|den|`` realised by LayerNorm with division pads ±M·den."""
    u = roundoff(dtype)
    read = layer_norm_read(dtype, M * den_min, R2, R1, L, layers)  # as Lemma 6 with pads ±M|c|
    drift = read.abs_error + 4 * u * u * M * den_max * math.log2(max(L, 2))
    # linear units GeLU(z) - GeLU(-z): torch's erf-GeLU taken as accurate to 8u relative per
    # unit, plus the pre-activation, output sum and residual add: 32u |z| in all
    return read.scale_error * num_bound / den_min + drift / den_min + 32 * u * num_bound / den_min


def best_div_scale(dtype: str, R2: float, R1: float, L: int, layers: int, num_bound: float, den_min: float,
                   den_max: float) -> tuple[float, float]:
    err, M = min((div_error(dtype, M, R2, R1, L, layers, num_bound, den_min, den_max), M) for M in LOG_GRID)
    return M, err
