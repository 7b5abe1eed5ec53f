"""Random integer networks and inputs, for tests, fuzzing and demos.

The networks are structurally valid and their shifts are chosen so outputs
use the output range (some values saturate, most do not), which is what a
bit-exactness test needs to exercise rounding and saturation.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .layers import Add, AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, conv_output_size
from .limits import check_elements, short_repr
from .network import QuantizedNetwork
from .pe_weights import round_to_shift_weights
from .qtypes import QType

__all__ = ["random_network", "random_shift_network", "random_input", "NETWORK_KINDS"]

NETWORK_KINDS = ("mlp", "cnn", "resnet", "mixed")


def _weights(rng, shape, w_type: QType):
    # Roughly Gaussian over the whole range, so extremes occur but are rare.
    sigma = max(1.0, (w_type.hi - w_type.lo) / 6)
    w = np.rint(rng.normal(0, sigma, size=shape))
    return np.clip(w, w_type.lo, w_type.hi).astype(np.int64)


def _shift_for(k_dim: int, in_type: QType, w_type: QType, out_type: QType, rng) -> int:
    """A shift that maps the typical accumulator magnitude onto the output range."""
    a_mag = max(1, in_type.hi // 2)
    w_mag = max(1, (w_type.hi - w_type.lo) / 6)
    typical = math.sqrt(k_dim) * a_mag * w_mag
    target = max(1, out_type.hi // 2)
    return max(0, int(round(math.log2(typical / target))) + int(rng.integers(-1, 2)))


def _gemm_layer(cls, rng, name, src, in_type, weight_shape, bits, relu, signed_out, per_channel, **kw):
    w_type = QType(bits, True, int(rng.integers(4, 8)))
    n = weight_shape[-1]
    k_dim = int(np.prod(weight_shape[:-1]))
    out_signed = signed_out and not relu
    base_out = QType(bits, out_signed, 0)
    k = _shift_for(k_dim, in_type, w_type, base_out, rng)
    f_out = in_type.frac_bits + w_type.frac_bits - k
    out_type = QType(bits, out_signed, f_out)
    w_frac = None
    if per_channel:
        w_frac = w_type.frac_bits + rng.integers(-1, 2, size=n)
    bias_scale = 2 ** max(0, k)
    bias = rng.integers(-4 * bias_scale, 4 * bias_scale + 1, size=n).astype(np.int64)
    # Make some bias values land exactly on rounding ties.
    if k > 0:
        bias[::3] = (bias[::3] >> k << k) + (1 << (k - 1))
    return cls(name=name, inputs=(src,), weight=_weights(rng, weight_shape, w_type), w_type=w_type,
               out_type=out_type, bias=bias, relu=relu, w_frac=w_frac, **kw)


def random_network(seed: int | np.random.Generator = 0, kind: str = "cnn", bits: int = 8,
                   rounding: str = "half_even", per_channel: bool = False,
                   input_hw: int = 8, channels: int = 3) -> QuantizedNetwork:
    """A random valid network of *kind* ``mlp``, ``cnn``, ``resnet`` or ``mixed`` with *bits*-bit tensors.

    ``mixed`` mixes every layer type the accelerator runs: a convolution, a depthwise one with an upper clamp
    (ReLU6-like), a pointwise one and a residual add, a grouped strided one, a padded max-pool, a global
    average pool (its area often not a power of two) and a dense layer."""
    if kind not in NETWORK_KINDS:
        raise ValueError(f"kind must be one of {', '.join(NETWORK_KINDS)}, not {kind!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    signed_in = bool(rng.integers(0, 2))
    in_type = QType(bits, signed_in, int(rng.integers(bits - 2, bits + 2)))
    layers = []
    types = {"input": in_type}

    def add(layer, out_type=None):
        layers.append(layer)
        types[layer.name] = out_type or getattr(layer, "out_type", None) or types[layer.inputs[0]]
        return layer.name

    if kind == "mlp":
        shape = (int(rng.integers(8, 40)),)
        src, k = "input", shape[0]
        for i in range(int(rng.integers(2, 4))):
            n = int(rng.integers(4, 24))
            last = i == 2 or rng.random() < 0.3
            src = add(_gemm_layer(Dense, rng, f"fc{i}", src, types[src], (k, n), bits,
                                  relu=not last, signed_out=True, per_channel=per_channel))
            k = n
            if last:
                break
        return QuantizedNetwork(in_type, shape, layers, rounding, {"random": kind})

    shape = (input_hw, input_hw, channels)
    c1 = int(rng.integers(2, 9))
    src = add(_gemm_layer(Conv2D, rng, "conv1", "input", in_type, (3, 3, channels, c1), bits,
                          relu=True, signed_out=True, per_channel=per_channel,
                          stride=1, padding=int(rng.integers(0, 2))))
    hw = input_hw if layers[-1].padding[0] else input_hw - 2
    if kind == "mixed":
        return _mixed(rng, add, types, src, hw, c1, bits, per_channel, QuantizedNetwork, in_type, shape, layers,
                      rounding)
    if kind == "resnet":
        skip = src
        mid = add(_gemm_layer(Conv2D, rng, "conv2", src, types[src], (3, 3, c1, c1), bits,
                              relu=True, signed_out=True, per_channel=per_channel, stride=1, padding=1))
        b = add(_gemm_layer(Conv2D, rng, "conv3", mid, types[mid], (3, 3, c1, c1), bits,
                            relu=False, signed_out=True, per_channel=per_channel, stride=1, padding=1))
        fa = types[skip].frac_bits
        fb = types[b].frac_bits
        out_t = QType(bits, False, min(fa, fb) + int(rng.integers(-1, 1)))
        src = add(Add(name="add1", inputs=(skip, b), out_type=out_t, relu=True))
    if hw >= 2:
        if rng.random() < 0.5:
            src = add(MaxPool2D(name="pool1", inputs=(src,), pool=2))
        else:
            t = types[src]
            src = add(AvgPool2D(name="pool1", inputs=(src,), pool=2,
                                out_type=t.with_frac(t.frac_bits + int(rng.integers(0, 2)))))
        hw //= 2
    stride = int(rng.integers(1, 3))
    c2 = int(rng.integers(2, 9))
    if hw >= 2:
        src = add(_gemm_layer(Conv2D, rng, "conv4", src, types[src], (2, 2, _channels(layers, types, src, c1), c2), bits,
                              relu=True, signed_out=True, per_channel=per_channel, stride=stride, padding=0))
        hw = (hw - 2) // stride + 1
        cl = c2
    else:
        cl = _channels(layers, types, src, c1)
    src = add(Flatten(name="flat", inputs=(src,)))
    n_cls = int(rng.integers(3, 11))
    src = add(_gemm_layer(Dense, rng, "fc", src, types[src], (hw * hw * cl, n_cls), bits,
                          relu=False, signed_out=True, per_channel=per_channel))
    return QuantizedNetwork(in_type, shape, layers, rounding, {"random": kind})


def random_shift_network(seed: int | np.random.Generator = 0, kind: str = "cnn", bits: int = 8,
                         **kw) -> QuantizedNetwork:
    """:func:`random_network` with every weight point of its Dense / Conv2D layers rounded to a shift PE
    weight, ``0`` or ``+-2**e`` (:func:`~systolic.golden.pe_weights.round_to_shift_weights` at the layer's
    weight width): a network an accelerator with ``pe="shift"`` runs."""
    net = random_network(seed, kind, bits, **kw)
    layers = []
    for layer in net.layers:
        if isinstance(layer, (Dense, Conv2D)):
            extra = layer.extra_weights
            layer = dataclasses.replace(
                layer, weight=round_to_shift_weights(layer.weight, layer.w_type.bits),
                extra_weights=None if extra is None else round_to_shift_weights(extra, layer.w_type.bits))
        layers.append(layer)
    return dataclasses.replace(net, layers=tuple(layers), meta={**net.meta, "weights": "shift"})


def _mixed(rng, add, types, src, hw, c1, bits, per_channel, net_cls, in_type, shape, layers, rounding):
    """The rest of a ``mixed`` network after its first convolution (*c1* channels, *hw* x *hw*)."""
    kw = dict(bits=bits, signed_out=True, per_channel=per_channel)
    skip = src
    dw = add(_gemm_layer(Conv2D, rng, "dw", src, types[src], (3, 3, 1, c1), relu=True, stride=1, padding=1,
                         groups=c1, out_max=int(rng.integers(1 << (bits - 2), (1 << bits) - 1)), **kw))
    pw = add(_gemm_layer(Conv2D, rng, "pw", dw, types[dw], (1, 1, c1, c1), relu=False, stride=1, padding=0, **kw))
    fa, fb = types[skip].frac_bits, types[pw].frac_bits
    src = add(Add(name="add1", inputs=(skip, pw), out_type=QType(bits, False, min(fa, fb) + int(rng.integers(-1, 1))),
                  relu=True))
    g = 2 if c1 % 2 == 0 else 1
    c2 = g * int(rng.integers(1, 5))
    src = add(_gemm_layer(Conv2D, rng, "gconv", src, types[src], (3, 3, c1 // g, c2), relu=True, stride=2, padding=1,
                          groups=g, **kw))
    hw = conv_output_size(hw, 3, 2, 1, 1)
    if hw >= 2:
        src = add(MaxPool2D(name="pool1", inputs=(src,), pool=3, stride=2, padding=1))
        hw = conv_output_size(hw, 3, 2, 1, 1)
    t = types[src]
    out_t = t.with_frac(t.frac_bits + int(rng.integers(0, 3)))
    src = add(AvgPool2D(name="gap", inputs=(src,), pool=hw, out_type=out_t))
    src = add(Flatten(name="flat", inputs=(src,)))
    src = add(_gemm_layer(Dense, rng, "fc", src, types[src], (c2, int(rng.integers(3, 11))), relu=False, **kw))
    return net_cls(in_type, shape, layers, rounding, {"random": "mixed"})


def _channels(layers, types, src, default):
    for layer in reversed(layers):
        if hasattr(layer, "weight") and layer.weight.ndim == 4:
            return layer.weight.shape[-1]
    return default


def random_input(net: QuantizedNetwork, batch: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Uniform random integers over the network input's whole range."""
    if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 0:
        raise ValueError(f"batch must be a non-negative int, not {short_repr(batch)}")
    # The size limit is checked before anything is drawn (a 10**9-sample request fails at once).
    check_elements(f"a random input of {int(batch)} samples", (int(batch), *net.input_shape))
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    t = net.input_type
    return rng.integers(t.lo, t.hi + 1, size=(int(batch), *net.input_shape), dtype=np.int64)
