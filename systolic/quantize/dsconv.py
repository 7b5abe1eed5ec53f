"""DSConv: distribution-shifting convolution (Nascimento et al., ICCV 2019) in power-of-two form.

The paper stores a layer as low-bit integer kernels (the *variable quantized kernel*) plus two shifts:
a *kernel distribution shift* per block of ``B`` input channels and a *channel distribution shift* per
output channel. Here both shifts are powers of two so the accelerator runs them exactly:

* the block is ``B`` consecutive elements of the im2col K axis (``(kh, kw, c_in)`` order) and, as one MATMUL
  serves ``cols`` output channels at once, ``B_n`` consecutive output channels: with ``B`` equal to the
  array's rows and ``B_n`` to its columns a block is one MATMUL's weight tile, and its shift is that
  MATMUL's ``acc += psum << s`` (the paper shifts each kernel's block separately: ``B_n = 1``);
* the channel shift is the output channel's weight scale ``2**-F_c`` (the requantizer's per-lane shift).

Weight ``k`` of channel ``c`` in tile ``b`` is ``q * 2**(s_b - F_c)`` with ``q`` a ``bits``-wide integer and
``0 <= s_b <= 16``. :func:`dsconv_fit` chooses ``F`` and ``s`` post-training without data (the paper's
label-free setting), alternating the least squared weight error per block and per channel.
The golden layer gets one weight point per distinct block shift (zero outside its blocks), so a point's
tiles outside its blocks are all zero and the compiler skips them.

Block-floating-point activations (the paper's BFP, :func:`bfp_quantize`) are the golden ``bfp`` layer:
a mantissa of ``m`` bits and one exponent per block of ``B`` channels at each position.
"""

from __future__ import annotations

import numpy as np
import torch

from .quantizers import Quantizer, channel_fracs, golden_layout, qrange, quantize_int, rnd

__all__ = ["MAX_BLOCK_SHIFT", "dsconv_fit", "gemm_order", "DSConvWeightQuantizer", "bfp_quantize"]

#: Largest kernel (block) shift: the golden extra-point shifts are 0..16.
MAX_BLOCK_SHIFT = 16


def gemm_order(weight: np.ndarray) -> np.ndarray:
    """A torch weight (``(O, I, kh, kw)`` or ``(O, K)``) as the golden GEMM matrix ``(K, O)``, K in
    ``(kh, kw, c_in)`` order."""
    w = np.asarray(weight)
    return golden_layout(w).reshape(-1, w.shape[0])


def _torch_order(gemm: np.ndarray, shape: tuple) -> np.ndarray:
    """The inverse of :func:`gemm_order` for a torch weight of *shape*."""
    w = gemm.T
    if len(shape) == 4:
        o, i, kh, kw = shape
        return w.reshape(o, kh, kw, i).transpose(0, 3, 1, 2)
    return w.reshape(shape)


def _tile_sums(err: np.ndarray, block: int, block_n: int) -> np.ndarray:
    """Sum of ``(K, N)`` errors over each tile of *block* rows by *block_n* columns: ``(K blocks, N blocks)``."""
    rows = np.add.reduceat(err, np.arange(0, err.shape[0], block), axis=0)
    return np.add.reduceat(rows, np.arange(0, err.shape[1], block_n), axis=1)


def dsconv_fit(w: np.ndarray, bits: int, block: int, block_n: int, rounding: str = "half_even", iters: int = 3):
    """Per-channel ``F`` ``(N,)`` and per-tile shifts ``s`` ``(ceil(K / block), ceil(N / block_n))`` of a ``(K, N)``
    weight.

    Start: ``F`` from each channel's ``max|w|`` (the coarsest scale it needs), every tile at the finest
    offset; then *iters* rounds of (each tile: the offset ``e`` in ``0..16`` finer than ``F`` with the least
    squared weight error; each channel: ``F_c`` within ``-3..+3`` of its value with the least squared error
    over its column). Finally ``s = max(e) - e`` and ``F_c += max(e)``, so the finest tile has shift 0 and
    ``F`` is the fractional bits of the shift-0 point.
    """
    w = np.asarray(w, dtype=np.float64)
    k, n = w.shape
    rb, cb = np.arange(k) // block, np.arange(n) // block_n
    f = channel_fracs(w, bits, "max", rounding)
    e = np.zeros((rb[-1] + 1, cb[-1] + 1), dtype=np.int64)

    def err(frac):
        return (w - np.ldexp(quantize_int(w, frac, bits, True, rounding).astype(np.float64), -frac)) ** 2

    for _ in range(iters):
        cand = np.stack([_tile_sums(err(f[None, :] + d), block, block_n) for d in range(MAX_BLOCK_SHIFT + 1)])
        e = np.argmin(cand, axis=0).astype(np.int64)
        deltas = range(-3, 4)
        cand = np.stack([err((f + d)[None, :] + e[rb][:, cb]).sum(axis=0) for d in deltas])
        f = f + np.array(list(deltas))[np.argmin(cand, axis=0)]
    top = int(e.max())
    return f + top, top - e


