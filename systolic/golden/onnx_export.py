"""Export a :class:`~systolic.golden.network.QuantizedNetwork` to ONNX, bit-exactly.

The exported graph runs in onnxruntime (CPU) and reproduces the golden
model's integers exactly; ``docs/numerics.md`` (section "ONNX export") gives the mapping of each
layer and the argument why the float arithmetic inside onnxruntime's QLinear
kernels is exact for power-of-two scales. In short:

========== ==============================================================
golden     ONNX
========== ==============================================================
input      ``QuantizeLinear`` (float I/O) [+ ``Clip``], ``Transpose`` to NCHW
conv2d     ``QLinearConv`` (per-channel weight scales for ``w_frac``; ``group``)
dense      ``com.microsoft.QGemm`` (int32 bias ``C``, per-column ``b_scale``)
multipoint one GEMM with the effective weight ``W + sum_p E_p * 2**s_p``
maxpool2d  ``MaxPool`` on int8/uint8 (``pads``)
avgpool2d  power-of-two area: ``com.microsoft.QLinearAveragePool``
           (``pads``, ``count_include_pad=1``); any other area: exact
           integers: ``ConvInteger`` with a ones kernel (``group = C``)
           for the window sums, then ``Mod``/``Div``/``Greater``/``Equal``
           on int64 for the rounded division
add        ``com.microsoft.QLinearAdd``
concat     per operand ``DequantizeLinear``/``QuantizeLinear`` to the
           output scale (if it differs), ``Concat`` on the channel axis
flatten    ``Transpose`` back to NHWC, ``Flatten`` (HWC order)
relu / <8b ``Clip`` of the integer tensor to ``[max(lo, 0), hi]``
out_max    the same ``Clip`` with ``min(hi, out_max)`` as upper bound
========== ==============================================================

Every tensor between layers is an int8 (signed types) or uint8 (unsigned
types) container with zero point 0, holding exactly the golden integers.
onnxruntime's QLinear kernels need their activation input and output to share
one container type; when a layer changes signedness (e.g. a signed input and a
ReLU output of up to 255) the kernel writes the other container type with a
zero point of +-128 (an exact integer offset) and a ``DequantizeLinear`` /
``QuantizeLinear`` pair at the same power-of-two scale moves it back to the
zero-point-0 container.

Only what is exact by that argument is exported; everything else raises
:class:`ValueError` before a graph is built. The argument rests on
onnxruntime's x86-64 CPU kernels; the doc lists the platform caveats.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .layers import Add, AvgPool2D, Concat, Conv2D, Dense, Flatten, MaxPool2D
from .network import QuantizedNetwork
from .primitives import MAX_SHIFT
from .qtypes import MAX_FRAC, QType

__all__ = ["export_onnx", "check_exportable", "SUPPORTED_LAYERS", "FLOAT_EXACT_LIMIT", "OPSET", "MS_OPSET",
           "INPUT_NAME", "INPUT_Q_NAME", "OUTPUT_NAME", "OUTPUT_Q_NAME", "layer_output_name"]

#: Layer kinds the exporter maps, in the order error messages list them.
SUPPORTED_LAYERS = ("conv2d", "dense", "maxpool2d", "avgpool2d", "add", "concat", "flatten")
#: onnxruntime requantizes in float32: every integer it converts must satisfy |v| <= 2**24.
FLOAT_EXACT_LIMIT = 1 << 24
#: ``ConvInteger`` accumulates in int32: the window sums of an average pool of another area must fit it.
INT32_MAX = (1 << 31) - 1
#: Default-domain opset and com.microsoft opset of the exported model.
OPSET = 21
MS_OPSET = 1
MS_DOMAIN = "com.microsoft"

INPUT_NAME = "input"        # float32 NHWC input (float_io=True)
INPUT_Q_NAME = "input_q"    # int8/uint8 NHWC input (float_io=False)
OUTPUT_NAME = "output"      # float32 dequantized output (float_io=True)
OUTPUT_Q_NAME = "output_q"  # int8/uint8 integer output, golden layout (always)


def layer_output_name(layer_name: str) -> str:
    """Graph output name of a layer's integer output when ``intermediates=True``."""
    return f"{layer_name}:q"


def _err(msg: str) -> ValueError:
    return ValueError(f"cannot export to ONNX: {msg}")


