"""The one library constant of the rounding model, re-measured: torch's erf GeLU against mpmath."""

import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from iclkit.primitives import bounds as bd


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gelu_accuracy_constant_holds_on_fresh_points(dtype):
    """|gelu_torch(z) - gelu(z)| <= GELU_ERR u |z| over the range the mechanisms use (product
    units |z| << 1, linear units up to 1e4), on points other than the ones that set it."""
    mpmath.mp.prec = 200
    rng = np.random.default_rng(12345)
    mags = 10.0 ** rng.uniform(-30, 4, 3000)
    z = torch.tensor(np.concatenate([mags, -mags, rng.uniform(-12, 12, 3000)]), dtype=getattr(torch, dtype))
    got = F.gelu(z).double().numpy()
    zz = z.double().numpy()
    exact = np.array([float(mpmath.mpf(v) / 2 * (1 + mpmath.erf(mpmath.mpf(v) / mpmath.sqrt(2)))) for v in zz])
    worst = (np.abs(got - exact) / np.abs(zz)).max() / bd.roundoff(dtype)
    assert worst <= bd.GELU_ERR[dtype]
    assert worst > bd.GELU_ERR[dtype] / 4  # the constant is a measured figure, not a loose guess


def test_gamma_refuses_sums_beyond_the_model():
    assert bd.gamma(10, "float64") == pytest.approx(10 * 2.0**-53)
    with pytest.raises(ValueError, match="too many terms"):
        bd.gamma(2**23, "float32")


# ---- the product mechanism's constants, against independent references ----------------------
def test_sq_coefficients_are_the_taylor_series_of_the_gelu_square():
    """sq(z) = sqrt(pi/2) (GeLU(z) + GeLU(-z)) = z erf(z/sqrt 2) sqrt(pi/2): its Taylor
    coefficients (sympy) are bounds.sq_coefficient, term by term."""
    import sympy as sp

    z = sp.Symbol("z")
    series = sp.series(z * sp.erf(z / sp.sqrt(2)) * sp.sqrt(sp.pi / 2), z, 0, 18).removeO()
    for n in range(8):
        exact = float(series.coeff(z, 2 * n + 2))
        assert bd.sq_coefficient(n) == pytest.approx(exact, rel=1e-14), n
        assert series.coeff(z, 2 * n + 1) == 0


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_richardson_weights_cancel_the_first_orders_exactly(levels):
    """sum w_m = 1 and sum w_m 2^(-2nm) = 0 for 1 <= n < levels (the orders the scales cancel),
    checked in exact rational arithmetic against the float weights."""
    from fractions import Fraction

    factors, weights = bd.richardson_weights(levels)
    assert list(factors) == [2.0**m for m in range(levels)]
    assert sum(weights) == pytest.approx(1.0, abs=1e-14)
    for n in range(1, levels):
        moment = sum(Fraction(w) * Fraction(1, 2 ** (2 * n * m)) for m, w in enumerate(weights))
        assert abs(float(moment)) <= 1e-13, (levels, n)
    if levels > 1:  # the next order is not cancelled: the bound's leading term is real
        assert abs(sum(w * 2.0 ** (-2 * levels * m) for m, w in enumerate(weights))) > 1e-6


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_product_truncation_bound_holds_and_is_within_2x_of_the_exact_error(levels):
    """The Richardson-combined polarisation at a = b = s/2 (the worst case for one term's
    truncation), evaluated exactly (mpmath, 60 digits), against bounds.product_truncation:
    never above it, and the bound at most 2.05x it (its s^2/2 covers |a+b| and |a-b| both
    reaching s, where a = b reaches it in one term)."""
    mpmath.mp.dps = 60
    sq = lambda x: x * mpmath.erf(x / mpmath.sqrt(2)) * mpmath.sqrt(mpmath.pi / 2)  # noqa: E731
    factors, weights = bd.richardson_weights(levels)
    S = 1.0
    for s in (0.02, 0.05, 0.1, 0.2):
        a = b = mpmath.mpf(s) / 2
        combined = sum(mpmath.mpf(w) * (S * f) ** 2 / 4 * (sq((a + b) / (S * f)) - sq((a - b) / (S * f)))
                       for f, w in zip(factors, weights))
        actual = float(abs(a * b - combined))
        bound = float(bd.product_truncation(s, S, levels))
        assert actual <= bound <= 2.05 * actual, (levels, s, actual, bound)
