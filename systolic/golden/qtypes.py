"""Integer tensor types: ``(bits, signed, frac_bits)`` with power-of-two scale."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["QType", "ROUNDING_MODES", "check_rounding", "as_int_array"]

#: Rounding modes of the numerics contract (docs/numerics.md).
ROUNDING_MODES = ("half_even", "half_up")

#: Widest integer type the golden model represents (it computes in int64).
MAX_BITS = 32
#: Fractional-bit range accepted (scale 2**-frac_bits).
MAX_FRAC = 48


def as_int_array(x, what: str = "x") -> np.ndarray:
    """Return *x* as an ``int64`` array; refuse floats, bools and objects."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{what} must be an integer array, not dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise OverflowError(f"{what} has values above the int64 range")
    return arr.astype(np.int64, copy=False)


def check_rounding(rounding) -> str:
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDING_MODES)}, not {rounding!r}")
    return rounding


@dataclass(frozen=True)
class QType:
    """Type of a quantized tensor: its real value is ``q * 2**-frac_bits``.

    Parameters
    ----------
    bits : int
        Width, 1..32.
    signed : bool
        Two's complement ``[-2**(bits-1), 2**(bits-1)-1]`` or unsigned ``[0, 2**bits-1]``.
    frac_bits : int
        Fractional bits, -48..48 (negative means a scale above 1).
    """

    bits: int
    signed: bool
    frac_bits: int

    def __post_init__(self):
        if not isinstance(self.bits, (int, np.integer)) or isinstance(self.bits, bool):
            raise TypeError(f"bits must be an int, not {self.bits!r}")
        if not 1 <= self.bits <= MAX_BITS or (self.signed and self.bits < 2):
            low = 2 if self.signed else 1
            raise ValueError(f"bits must be between {low} and {MAX_BITS}, not {self.bits}")
        if not isinstance(self.signed, (bool, np.bool_)):
            raise TypeError(f"signed must be a bool, not {self.signed!r}")
        if not isinstance(self.frac_bits, (int, np.integer)) or isinstance(self.frac_bits, bool):
            raise TypeError(f"frac_bits must be an int, not {self.frac_bits!r}")
        if not -MAX_FRAC <= self.frac_bits <= MAX_FRAC:
            raise ValueError(f"frac_bits must be between {-MAX_FRAC} and {MAX_FRAC}, not {self.frac_bits}")
        object.__setattr__(self, "bits", int(self.bits))
        object.__setattr__(self, "signed", bool(self.signed))
        object.__setattr__(self, "frac_bits", int(self.frac_bits))

    @staticmethod
    def range_of(bits: int, signed: bool) -> tuple[int, int]:
        """``(lo, hi)`` of a *bits*-bit two's complement (*signed*) or unsigned integer: the one definition
        of integer ranges, used by the golden model, the accelerator config, the hardware and the compiler."""
        if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 62:
            raise ValueError(f"bits must be between 1 and 62, not {bits!r}")
        if signed:
            return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return 0, (1 << bits) - 1

    @property
    def lo(self) -> int:
        return self.range_of(self.bits, self.signed)[0]

    @property
    def hi(self) -> int:
        return self.range_of(self.bits, self.signed)[1]

    @property
    def scale(self) -> float:
        """Real value of one integer step, ``2**-frac_bits``."""
        return 2.0 ** -self.frac_bits

    def with_frac(self, frac_bits: int) -> "QType":
        return QType(self.bits, self.signed, frac_bits)

    def check(self, q, what: str = "tensor") -> np.ndarray:
        """Return *q* as int64 after checking every element lies in range."""
        arr = as_int_array(q, what)
        if arr.size and (int(arr.min()) < self.lo or int(arr.max()) > self.hi):
            bad = int(arr.min()) if int(arr.min()) < self.lo else int(arr.max())
            raise ValueError(f"{what} holds {bad}, outside the range [{self.lo}, {self.hi}] of {self}")
        return arr

    def to_json(self) -> dict:
        return {"bits": self.bits, "signed": self.signed, "frac_bits": self.frac_bits}

    @classmethod
    def from_json(cls, obj) -> "QType":
        if not isinstance(obj, dict) or set(obj) != {"bits", "signed", "frac_bits"}:
            raise ValueError(f"a qtype must be an object with keys bits, signed, frac_bits, not {obj!r}")
        return cls(obj["bits"], obj["signed"], obj["frac_bits"])

    def __str__(self) -> str:
        return f"{'int' if self.signed else 'uint'}{self.bits}(f={self.frac_bits})"