def _container(qt: QType):
    """numpy dtype of the zero-point-0 container of *qt* (int8 signed, uint8 unsigned)."""
    return np.dtype(np.int8) if qt.signed else np.dtype(np.uint8)


def _zp_in(container: np.dtype, qt: QType) -> int:
    """Zero point that lets *container* hold every value of the 8-bit range of *qt*'s signedness."""
    if (container == np.int8) == qt.signed:
        return 0
    return 128 if container == np.uint8 else -128


def _scale(frac_bits) -> np.ndarray:
    return np.ldexp(np.float32(1.0), -np.asarray(frac_bits, dtype=np.int64)).astype(np.float32)


# ---------------------------------------------------------------------- checks
def check_exportable(net: QuantizedNetwork) -> None:
    """Raise :class:`ValueError` naming the reason when *net* cannot be exported bit-exactly."""
    if not isinstance(net, QuantizedNetwork):
        raise TypeError(f"net must be a QuantizedNetwork, not {net!r}")
    if net.rounding != "half_even":
        raise _err(
            f"the network uses rounding={net.rounding!r}; onnxruntime's QuantizeLinear and QLinear* "
            "kernels round ties to even, so only rounding='half_even' networks export bit-exactly "
            "(re-quantize the network with rounding='half_even')"
        )
    _check_act(net.input_type, "the network input")
    for layer in net.layers:
        if layer.kind == "bfp":
            raise _err(
                f"layer {layer.name!r} is a block floating-point ('bfp') layer, which has no ONNX equivalent: "
                "ONNX has no operator for an exponent shared by a block of channels and chosen per sample and "
                "position from the block's largest magnitude (save the network in the golden .npz format)"
            )
        if layer.kind not in SUPPORTED_LAYERS:
            raise _err(
                f"layer {layer.name!r} is a {layer.kind!r} layer, which has no exporter; "
                f"supported layer kinds: {', '.join(SUPPORTED_LAYERS)}"
            )
        in_types = net.in_types(layer)
        out_t = net.qtype(layer.name)
        _check_act(out_t, f"layer {layer.name!r} output")
        _check_scales(layer, in_types)
        if isinstance(layer, (Conv2D, Dense)):
            w = _weight(layer)
            if w.size and (int(w.min()) < -128 or int(w.max()) > 127):
                what = ("effective weight W + sum_p E_p * 2**s_p of the multipoint layer"
                        if layer.extra_weights is not None else "weights")
                raise _err(f"layer {layer.name!r}: the {what} must fit int8 [-128, 127] "
                           f"(QLinearConv and QGemm take int8 weights), it spans [{int(w.min())}, {int(w.max())}]")
            lo, hi = layer.acc_bounds(in_types)
            _check_float_exact(lo, hi, f"layer {layer.name!r}: worst-case accumulator + bias")
        elif isinstance(layer, AvgPool2D):
            lo, hi = layer.acc_bounds(in_types)
            if layer.odd_area == 1:
                _check_float_exact(lo, hi, f"layer {layer.name!r}: worst-case window sum")
            elif lo < -INT32_MAX - 1 or hi > INT32_MAX:
                raise _err(f"layer {layer.name!r}: worst-case window sum spans [{lo}, {hi}], beyond the int32 "
                           "range of the ConvInteger that sums the windows")
        elif isinstance(layer, Add):
            lo, hi = layer.acc_bounds(in_types)
            _check_float_exact(lo, hi, f"layer {layer.name!r}: worst-case aligned sum")
    for name in ("input", *(layer.name for layer in net.layers)):
        shape = net.shape(name)
        if len(shape) not in (1, 3):
            raise _err(f"tensor {name!r} has per-sample shape {shape}; only (features,) and (H, W, C) are supported")


def _weight(layer) -> np.ndarray:
    """The one weight a QLinear kernel sees: the effective weight of a multipoint layer.

    ``acc = a@W + sum_p (a@E_p) << s_p`` equals ``a @ (W + sum_p E_p * 2**s_p)`` exactly, so
    one GEMM with the effective weight has the golden accumulator.
    """
    w = getattr(layer, "effective_weight", None)
    return w() if w is not None else layer.weight


