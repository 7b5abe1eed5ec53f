"""The weights each kind of processing element takes, and the word it stores for a weight.

Two PE kinds (``AcceleratorConfig.pe``):

* ``"multiplier"``: the PE multiplies; its weight word is the weight itself, a ``w_bits``-bit integer.
* ``"shift"``: the PE shifts (INQ-style power-of-two weights); it takes the weights ``0`` and ``+-2**e``
  for ``0 <= e <= w_bits - 2`` (:func:`shift_weight_values`). ``+2**(w_bits-1)`` does not fit a
  ``w_bits``-bit two's-complement weight and ``-2**(w_bits-1)`` would make the set asymmetric, so the
  exponent stops at ``w_bits - 2``: every shift weight is also an ordinary ``w_bits``-bit weight of the
  multiplier PE and of the golden model, and ``|a * w|`` stays within the multiplier's product range.

The shift weight word (``w_bits`` bits, :func:`encode_shift_weights` / :func:`decode_shift_words`)::

    bit w_bits-1   sign s        (1: negative)
    bit w_bits-2   nonzero n     (0: the weight is 0)
    bits eb-1..0   exponent e    (eb = (w_bits - 2).bit_length() bits; the bits between are 0)

A weight ``0`` is the word ``0``, so zero padding and zero-filled scratchpad lines are weight 0. The
word travels as the ``w_bits``-bit two's-complement integer with these bits (a weight byte in DRAM,
loaded as signed). Decoding is total: it reads the low ``w_bits`` bits of any integer, ``n = 0`` gives
0 whatever the other bits, else ``(-1)**s * 2**e`` for every value of the exponent field (up to
``2**eb - 1``, beyond ``w_bits - 2`` only in words :func:`encode_shift_weights` never writes); the PE
computes exactly this, so the NumPy executor and the RTL agree on every word. The product is exactly
``a * w``: accumulators and the golden GEMM are the same for both PE kinds.
"""

from __future__ import annotations

import numpy as np

from .qtypes import as_int_array

__all__ = ["PE_KINDS", "shift_exponent_bits", "shift_max_exponent", "shift_weight_values", "shift_weight_rule",
           "is_shift_weight", "first_non_shift_weight", "encode_shift_weights", "decode_shift_words",
           "round_to_shift_weights", "weight_words", "word_weights"]

#: Processing-element kinds: multiply-accumulate, or shift-accumulate with power-of-two weights.
PE_KINDS = ("multiplier", "shift")


def _check_bits(w_bits) -> int:
    if not isinstance(w_bits, int) or isinstance(w_bits, bool):
        raise TypeError(f"w_bits must be an int, not {w_bits!r}")
    if not 2 <= w_bits <= 16:
        raise ValueError(f"w_bits must be between 2 and 16, not {w_bits}")
    return w_bits


def shift_max_exponent(w_bits: int) -> int:
    """Largest exponent of a shift weight: ``w_bits - 2``."""
    return _check_bits(w_bits) - 2


def shift_exponent_bits(w_bits: int) -> int:
    """Width of the exponent field: ``(w_bits - 2).bit_length()`` (0 for 2-bit words: only +-1)."""
    return shift_max_exponent(w_bits).bit_length()


def shift_weight_values(w_bits: int) -> np.ndarray:
    """Every weight a shift PE with *w_bits*-bit words takes, ascending: ``0`` and ``+-2**e``."""
    pos = [1 << e for e in range(shift_max_exponent(w_bits) + 1)]
    return np.array(sorted([-p for p in pos] + [0] + pos), dtype=np.int64)


def shift_weight_rule(w_bits: int) -> str:
    """The representable set in words, for error messages and docs."""
    emax = shift_max_exponent(w_bits)
    return f"0 and +-2**e for 0 <= e <= {emax} (+-1 .. +-{1 << emax}) with {w_bits}-bit weights"


