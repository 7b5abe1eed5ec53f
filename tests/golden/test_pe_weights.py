"""The shift PE's weights (systolic.golden.pe_weights): the representable set, the word, its decode."""

import numpy as np
import pytest

from systolic.golden.pe_weights import (decode_shift_words, encode_shift_weights, first_non_shift_weight,
                                        is_shift_weight, round_to_shift_weights, shift_exponent_bits,
                                        shift_weight_values, weight_words, word_weights)

WIDTHS = range(2, 17)


def _reference_set(w_bits):
    """Written out independently: 0 and +-1, +-2, ... up to the largest power below 2**(w_bits-1)."""
    out, p = {0}, 1
    while p < 1 << (w_bits - 1):
        out |= {p, -p}
        p *= 2
    return out


@pytest.mark.parametrize("w_bits", WIDTHS)
def test_representable_set(w_bits):
    values = shift_weight_values(w_bits)
    assert set(values.tolist()) == _reference_set(w_bits)
    assert len(values) == 2 * (w_bits - 1) + 1
    lo, hi = -(1 << (w_bits - 1)), (1 << (w_bits - 1)) - 1
    assert lo <= values.min() and values.max() <= hi       # also a w_bits two's-complement multiplier weight


@pytest.mark.parametrize("w_bits", WIDTHS)
def test_round_trip_over_every_representable_value(w_bits):
    values = shift_weight_values(w_bits)
    words = encode_shift_weights(values, w_bits)
    assert (decode_shift_words(words, w_bits) == values).all()
    lo, hi = -(1 << (w_bits - 1)), (1 << (w_bits - 1)) - 1
    assert words.min() >= lo and words.max() <= hi         # a signed w_bits integer: a signed LOAD takes it
    assert len(set(words.tolist())) == len(values)         # one word per weight
    assert encode_shift_weights(np.zeros(3, np.int64), w_bits).tolist() == [0, 0, 0]   # padding stays weight 0


@pytest.mark.parametrize("w_bits", WIDTHS)
def test_every_other_value_of_the_width_is_refused(w_bits):
    lo, hi = -(1 << (w_bits - 1)), (1 << (w_bits - 1)) - 1
    every = np.arange(lo, hi + 1, dtype=np.int64)
    ok = _reference_set(w_bits)
    assert is_shift_weight(every, w_bits).tolist() == [int(v) in ok for v in every]
    rule = f"0 and +-2**e for 0 <= e <= {w_bits - 2} (+-1 .. +-{1 << (w_bits - 2)}) with {w_bits}-bit weights"
    accepted = []
    for v in every.tolist():
        try:
            encode_shift_weights(np.array([v]), w_bits)
            accepted.append(v)
        except ValueError as exc:
            assert str(exc) == f"weight {v} at index (0,) is not a shift PE weight: it takes {rule}"
    assert set(accepted) == ok


def test_word_layout_8_bit():
    """Sign in bit 7, nonzero in bit 6, exponent in bits 2..0 (docs/isa.md)."""
    assert shift_exponent_bits(8) == 3
    values = shift_weight_values(8)
    enc = {int(v): int(w) & 0xFF for v, w in zip(values, encode_shift_weights(values, 8))}
    assert enc[0] == 0 and enc[1] == 0b0100_0000 and enc[64] == 0b0100_0110
    assert enc[-1] == 0b1100_0000 and enc[-8] == 0b1100_0011 and enc[-64] == 0b1100_0110
    assert [shift_exponent_bits(w) for w in (2, 3, 4, 5, 9, 16)] == [0, 1, 2, 2, 3, 4]


@pytest.mark.parametrize("w_bits", WIDTHS)
def test_decode_is_total_and_reads_the_low_bits(w_bits):
    """Every word decodes (the PE computes every word); a wider container changes nothing."""
    words = np.arange(1 << w_bits, dtype=np.int64)
    eb = shift_exponent_bits(w_bits)
    want = [0 if not (u >> (w_bits - 2)) & 1 else (-1) ** (u >> (w_bits - 1)) * 2 ** (u & ((1 << eb) - 1))
            for u in words.tolist()]
    assert decode_shift_words(words, w_bits).tolist() == want
    # The same byte loaded signed or unsigned (the scratchpad's w_bits + 1 bit element) decodes the same.
    signed = np.where(words >= 1 << (w_bits - 1), words - (1 << w_bits), words)
    assert (decode_shift_words(signed, w_bits) == decode_shift_words(words, w_bits)).all()


def test_first_non_shift_weight_and_multiplier_words():
    w = np.array([[0, 4, -2], [8, 6, 3]])
    assert first_non_shift_weight(w, 8) == ((1, 1), 6)
    assert first_non_shift_weight(w[:1], 8) is None
    assert first_non_shift_weight(np.array([np.iinfo(np.int64).min]), 8) == ((0,), np.iinfo(np.int64).min)
    assert (weight_words(w, 8, "multiplier") == w).all() and (word_weights(w, 8, "multiplier") == w).all()
    assert (word_weights(weight_words(w[:1], 8, "shift"), 8, "shift") == w[:1]).all()
    with pytest.raises(ValueError, match="^pe must be one of multiplier, shift, not 'adder'$"):
        weight_words(w, 8, "adder")
    with pytest.raises(ValueError, match="^w_bits must be between 2 and 16, not 17$"):
        shift_weight_values(17)


def test_round_to_shift_weights_inq_rule():
    # [b, 1.5b) -> b, [1.5b, 2b) -> 2b, clipped to 2**(w_bits-2); sign kept, 0 stays 0.
    x = np.array([0, 1, 2, 3, 5, 6, 7, 11, 12, 63, 95, 96, 127, -128, -3, -5])
    assert round_to_shift_weights(x, 8).tolist() == [0, 1, 2, 4, 4, 8, 8, 8, 16, 64, 64, 64, 64, -64, -4, -4]
    assert round_to_shift_weights(np.array([3, -7]), 4).tolist() == [4, -4]
    r = round_to_shift_weights(np.arange(-128, 128), 8)
    assert is_shift_weight(r, 8).all()