def _check_scales(layer, in_types) -> None:
    """Every scale ``2**-f`` a node gets must be a normal float32 (``|f| <= 48``) and every requantization
    shift one the golden model computes (``|k| <= 62``): otherwise onnxruntime would see zero or infinite
    scales, or differ from a golden model that refuses the layer. (A network built through the constructors
    cannot break this; the check makes the exporter's promise independent of that.)"""
    if isinstance(layer, (Conv2D, Dense)):
        f = np.asarray(layer.weight_frac)
        if f.size and (int(f.min()) < -MAX_FRAC or int(f.max()) > MAX_FRAC):
            bad = int(f.min()) if int(f.min()) < -MAX_FRAC else int(f.max())
            raise _err(f"layer {layer.name!r}: weight fractional bits {bad} are outside [{-MAX_FRAC}, {MAX_FRAC}]: "
                       "the weight scale 2**-f would not be a normal float32")
        k = np.asarray(layer.shift(in_types[0]))
    elif isinstance(layer, (AvgPool2D, Add)):
        k = np.asarray(layer.shift(in_types[0]) if isinstance(layer, AvgPool2D) else layer.align(in_types)[2])
    elif isinstance(layer, Concat):
        k = np.asarray(layer.shifts(in_types))
    else:
        return
    if k.size and (int(k.min()) < -MAX_SHIFT or int(k.max()) > MAX_SHIFT):
        bad = int(k.min()) if int(k.min()) < -MAX_SHIFT else int(k.max())
        raise _err(f"layer {layer.name!r}: requantization shift {bad} is outside [{-MAX_SHIFT}, {MAX_SHIFT}], "
                   "where the golden model stops")


def _check_act(qt: QType, what: str) -> None:
    if qt.bits > 8:
        raise _err(f"{what} is {qt}; ONNX QLinear operators hold at most 8-bit integers")


def _check_float_exact(lo: int, hi: int, what: str) -> None:
    if lo < -FLOAT_EXACT_LIMIT or hi > FLOAT_EXACT_LIMIT:
        raise _err(
            f"{what} spans [{lo}, {hi}], beyond +-2**24: onnxruntime converts it to float32 before "
            "the rounding shift, which would round it twice and break bit-exactness"
        )


# --------------------------------------------------------------------- builder
class _Graph:
    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes = []
        self.inits = []
        self._names = set()

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    def const(self, base: str, value) -> str:
        name = self.fresh(base)
        self.inits.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs, base: str, domain: str | None = None, **attrs) -> str:
        out = self.fresh(base)
        kw = {"domain": domain} if domain else {}
        self.nodes.append(self.helper.make_node(op, list(inputs), [out], name=self.fresh(f"{base}/{op}"), **kw, **attrs))
        return out


class _Tensor:
    """An integer tensor in the graph: name, golden type, container dtype, zero point, layout."""

    def __init__(self, name, qtype, dtype, zp=0, nchw=False):
        self.name, self.qtype, self.dtype, self.zp, self.nchw = name, qtype, np.dtype(dtype), zp, nchw


def _recontainer(g: _Graph, t: _Tensor, dtype, base: str) -> _Tensor:
    """Move *t* to container *dtype* with the zero point :func:`_zp_in` gives (exact: same scale)."""
    dtype = np.dtype(dtype)
    zp = _zp_in(dtype, t.qtype)
    if t.dtype == dtype and t.zp == zp:
        return t
    s = g.const(f"{base}/scale", _scale(t.qtype.frac_bits))
    f = g.node("DequantizeLinear", [t.name, s, g.const(f"{base}/zp_from", np.array(t.zp, t.dtype))], f"{base}/real")
    q = g.node("QuantizeLinear", [f, s, g.const(f"{base}/zp_to", np.array(zp, dtype))], f"{base}/recontainer")
    return _Tensor(q, t.qtype, dtype, zp, t.nchw)


def _finish(g: _Graph, t: _Tensor, qtype: QType, relu: bool, base: str, out_max: int | None = None) -> _Tensor:
    """Return *t* in its zero-point-0 container, clipped to *qtype*'s range (and ReLU, and *out_max*)."""
    t = _recontainer(g, t, _container(qtype), base)
    lo, hi = (max(qtype.lo, 0) if relu else qtype.lo), qtype.hi
    if out_max is not None:
        hi = min(hi, out_max)
    info = np.iinfo(t.dtype)
    if lo > info.min or hi < info.max:
        name = g.node("Clip", [t.name, g.const(f"{base}/lo", np.array(lo, t.dtype)),
                               g.const(f"{base}/hi", np.array(hi, t.dtype))], f"{base}/clip")
        t = _Tensor(name, qtype, t.dtype, 0, t.nchw)
    return t


