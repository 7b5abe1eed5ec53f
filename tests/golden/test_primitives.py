"""Property tests of the primitives against plain-Python references."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from systolic.golden import QType, quantize, dequantize, round_shift, saturate, requantize, MAX_SHIFT

from .reference import quantize_ref, requant_ref, round_shift_ref, saturate_ref

MODES = ["half_even", "half_up"]
ints = st.integers(min_value=-(2 ** 40), max_value=2 ** 40)


@settings(max_examples=400, deadline=None)
@given(x=ints, k=st.integers(-20, 45), mode=st.sampled_from(MODES))
def test_round_shift_matches_reference(x, k, mode):
    assert int(round_shift(x, k, mode)) == round_shift_ref(x, k, mode)


@settings(max_examples=300, deadline=None)
@given(q=st.integers(-(2 ** 30), 2 ** 30), k=st.integers(1, 31), mode=st.sampled_from(MODES))
def test_round_shift_exact_ties(q, k, mode):
    # x = (q + 1/2) * 2**k is exactly halfway between q and q + 1.
    x = q * 2 ** k + 2 ** (k - 1)
    got = int(round_shift(x, k, mode))
    if mode == "half_up":
        assert got == q + 1
    else:
        assert got == (q if q % 2 == 0 else q + 1)
        assert got % 2 == 0


@settings(max_examples=200, deadline=None)
@given(xs=st.lists(ints, min_size=1, max_size=20), mode=st.sampled_from(MODES), data=st.data())
def test_round_shift_per_channel_broadcast(xs, mode, data):
    ks = data.draw(st.lists(st.integers(-8, 40), min_size=len(xs), max_size=len(xs)))
    got = round_shift(np.array([xs, xs]), np.array(ks), mode)
    want = [round_shift_ref(x, k, mode) for x, k in zip(xs, ks)]
    assert got.tolist() == [want, want]


@settings(max_examples=300, deadline=None)
@given(x=ints, bits=st.integers(1, 32), signed=st.booleans())
def test_saturate_matches_reference(x, bits, signed):
    if signed and bits < 2:
        bits = 2
    assert int(saturate(x, bits, signed)) == saturate_ref(x, bits, signed)


@settings(max_examples=300, deadline=None)
@given(acc=st.integers(-(2 ** 31), 2 ** 31 - 1), bias=st.integers(-(2 ** 20), 2 ** 20),
       k=st.integers(-6, 32), bits=st.sampled_from([2, 4, 8, 16]), signed=st.booleans(),
       relu=st.booleans(), mode=st.sampled_from(MODES))
def test_requantize_matches_reference(acc, bias, k, bits, signed, relu, mode):
    got = requantize(np.array([acc]), np.array([bias]), k, QType(bits, signed, 0), relu, mode)
    assert int(got[0]) == requant_ref(acc, bias, k, bits, signed, relu, mode)


@settings(max_examples=300, deadline=None)
@given(x=st.floats(-1e6, 1e6, allow_nan=False), bits=st.sampled_from([2, 4, 8, 16]),
       signed=st.booleans(), frac=st.integers(-8, 16), mode=st.sampled_from(MODES))
def test_quantize_matches_reference(x, bits, signed, frac, mode):
    t = QType(bits, signed, frac)
    assert int(quantize(x, t, mode)) == quantize_ref(x, bits, signed, frac, mode)


@pytest.mark.parametrize("mode,expected", [
    # x / 2 for x = -7..7; ties at odd x.
    ("half_even", [-4, -3, -2, -2, -2, -1, 0, 0, 0, 1, 2, 2, 2, 3, 4]),
    ("half_up", [-3, -3, -2, -2, -1, -1, 0, 0, 1, 1, 2, 2, 3, 3, 4]),
])
def test_round_shift_worked_example(mode, expected):
    # Hand-computed table, also shown in docs/numerics.md.
    assert round_shift(np.arange(-7, 8), 1, mode).tolist() == expected


def test_shift_of_zero_is_identity_and_full_width_shift():
    x = np.array([-(2 ** 31), -1, 0, 1, 2 ** 31 - 1])
    for mode in MODES:
        assert round_shift(x, 0, mode).tolist() == x.tolist()
        # Shifting a 32-bit value by 32: only ties (+-2**31 exactly half) and zero remain.
        assert round_shift(x, 32, mode).tolist() == [round_shift_ref(int(v), 32, mode) for v in x]
    assert round_shift(x, 32, "half_even").tolist() == [0, 0, 0, 0, 0]
    assert round_shift(x, 32, "half_up").tolist() == [0, 0, 0, 0, 0]
    assert round_shift(2 ** 31, 32, "half_up") == 1 and round_shift(2 ** 31, 32, "half_even") == 0
    assert round_shift(3 * 2 ** 31, 32, "half_even") == 2


def test_negative_shift_is_exact_left_shift_then_saturation_is_separate():
    y = round_shift(np.array([-3, 5, 100]), -3)
    assert y.tolist() == [-24, 40, 800]
    assert saturate(y, 8, True).tolist() == [-24, 40, 127]


def test_saturation_edges():
    assert saturate([-129, -128, 127, 128], 8, True).tolist() == [-128, -128, 127, 127]
    assert saturate([-1, 0, 255, 256], 8, False).tolist() == [0, 0, 255, 255]
    assert saturate([-9, -8, 7, 8], 4, True).tolist() == [-8, -8, 7, 7]


def test_errors_are_clear():
    with pytest.raises(ValueError, match=r"rounding must be one of half_even, half_up, not 'nearest'"):
        round_shift(1, 1, "nearest")
    with pytest.raises(ValueError, match=rf"k must be between -{MAX_SHIFT} and {MAX_SHIFT}, not 63"):
        round_shift(1, 63)
    with pytest.raises(TypeError, match="x must be an integer array, not dtype float64"):
        round_shift(np.array([1.5]), 1)
    with pytest.raises(OverflowError, match="left shift"):
        round_shift(2 ** 40, -30)
    with pytest.raises(ValueError, match="NaN"):
        quantize([np.nan], QType(8, True, 0))


def test_quantize_dequantize_round_trip_is_exact_on_grid():
    t = QType(8, True, 5)
    q = np.arange(-128, 128)
    assert quantize(dequantize(q, t), t).tolist() == q.tolist()


@pytest.mark.parametrize("kwargs,exc,msg", [
    (dict(bits=0, signed=False, frac_bits=0), ValueError, "bits must be between 1 and 32, not 0"),
    (dict(bits=1, signed=True, frac_bits=0), ValueError, "bits must be between 2 and 32, not 1"),
    (dict(bits=33, signed=True, frac_bits=0), ValueError, "bits must be between 2 and 32, not 33"),
    (dict(bits=8.0, signed=True, frac_bits=0), TypeError, "bits must be an int, not 8.0"),
    (dict(bits=8, signed=1, frac_bits=0), TypeError, "signed must be a bool, not 1"),
    (dict(bits=8, signed=True, frac_bits=49), ValueError, "frac_bits must be between -48 and 48, not 49"),
])
def test_qtype_validation(kwargs, exc, msg):
    with pytest.raises(exc) as info:
        QType(**kwargs)
    assert str(info.value) == msg


def test_qtype_ranges_and_check():
    assert (QType(8, True, 0).lo, QType(8, True, 0).hi) == (-128, 127)
    assert (QType(4, False, 0).lo, QType(4, False, 0).hi) == (0, 15)
    with pytest.raises(ValueError, match=r"holds 16, outside the range \[0, 15\]"):
        QType(4, False, 0).check([1, 16])


def test_docs_requantize_worked_example():
    # docs/numerics.md, "requantizing an accumulator": k = 8, values 5.5, 4.5, -4.5, -5.5 times 256.
    x = np.array([1408, 1152, -1152, -1408])
    assert round_shift(x, 8, "half_even").tolist() == [6, 4, -4, -6]
    assert round_shift(x, 8, "half_up").tolist() == [6, 5, -4, -5]
    assert saturate(round_shift(40, -2), 8, True) == 127
