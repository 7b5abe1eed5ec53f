"""Fake-quant modules (torch) computing exactly what the golden model computes.

Every quantizer maps a float tensor to ``clip(round(x / s), lo, hi) * s`` with
the golden rounding (``half_even`` = ``torch.round``, ``half_up`` =
``floor(x + 0.5)``); a quantizer in power-of-two mode has ``s = 2**-f`` and
exports ``f`` (:meth:`Quantizer.frac_bits`), so the float value it produces is
exactly the golden integer times ``2**-f``.

* :class:`FixedQuantizer` -- a frozen power-of-two scale (calibration baselines,
  the network input, SQ / multipoint activations); straight-through gradient.
* :class:`TQTQuantizer` -- trained ``l = log2 t``; :class:`TQTFunction` implements
  the published gradients (docs/quantization.md):
  ``dq/dx = 1 if n <= r <= p else 0`` and
  ``dq/dl = s ln2 (r - x/s | n | p)`` with ``r = round(x/s)``.
* :class:`FATQuantizer` -- ``t' = alpha * max`` with alpha clipped to [0.5, 1.3];
  scale ``t'/p`` until :meth:`to_pow2` rounds ``t'`` up to a power of two.
* :class:`LSQQuantizer` -- learned step ``s`` with gradient scale
  ``1/sqrt(N * Q_P)``; :meth:`to_pow2` rounds ``log2 s`` to the nearest integer.
* :class:`SQWeightQuantizer` -- stochastic quantization of a fraction of the
  filters (roulette by quantization error) at a power-of-two MSE scale.
* :class:`MultipointWeightQuantizer` -- frozen multipoint weights (points with
  power-of-two ratios) for the golden ``extra_weights`` / ``extra_shifts``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..golden import check_rounding
from .calibrate import TINY, calibrate, pow2_frac_bits

__all__ = [
    "rnd", "round_ste", "TQTFunction", "tqt_quantize", "tqt_quantize_ste", "Quantizer", "FixedQuantizer",
    "TQTQuantizer", "FATQuantizer", "LSQQuantizer", "SQWeightQuantizer", "MultipointWeightQuantizer",
    "multipoint_points", "golden_layout", "quantize_int", "channel_fracs", "qrange",
]

LN2 = math.log(2.0)


def rnd(x: torch.Tensor, rounding: str) -> torch.Tensor:
    """The golden rounding: ``torch.round`` (ties to even) or ``floor(x + 0.5)``."""
    if rounding == "half_even":
        return torch.round(x)
    return torch.floor(x + 0.5)


def round_ste(x: torch.Tensor, rounding: str) -> torch.Tensor:
    """Round forward, identity backward."""
    return x + (rnd(x, rounding) - x).detach()


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


class TQTFunction(torch.autograd.Function):
    """``q = clip(round(x/s), n, p) * s`` with ``s = 2**ceil(l) / 2**(b - signed)`` and TQT's gradients."""

    @staticmethod
    def forward(ctx, x, l, bits: int, signed: bool, rounding: str):
        n, p = qrange(bits, signed)
        s = torch.exp2(torch.ceil(l)) / (2.0 ** (bits - int(signed)))
        xs = x / s
        r = rnd(xs, rounding)
        ctx.save_for_backward(xs, r, s)
        ctx.np = (n, p)
        return torch.clamp(r, n, p) * s

    @staticmethod
    def backward(ctx, g):
        xs, r, s = ctx.saved_tensors
        n, p = ctx.np
        inside = (r >= n) & (r <= p)
        gx = g * inside.to(g.dtype)
        d = torch.where(inside, r - xs, torch.where(r < n, torch.full_like(xs, n), torch.full_like(xs, p)))
        gl = (g * d).sum() * s * LN2
        return gx, gl.reshape(()).to(s.dtype), None, None, None


