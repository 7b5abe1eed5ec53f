"""Integer primitives of the numerics contract (see docs/numerics.md).

Everything here works on NumPy ``int64`` arrays and is exact: a result that
cannot be represented raises instead of wrapping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .qtypes import QType, as_int_array, check_rounding

__all__ = ["round_shift", "round_div", "saturate", "quantize", "dequantize", "as_int_array", "add_exact",
           "MAX_SHIFT", "INT64_MIN", "INT64_MAX", "QTensor"]

#: Largest shift magnitude accepted by :func:`round_shift` (int64 arithmetic).
MAX_SHIFT = 62
#: The range the golden model computes in: every int64, ``-2**63`` included.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def add_exact(x, y, what: str = "x + y") -> np.ndarray:
    """``x + y`` in int64, broadcast; ``OverflowError`` if any sum leaves ``[-2**63, 2**63 - 1]``."""
    xa = as_int_array(x, "x")
    ya = as_int_array(y, "y")
    with np.errstate(over="ignore"):
        s = np.add(xa, ya)                      # wraps on overflow; detected exactly below
    # Two's complement: a sum overflowed iff both operands have the sign the result lacks.
    if np.any(((xa ^ s) & (ya ^ s)) < 0):
        raise OverflowError(f"{what} leaves the int64 range [-2**63, 2**63 - 1]")
    return np.asarray(s, dtype=np.int64)


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
        A result that leaves int64 ``[-2**63, 2**63 - 1]``: a left shift (``k < 0``), or
        ``x + 2**(k-1)`` of a ``half_up`` shift. ``-2**63`` itself is a valid input and result.
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
            # x + 2**(k-1) must stay in int64 (it does unless x is within 2**(k-1) of 2**63).
            if np.any(xr > INT64_MAX - half):
                raise OverflowError("x + 2**(k-1) of a half_up shift leaves the int64 range [-2**63, 2**63 - 1]")
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
        # x * 2**s fits int64 iff -2**(63-s) <= x <= (2**63 - 1) >> s  (s is 1..62): exact, -2**63 included.
        hi = np.right_shift(np.int64(INT64_MAX), s)
        lo = np.left_shift(np.int64(-1), 63 - s)
        if np.any((xl > hi) | (xl < lo)):
            raise OverflowError("left shift (k < 0) leaves the int64 range [-2**63, 2**63 - 1]; "
                                "saturate first or use a smaller shift")
        out[left] = np.left_shift(xl, s)
    return out


def round_div(x, d: int, rounding: str = "half_even") -> np.ndarray:
    """``x / d`` rounded to the nearest integer, ties by *rounding*; *d* a positive int up to ``2**63 - 1``.

    With ``q = floor(x / d)`` and ``r = x - q*d`` (so ``0 <= r < d``), the result is ``q + 1`` when
    ``r > d - r`` (above half), or when ``r == d - r`` (a tie) and the mode is ``half_up`` or ``q`` is odd
    (``half_even``); else ``q``. Exact for every int64 *x*: ``r`` is compared with ``d - r``, never doubled.
    For ``d = 2**k`` it equals :func:`round_shift` ``(x, k)``.
    """
    check_rounding(rounding)
    xa = as_int_array(x, "x")
    if not isinstance(d, (int, np.integer)) or isinstance(d, (bool, np.bool_)) or not 1 <= int(d) <= INT64_MAX:
        raise ValueError(f"d must be an int between 1 and 2**63 - 1, not {d!r}")
    dd = np.int64(int(d))
    q, r = np.divmod(xa, dd)            # floor division, 0 <= r < d: exact in int64 for d >= 1
    rest = dd - r                       # d - r in [1, d]: no overflow
    tie = r == rest
    if rounding == "half_even":
        tie = tie & ((q & 1) == 1)
    up = (r > rest) | tie
    return np.asarray(q + up, dtype=np.int64)   # up only if r > 0, so q < x / d and q + 1 fits


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
