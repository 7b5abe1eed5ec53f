"""Integer primitives of the numerics contract (see docs/numerics.md).

Everything here works on NumPy ``int64`` arrays and is exact: a result that
cannot be represented raises instead of wrapping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .qtypes import QType, as_int_array, check_rounding

__all__ = ["round_shift", "saturate", "quantize", "dequantize", "as_int_array", "MAX_SHIFT", "QTensor"]

#: Largest shift magnitude accepted by :func:`round_shift` (int64 arithmetic).
MAX_SHIFT = 62


def _shift_array(k, what: str = "k") -> np.ndarray:
    karr = as_int_array(k, what)
    if karr.size and (int(karr.min()) < -MAX_SHIFT or int(karr.max()) > MAX_SHIFT):
        raise ValueError(
            f"{what} must be between {-MAX_SHIFT} and {MAX_SHIFT}, "
            f"not {int(karr.min()) if int(karr.min()) < -MAX_SHIFT else int(karr.max())}"
        )
    return karr


def round_shift(x, k, rounding: str = "half_even") -> np.ndarray:
    """Divide by ``2**k`` with rounding; ``k <= 0`` multiplies by ``2**-k`` exactly.

    Parameters
    ----------
    x : array of int
        Values (typically ``acc + bias``).
    k : int or array of int
        Shift, broadcast against *x* (a per-channel shift is a 1-D array
        matching the last axis of *x*).
    rounding : {"half_even", "half_up"}
        ``half_even``: the nearest integer, ties to the even one.
        ``half_up``: ``(x + 2**(k-1)) >> k`` (ties toward +infinity).

    Returns
    -------
    ndarray of int64
        Not saturated: saturation is the separate step :func:`saturate`.

    Raises
    ------
    ValueError
        Unknown rounding mode, or a shift outside ``[-62, 62]``.
    OverflowError
        A left shift (``k < 0``) whose result leaves int64.
    """
    check_rounding(rounding)
    xa = as_int_array(x, "x")
    ka = _shift_array(k)
    xa, ka = np.broadcast_arrays(xa, ka)
    out = np.empty(xa.shape, dtype=np.int64)

    right = ka > 0
    if right.any():
        xr, kr = xa[right], ka[right]
        half = np.left_shift(np.int64(1), kr - 1)
        if rounding == "half_up":
            # x + half cannot overflow int64 unless |x| is within 2**61 of the limit.
            if xr.size and int(xr.max()) > np.iinfo(np.int64).max - (1 << 61):
                raise OverflowError("x is too close to the int64 limit for a half_up shift")
            out[right] = np.right_shift(xr + half, kr)
        else:
            q = np.right_shift(xr, kr)  # floor division by 2**k
            r = xr - np.left_shift(q, kr)  # remainder in [0, 2**k)
            up = (r > half) | ((r == half) & ((q & 1) == 1))
            out[right] = q + up
    zero = ka == 0
    out[zero] = xa[zero]
    left = ka < 0
    if left.any():
        xl, s = xa[left], -ka[left]
        limit = np.right_shift(np.int64(np.iinfo(np.int64).max), s)
        if np.any(np.abs(xl) > limit):
            raise OverflowError("left shift (k < 0) leaves the int64 range; saturate first or use a smaller shift")
        out[left] = np.left_shift(xl, s)
    return out


def saturate(x, bits: int, signed: bool) -> np.ndarray:
    """Clip *x* to the range of a ``bits``-wide signed or unsigned integer."""
    lo, hi = QType.range_of(bits, signed)
    return np.clip(as_int_array(x, "x"), lo, hi)


def quantize(x, qtype: QType, rounding: str = "half_even") -> np.ndarray:
    """Float -> int: ``clip(round(x * 2**frac_bits), lo, hi)``.

    Multiplying by a power of two is exact in binary floating point, so the
    only rounding is the one named by *rounding* (``half_up`` rounds ties
    toward +infinity, matching :func:`round_shift`).
    """
    check_rounding(rounding)
    if not isinstance(qtype, QType):
        raise TypeError(f"qtype must be a QType, not {qtype!r}")
    xf = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(xf)):
        raise ValueError("x contains NaN or infinity; cannot quantize")
    scaled = np.ldexp(xf, qtype.frac_bits)
    r = np.rint(scaled) if rounding == "half_even" else np.floor(scaled + 0.5)
    lo, hi = qtype.lo, qtype.hi
    return np.clip(r, lo, hi).astype(np.int64)


def dequantize(q, qtype: QType) -> np.ndarray:
    """Int -> float: ``q * 2**-frac_bits`` (exact in float64 for |q| < 2**53)."""
    return np.ldexp(as_int_array(q, "q").astype(np.float64), -qtype.frac_bits)


@dataclass(frozen=True, eq=False)
class QTensor:
    """Integers ``q`` (int64) together with their :class:`QType`; validated on construction."""

    q: np.ndarray
    qtype: QType

    def __post_init__(self):
        if not isinstance(self.qtype, QType):
            raise TypeError(f"qtype must be a QType, not {self.qtype!r}")
        object.__setattr__(self, "q", self.qtype.check(self.q, "QTensor"))

    @property
    def shape(self):
        return self.q.shape

    def dequantize(self) -> np.ndarray:
        return np.ldexp(self.q.astype(np.float64), -self.qtype.frac_bits)

    @classmethod
    def from_float(cls, x, qtype: QType, rounding: str = "half_even") -> "QTensor":
        return cls(quantize(x, qtype, rounding), qtype)