def tqt_quantize(x, l, bits: int, signed: bool, rounding: str = "half_even"):
    """TQT fake-quant with the published gradients (custom autograd function)."""
    return TQTFunction.apply(x, l, bits, signed, rounding)


def tqt_quantize_ste(x, l, bits: int, signed: bool, rounding: str = "half_even"):
    """The same forward written with the STE trick (``ceil_l = l + stop_grad(ceil(l) - l)``,
    round with an identity gradient, clip after rounding); autograd derives the same gradients.
    Used by the tests as an independent check of :class:`TQTFunction`."""
    n, p = qrange(bits, signed)
    ceil_l = l + (torch.ceil(l) - l).detach()
    s = torch.exp2(ceil_l) / (2.0 ** (bits - int(signed)))
    xs = x / s
    r = xs + (rnd(xs, rounding) - xs).detach()
    return torch.clamp(r, n, p) * s


class Quantizer(nn.Module):
    """Base: a per-tensor quantizer of ``bits`` (2..32), signed or unsigned, with a rounding mode."""

    def __init__(self, bits: int, signed: bool, rounding: str = "half_even"):
        super().__init__()
        self.bits, self.signed, self.rounding = int(bits), bool(signed), check_rounding(rounding)
        self.lo, self.hi = qrange(self.bits, self.signed)

    @property
    def pow2(self) -> bool:
        return True

    def scale(self) -> torch.Tensor:
        raise NotImplementedError

    def frac_bits(self) -> int:
        """Fractional bits of the power-of-two scale (what the golden QType gets)."""
        raise NotImplementedError

    def export(self, w: torch.Tensor):
        """The integer weight points of *w* for the golden layer: ``([(int array, left shift), ...], frac)``
        in torch layout, the shift-0 point first; ``frac`` is one int or one per output channel."""
        f = self.frac_bits()
        return [(quantize_int(w.detach().double().cpu().numpy(), f, self.bits, True, self.rounding), 0)], f

    def _fq(self, x, s):
        """Straight-through fake quant at (detached or not) scale *s*."""
        return torch.clamp(round_ste(x / s, self.rounding), self.lo, self.hi) * s

    def extra_repr(self):
        return f"bits={self.bits}, signed={self.signed}, rounding={self.rounding}"


class FixedQuantizer(Quantizer):
    """Frozen power-of-two scale ``2**-frac``; straight-through gradient in the range."""

    def __init__(self, bits, signed, frac: int, rounding="half_even"):
        super().__init__(bits, signed, rounding)
        self.frac = int(frac)

    @classmethod
    def from_threshold(cls, t, bits, signed, rounding="half_even"):
        return cls(bits, signed, pow2_frac_bits(t, bits, signed), rounding)

    def scale(self):
        return torch.tensor(2.0 ** -self.frac)

    def frac_bits(self):
        return self.frac

    def forward(self, x):
        return self._fq(x, 2.0 ** -self.frac)

    def extra_repr(self):
        return super().extra_repr() + f", frac={self.frac}"


class TQTQuantizer(Quantizer):
    """Trained log2 threshold ``l``; scale ``2**ceil(l) / 2**(b - signed)``."""

    def __init__(self, bits, signed, threshold: float, rounding="half_even"):
        super().__init__(bits, signed, rounding)
        self.log2_t = nn.Parameter(torch.tensor(math.log2(max(float(threshold), TINY)), dtype=torch.float32))

    def scale(self):
        return torch.exp2(torch.ceil(self.log2_t.detach())) / (2.0 ** (self.bits - int(self.signed)))

    def frac_bits(self):
        return (self.bits - int(self.signed)) - math.ceil(float(self.log2_t.detach()))

    def forward(self, x):
        return tqt_quantize(x, self.log2_t.to(x.dtype), self.bits, self.signed, self.rounding)


