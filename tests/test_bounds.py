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