class DSConvWeightQuantizer(Quantizer):
    """Fake quant with DSConv's per-element power-of-two scales ``2**(s_b - F_c)`` (frozen shifts, trainable
    weights through a straight-through round, for the optional distillation)."""

    def __init__(self, bits, weight: torch.Tensor, block: int, block_n: int, rounding="half_even"):
        super().__init__(bits, True, rounding)
        w = weight.detach().double().cpu().numpy()
        g = gemm_order(w)
        self.block, self.block_n = int(block), int(block_n)
        self.base, self.block_shift = dsconv_fit(g, bits, self.block, self.block_n, rounding)
        tile = self.block_shift[np.arange(g.shape[0]) // self.block][:, np.arange(g.shape[1]) // self.block_n]
        self.elem_frac = _torch_order(self.base[None, :] - tile, w.shape).astype(np.int64)
        self.shift_elem = _torch_order(tile, w.shape)
        self.register_buffer("inv_scale", torch.from_numpy(np.ldexp(1.0, self.elem_frac)).to(torch.float32))

    def frac_bits(self):
        return self.base

    def scale(self):
        return torch.from_numpy(np.ldexp(1.0, -self.base)).to(torch.float32)

    def forward(self, w):
        inv = self.inv_scale.to(w.dtype)
        return torch.clamp(w * inv + (rnd(w * inv, self.rounding) - w * inv).detach(), self.lo, self.hi) / inv

    def export(self, w):
        q = quantize_int(w.detach().double().cpu().numpy(), self.elem_frac, self.bits, True, self.rounding)
        points = [(np.where(self.shift_elem == s, q, 0), int(s)) for s in np.unique(self.block_shift)]
        if points[0][1] != 0:                      # cannot happen: the finest block has shift 0
            raise ValueError("DSConv: no block at shift 0")
        return points, self.base


def bfp_quantize(x: torch.Tensor, scale: float, bits: int, signed: bool, block: int, mantissa: int,
                 rounding: str) -> torch.Tensor:
    """Block floating point on a tensor already on a fixed-point grid (``x = i * scale``, ``i`` a ``bits``-wide
    integer): the golden ``bfp`` layer, with a straight-through gradient.

    Per block of *block* channels (last axis) at each position: ``e`` the least ``e >= 0`` with
    ``max|i| >> e <= mmax`` (``mmax = 2**(m-1) - 1`` signed, ``2**m - 1`` unsigned), ``mant = sat_m(round(i / 2**e))``,
    ``out = sat(mant * 2**e) * scale``.
    """
    i = torch.round(x.detach() / scale)
    c = i.shape[-1]
    pad = (-c) % block
    ip = torch.nn.functional.pad(i, (0, pad))
    blocks = ip.reshape(*ip.shape[:-1], -1, block)
    amax = blocks.abs().amax(dim=-1, keepdim=True)
    mlo, mhi = qrange(mantissa, signed)
    e = torch.zeros_like(amax)
    for k in range(bits + 1):         # the least e with floor(amax / 2**e) <= mmax
        e = torch.where(torch.floor(amax / 2.0 ** k) > mhi, torch.full_like(e, k + 1), e)
    p = torch.exp2(e)
    mant = torch.clamp(rnd(blocks / p, rounding), mlo, mhi)
    lo, hi = qrange(bits, signed)
    out = torch.clamp(mant * p, lo, hi).reshape(*ip.shape)[..., :c] * scale
    return x + (out - x).detach()
