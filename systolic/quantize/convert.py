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

import dataclasses
import math

import numpy as np
import torch

from ..golden import QType, QuantizedNetwork
from ..golden.layers import Add, AvgPool2D, BlockFloat, Concat, Conv2D, Dense, Flatten, MaxPool2D
from .quantizers import golden_layout, quantize_int

__all__ = ["to_golden", "quantize_int"]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


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
            weight, f_w, extra = _golden_points(wq, m.weight)
            f_w0 = int(np.max(f_w))
            w_type = QType(wq.bits, True, f_w0)
            bias = None
            if m.bias is not None:
                bias = quantize_int(_np(m.bias), f_in + f_w, 32, True, rounding)
            common = dict(name=n.name, inputs=tuple(ins), weight=weight, w_type=w_type, out_type=out_type,
                          bias=bias, relu=n.relu, out_max=_out_max(n, out_type), **extra)
            if np.ndim(f_w):
                common["w_frac"] = np.asarray(f_w, dtype=np.int64)
            if n.op == "conv":
                ph, pw = m.padding
                pad = tuple(n.padding) if any(n.padding) else (ph, ph, pw, pw)
                if any(n.padding) and (ph or pw):
                    raise ValueError(f"layer {n.name!r}: padding given both on the node and on its Conv2d")
                layers.append(Conv2D(stride=tuple(m.stride), padding=pad, groups=m.groups, **common))
            else:
                layers.append(Dense(**common))
            types[n.name] = out_type
            _block_float(net, n, layers, types)
        elif n.op == "add":
            aq = net.aq[n.name]
            out_type = QType(aq.bits, aq.signed, aq.frac_bits())
            layers.append(Add(name=n.name, inputs=tuple(ins), out_type=out_type, relu=n.relu,
                              out_max=_out_max(n, out_type)))
            types[n.name] = out_type
            _block_float(net, n, layers, types)
        elif n.op == "concat":
            aq = net.aq[n.name]
            out_type = QType(aq.bits, aq.signed, aq.frac_bits())
            layers.append(Concat(name=n.name, inputs=tuple(ins), out_type=out_type))
            types[n.name] = out_type
            _block_float(net, n, layers, types)
        elif n.op in ("maxpool", "avgpool"):
            cls = MaxPool2D if n.op == "maxpool" else AvgPool2D
            layers.append(cls(name=n.name, inputs=tuple(ins), pool=n.pool, stride=n.stride, padding=tuple(n.padding)))
            types[n.name] = types[ins[0]]
        elif n.op == "flatten":
            layers.append(Flatten(name=n.name, inputs=tuple(ins)))
            types[n.name] = types[ins[0]]
    return QuantizedNetwork(types["input"], net.input_shape, layers, rounding, dict(meta or {}))


def _block_float(net, node, layers: list, types: dict) -> None:
    """A node with block-floating-point activations: its layer is renamed ``<name>_fx`` and a golden ``bfp``
    layer named *node*'s name follows it (so its consumers read the BFP values)."""
    if node.name not in getattr(net, "bfp", {}):
        return
    block, mant = net.bfp[node.name]
    fx = f"{node.name}_fx"
    layers[-1] = dataclasses.replace(layers[-1], name=fx)
    types[fx] = types[node.name]
    layers.append(BlockFloat(name=node.name, inputs=(fx,), block=block, mantissa_bits=mant))


def _out_max(node, out_type) -> int | None:
    """The golden clamp of *node*: the largest integer of *out_type*'s grid not above ``node.clamp``."""
    if node.clamp is None:
        return None
    if not node.relu:
        raise ValueError(f"layer {node.name!r}: a clamp needs a ReLU before it (Clip(0, x) / ReLU6)")
    return max(0, math.floor(math.ldexp(node.clamp, out_type.frac_bits)))


def _golden_points(wq, weight: torch.Tensor):
    """``(weight, frac, extra)`` of the golden layer from the weight quantizer's :meth:`export`: the shift-0
    point in golden layout, its fractional bits (int or per channel) and the extra points with their left
    shifts (``extra_weights`` / ``extra_shifts``) when there are more."""
    points, frac = wq.export(weight)
    if not points or points[0][1] != 0 or any(s <= 0 for _, s in points[1:]):
        raise ValueError(f"{type(wq).__name__}.export must give the shift-0 point first, then positive shifts")
    weight = golden_layout(points[0][0])
    extra = {}
    if len(points) > 1:
        extra = {"extra_weights": np.stack([golden_layout(p) for p, _ in points[1:]]),
                 "extra_shifts": np.array([s for _, s in points[1:]], dtype=np.int64)}
    if np.ndim(frac) and np.all(frac == frac[0]):
        frac = int(frac[0])           # one scale for every channel: per tensor
    return weight, frac, extra