def _weight_scales(layer) -> np.ndarray:
    """Per-output-channel weight scales (1-D) for ``w_frac``, else one scalar."""
    w_scale = _scale(layer.weight_frac)
    if not layer.per_channel:
        w_scale = w_scale[:1].reshape(())
    return w_scale


def _conv(g, layer: Conv2D, x: _Tensor, base: str) -> _Tensor:
    kh, kw, cin, cout = layer.weight.shape
    w = np.ascontiguousarray(_weight(layer).transpose(3, 2, 0, 1)).astype(np.int8)  # HWIO -> OIHW
    w_scale = _weight_scales(layer)
    w_zp = np.zeros(w_scale.shape, np.int8)
    y_zp = _zp_in(x.dtype, layer.out_type)
    inputs = [
        x.name, g.const(f"{base}/x_scale", _scale(x.qtype.frac_bits)), g.const(f"{base}/x_zp", np.array(x.zp, x.dtype)),
        g.const(f"{base}/w", w), g.const(f"{base}/w_scale", w_scale), g.const(f"{base}/w_zp", w_zp),
        g.const(f"{base}/y_scale", _scale(layer.out_type.frac_bits)), g.const(f"{base}/y_zp", np.array(y_zp, x.dtype)),
    ]
    if layer.bias is not None:
        inputs.append(g.const(f"{base}/bias", layer.bias.astype(np.int32)))
    pt, pb, pl, pr = layer.padding
    y = g.node("QLinearConv", inputs, f"{base}/conv", kernel_shape=[kh, kw], strides=list(layer.stride),
               pads=[pt, pl, pb, pr], dilations=[1, 1], group=layer.groups)
    return _finish(g, _Tensor(y, layer.out_type, x.dtype, y_zp, True), layer.out_type, layer.relu, base,
                   layer.out_max)


def _dense(g, layer: Dense, x: _Tensor, base: str) -> _Tensor:
    w_scale = _weight_scales(layer)
    y_zp = _zp_in(x.dtype, layer.out_type)
    inputs = [
        x.name, g.const(f"{base}/a_scale", _scale(x.qtype.frac_bits)), g.const(f"{base}/a_zp", np.array(x.zp, x.dtype)),
        g.const(f"{base}/b", _weight(layer).astype(np.int8)), g.const(f"{base}/b_scale", w_scale),
        g.const(f"{base}/b_zp", np.zeros(w_scale.shape, np.int8)),
        g.const(f"{base}/c", (layer.bias if layer.bias is not None else np.zeros(layer.out_channels)).astype(np.int32)),
        g.const(f"{base}/y_scale", _scale(layer.out_type.frac_bits)), g.const(f"{base}/y_zp", np.array(y_zp, x.dtype)),
    ]
    y = g.node("QGemm", inputs, f"{base}/gemm", domain=MS_DOMAIN, alpha=1.0, transA=0, transB=0)
    return _finish(g, _Tensor(y, layer.out_type, x.dtype, y_zp, False), layer.out_type, layer.relu, base,
                   layer.out_max)


def _onnx_pads(padding) -> list[int]:
    """Golden ``(top, bottom, left, right)`` -> ONNX ``[top, left, bottom, right]``."""
    pt, pb, pl, pr = padding
    return [pt, pl, pb, pr]


def _maxpool(g, layer: MaxPool2D, x: _Tensor, base: str) -> _Tensor:
    # ONNX MaxPool ignores padded positions; the golden model pads with the type's minimum, which never
    # wins: every window holds an input element, so both are the max over the window's inputs.
    y = g.node("MaxPool", [x.name], f"{base}/maxpool", kernel_shape=list(layer.pool), strides=list(layer.stride),
               pads=_onnx_pads(layer.padding))
    return _Tensor(y, x.qtype, x.dtype, x.zp, True)


def _avgpool(g, layer: AvgPool2D, x: _Tensor, base: str, channels: int) -> _Tensor:
    out_t = layer.out_qtype([x.qtype])
    if layer.odd_area != 1:
        return _avgpool_exact(g, layer, x, out_t, base, channels)
    y_zp = _zp_in(x.dtype, out_t)
    inputs = [x.name, g.const(f"{base}/x_scale", _scale(x.qtype.frac_bits)), g.const(f"{base}/x_zp", np.array(x.zp, x.dtype)),
              g.const(f"{base}/y_scale", _scale(out_t.frac_bits)), g.const(f"{base}/y_zp", np.array(y_zp, x.dtype))]
    # count_include_pad=1: padding adds zeros and the divisor is the whole window (golden, PyTorch).
    y = g.node("QLinearAveragePool", inputs, f"{base}/avgpool", domain=MS_DOMAIN, kernel_shape=list(layer.pool),
               strides=list(layer.stride), pads=_onnx_pads(layer.padding), count_include_pad=1)
    return _finish(g, _Tensor(y, out_t, x.dtype, y_zp, True), out_t, False, base)


