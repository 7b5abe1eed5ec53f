"""Fake-quant :class:`~systolic.quantize.graph.GraphNet` -> golden :class:`~systolic.golden.QuantizedNetwork`.

Per-tensor power-of-two scales: every quantizer must be in power-of-two mode
(TQT and the calibrations always are; FAT/LSQ after ``to_pow2()``). Weights
become ``round(w * 2**f_w)`` clipped to ``w_bits`` (HWIO for conv, ``(K, N)`` for
dense), biases ``round(b * 2**(f_in + f_w))`` (int32), each layer's output type
comes from its output quantizer (unsigned after ReLU), and the golden layer's
shift is ``k = f_in + f_w - f_out``. Multipoint weights map to ``extra_weights``
and ``extra_shifts``. A grouped convolution keeps its ``groups``; a clamp
(ReLU6) becomes ``out_max = floor(clamp * 2**f_out)``; pools keep their padding;
a concat's output type comes from its output quantizer.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..golden import QType, QuantizedNetwork
from ..golden.layers import Add, AvgPool2D, Concat, Conv2D, Dense, Flatten, MaxPool2D
from .quantizers import MultipointWeightQuantizer, qrange

__all__ = ["to_golden", "quantize_int"]


def quantize_int(x, frac: int, bits: int, signed: bool, rounding: str) -> np.ndarray:
    """``clip(round(x * 2**frac), lo, hi)`` as int64 (the golden ``quantize``, any width)."""
    s = np.ldexp(np.asarray(x, dtype=np.float64), frac)
    r = np.rint(s) if rounding == "half_even" else np.floor(s + 0.5)
    lo, hi = qrange(bits, signed)
    return np.clip(r, lo, hi).astype(np.int64)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


def _gemm_layout(w: np.ndarray) -> np.ndarray:
    """torch OIHW -> golden HWIO; torch (out, in) -> golden (in, out)."""
    return w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T


def to_golden(net, rounding: str | None = None, meta: dict | None = None) -> QuantizedNetwork:
    """Convert a fake-quant GraphNet to the integer golden network.

    Raises
    ------
    ValueError
        If the net has no quantizers attached, or a quantizer is not power-of-two.
    """
    if not net.quantized:
        raise ValueError("the network has no quantizers attached; quantize it first")
    rounding = rounding or net.qin.rounding
    qin = net.qin
    types = {"input": QType(qin.bits, qin.signed, qin.frac_bits())}
    layers = []
    for n in net.nodes:
        ins = list(n.inputs)
        if n.op in ("conv", "dense"):
            m, wq, aq = net.mods[n.name], net.wq[n.name], net.aq[n.name]
            for qz in (wq, aq):
                if not qz.pow2:
                    raise ValueError(f"layer {n.name!r}: quantizer {type(qz).__name__} is not power-of-two; call to_pow2()")
            f_in = types[ins[0]].frac_bits
            out_type = QType(aq.bits, aq.signed, aq.frac_bits())
            extra = {}
            if isinstance(wq, MultipointWeightQuantizer):
                f_w = wq.fracs[-1]
                pts = [_gemm_layout(_torch_layout(p, m.weight)) for p in wq.points]
                weight = pts[-1]
                if len(pts) > 1:
                    extra = {"extra_weights": np.stack(pts[:-1]),
                             "extra_shifts": np.array([f_w - f for f in wq.fracs[:-1]], dtype=np.int64)}
            else:
                f_w = wq.frac_bits()
                weight = _gemm_layout(quantize_int(_np(m.weight), f_w, wq.bits, True, rounding))
            w_type = QType(wq.bits, True, f_w)
            bias = None
            if m.bias is not None:
                bias = quantize_int(_np(m.bias), f_in + f_w, 32, True, rounding)
            common = dict(name=n.name, inputs=tuple(ins), weight=weight, w_type=w_type, out_type=out_type,
                          bias=bias, relu=n.relu, out_max=_out_max(n, out_type), **extra)
            if n.op == "conv":
                ph, pw = m.padding
                pad = tuple(n.padding) if any(n.padding) else (ph, ph, pw, pw)
                if any(n.padding) and (ph or pw):
                    raise ValueError(f"layer {n.name!r}: padding given both on the node and on its Conv2d")
                layers.append(Conv2D(stride=tuple(m.stride), padding=pad, groups=m.groups, **common))
            else:
                layers.append(Dense(**common))
            types[n.name] = out_type
        elif n.op == "add":
            aq = net.aq[n.name]
            out_type = QType(aq.bits, aq.signed, aq.frac_bits())
            layers.append(Add(name=n.name, inputs=tuple(ins), out_type=out_type, relu=n.relu,
                              out_max=_out_max(n, out_type)))
            types[n.name] = out_type
        elif n.op == "concat":
            aq = net.aq[n.name]
            out_type = QType(aq.bits, aq.signed, aq.frac_bits())
            layers.append(Concat(name=n.name, inputs=tuple(ins), out_type=out_type))
            types[n.name] = out_type
        elif n.op in ("maxpool", "avgpool"):
            cls = MaxPool2D if n.op == "maxpool" else AvgPool2D
            layers.append(cls(name=n.name, inputs=tuple(ins), pool=n.pool, stride=n.stride, padding=tuple(n.padding)))
            types[n.name] = types[ins[0]]
        elif n.op == "flatten":
            layers.append(Flatten(name=n.name, inputs=tuple(ins)))
            types[n.name] = types[ins[0]]
    return QuantizedNetwork(types["input"], net.input_shape, layers, rounding, dict(meta or {}))


def _out_max(node, out_type) -> int | None:
    """The golden clamp of *node*: the largest integer of *out_type*'s grid not above ``node.clamp``."""
    if node.clamp is None:
        return None
    if not node.relu:
        raise ValueError(f"layer {node.name!r}: a clamp needs a ReLU before it (Clip(0, x) / ReLU6)")
    return max(0, math.floor(math.ldexp(node.clamp, out_type.frac_bits)))


def _torch_layout(points_gemm: np.ndarray, weight: torch.Tensor) -> np.ndarray:
    """Multipoint points are stored in torch layout already; pass through (shape-checked)."""
    if tuple(points_gemm.shape) != tuple(weight.shape):
        raise ValueError(f"multipoint points have shape {points_gemm.shape}, weight {tuple(weight.shape)}")
    return points_gemm
