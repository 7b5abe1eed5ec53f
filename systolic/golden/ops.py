"""Integer GEMM and requantization: the arithmetic every compute layer shares."""

from __future__ import annotations

import numpy as np

from .primitives import INT64_MAX, add_exact, as_int_array, round_shift, saturate
from .qtypes import QType, check_rounding

__all__ = ["matmul", "grouped_matmul", "requantize", "clamp_saturate", "AccumulatorOverflowError", "check_acc_range",
           "abs_max", "gemm_abs_bound"]

_LOW32 = np.uint64((1 << 32) - 1)


def abs_max(x: np.ndarray) -> int:
    """``max |x|`` as a Python int (exact for ``-2**63``, where ``np.abs`` wraps); 0 for an empty array."""
    if not x.size:
        return 0
    return max(-int(x.min()), int(x.max()), 0)


def gemm_abs_bound(absw: np.ndarray, amax: int, absb=None, limit=INT64_MAX):
    """Check ``amax * sum_k absw[k, n] + absb[n] <= limit[n]`` for every column ``n``, exactly.

    *absw* is ``(K, N)`` of non-negative magnitudes (any int64 or uint64; ``np.abs`` of int64 viewed as
    uint64 is exact), *absb* ``(N,)`` non-negative or None, *limit* an int or ``(N,)`` (each ``<= 2**63 - 1``).
    This bounds every partial sum of ``a @ w + bias`` for ``|a| <= amax``. Vectorized in uint64: each column
    sum is kept as a high and a low 32-bit part, so nothing wraps and no Python int per element is made.

    Returns None if every column fits, else ``(n, bound)``: the worst failing column (by a float estimate)
    and its exact bound as a Python int.
    """
    absw = np.asarray(absw).astype(np.uint64, copy=False)
    n_cols = absw.shape[-1]
    absw = absw.reshape(-1, n_cols)
    if absw.shape[0] >= 1 << 31:
        raise OverflowError("gemm_abs_bound: the reduction is too long")
    hi = (absw >> np.uint64(32)).sum(axis=0, dtype=np.uint64)      # each < 2**31 * K < 2**62
    lo = (absw & _LOW32).sum(axis=0, dtype=np.uint64)              # each < 2**32 * K < 2**63
    hi = hi + (lo >> np.uint64(32))
    lo = lo & _LOW32                                               # sum_k absw[k, n] = hi * 2**32 + lo
    b = np.zeros(n_cols, np.uint64) if absb is None else np.asarray(absb).astype(np.uint64, copy=False)
    lim = np.broadcast_to(np.asarray(limit, dtype=np.int64), (n_cols,)).astype(np.uint64)
    room_ok = b <= lim
    room = np.where(room_ok, lim - np.minimum(b, lim), np.uint64(0))
    if amax == 0:
        ok = room_ok
    else:
        q = room // np.uint64(amax)                                # largest column sum that fits
        qh, ql = q >> np.uint64(32), q & _LOW32
        ok = room_ok & ((hi < qh) | ((hi == qh) & (lo <= ql)))
    if ok.all():
        return None
    bad = np.flatnonzero(~ok)
    est = (hi[bad].astype(np.float64) * 2.0 ** 32 + lo[bad]) * float(amax) + b[bad].astype(np.float64)
    n = int(bad[int(np.argmax(est))])
    return n, amax * ((int(hi[n]) << 32) + int(lo[n])) + int(b[n])


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


#: Below this bound on every partial sum a float64 product is exact (every partial sum, in any order, is an
#: integer of magnitude <= 2**53, which float64 represents exactly).
FLOAT_EXACT = 1 << 53


def _exact_product(a: np.ndarray, w: np.ndarray, absw: np.ndarray, amax: int) -> np.ndarray:
    """``a @ w`` (batched by ``np.matmul``) in int64, computed in float64 (BLAS) when
    ``max|a| * sum_k |w[k, n]| <= 2**53`` for every column, where float64 is exact: the same integers,
    several times faster than NumPy's integer GEMM. *absw* is ``|w|`` as ``(K, columns)`` uint64."""
    if a.size and w.size and gemm_abs_bound(absw, amax, None, FLOAT_EXACT) is None:
        return np.matmul(a.astype(np.float64), w.astype(np.float64)).astype(np.int64)
    return np.matmul(a, w)


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
    # Exact in int64 iff no partial sum can wrap: max|a| * sum_k |w[k, n]| <= 2**63 - 1 for every n
    # (np.abs wraps only at -2**63, whose uint64 view is 2**63 again: exact).
    absw = np.abs(w).view(np.uint64)
    amax = abs_max(a)
    if a.size and w.size and gemm_abs_bound(absw, amax) is not None:
        raise OverflowError("matmul operands too large for exact int64 accumulation: "
                            "max|a| * sum_k |w[k, n]| exceeds 2**63 - 1")
    acc = _exact_product(a, w, absw, amax)
    if acc_bits is not None and acc.size:
        check_acc_range(int(acc.min()), int(acc.max()), acc_bits, "matmul")
    return acc


def grouped_matmul(a, w) -> np.ndarray:
    """``acc[g, m, n] = sum_k a[g, m, k] * w[g, k, n]``: one GEMM per group, in int64.

    *a* is ``(G, M, K)``, *w* ``(G, K, N)``. Refused like :func:`matmul` unless
    ``max|a| * sum_k |w[g, k, n]| <= 2**63 - 1`` for every group and column, which bounds every partial sum.
    """
    a = as_int_array(a, "a")
    w = as_int_array(w, "w")
    if a.ndim != 3 or w.ndim != 3 or a.shape[0] != w.shape[0] or a.shape[2] != w.shape[1]:
        raise ValueError(f"grouped_matmul needs a (G, M, K) and w (G, K, N), not {a.shape} and {w.shape}")
    absw = np.abs(w).view(np.uint64).transpose(1, 0, 2).reshape(w.shape[1], -1)   # (K, G*N): one column each
    amax = abs_max(a)
    if a.size and w.size and gemm_abs_bound(absw, amax) is not None:
        raise OverflowError("grouped_matmul operands too large for exact int64 accumulation: "
                            "max|a| * sum_k |w[g, k, n]| exceeds 2**63 - 1")
    return _exact_product(a, w, absw, amax)


def requantize(acc, bias, shift, out_type: QType, relu: bool = False,
               rounding: str = "half_even", out_max: int | None = None) -> np.ndarray:
    """``y = sat(min(relu?(round_shift(acc + bias, shift)), out_max))`` to ``out_type``'s range.

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
    out_max : int or None
        Upper clamp in the output's integer units (e.g. ReLU6: ``6 << f_out``), applied after the
        ReLU and before saturation; None: no clamp.
    """
    check_rounding(rounding)
    x = as_int_array(acc, "acc")
    if bias is not None:
        x = add_exact(x, as_int_array(bias, "bias"), "acc + bias")
    y = round_shift(x, shift, rounding)
    return clamp_saturate(y, out_type, relu, out_max)


def clamp_saturate(y, out_type: QType, relu: bool = False, out_max: int | None = None) -> np.ndarray:
    """``sat(min(relu?(y), out_max))`` to ``out_type``'s range: the last step of every requantization."""
    y = as_int_array(y, "y")
    if relu:
        y = np.maximum(y, 0)
    if out_max is not None:
        y = np.minimum(y, np.int64(out_max))
    return saturate(y, out_type.bits, out_type.signed)
