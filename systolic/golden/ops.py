"""Integer GEMM and requantization: the arithmetic every compute layer shares."""

from __future__ import annotations

import numpy as np

from .primitives import as_int_array, round_shift, saturate
from .qtypes import QType, check_rounding

__all__ = ["matmul", "requantize", "AccumulatorOverflowError", "check_acc_range"]


class AccumulatorOverflowError(OverflowError):
    """A value (or a proven worst case) does not fit the accumulator width."""


def check_acc_range(lo: int, hi: int, acc_bits: int, what: str) -> None:
    """Raise :class:`AccumulatorOverflowError` unless ``[lo, hi]`` fits signed ``acc_bits``."""
    amin, amax = QType.range_of(acc_bits, True)
    if lo < amin or hi > amax:
        raise AccumulatorOverflowError(
            f"{what}: worst case [{lo}, {hi}] does not fit a {acc_bits}-bit accumulator "
            f"[{amin}, {amax}]"
        )


def matmul(a, w, acc_bits: int | None = None) -> np.ndarray:
    """``acc[m, n] = sum_k a[m, k] * w[k, n]`` in int64.

    With *acc_bits*, every result is checked to fit a signed ``acc_bits``
    accumulator (partial sums of a sum whose terms all have one sign are
    bounded by the total; the compiler's static proof covers mixed signs).
    """
    a = as_int_array(a, "a")
    w = as_int_array(w, "w")
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[0]:
        raise ValueError(f"matmul needs a (M, K) and w (K, N), not {a.shape} and {w.shape}")
    # Exact in int64 when |a|,|w| < 2**31 and K is modest: guard the magnitude instead of trusting it.
    amax = int(np.abs(a).max()) if a.size else 0
    wmax = int(np.abs(w).max()) if w.size else 0
    if amax * wmax * max(a.shape[1], 1) >= 1 << 62:
        raise OverflowError("matmul operands too large for exact int64 accumulation")
    acc = a @ w
    if acc_bits is not None and acc.size:
        check_acc_range(int(acc.min()), int(acc.max()), acc_bits, "matmul")
    return acc


def requantize(acc, bias, shift, out_type: QType, relu: bool = False,
               rounding: str = "half_even") -> np.ndarray:
    """``y = sat(relu?(round_shift(acc + bias, shift)))`` to ``out_type``'s range.

    Parameters
    ----------
    acc : (..., N) int array
        Accumulator values.
    bias : (N,) int array or None
        Integer bias at the accumulator's scale.
    shift : int or (N,) int array
        ``k = f_in + f_w - f_out``; per output channel when an array.
    out_type : QType
        Only ``bits`` and ``signed`` are used here.
    relu : bool
        Clamp negatives to 0 before saturation.
    """
    check_rounding(rounding)
    x = as_int_array(acc, "acc")
    if bias is not None:
        x = x + as_int_array(bias, "bias")
    y = round_shift(x, shift, rounding)
    if relu:
        y = np.maximum(y, 0)
    return saturate(y, out_type.bits, out_type.signed)
