"""Calibration baselines on known distributions (NumPy only)."""

import math

import numpy as np
import pytest

from systolic.quantize.calibrate import (CALIBRATIONS, calibrate, fake_quant_np, pow2_frac_bits,
                                         threshold_klj, threshold_max, threshold_mse, threshold_percentile)


@pytest.fixture(scope="module")
def gauss():
    return np.random.default_rng(0).normal(size=200_000)


def test_max_is_max_abs():
    x = np.array([0.5, -3.25, 2.0])
    assert threshold_max(x) == 3.25


def test_percentile_of_uniform():
    x = np.random.default_rng(1).uniform(-2, 2, 400_000)
    assert threshold_percentile(x, percentile=99.0) == pytest.approx(1.98, abs=0.01)
    assert threshold_percentile(x, percentile=100) == threshold_max(x)


def test_percentile_of_gaussian(gauss):
    # P(|x| > 3.8906) = 1e-4 for a standard normal.
    assert threshold_percentile(gauss, percentile=99.99) == pytest.approx(3.89, abs=0.15)


def test_pow2_frac_bits_rule():
    # s = 2**ceil(log2 t) / 2**(b - signed)
    assert pow2_frac_bits(1.0, 8, True) == 7
    assert pow2_frac_bits(1.01, 8, True) == 6
    assert pow2_frac_bits(0.5, 8, False) == 9
    assert pow2_frac_bits(3.0, 4, True) == 1


def test_mse_picks_a_power_of_two_and_the_best_candidate(gauss):
    for bits in (2, 4, 8):
        t = threshold_mse(gauss, bits, True)
        assert math.log2(t) == int(math.log2(t))
        e0 = math.ceil(math.log2(np.abs(gauss).max()))
        errs = {e: np.sum((gauss - fake_quant_np(gauss, bits - 1 - e, bits, True)) ** 2) for e in range(e0, e0 - 5, -1)}
        assert math.log2(t) == min(errs, key=errs.get)
    # Fewer bits clip harder.
    assert threshold_mse(gauss, 2, True) <= threshold_mse(gauss, 4, True) <= threshold_mse(gauss, 8, True)


def test_mse_on_uniform_keeps_the_range():
    x = np.random.default_rng(2).uniform(-1, 1, 100_000)
    assert threshold_mse(x, 8, True) == 1.0


def test_klj_on_gaussian_clips_the_tail(gauss):
    t8 = threshold_klj(gauss, 8, True)
    t4 = threshold_klj(gauss, 4, True)
    assert 2.5 < t4 < t8 <= threshold_max(gauss) + 1e-9
    assert t8 > 3.0


def test_klj_ignores_relu_zeros():
    rng = np.random.default_rng(3)
    x = np.maximum(rng.normal(size=100_000), 0)  # half exact zeros
    t = threshold_klj(x, 8, False)
    assert t > 2.0  # without the zero rule the spike picks a cut near max/8


def test_all_zero_and_bad_data():
    for m in CALIBRATIONS:  # documented: an all-zero tensor gets the smallest threshold, 2**-24
        assert calibrate(np.zeros(10), m) == 2.0 ** -24
    for args, msg in [((np.ones(3), "foo"), "unknown calibration 'foo'; supported: max, percentile, mse, klj"),
                      ((np.array([1.0, np.nan]), "max"), "calibration data contains NaN or infinity"),
                      ((np.array([1.0, -np.inf]), "mse"), "calibration data contains NaN or infinity"),
                      ((np.array([]), "max"), "calibration data is empty")]:
        with pytest.raises(ValueError) as info:
            calibrate(*args)
        assert type(info.value) is ValueError and str(info.value) == msg
    with pytest.raises(ValueError) as info:
        threshold_percentile(np.ones(3), percentile=0)
    assert type(info.value) is ValueError and str(info.value) == "percentile must be in (0, 100], not 0"


@pytest.mark.parametrize("rounding", ["half_even", "half_up"])
def test_fake_quant_np_is_golden_quantize(rounding):
    from systolic.golden import QType, dequantize, quantize

    x = np.random.default_rng(4).normal(size=1000) * 3
    x[:4] = [0.5 / 16, -0.5 / 16, 1.5 / 16, -2.5 / 16]  # ties
    qt = QType(5, True, 4)
    np.testing.assert_array_equal(fake_quant_np(x, 4, 5, True, rounding), dequantize(quantize(x, qt, rounding), qt))
