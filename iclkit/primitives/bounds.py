"""Error bounds of the mechanisms, derived in a stated floating-point model, and the constants.

**The model.** Every stored number and every basic operation is IEEE: ``fl(a op b) = (a op b)(1 + δ)``
with ``|δ| <= u`` (u = 2^-53 in float64, 2^-24 in float32), and underflow is absent (each
bound below adds a few ``UNDERFLOW`` to cover it). A sum of m terms, in any order, errs by
at most ``gamma(m) sum |terms|`` with ``gamma(m) = m u / (1 - m u)`` (Higham, Thm 3.1); a sum
of one term and many much smaller ones errs by at most ``(1 + 2 gamma(m))`` times the small
ones' total (adding b to a float a rounds to a float at least as near as a itself). Matmuls
sum only their nonzero products: products with an exact 0 weight are exact zeros. The one
library kernel with no such model, torch's erf GeLU, is measured against mpmath (200-bit)
over the whole range used: ``|gelu_torch(z) - gelu(z)| <= GELU_ERR u |z|`` (see
:data:`GELU_ERR`; ``tests/test_bounds.py`` re-measures it on fresh points).

Every formula here takes array arguments, so the same expression gives the domain-wide
bound (slot bounds in) and the per-prompt certificate (the prompt's own magnitudes in).

1. **Positional attention** (mov, aff): logits ``-G (j - (t - k))^2`` from keys
   ``[pos2, pos, one]``; computed logits err by at most ``logit_error`` (9 gamma(16) G T^2,
   derived at :func:`logit_error`). The target beats a column at distance δ >= 1 by at least
   ``G δ - 2 logit_error``, so the off-target softmax mass is at most
   ``2 e^{2 ε} e^{-G} / (1 - e^{-G})`` (two columns per distance): T-independent. The
   longest context a dtype resolves is the one with ``logit_error <= 4`` (:func:`max_len`);
   longer is refused at compile time.
2. **Uniform attention** (mean over t+1 columns): weights ``fl(1/(t+1))``, a sum of t+1
   terms: ``(gamma(T) + u) max|v|``.
3. **LayerNorm read** (Lemma 6): pads ±P and a balance unit make the exact mean 0 and the
   std ``sqrt((2P^2 + R^2)/L)``, so the MLP reads ``h gamma_LN`` with
   ``1 - gamma_LN <= R^2/(4P^2)``; rounding of the variance (a sum dominated by the pads),
   sqrt and division adds ``6u + R^2/(2P^2)`` relative (:func:`layer_norm_rel`). The stored
   residual's sum drifts from 0 by rounding, which shifts every read by its mean; every
   layer's attention resets it (the balance unit minus the column's sum), so what an MLP
   reads is one reset's and one sublayer's rounding (:func:`residual_drift`), not the
   whole stack's.
4. **GeLU product** (Lemma 4, improved): ``sq(z) = sqrt(pi/2) (GeLU(z) + GeLU(-z))`` is even,
   polarisation ``ab = S^2/4 (sq((a+b)/S) - sq((a-b)/S))``, Richardson over K scales: the
   truncation is summed from the series; rounding is each unit's GeLU error and
   pre-activation error carried by its output coefficient, plus the output sum (gamma of
   the number of units summed).
5. **Linear units**: ``GeLU(z) - GeLU(-z) = z`` exactly; rounding ``(2 GELU_ERR u + 2 gamma(2)) |z|``.
6. **Division** (Lemma 8): pads ±M c make LayerNorm divide by |c|: as 3 with P -> M|c|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24}
UNDERFLOW = {"float64": 2.0**-1074 * 2**52, "float32": 2.0**-149 * 2**23}  # smallest normal: below it, absolute
LOG_GRID = 10.0 ** np.arange(-2.0, 18.0, 0.025)

# torch.nn.functional.gelu (exact erf form) against mpmath at 200 bits, 60,000 points with
# |z| log-uniform in [1e-30, 1e4] and uniform in [-12, 12] (torch 2.13, CPU): max error
# 2.00 u |z| (float64) and 4.95 u |z| (float32). Stated with a margin; re-measured by the tests.
GELU_ERR = {"float64": 3.0, "float32": 6.0}
LOGIT_ERROR_MAX = 4.0  # the longest context is the one whose logit rounding stays below this


def roundoff(dtype: str) -> float:
    if dtype not in UNIT_ROUNDOFF:
        raise ValueError(f"dtype must be one of {sorted(UNIT_ROUNDOFF)}, got {dtype!r}")
    return UNIT_ROUNDOFF[dtype]


def gamma(m, dtype: str):
    """``m u / (1 - m u)``: the relative error bound of a sum or product chain of m roundings."""
    u = roundoff(dtype)
    m = np.asarray(m, dtype=float)
    if np.any(m * u >= 0.5):
        raise ValueError(f"gamma({np.max(m)}) is undefined in {dtype}: too many terms for the rounding model")
    out = m * u / (1 - m * u)
    return float(out) if out.ndim == 0 else out


# ---- 1, 2: attention ----------------------------------------------------------------------
def attention_gap(dtype: str) -> float:
    """Logit gap G between the selected column and its neighbours: ``e^{-G} = u e^{-10}``."""
    return math.log(1.0 / roundoff(dtype)) + 10.0


def logit_error(dtype: str, t_max: int) -> float:
    """Bound on |computed - exact| of a positional logit ``-G (j - (t - k))^2``.

    The logit is ``q . k`` over 3 dims: keys ``[pos2_j, pos_j, 1]`` (pos rounded once, pos2
    twice more), queries ``c [-1, 2 pos_t - 2k', -pos2_t + 2k' pos_t - k'^2]`` with
    c = G T^2, k' = k/T <= 1 (weights rounded once in float64, once to the dtype; each query
    entry a sum of at most 3 products). Every product of a query and key entry carries at
    most 16 roundings, so the error is ``gamma(16) sum_i |q_i k_i| <= gamma(16) 9 c``."""
    return 9.0 * gamma(16, dtype) * attention_gap(dtype) * max(t_max, 1) ** 2


def max_len(dtype: str) -> int:
    """The longest sequence (columns, BOS included) whose positional logits err by <= 4."""
    G = attention_gap(dtype)
    t_max = math.floor(math.sqrt(LOGIT_ERROR_MAX / (9.0 * gamma(16, dtype) * G)))
    return t_max + 1


def attention_leak(dtype: str, t_max: int) -> float:
    """Softmax mass off the selected column: ``2 e^{2 eps} e^{-G} / (1 - e^{-G})``."""
    G = attention_gap(dtype)
    return 2.0 * math.exp(2 * logit_error(dtype, t_max) - G) / (1 - math.exp(-G))


def attention_error(dtype: str, t_max: int, other_mass, mass, new, terms: int):
    """Error of an attention-written entry (mov, aff; the clear before an MLP write).

    ``mass``: sum |coef| |value| at the selected columns (the old target value included when
    the write overwrites); ``other_mass``: the same with every column's largest value (what
    can leak); ``new``: |result|; ``terms``: nonzero output coefficients feeding the entry.
    Head output: the on-target weight is within ``leak + 2u`` of 1, the product rounds once,
    the off-target terms add ``(1 + 2 gamma(T)) leak`` (item 1); the output map sums
    ``terms`` products (gamma(terms)); the residual add rounds once more (u |new|)."""
    u = roundoff(dtype)
    leak = attention_leak(dtype, t_max)
    head = (leak + 3 * u) * mass + (1 + 2 * gamma(t_max + 1, dtype)) * leak * other_mass
    return head * (1 + gamma(terms, dtype)) + gamma(terms, dtype) * mass + u * np.abs(new) + 4 * UNDERFLOW[dtype]


def mean_error(dtype: str, T: int, bound, new):
    """Error of the causal mean over at most T columns (uniform weights, item 2), its
    output map (2 terms: the mean and the overwrite) and the residual add."""
    u = roundoff(dtype)
    head = (gamma(T, dtype) + u) * bound * (1 + u)
    return head * (1 + gamma(2, dtype)) + gamma(2, dtype) * 2 * bound + u * np.abs(new) + 4 * UNDERFLOW[dtype]


# ---- 3: LayerNorm -------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerNormRead:
    """How an MLP reads a unit through LayerNorm: ``h -> h gamma_LN (1 + theta) + eps``,
    ``|1 - gamma_LN| <= scale_error``, ``|theta| <= rel_error``, ``|eps| <= abs_error``.
    Fields may be arrays (one value per column) for a per-prompt certificate."""

    scale_error: object
    rel_error: float
    abs_error: object

    def read_error(self, value):
        """Bound on |read - value| for |value| <= ``value``."""
        return (self.scale_error + self.rel_error + self.scale_error * self.rel_error) * value + self.abs_error

    def perturb(self, A, B):
        """Bound on |a' b' - a b| when both factors |a| <= A, |b| <= B are read this way."""
        ea, eb = self.read_error(A), self.read_error(B)
        return A * eb + B * ea + ea * eb


def layer_norm_rel(dtype: str, R2_over_pad2):
    """Relative rounding of one normalised entry when the variance is dominated by the two
    pads: the pads' squares round once each and their sum once (3u of 2 pad^2); every other
    square is added into a partial sum holding a pad, erring by at most itself, or into a sum
    of small squares, erring by at most u of it; so the variance sum errs by at most
    ``3u + R^2/pad^2`` relative (R^2: every other unit's square), and the division by L adds
    u. The sqrt halves that and adds u; centring, the division and the stored read weight add
    u each: ``6u + R^2/(2 pad^2)``."""
    return 6 * roundoff(dtype) + R2_over_pad2 / 2


def residual_drift(dtype: str, R1: float, L: int, T_max: int, value_dims: int) -> float:
    """Bound on |sum of the stored residual| (exactly 0 in real arithmetic) where an MLP reads
    it. Every layer's attention writes minus the column's sum (pads excluded: they cancel
    exactly) into the balance unit, besides its balanced writes. Before it the residual's
    entries total at most ``S1 = 4 R1`` in absolute value (R1: the other units; the balance
    unit and the unbalanced product writes at most 3 R1) and sum to at most ``2 R1``:
    - the reset's sum of at most L terms: ``gamma(L) S1``;
    - its positional head (:func:`attention_error`'s head term, old sums of other columns
      leaking): ``(leak + 3u) 2 R1 + (1 + 2 gamma(T + 1)) leak 2 R1``;
    - the output map into the balance unit, ``value_dims + 1`` terms of total at most
      ``4 R1`` (the balanced writes' old and new values, and the sum): ``gamma(value_dims + 1) 4 R1``,
      and the other written entries' rounding, within the same ``4 R1``;
    - the residual add rounds every entry: ``u S1``."""
    u = roundoff(dtype)
    leak = attention_leak(dtype, T_max)
    S1 = 4 * R1
    head = (leak + 3 * u) * 2 * R1 + (1 + 2 * gamma(T_max + 1, dtype)) * leak * 2 * R1
    return gamma(L, dtype) * S1 + head + 2 * gamma(value_dims + 1, dtype) * 4 * R1 + u * S1


def centring_error(dtype: str, mean, mean_sum, L: int):
    """What the residual's mean leaves in a read, in units of the read value. The computed
    (compensated) mean m~ is within ``u |mean| + 4 u^2 mean_sum log2 L`` of the stored
    residual's mean (``mean_sum``: sum |h| / L, pads included). Every read subtracts the
    normalised ``zero`` unit, ``(0 - m~)/sigma``, computed exactly but for the division, so m~
    cancels up to: the read unit's centring and division (2u |m~|, its u |h| being in
    ``rel_error``), the zero unit's division (u |m~|) and stored weight (u |m~|), and the
    pre-activation's extra term and sum (2u |m~|): ``6 u |m~|``."""
    u = roundoff(dtype)
    computed = np.abs(mean) * (1 + u) + 4 * u * u * mean_sum * math.log2(max(L, 2))
    return 6 * u * computed * (1 + gamma(6, dtype)) + 4 * UNDERFLOW[dtype]


def layer_norm_read(dtype: str, pad, R2, mean, L: int, mean_sum=0.0) -> LayerNormRead:
    """Reads through LayerNorm with pads ±``pad``: ``R2`` bounds the sum of squares of every
    other unit, ``mean`` the stored residual's mean (drift / L), in units of the read value."""
    return LayerNormRead(scale_error=R2 / (4 * pad**2), rel_error=layer_norm_rel(dtype, R2 / pad**2),
                         abs_error=centring_error(dtype, mean, mean_sum, L))


def linear_pair_error(dtype: str, value):
    """Rounding of the exact identity ``GeLU(z) - GeLU(-z) = z`` for |z| <= value: two GeLU
    evaluations, the pre-activation (one weight, one product, one sum; the zero unit's term
    is in :func:`centring_error`) and the 2-term output sum."""
    u = roundoff(dtype)
    return (2 * GELU_ERR[dtype] * u + 2 * gamma(3, dtype)) * (1 + gamma(2, dtype)) * value


def linear_read_error(dtype: str, ln: LayerNormRead, value):
    """Passing |h| <= value through LayerNorm and a linear GeLU pair (an in-place read)."""
    read = ln.read_error(value)
    return read + linear_pair_error(dtype, value + read)


# ---- 4: GeLU products ---------------------------------------------------------------------
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


def product_truncation(s, S, levels: int):
    """|Richardson-combined polarisation - ab| for |a| + |b| <= s at scale S (exact arithmetic):
    ``sum_n |c_n| |sum_m w_m (s/S_m)^{2n}| s^2 / 2`` over the orders Richardson leaves (the
    series' terms fall factorially; 40 orders leave a tail below 1e-100 for s/S <= 1)."""
    factors, weights = richardson_weights(levels)
    s = np.asarray(s, dtype=float)
    trunc = np.zeros(np.broadcast(s, np.asarray(S)).shape)
    with np.errstate(over="ignore", invalid="ignore"):  # s > S: no bound (inf), never chosen
        for n in range(levels, levels + 40):
            moment = np.abs(sum(w * (s / (S * f)) ** (2.0 * n) for f, w in zip(factors, weights)))
            trunc = trunc + abs(sq_coefficient(n)) * moment * s**2 / 2
    return np.where(s <= S, trunc, np.inf)


def product_unit_mass(s, S, levels: int):
    """``sum |coef| |GeLU(z)|`` over the 4 K units of one product, |a|+|b| <= s: a unit at
    scale S_m has ``|z| <= s/S_m``, coefficient ``|w_m| sqrt(pi/2) S_m^2/4`` and
    ``|GeLU(z)| <= |z| (1/2 + |z|)``."""
    factors, weights = richardson_weights(levels)
    total = 0.0
    for f, w in zip(factors, weights):
        z = np.asarray(s, dtype=float) / (S * f)
        total = total + 4 * abs(w) * math.sqrt(math.pi / 2) * (S * f) ** 2 / 4 * z * (0.5 + z)
    return total


def product_rounding(dtype: str, s, S, levels: int, q: int):
    """Rounding of one output entry of q products (4 units per scale per product), |a|+|b| <= s.

    Each unit's GeLU errs by ``GELU_ERR u |z|`` and its pre-activation (2 products, 2 sums,
    1 stored weight; the zero unit's term is in :func:`centring_error`) by ``gamma(5) |z|``,
    which moves GeLU by at most 1.13 times that; since ``|z| <= 2 |GeLU(z)| / (1 - 2|z|)``
    for the small |z| of product units, both are at most
    ``2 (GELU_ERR u + 1.13 gamma(5)) / (1 - 2 s/S)`` of the unit mass. The output sum of
    ``4 K q + 2`` terms adds ``gamma(4Kq + 2)`` of the mass; the residual add is the caller's."""
    u = roundoff(dtype)
    s = np.asarray(s, dtype=float)
    small = np.maximum(1 - 2 * s / S, 0.5)
    unit = 2 * (GELU_ERR[dtype] * u + 1.13 * gamma(5, dtype)) / small
    return q * (unit + gamma(4 * levels * q + 2, dtype)) * product_unit_mass(s, S, levels)


def product_error(dtype: str, A, B, S, levels: int, q: int = 1):
    """Bound on |GeLU-polarisation sum of q products - sum a'b'| for |a'| <= A, |b'| <= B
    (balanced operands; truncation + rounding); ``S`` may be an array of candidate scales."""
    s = np.asarray(A, dtype=float) + np.asarray(B, dtype=float)
    return q * product_truncation(s, S, levels) + product_rounding(dtype, s, S, levels, q)


def best_product_scale(dtype: str, A: float, B: float, levels: int, q: int = 1) -> tuple[float, float]:
    """The scale S minimising :func:`product_error`; returns (S, error)."""
    S = max(A + B, 1e-300) * LOG_GRID[LOG_GRID >= 1.0]
    errs = product_error(dtype, A, B, S, levels, q)
    i = int(np.argmin(errs))
    return float(S[i]), float(errs[i])


def balance(A: float, B: float) -> float:
    """The factor kappa that feeds the product (kappa a)(b / kappa): both operands then share
    the bound sqrt(AB), which minimises (A' + B')^2, the size of every error term."""
    return math.sqrt(B / A) if A > 0 and B > 0 else 1.0


def mul_error(dtype: str, ln: LayerNormRead, A, B, q: int, levels: int, S: float, kappa: float, out):
    """Own error of one mul output entry (q products of |a| <= A, |b| <= B) at scale S with
    balance kappa: the LayerNorm read of both factors, the product mechanism on what is
    read, and the residual add (u |out|)."""
    u = roundoff(dtype)
    A1, B1 = A + ln.read_error(A), B + ln.read_error(B)
    return q * ln.perturb(A, B) + product_error(dtype, kappa * A1, B1 / kappa, S, levels, q) + u * np.abs(out)


def choose_mul_scale(dtype: str, A: float, B: float, q: int, levels: int) -> tuple[float, float]:
    """(S, kappa) for a mul whose operands are bounded by A and B."""
    kappa = balance(A, B)
    S, _ = best_product_scale(dtype, kappa * A, B / kappa, levels, q)
    return S, kappa


# ---- 6: division --------------------------------------------------------------------------
def div_error(dtype: str, ln: LayerNormRead, num, den, out):
    """Own error of ``num/|den|`` read through LayerNorm with pads ±M·den (``ln`` built with
    pad = M|den|, so its absolute error is in units of the divided value), the linear units
    and the residual add."""
    u = roundoff(dtype)
    value = num / den
    read = ln.read_error(value)
    return read + linear_pair_error(dtype, value + read) + u * np.abs(out)


def best_div_scale(dtype: str, R2: float, mean: float, L: int, num_bound: float, den_min: float,
                   mean_sum_per_M: float) -> float:
    """The division scale M minimising :func:`div_error` at the worst divisor."""
    def err(M):
        ln = layer_norm_read(dtype, M * den_min, R2, mean / den_min, L, mean_sum_per_M * M / den_min)
        return float(div_error(dtype, ln, num_bound, den_min, num_bound / den_min))
    return float(min(LOG_GRID, key=err))
