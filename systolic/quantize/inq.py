"""INQ: incremental network quantization (Zhou et al., ICLR 2017) with power-of-two weights.

Every weight ends as ``0`` or ``+-2**e * 2**-f``: an ordinary golden integer weight that is ``0`` or
``+-2**e`` with ``0 <= e <= bits - 2`` (so it also fits a ``bits``-wide two's-complement multiplier
weight, and the shift processing element takes it as sign plus exponent). Per tensor:

* the largest level follows the paper: ``n1 = floor(log2(4 max|w| / 3))``, so ``f = bits - 2 - n1``;
* :func:`inq_levels` maps ``x = |w| * 2**f`` to a level the paper's way: level ``b`` for ``x`` in
  ``[(a + b) / 2, 3b / 2)`` with ``a`` the next lower level, so ``0`` below ``1/2``, ``1`` in ``[1/2, 3/2)``,
  ``2`` in ``[3/2, 3)``, ``4`` in ``[3, 6)``; a boundary goes to the larger level; clipped to
  ``2**(bits - 2)`` (no rounding mode involved);
* the weights are quantized in growing partitions by magnitude (50, 75, 87.5, 100 %, cumulative,
  largest first); between partitions the part not yet quantized is retrained in float while the
  quantized part stays frozen (:class:`INQWeightQuantizer`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..golden.pe_weights import shift_max_exponent
from .calibrate import TINY
from .quantizers import Quantizer

__all__ = ["INQ_RATIOS", "inq_frac_bits", "inq_levels", "INQWeightQuantizer"]

#: Cumulative fractions of each tensor's weights quantized at each INQ step (the paper's schedule).
INQ_RATIOS = (0.5, 0.75, 0.875, 1.0)


def inq_frac_bits(w: np.ndarray, bits: int) -> int:
    """Fractional bits of the INQ grid: the largest level ``2**n1``, ``n1 = floor(log2(4 max|w| / 3))``,
    is the integer ``2**(bits - 2)``."""
    amax = max(float(np.max(np.abs(w))), TINY)
    n1 = math.floor(math.log2(4.0 * amax / 3.0))
    return shift_max_exponent(bits) - n1


def inq_levels(w: np.ndarray, frac: int, bits: int) -> np.ndarray:
    """The INQ integer of each weight: ``0`` or ``+-2**e``, ``0 <= e <= bits - 2`` (int64)."""
    x = np.abs(np.ldexp(np.asarray(w, dtype=np.float64), frac))
    emax = shift_max_exponent(bits)
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.where(x > 0, x, 1.0)))
    p = np.ldexp(1.0, e.astype(np.int64))                      # 2**floor(log2 x)
    level = np.where(x >= 1.5 * p, 2.0 * p, p)                 # [b, 1.5b) -> b, [1.5b, 2b) -> 2b
    level = np.where(x < 1.0, np.where(x >= 0.5, 1.0, 0.0), level)
    level = np.minimum(level, float(1 << emax))
    return (np.sign(w) * level).astype(np.int64)


class INQWeightQuantizer(Quantizer):
    """A weight tensor partly frozen at INQ levels: ``where(frozen, levels * 2**-f, w)``.

    :meth:`quantize_fraction` freezes the largest-magnitude weights not yet frozen until *ratio* of the
    tensor is; the float rest keeps training (its gradient flows, the frozen entries get none).
    ``f`` comes from the float weight at the first call.
    """

    def __init__(self, bits, weight: torch.Tensor, rounding="half_even"):
        super().__init__(bits, True, rounding)
        self._frac = inq_frac_bits(weight.detach().double().cpu().numpy(), bits)
        self.register_buffer("frozen", torch.zeros(weight.shape, dtype=torch.bool))
        self.register_buffer("values", torch.zeros(weight.shape, dtype=torch.float32))

    def quantize_fraction(self, weight: torch.Tensor, ratio: float) -> int:
        """Freeze weights by magnitude until ``ratio`` of them are; returns how many are frozen."""
        w = weight.detach().double().cpu().numpy()
        frozen = self.frozen.cpu().numpy().copy()
        want = int(round(float(ratio) * w.size))
        more = want - int(frozen.sum())
        if more > 0:
            mag = np.where(frozen, -np.inf, np.abs(w)).ravel()
            pick = np.argsort(-mag, kind="stable")[:more]
            flat = frozen.ravel()
            flat[pick] = True
            frozen = flat.reshape(w.shape)
            vals = np.ldexp(inq_levels(w, self._frac, self.bits).astype(np.float64), -self._frac)
            new = torch.from_numpy(frozen & ~self.frozen.cpu().numpy())
            with torch.no_grad():
                self.values[new] = torch.from_numpy(vals).to(torch.float32)[new]
                self.frozen.copy_(torch.from_numpy(frozen))
        return int(frozen.sum())

    @property
    def complete(self) -> bool:
        return bool(self.frozen.all())

    def frac_bits(self):
        return self._frac

    def scale(self):
        return torch.tensor(2.0 ** -self._frac)

    def forward(self, w):
        return torch.where(self.frozen, self.values.to(w.dtype), w)

    def export(self, w):
        if not self.complete:
            raise ValueError("INQ quantizer has weights not yet quantized; call quantize_fraction(w, 1.0)")
        q = np.rint(np.ldexp(self.values.double().cpu().numpy(), self._frac)).astype(np.int64)
        return [(q, 0)], self._frac