def _avgpool_exact(g, layer: AvgPool2D, x: _Tensor, out_t: QType, base: str, channels: int) -> _Tensor:
    """An average pool whose area is not a power of two, in exact integer ops.

    onnxruntime's pools divide in float, which is not the exact rational rounding of the golden model.
    Instead: the window sums ``s`` by ``ConvInteger`` with a ones kernel per channel (``group = C``, zero
    padding, int32: checked to fit), then in int64 ``n = s * 2**max(-k, 0)``, ``D = d * 2**max(k, 0)``,
    ``r = Mod(n, D)`` (floor: ``0 <= r < D``), ``q = (n - r) / D`` (exact), ``y = q + (r > D - r or
    (r == D - r and q odd))`` (half to even, :func:`~systolic.golden.primitives.round_div`), ``Clip`` to
    the output type and ``Cast`` to its container.
    """
    from onnx import TensorProto

    i64 = np.int64
    assert x.zp == 0 and x.nchw, layer.name
    ph, pw = layer.pool
    k, d = layer.shift(x.qtype), layer.odd_area
    ones = g.const(f"{base}/ones", np.ones((channels, 1, ph, pw), x.dtype))
    s = g.node("ConvInteger", [x.name, ones], f"{base}/window_sum", kernel_shape=[ph, pw],
               strides=list(layer.stride), pads=_onnx_pads(layer.padding), dilations=[1, 1], group=channels)
    n = g.node("Cast", [s], f"{base}/int64", to=TensorProto.INT64)
    if k < 0:
        n = g.node("Mul", [n, g.const(f"{base}/left", np.array(1 << -k, i64))], f"{base}/shifted")
    big_d = g.const(f"{base}/divisor", np.array(d << max(k, 0), i64))
    r = g.node("Mod", [n, big_d], f"{base}/rem")
    q = g.node("Div", [g.node("Sub", [n, r], f"{base}/floor_mul"), big_d], f"{base}/quot")
    rest = g.node("Sub", [big_d, r], f"{base}/rest")
    odd = g.node("Equal", [g.node("Mod", [q, g.const(f"{base}/two", np.array(2, i64))], f"{base}/parity"),
                           g.const(f"{base}/one", np.array(1, i64))], f"{base}/odd")
    tie_up = g.node("And", [g.node("Equal", [r, rest], f"{base}/tie"), odd], f"{base}/tie_up")
    up = g.node("Or", [g.node("Greater", [r, rest], f"{base}/above"), tie_up], f"{base}/up")
    y = g.node("Add", [q, g.node("Cast", [up], f"{base}/up64", to=TensorProto.INT64)], f"{base}/rounded")
    y = g.node("Clip", [y, g.const(f"{base}/lo", np.array(out_t.lo, i64)), g.const(f"{base}/hi", np.array(out_t.hi, i64))],
               f"{base}/sat")
    dtype = _container(out_t)
    y = g.node("Cast", [y], f"{base}/out", to=g.helper.np_dtype_to_tensor_dtype(dtype))
    return _Tensor(y, out_t, dtype, 0, True)


def _add(g, layer: Add, a: _Tensor, b: _Tensor, base: str) -> _Tensor:
    dtype = _container(layer.out_type)
    a = _recontainer(g, a, dtype, f"{base}/a")
    b = _recontainer(g, b, dtype, f"{base}/b")
    inputs = [a.name, g.const(f"{base}/a_scale", _scale(a.qtype.frac_bits)), g.const(f"{base}/a_zp", np.array(a.zp, dtype)),
              b.name, g.const(f"{base}/b_scale", _scale(b.qtype.frac_bits)), g.const(f"{base}/b_zp", np.array(b.zp, dtype)),
              g.const(f"{base}/c_scale", _scale(layer.out_type.frac_bits)), g.const(f"{base}/c_zp", np.array(0, dtype))]
    y = g.node("QLinearAdd", inputs, f"{base}/add", domain=MS_DOMAIN)
    return _finish(g, _Tensor(y, layer.out_type, dtype, 0, a.nchw), layer.out_type, layer.relu, base, layer.out_max)