class FATQuantizer(Quantizer):
    """FAT: ``t' = alpha * t_max`` (alpha in [0.5, 1.3]); scale ``t' / p`` or, after :meth:`to_pow2`,
    ``2**ceil(log2 t') / 2**(b - signed)``."""

    ALPHA_RANGE = (0.5, 1.3)

    def __init__(self, bits, signed, t_max: float, rounding="half_even"):
        super().__init__(bits, signed, rounding)
        self.register_buffer("t_max", torch.tensor(max(float(t_max), TINY)))
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self._pow2 = False

    @property
    def pow2(self):
        return self._pow2

    def clip_alpha(self):
        with torch.no_grad():
            self.alpha.clamp_(*self.ALPHA_RANGE)

    def threshold(self):
        return self.alpha.clamp(*self.ALPHA_RANGE) * self.t_max

    def to_pow2(self):
        self._pow2 = True
        self._frac = pow2_frac_bits(float(self.threshold().detach()), self.bits, self.signed)

    def frac_bits(self):
        if not self._pow2:
            raise ValueError("FAT quantizer is not in power-of-two mode; call to_pow2() first")
        return self._frac

    def scale(self):
        if self._pow2:
            return torch.tensor(2.0 ** -self._frac)
        return self.threshold().detach() / self.hi

    def forward(self, x):
        if self._pow2:
            return self._fq(x, 2.0 ** -self._frac)
        return self._fq(x, (self.threshold() / self.hi).to(x.dtype))


class LSQQuantizer(Quantizer):
    """LSQ: learned step ``s`` with gradient scale ``g = 1/sqrt(N * Q_P)``; :meth:`to_pow2` rounds log2 s."""

    def __init__(self, bits, signed, init_step: float, n_elements: int, rounding="half_even"):
        super().__init__(bits, signed, rounding)
        self.step = nn.Parameter(torch.tensor(max(float(init_step), TINY)))
        self.g = 1.0 / math.sqrt(max(int(n_elements), 1) * self.hi)
        self._pow2 = False

    @staticmethod
    def init_step(x, bits, signed) -> float:
        """LSQ's initialization ``2 * mean|x| / sqrt(Q_P)``."""
        qp = qrange(bits, signed)[1]
        return 2.0 * float(np.mean(np.abs(np.asarray(x, dtype=np.float64)))) / math.sqrt(qp)

    @property
    def pow2(self):
        return self._pow2

    def to_pow2(self):
        self._pow2 = True
        self._frac = -int(round(math.log2(max(float(self.step.detach()), TINY))))

    def frac_bits(self):
        if not self._pow2:
            raise ValueError("LSQ quantizer is not in power-of-two mode; call to_pow2() first")
        return self._frac

    def scale(self):
        if self._pow2:
            return torch.tensor(2.0 ** -self._frac)
        return self.step.detach().abs().clamp_min(TINY)

    def forward(self, x):
        if self._pow2:
            return self._fq(x, 2.0 ** -self._frac)
        s = self.step.abs().clamp_min(TINY)
        s = (s - s * self.g).detach() + s * self.g  # gradient scale
        v = torch.clamp(x / s, self.lo, self.hi)
        return round_ste(v, self.rounding) * s