def is_shift_weight(w, w_bits: int) -> np.ndarray:
    """Boolean mask: which entries of *w* a shift PE with *w_bits*-bit words takes."""
    w = as_int_array(w, "w")
    mag = np.abs(w)
    power = (mag > 0) & ((mag & (mag - 1)) == 0)    # mag > 0 also rules out -2**63, whose abs wraps
    return (mag == 0) | (power & (mag <= (1 << shift_max_exponent(w_bits))))


def first_non_shift_weight(w, w_bits: int):
    """``(index, value)`` of the first entry of *w* (C order) a shift PE cannot take, or None."""
    w = as_int_array(w, "w")
    bad = np.flatnonzero(~is_shift_weight(w, w_bits))
    if bad.size == 0:
        return None
    idx = tuple(int(i) for i in np.unravel_index(bad[0], w.shape))
    return idx, int(w[idx])


def encode_shift_weights(w, w_bits: int) -> np.ndarray:
    """The shift weight words of *w* as ``w_bits``-bit two's-complement integers (int64, shape of *w*).

    Raises ``ValueError`` naming the first weight that is not ``0`` or ``+-2**e`` (``e <= w_bits - 2``).
    """
    w = as_int_array(w, "w")
    bad = first_non_shift_weight(w, w_bits)
    if bad is not None:
        idx, val = bad
        where = f" at index {idx}" if w.ndim else ""
        raise ValueError(f"weight {val}{where} is not a shift PE weight: it takes {shift_weight_rule(w_bits)}")
    mag = np.abs(w)
    e = np.zeros_like(w)
    nz = mag > 0
    e[nz] = np.log2(mag[nz]).astype(np.int64)      # exact: mag is a power of two below 2**15
    sign = (w < 0).astype(np.int64)
    word = np.where(nz, (sign << (w_bits - 1)) | (1 << (w_bits - 2)) | e, 0)
    return np.where(word >= 1 << (w_bits - 1), word - (1 << w_bits), word)


def decode_shift_words(words, w_bits: int) -> np.ndarray:
    """The weights of shift weight *words* (any integers: their low *w_bits* bits are the word; total)."""
    u = as_int_array(words, "words") & ((1 << _check_bits(w_bits)) - 1)
    sign = (u >> (w_bits - 1)) & 1
    nz = (u >> (w_bits - 2)) & 1
    e = u & ((1 << shift_exponent_bits(w_bits)) - 1)
    mag = np.left_shift(np.int64(1), e)
    return np.where(nz == 1, np.where(sign == 1, -mag, mag), 0)


def round_to_shift_weights(w, w_bits: int) -> np.ndarray:
    """*w* rounded to shift weights, INQ's way: magnitude ``x`` in ``[b, 1.5b)`` -> ``b``, ``[1.5b, 2b)`` ->
    ``2b`` (a tie goes to the larger power), clipped to ``2**(w_bits - 2)``; 0 stays 0, the sign is kept."""
    w = as_int_array(w, "w")
    mag = np.abs(w)
    floor = np.where(mag > 0, np.left_shift(np.int64(1), np.floor(np.log2(np.maximum(mag, 1))).astype(np.int64)),
                     0)
    level = np.where(2 * mag >= 3 * floor, 2 * floor, floor)
    level = np.minimum(level, 1 << shift_max_exponent(w_bits))
    return np.sign(w) * level


def weight_words(w, w_bits: int, pe: str) -> np.ndarray:
    """The words a PE of kind *pe* stores for weights *w*: *w* itself (multiplier) or the shift encoding."""
    _check_pe(pe)
    return encode_shift_weights(w, w_bits) if pe == "shift" else as_int_array(w, "w")


def word_weights(words, w_bits: int, pe: str) -> np.ndarray:
    """The weights a PE of kind *pe* multiplies by for stored *words* (the inverse of :func:`weight_words`)."""
    _check_pe(pe)
    return decode_shift_words(words, w_bits) if pe == "shift" else as_int_array(words, "words")


def _check_pe(pe):
    if pe not in PE_KINDS:
        raise ValueError(f"pe must be one of {', '.join(PE_KINDS)}, not {pe!r}")