def _concat(g, layer: Concat, ins: list, base: str) -> _Tensor:
    """Each operand aligned to the output type, then ``Concat`` on the channel axis (1 in NCHW and 2-D).

    Alignment ``sat(round_shift(x, f_i - f_out))`` is ``DequantizeLinear`` at ``2**-f_i`` then
    ``QuantizeLinear`` at ``2**-f_out`` (exact: a change of exponent, rounded half to even, saturated to the
    container) and the ``Clip`` of a type narrower than its container; nothing when only that clip is needed.
    """
    out_t = layer.out_type
    dtype = _container(out_t)
    parts = []
    for i, t in enumerate(ins):
        pb = f"{base}/in{i}"
        if t.qtype.frac_bits != out_t.frac_bits or t.dtype != dtype or t.zp != 0:
            f = g.node("DequantizeLinear", [t.name, g.const(f"{pb}/scale", _scale(t.qtype.frac_bits)),
                                            g.const(f"{pb}/zp", np.array(t.zp, t.dtype))], f"{pb}/real")
            q = g.node("QuantizeLinear", [f, g.const(f"{pb}/out_scale", _scale(out_t.frac_bits)),
                                          g.const(f"{pb}/out_zp", np.array(0, dtype))], f"{pb}/aligned")
            t = _Tensor(q, out_t, dtype, 0, t.nchw)
        parts.append(_finish(g, _Tensor(t.name, out_t, t.dtype, t.zp, t.nchw), out_t, False, pb))
    y = g.node("Concat", [p.name for p in parts], f"{base}/concat", axis=1)
    return _Tensor(y, out_t, dtype, 0, parts[0].nchw)


def _to_nhwc(g, t: _Tensor, base: str) -> _Tensor:
    if not t.nchw:
        return t
    y = g.node("Transpose", [t.name], f"{base}/nhwc", perm=[0, 2, 3, 1])
    return _Tensor(y, t.qtype, t.dtype, t.zp, False)


def _flatten(g, layer: Flatten, x: _Tensor, base: str) -> _Tensor:
    x = _to_nhwc(g, x, base)  # golden flattens in HWC order
    y = g.node("Flatten", [x.name], f"{base}/flatten", axis=1)
    return _Tensor(y, x.qtype, x.dtype, x.zp, False)


def _value_info(g: _Graph, name: str, dtype, shape):
    return g.helper.make_tensor_value_info(name, g.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)