class SQWeightQuantizer(Quantizer):
    """Stochastic quantization (Dong et al. 2017) of a weight tensor, filters along dim 0.

    Training: a fraction ``ratio`` of the filters is quantized (roulette sampling without
    replacement, probability proportional to ``1/e_i``, ``e_i`` the relative L1 error of filter i),
    the rest stay float; gradients reach the real weights through a straight-through round.
    Evaluation, or ``ratio == 1``: every filter quantized. The scale is power-of-two MSE over the
    current weights, frozen by :meth:`freeze`.
    """

    def __init__(self, bits, rounding="half_even", seed: int = 0):
        super().__init__(bits, True, rounding)
        self.ratio = 0.5
        self._frac = None
        self._last_frac = 0
        self.gen = torch.Generator().manual_seed(int(seed))

    def _frac_of(self, w):
        if self._frac is not None:
            return self._frac
        t = calibrate(w.detach().double().cpu().numpy(), "mse", self.bits, True, rounding=self.rounding)
        return pow2_frac_bits(t, self.bits, True)

    def freeze(self, w):
        self._frac = self._frac_of(w)

    def frac_bits(self):
        if self._frac is None:
            raise ValueError("SQ quantizer is not frozen; call freeze(weight) first")
        return self._frac

    def scale(self):
        """Scale of the last forward (the graph quantizes the weight before it asks)."""
        return torch.tensor(2.0 ** -(self._frac if self._frac is not None else self._last_frac))

    def forward(self, w):
        self._last_frac = self._frac_of(w)
        s = 2.0 ** -self._last_frac
        q = self._fq(w, s)
        if not self.training or self.ratio >= 1.0:
            return q
        nf = w.shape[0]
        k = int(round(self.ratio * nf))
        if k <= 0:
            return w
        with torch.no_grad():
            dims = tuple(range(1, w.dim()))
            err = (w - q).abs().sum(dim=dims) / w.abs().sum(dim=dims).clamp_min(1e-12)
            prob = 1.0 / err.clamp_min(1e-12)
            chosen = torch.multinomial(prob / prob.sum(), k, replacement=False, generator=self.gen)
            mask = torch.zeros(nf, dtype=torch.bool)
            mask[chosen] = True
        mask = mask.reshape(-1, *([1] * (w.dim() - 1)))
        return torch.where(mask, q, w)


def _round_np(s: np.ndarray, rounding: str) -> np.ndarray:
    return np.rint(s) if rounding == "half_even" else np.floor(s + 0.5)


def golden_layout(w: np.ndarray) -> np.ndarray:
    """A torch weight in the golden layout: OIHW -> HWIO, ``(out, in)`` -> ``(in, out)``."""
    return w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T


def quantize_int(x, frac, bits: int, signed: bool, rounding: str) -> np.ndarray:
    """``clip(round(x * 2**frac), lo, hi)`` as int64 (the golden ``quantize``, any width); *frac* may be an
    array broadcast against *x* (per-channel or per-element scales)."""
    s = np.ldexp(np.asarray(x, dtype=np.float64), np.asarray(frac, dtype=np.int64))
    lo, hi = qrange(bits, signed)
    return np.clip(_round_np(s, rounding), lo, hi).astype(np.int64)


def channel_fracs(w: np.ndarray, bits: int, method: str = "mse", rounding: str = "half_even") -> np.ndarray:
    """Per-output-channel power-of-two fractional bits of a ``(K, N)`` weight (columns = channels)."""
    return np.array([pow2_frac_bits(calibrate(w[:, c], method, bits, True, rounding=rounding), bits, True)
                     for c in range(w.shape[1])], dtype=np.int64)


