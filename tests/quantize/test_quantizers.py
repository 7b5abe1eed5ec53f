"""FAT / LSQ / SQ / multipoint quantizers: export rules, gradients, schedules."""

import math

import numpy as np
import pytest

from tests.requirements import require

torch = require("torch", "quantize")

from systolic.quantize.quantizers import (FATQuantizer, FixedQuantizer, LSQQuantizer,  # noqa: E402
                                          SQWeightQuantizer, rnd)


def test_rounding_modes_match_golden_on_ties():
    x = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49, -0.51], dtype=torch.float64)
    assert rnd(x, "half_even").tolist() == [-2, -2, -0, 0, 2, 2, 0, -1]
    assert rnd(x, "half_up").tolist() == [-2, -1, 0, 1, 2, 3, 0, -1]


def test_fixed_quantizer_is_golden_quantize():
    from systolic.golden import QType, quantize

    x = torch.linspace(-3, 3, 997, dtype=torch.float64)
    for rounding in ("half_even", "half_up"):
        q = FixedQuantizer(5, True, 3, rounding)(x).numpy()
        np.testing.assert_array_equal(q * 8, quantize(x.numpy(), QType(5, True, 3), rounding))


def test_fat_rounds_threshold_up_to_power_of_two():
    q = FATQuantizer(8, True, t_max=0.4)
    with torch.no_grad():
        q.alpha.fill_(0.75)  # t' = 0.3
    assert float(q.scale()) == pytest.approx(0.3 / 127)
    q.to_pow2()
    assert q.frac_bits() == 7 - math.ceil(math.log2(0.3)) == 8
    with torch.no_grad():
        q.alpha.fill_(2.0)
    q.clip_alpha()
    assert float(q.alpha.detach()) == pytest.approx(1.3)


def test_lsq_gradient_and_pow2_export():
    v = torch.tensor([0.013, -0.2, 0.5, 0.004], dtype=torch.float64)
    q = LSQQuantizer(4, True, init_step=0.05, n_elements=4).double()
    out = q(v)
    out.sum().backward()
    s, g = float(q.step.detach()), 1 / math.sqrt(4 * 7)
    vs = v.numpy() / s
    inside = (vs >= -8) & (vs <= 7)
    d = np.where(inside, -vs + np.rint(np.clip(vs, -8, 7)), np.where(vs < -8, -8, 7))
    assert float(q.step.grad) == pytest.approx(float(d.sum()) * g, rel=1e-9)
    with torch.no_grad():
        q.step.fill_(0.011)  # log2 = -6.51 -> -7
    q.to_pow2()
    assert q.frac_bits() == 7
    assert LSQQuantizer.init_step(np.array([1.0, -1.0]), 4, True) == pytest.approx(2 / math.sqrt(7))


def fake_quant_ref(a, frac, bits, rounding="half_even"):
    """Signed ``clip(round(a * 2**frac), lo, hi) * 2**-frac`` in float64 (the documented quantizer)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    v = np.asarray(a, dtype=np.float64) * 2.0 ** frac
    r = np.rint(v) if rounding == "half_even" else np.floor(v + 0.5)
    return np.clip(r, lo, hi) * 2.0 ** -frac


def mse_pow2_frac_ref(a, bits, rounding="half_even"):
    """Fractional bits of the power-of-two MSE scale as systolic.quantize.calibrate documents it: thresholds
    ``2**e`` for the non-overflow exponent ``e0 = ceil(log2 max|a|)`` and the 4 smaller ones, the least
    ``sum (a - Q(a))**2`` wins (the larger threshold on a tie); scale ``2**e / 2**(b - 1)``, so
    ``frac = (b - 1) - e``."""
    a = np.asarray(a, dtype=np.float64).ravel()
    e0 = math.ceil(math.log2(np.abs(a).max()))
    errs = [(float(np.sum((a - fake_quant_ref(a, bits - 1 - e, bits, rounding)) ** 2)), bits - 1 - e)
            for e in range(e0, e0 - 5, -1)]
    return min(errs, key=lambda t: t[0])[1]


@pytest.mark.parametrize("rounding", ["half_even", "half_up"])
def test_sq_quantizes_the_ratio_of_filters(rounding):
    w = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    wd = w.double().numpy()
    frac = mse_pow2_frac_ref(wd, 2, rounding)
    full = torch.from_numpy(fake_quant_ref(wd, frac, 2, rounding).astype(np.float32))
    assert all(not torch.equal(full[i], w[i]) for i in range(8))  # every filter changes when quantized
    q = SQWeightQuantizer(2, rounding, seed=1)
    with pytest.raises(ValueError) as info:
        q.frac_bits()
    assert str(info.value) == "SQ quantizer is not frozen; call freeze(weight) first"
    q.train()
    q.ratio = 0.5
    out = q(w)
    assert float(q.scale()) == 2.0 ** -frac
    is_q = [bool(torch.equal(out[i], full[i])) for i in range(8)]
    is_w = [bool(torch.equal(out[i], w[i])) for i in range(8)]
    assert all(a != b for a, b in zip(is_q, is_w))  # each filter either quantized or left float
    assert sum(is_q) == 4  # round(0.5 * 8) filters quantized
    q.ratio = 1.0
    assert torch.equal(q(w), full)
    q.ratio = 0.0
    assert torch.equal(q(w), w)
    q.ratio = 0.5
    q.eval()
    assert torch.equal(q(w), full)
    q.freeze(w)
    assert q.frac_bits() == frac
    # Frozen: weights 8x larger keep the frozen scale (and saturate) instead of a new MSE scale.
    big = 8 * w
    assert mse_pow2_frac_ref(big.double().numpy(), 2, rounding) == frac - 3
    expect_big = torch.from_numpy(fake_quant_ref(big.double().numpy(), frac, 2, rounding).astype(np.float32))
    assert torch.equal(q(big), expect_big)
    assert q.frac_bits() == frac and float(q.scale()) == 2.0 ** -frac