# ---------------------------------------------------------------------- export
def export_onnx(net: QuantizedNetwork, path=None, float_io: bool = True, *,
                intermediates: bool = False):
    """Export *net* as an ONNX model that onnxruntime runs bit-exactly.

    Parameters
    ----------
    net : QuantizedNetwork
        Zero points 0, power-of-two scales (every golden network), ``half_even``
        rounding, tensors of at most 8 bits, layer kinds :data:`SUPPORTED_LAYERS`.
    path : str or Path, optional
        Where to write the model (``.onnx``).
    float_io : bool
        True: the graph input ``"input"`` is float32 (NHWC or ``(batch, features)``),
        quantized by ``QuantizeLinear`` at the input scale (feeding
        ``q * 2**-frac_bits`` reproduces ``q``; other values are rounded half to
        even and saturated like :meth:`QuantizedNetwork.quantize_input`), and a
        float32 ``"output"`` (``DequantizeLinear`` of the integer output) is
        added. False: the input ``"input_q"`` is the int8/uint8 integer tensor.
        The integer output ``"output_q"`` (golden layout, int8 or uint8
        container, zero point 0) is always a graph output.
    intermediates : bool
        Also expose every layer's integer output, in golden layout, as graph
        output ``layer_output_name(layer.name)``.

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker``; the batch dimension is symbolic (``"batch"``).

    Raises
    ------
    ValueError
        ``half_up`` rounding, an unsupported layer kind, a tensor wider than
        8 bits, int8-overflowing weights, or a worst case beyond the range
        where onnxruntime's float32 requantization is exact (see
        ``docs/numerics.md`` (section "ONNX export")).
    """
    import onnx

    check_exportable(net)
    if not isinstance(float_io, bool):
        raise TypeError(f"float_io must be a bool, not {float_io!r}")
    g = _Graph()
    in_t = net.input_type
    in_dtype = _container(in_t)
    batch_shape = ["batch", *net.input_shape]
    graph_inputs, graph_outputs = [], []

    if float_io:
        g.fresh(INPUT_NAME)
        graph_inputs.append(_value_info(g, INPUT_NAME, np.float32, batch_shape))
        q = g.node("QuantizeLinear", [INPUT_NAME, g.const("input/scale", _scale(in_t.frac_bits)),
                                      g.const("input/zp", np.array(0, in_dtype))], "input/quantize")
        x = _finish(g, _Tensor(q, in_t, in_dtype), in_t, False, "input")
    else:
        g.fresh(INPUT_Q_NAME)
        graph_inputs.append(_value_info(g, INPUT_Q_NAME, in_dtype, batch_shape))
        x = _Tensor(INPUT_Q_NAME, in_t, in_dtype)
    if len(net.input_shape) == 3:
        x = _Tensor(g.node("Transpose", [x.name], "input/nchw", perm=[0, 3, 1, 2]), in_t, in_dtype, 0, True)

    tensors = {"input": x}
    for layer in net.layers:
        base = f"{layer.name}"
        ins = [tensors[i] for i in layer.inputs]
        if isinstance(layer, Conv2D):
            y = _conv(g, layer, ins[0], base)
        elif isinstance(layer, Dense):
            y = _dense(g, layer, ins[0], base)
        elif isinstance(layer, AvgPool2D):  # before MaxPool2D: AvgPool2D subclasses it
            y = _avgpool(g, layer, ins[0], base, net.shape(layer.inputs[0])[-1])
        elif isinstance(layer, MaxPool2D):
            y = _maxpool(g, layer, ins[0], base)
        elif isinstance(layer, Add):
            y = _add(g, layer, ins[0], ins[1], base)
        elif isinstance(layer, Concat):
            y = _concat(g, layer, ins, base)
        elif isinstance(layer, Flatten):
            y = _flatten(g, layer, ins[0], base)
        else:  # pragma: no cover - check_exportable refused it
            raise _err(f"layer kind {layer.kind!r}")
        assert y.zp == 0 and y.dtype == _container(net.qtype(layer.name)), layer.name
        tensors[layer.name] = y
        if intermediates and layer is not net.layers[-1]:
            out = _to_nhwc(g, y, f"{base}/expose")
            name = layer_output_name(layer.name)
            g.nodes.append(g.helper.make_node("Identity", [out.name], [g.fresh(name)], name=g.fresh(f"{base}/expose/Identity")))
            graph_outputs.append(_value_info(g, name, y.dtype, ["batch", *net.shape(layer.name)]))

    y = _to_nhwc(g, tensors[net.output_name], "output")
    out_t = net.output_type
    out_shape = ["batch", *net.shape(net.output_name)]
    g.nodes.append(g.helper.make_node("Identity", [y.name], [g.fresh(OUTPUT_Q_NAME)], name=g.fresh("output/Identity")))
    graph_outputs.insert(0, _value_info(g, OUTPUT_Q_NAME, y.dtype, out_shape))
    if float_io:
        g.nodes.append(g.helper.make_node(
            "DequantizeLinear", [OUTPUT_Q_NAME, g.const("output/scale", _scale(out_t.frac_bits)),
                                 g.const("output/zp", np.array(0, y.dtype))], [g.fresh(OUTPUT_NAME)],
            name=g.fresh("output/DequantizeLinear")))
        graph_outputs.insert(1, _value_info(g, OUTPUT_NAME, np.float32, out_shape))

    graph = g.helper.make_graph(g.nodes, "systolic_" + str(net.meta.get("name", "network")),
                                graph_inputs, graph_outputs, initializer=g.inits)
    model = g.helper.make_model(
        graph, producer_name="systolic",
        opset_imports=[g.helper.make_opsetid("", OPSET), g.helper.make_opsetid(MS_DOMAIN, MS_OPSET)],
    )
    model.ir_version = 10
    model.doc_string = (f"systolic QuantizedNetwork, rounding half_even; input {in_t}, output {out_t}; "
                        f"integer output '{OUTPUT_Q_NAME}' equals the golden model bit for bit")
    onnx.checker.check_model(model)
    if path is not None:
        # Everything is checked above; write to a temporary file and rename it, so a failure while writing
        # never leaves a partial model under *path*.
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_bytes(model.SerializeToString())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return model