def multipoint_points(w: np.ndarray, x_cols: np.ndarray | None, bits: int, max_points: int = 2,
                      rounding: str = "half_even", budget: float = 0.5, tol: float = 0.01, max_shift: int = 16):
    """Multipoint approximation (Liu et al.) with per-channel power-of-two scales and an adaptive number of
    points per output channel.

    Parameters
    ----------
    w : (K, N) float weights (GEMM layout, N output channels).
    x_cols : (M, K) float calibration inputs of the GEMM, or None (then the weight error stands for the
        output error).
    bits : width of every point.
    budget : at most ``budget * N`` extra (channel, point) pairs in the layer: the extra MACs and weight
        bytes are at most this fraction of a one-point layer's.
    tol : a channel whose relative output error ``||X (w_c - approx_c)|| / ||X w_c||`` is at most *tol*
        gets no further point.

    Point 1 of channel ``c`` is ``Q(w_c)`` at the channel's power-of-two MSE scale ``2**-F_c``. Point ``p``
    quantizes the residual at ``2**-(F_c + d_p)``: the scale is per channel, the ratio ``2**d_p`` between
    points is one power of two per layer (the accelerator adds a point with one MATMUL shift), ``d_p``
    chosen by the least output error of the residual. Channels then receive point ``p`` greedily, largest
    reduction of the squared output error first, while the budget lasts and their error is above *tol*;
    elsewhere the point is zero. Returns ``(points, base, shifts)``: integer ``(K, N)`` arrays (coarse
    first), the per-channel ``F`` ``(N,)`` and the per-point ``d_p`` (``shifts[0] == 0``, increasing).
    """
    w = np.asarray(w, dtype=np.float64)
    n = w.shape[1]
    x = np.eye(w.shape[0]) if x_cols is None else np.asarray(x_cols, dtype=np.float64)
    base = channel_fracs(w, bits, "mse", rounding)
    points = [quantize_int(w, base[None, :], bits, True, rounding)]
    shifts = [0]
    approx = np.ldexp(points[0].astype(np.float64), -base[None, :])
    ref = np.maximum(np.linalg.norm(x @ w, axis=0), 1e-12)
    npts = np.ones(n, dtype=np.int64)
    left = int(np.floor(budget * n))
    for p in range(1, max_points):
        res = w - approx
        err = np.linalg.norm(x @ res, axis=0)
        eligible = (npts == p) & (err / ref > tol)
        if left <= 0 or not eligible.any() or shifts[-1] >= max_shift:
            break
        best = None
        for d in range(shifts[-1] + 1, max_shift + 1):
            q = quantize_int(res, (base + d)[None, :], bits, True, rounding)
            after = np.linalg.norm(x @ (res - np.ldexp(q.astype(np.float64), -(base + d)[None, :])), axis=0)
            total = float(np.sum(after[eligible] ** 2))
            if best is None or total < best[0]:
                best = (total, d, q, after)
        _, d, q, after = best
        gain = np.where(eligible, err ** 2 - after ** 2, -np.inf)
        order = [c for c in np.argsort(-gain, kind="stable") if gain[c] > 0][:left]
        if not order:
            break
        chosen = np.zeros(n, dtype=bool)
        chosen[order] = True
        left -= len(order)
        npts[chosen] += 1
        pt = np.where(chosen[None, :], q, 0)
        points.append(pt)
        shifts.append(d)
        approx = approx + np.ldexp(pt.astype(np.float64), -(base + d)[None, :])
    return points, base, shifts


class MultipointWeightQuantizer(Quantizer):
    """Frozen multipoint weights: forward returns ``sum_p P_p * 2**-(F_c + d_p)`` (exact in float).

    ``points`` (torch layout, coarse first), ``base`` (``F``, one per output channel) and ``shifts``
    (``d_p``) come from :func:`multipoint_points`. :meth:`export`: the finest point is the golden
    ``weight`` at per-channel ``w_frac = F + d_last``, the others its extra points with left shifts
    ``d_last - d_p``.
    """

    def __init__(self, bits, points, base, shifts, to_torch, rounding="half_even"):
        super().__init__(bits, True, rounding)
        self.points = [np.asarray(p, dtype=np.int64) for p in points]
        self.base = np.asarray(base, dtype=np.int64)
        self.shifts = [int(d) for d in shifts]
        bshape = (-1,) + (1,) * (self.points[0].ndim - 1)
        approx = sum(np.ldexp(p.astype(np.float64), -(self.base + d).reshape(bshape))
                     for p, d in zip(self.points, self.shifts))
        self.register_buffer("approx", to_torch(approx).to(torch.float32))

    def frac_bits(self):
        return self.base + self.shifts[-1]

    def scale(self):
        return torch.from_numpy(np.ldexp(1.0, -(self.base + self.shifts[-1]))).to(torch.float32)

    def forward(self, w):
        return self.approx.to(w.dtype)

    def export(self, w):
        last = self.shifts[-1]
        return [(self.points[-1], 0)] + [(p, last - d) for p, d in zip(self.points[:-1], self.shifts[:-1])], \
            self.base + last
