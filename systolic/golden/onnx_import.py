"""Import of already-quantized ONNX models (QONNX ``Quant`` nodes, ONNX QDQ) as golden networks.

No retraining and no torch: the integers a quantized ONNX model computes become a
:class:`~systolic.golden.network.QuantizedNetwork` directly, bit for bit (docs/import.md, section
"Already-quantized ONNX (QONNX, QDQ)").

* :func:`from_qdq` reads an ONNX QDQ model (``QuantizeLinear`` / ``DequantizeLinear`` around float
  ``Conv`` / ``Gemm`` / ``MatMul`` / ``Add`` / pools / ``Relu`` ...), the format onnxruntime's
  quantization tools write;
* :func:`from_qonnx` reads a QONNX model (``Quant(x, scale, zero_point, bitwidth)`` of the domain
  ``qonnx.custom_op.general``, as Brevitas exports it);
* :func:`import_quantized_onnx` picks one of them from the nodes it finds.

Both need power-of-two scales and zero points of 0 (the kit's numerics, docs/numerics.md); everything
else is refused with a :class:`QuantizedImportError` (a ``ValueError``) naming the tensor or node.

How the float graph maps to integers: every float tensor of the source is tracked as one of

* a quantized tensor (the output of a quantizer, or of a max pool / flatten / identity of one): a golden
  tensor ``q`` of a :class:`QType` whose real value ``q * 2**-f`` *is* the float value, exactly;
* a quantized constant (a weight or bias quantizer's output): integers and per-tensor or per-axis
  fractional bits;
* a pending result (a ``Conv`` / ``Gemm`` / ``MatMul`` (+ bias ``Add``) / ``Add`` / ``AveragePool`` /
  ``Concat`` of quantized tensors, possibly followed by ``Relu`` / ``Clip(0, c)``): a float value that
  only becomes integers at the quantizer after it, which gives the golden layer its ``out_type`` and so
  its shift ``k = f_in + f_w - f_out``.

Bit-exactness (checked when ``require_exact=True``, the default): with power-of-two scales, the source's
float32 arithmetic is exact as long as every float sum is an integer below ``2**24`` in units of its grid,
and then its quantizer's round-half-to-even of ``acc * 2**-k`` is the golden ``round_shift(acc, k,
"half_even")``. The importer proves this per layer with the worst case over all inputs of the input
type (see :data:`FLOAT32_EXACT`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .layers import Add, AvgPool2D, Concat, Conv2D, Dense, Flatten, MaxPool2D
from .limits import MAX_LAYERS, MAX_MODEL_ELEMENTS, MAX_NAME_CHARS, MAX_PADDING
from .network import QuantizedNetwork
from .qtypes import MAX_FRAC, QType

__all__ = ["QuantizedImportError", "from_qdq", "from_qonnx", "import_quantized_onnx", "read_onnx", "onnx_input",
           "MAX_ONNX_BYTES",
           "MIN_OPSET", "MIN_BITS", "MAX_BITS", "FLOAT32_EXACT", "QDQ_SUPPORTED", "QONNX_SUPPORTED",
           "QONNX_DOMAIN"]

#: Largest ONNX file read (checked before the file is parsed).
MAX_ONNX_BYTES = 1 << 30
#: Lowest opset of the default ONNX domain accepted.
MIN_OPSET = 13
#: Bit widths of activation and weight quantizers accepted (a bias may have up to 32 bits).
MIN_BITS, MAX_BITS = 2, 8
#: Largest bias width (the golden bias is int32).
MAX_BIAS_BITS = 32
#: Every float32 sum the source computes must stay within +-2**24 units of its grid to be exact.
FLOAT32_EXACT = 1 << 24
#: The custom-op domain of QONNX's ``Quant``.
QONNX_DOMAIN = "qonnx.custom_op.general"

_COMMON = ("Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
           "Flatten", "Reshape", "Concat", "Identity", "Dropout", "Constant")
#: Operators :func:`from_qdq` accepts.
QDQ_SUPPORTED = ("QuantizeLinear", "DequantizeLinear") + _COMMON
#: Operators :func:`from_qonnx` accepts (``Quant`` of the QONNX domain).
QONNX_SUPPORTED = ("Quant",) + _COMMON

#: ONNX integer element types of ``QuantizeLinear`` / ``DequantizeLinear``: ``(bits, signed)``.
_INT_TYPES = {"INT8": (8, True), "UINT8": (8, False), "INT4": (4, True), "UINT4": (4, False),
              "INT2": (2, True), "UINT2": (2, False), "INT16": (16, True), "UINT16": (16, False),
              "INT32": (32, True)}
#: Bits of one element in ``raw_data`` of the sub-byte types (packed).
_PACKED_BITS = {"INT4": 4, "UINT4": 4, "INT2": 2, "UINT2": 2}


class QuantizedImportError(ValueError):
    """An already-quantized ONNX model the importer cannot map exactly; the message names the node or tensor."""


# ====================================================================== reading the file


def _check_tensor(t, where: str) -> None:
    """Refuse external data, declared sizes above the limit and raw data of the wrong length, before any array."""
    import onnx

    if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
        raise QuantizedImportError(f"{where}: tensor {t.name!r} keeps its data in an external file; save the model "
                                   "with its weights inside (onnx.save(..., save_as_external_data=False))")
    n = 1
    for d in t.dims:
        if d < 0:
            raise QuantizedImportError(f"{where}: tensor {t.name!r} declares a negative dimension {list(t.dims)}")
        n *= int(d)
    if n > MAX_MODEL_ELEMENTS:
        raise QuantizedImportError(f"{where}: tensor {t.name!r} declares {n} elements {list(t.dims)}, above the "
                                   f"limit of {MAX_MODEL_ELEMENTS} (MAX_MODEL_ELEMENTS)")
    tname = onnx.TensorProto.DataType.Name(t.data_type)
    if t.raw_data:
        if tname in _PACKED_BITS:
            need = (n * _PACKED_BITS[tname] + 7) // 8
        else:
            try:
                need = n * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
            except Exception:
                raise QuantizedImportError(f"{where}: tensor {t.name!r} has data type {tname}, which a quantized "
                                           "model does not use") from None
        if len(t.raw_data) != need:
            raise QuantizedImportError(f"{where}: tensor {t.name!r} holds {len(t.raw_data)} bytes, its shape "
                                       f"{list(t.dims)} needs {need}")


def read_onnx(path, kind: str = "auto"):
    """Read and check an ONNX file: size, parse, opset, tensors, the checker. Returns ``(model, where)``.

    Shared with the float importer (:mod:`systolic.quantize.importer`); raises :class:`QuantizedImportError`
    (a ``ValueError``) naming the file."""
    import onnx

    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise QuantizedImportError(f"{where}: no such ONNX file")
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise QuantizedImportError(f"{where}: {size} bytes, above the limit of {MAX_ONNX_BYTES} (MAX_ONNX_BYTES)")
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except Exception as exc:            # protobuf's DecodeError and friends
        raise QuantizedImportError(f"{where}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise QuantizedImportError(f"{where}: opset {opset}; opset {MIN_OPSET} or later is supported "
                                   "(onnx.version_converter can upgrade it)")
    for t in model.graph.initializer:
        _check_tensor(t, where)
    for n in model.graph.node:
        for a in n.attribute:
            if a.HasField("t"):
                _check_tensor(a.t, where)
            for t in a.tensors:
                _check_tensor(t, where)
            if a.HasField("g") or len(a.graphs):
                raise QuantizedImportError(f"{where}: node {n.name or n.op_type!r} ({n.op_type}) has a subgraph; "
                                           "control flow is not supported")
    try:
        # The checker validates the standard ops and the graph's structure; it skips nodes of domains it does not
        # know (QONNX's Quant), which are checked here instead.
        onnx.checker.check_model(model)
    except Exception as exc:
        raise QuantizedImportError(f"{where}: the ONNX checker refuses the model: {str(exc).splitlines()[0]}") \
            from None
    return model, where


def onnx_input(model, where, inits) -> tuple[str, tuple, tuple]:
    """``(name, golden per-sample shape, ONNX per-sample shape)`` of the one graph input."""
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    if len(graph_inputs) != 1:
        raise QuantizedImportError(f"{where}: the graph has {len(graph_inputs)} inputs; one is supported")
    inp = graph_inputs[0]
    dims = inp.type.tensor_type.shape.dim
    if len(dims) not in (2, 4):
        raise QuantizedImportError(f"{where}: input {inp.name!r} has {len(dims)} dimensions; (N, C, H, W) or "
                                   "(N, features) is supported")
    shape = []
    for i, d in enumerate(dims[1:], 1):
        if not d.HasField("dim_value") or d.dim_value < 1:
            raise QuantizedImportError(f"{where}: input {inp.name!r} has a dynamic dimension {i} "
                                       f"({d.dim_param or '?'}); only the batch may be dynamic")
        shape.append(int(d.dim_value))
    golden = (shape[1], shape[2], shape[0]) if len(shape) == 3 else (shape[0],)
    return inp.name, golden, tuple(shape)


# ====================================================================== values of the float graph


@dataclass(frozen=True)
class _Q:
    """A golden tensor: the float value is exactly ``q * 2**-qtype.frac_bits``."""

    name: str                   #: golden layer (or "input")
    qtype: QType
    shape: tuple                #: golden per-sample shape: (H, W, C) or (features,)
    chw: tuple | None = None    #: a flattened (C, H, W) map with H*W > 1 (the next dense permutes its rows)


@dataclass(frozen=True)
class _Int:
    """QDQ: the integer output of a ``QuantizeLinear`` (of a tensor or of a constant)."""

    of: object                  #: _Q or _W
    frac: object                #: the scale's fractional bits (for the check at DequantizeLinear)


@dataclass(frozen=True)
class _W:
    """A quantized constant: ``value = ints * 2**-frac`` (``frac`` broadcast along ``axis``)."""

    tensor: str
    ints: np.ndarray
    frac: np.ndarray            #: 0-D (per tensor) or 1-D along ``axis``
    axis: int | None
    bits: int
    signed: bool

    def value(self) -> np.ndarray:
        return np.ldexp(self.ints.astype(np.float64), -self._fb())

    def _fb(self) -> np.ndarray:
        if self.axis is None:
            return np.asarray(self.frac)
        shape = [1] * self.ints.ndim
        shape[self.axis] = -1
        return np.asarray(self.frac).reshape(shape)


@dataclass(frozen=True)
class _Raw:
    """The float graph input, before its quantizer."""

    name: str


@dataclass(frozen=True)
class _Pending:
    """A float result that becomes integers at the quantizer after it (which fixes the layer's out_type)."""

    kind: str                   #: gemm, add, avgpool, concat, requant
    node: str                   #: the ONNX node that made it (the golden layer's name)
    op: str
    shape: tuple
    ins: tuple                  #: _Q inputs
    spec: dict = field(default_factory=dict)
    relu: bool = False
    clip: float | None = None   #: Clip(0, clip) upper bound, real value
    chw: tuple | None = None


class _Net:
    """Collects golden layers with unique names."""

    def __init__(self, where: str, supported: tuple):
        self.where = where
        self.supported = supported
        self.layers: list = []
        self.names: set = {"input"}
        self.require_exact = True

    def fail(self, node: str, op: str, why: str):
        raise QuantizedImportError(f"{self.where}: node {node!r} ({op}): {why}")

    def name(self, raw: str) -> str:
        base = re.sub(r"[^0-9A-Za-z_.\-]", "_", str(raw))[:MAX_NAME_CHARS - 8] or "node"
        if base == "input":
            base = "input_"
        name, i = base, 1
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def add(self, layer) -> None:
        if len(self.layers) >= MAX_LAYERS:
            raise QuantizedImportError(f"{self.where}: more than {MAX_LAYERS} layers (MAX_LAYERS)")
        self.layers.append(layer)


def _attrs(node) -> dict:
    import onnx

    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _frac_of_scale(scale: np.ndarray, what: str, where: str) -> np.ndarray:
    """Fractional bits ``f`` with ``scale = 2**-f`` (element-wise); refuse anything that is not a power of two."""
    s = np.asarray(scale, dtype=np.float64)
    if s.size == 0:
        raise QuantizedImportError(f"{where}: the scale of {what} is empty")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        bad = s[~(np.isfinite(s) & (s > 0))].ravel()[0]
        raise QuantizedImportError(f"{where}: the scale of {what} holds {bad!r}; scales must be positive powers "
                                   "of two")
    m, e = np.frexp(s)
    if np.any(m != 0.5):
        bad = s[m != 0.5].ravel()[0]
        raise QuantizedImportError(f"{where}: the scale of {what} is {float(bad)!r}, not a power of two (2**-f): "
                                   "the kit's numerics have power-of-two scales only (re-quantize with fixed-point "
                                   "/ power-of-two scale quantizers)")
    f = -(e.astype(np.int64) - 1)
    if int(f.min()) < -MAX_FRAC or int(f.max()) > MAX_FRAC:
        bad = int(f.min()) if int(f.min()) < -MAX_FRAC else int(f.max())
        raise QuantizedImportError(f"{where}: the scale of {what} is 2**{-bad}; scales 2**-f with f in "
                                   f"[{-MAX_FRAC}, {MAX_FRAC}] are supported")
    return f


def _scale_axis(scale: np.ndarray, ndim: int, what: str, where: str, axis_attr=None):
    """``(frac, axis)``: per tensor (``axis`` None, ``frac`` 0-D) or per axis (``frac`` 1-D)."""
    s = np.asarray(scale)
    f = _frac_of_scale(s, what, where)
    if s.size == 1 or np.all(f == f.ravel()[0]):
        return np.asarray(f.ravel()[0]), None
    if s.ndim == 1 and axis_attr is not None:          # QDQ: a 1-D scale along the attribute 'axis'
        ax = axis_attr + ndim if axis_attr < 0 else axis_attr
        return f, ax
    big = [i for i, d in enumerate(s.shape) if d != 1]
    if len(big) != 1:
        raise QuantizedImportError(f"{where}: the scale of {what} has shape {s.shape}; per-tensor or one axis is "
                                   "supported")
    ax = big[0] + (ndim - s.ndim)                      # numpy broadcasting aligns trailing axes
    return f.reshape(-1), ax


_ROUNDERS = {
    "ROUND": np.round, "HALF_EVEN": np.round, "CEIL": np.ceil, "FLOOR": np.floor, "DOWN": np.fix,
    "UP": lambda x: np.sign(x) * np.ceil(np.abs(x)),
    "HALF_UP": lambda x: np.sign(x) * np.floor(np.abs(x) + 0.5),
    "HALF_DOWN": lambda x: np.sign(x) * np.ceil(np.abs(x) - 0.5),
}


def _quantize_const(value: np.ndarray, frac: np.ndarray, axis, lo: int, hi: int, mode: str) -> np.ndarray:
    """Integers of a constant, as the source computes them: ``round(clip(x / scale, lo, hi))``.

    ``x / scale`` by a power of two is exact in binary floating point, so float64 here equals the
    source's float32 arithmetic; clipping to integer bounds before or after rounding is the same.
    """
    v = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("non-finite")
    f = np.asarray(frac)
    if axis is not None:
        shape = [1] * v.ndim
        shape[axis] = -1
        f = f.reshape(shape)
    y = np.clip(np.ldexp(v, f), lo, hi)
    return _ROUNDERS[mode](y).astype(np.int64)


# ====================================================================== the converter


class _Converter:
    def __init__(self, model, where: str, fmt: str, require_exact: bool):
        from onnx import numpy_helper

        self.model, self.where, self.fmt = model, where, fmt
        self.net = _Net(where, QDQ_SUPPORTED if fmt == "qdq" else QONNX_SUPPORTED)
        self.net.require_exact = require_exact
        self.inits = {t.name: t for t in model.graph.initializer}
        self.consts: dict[str, np.ndarray] = {}
        self.np = numpy_helper
        self.env: dict[str, object] = {}
        self.input_type: QType | None = None
        self.modes: set = set()

    # ------------------------------------------------------------------ helpers
    def fail(self, node, op, why):
        self.net.fail(node, op, why)

    def const(self, name: str, node: str, op: str, what: str) -> np.ndarray | None:
        if name in self.consts:
            return self.consts[name]
        if name in self.inits:
            self.consts[name] = self.np.to_array(self.inits[name])
            return self.consts[name]
        return None

    def need_const(self, name, node, op, what) -> np.ndarray:
        c = self.const(name, node, op, what)
        if c is None:
            self.fail(node, op, f"its {what} ({name!r}) must be a constant (an initializer or a Constant node)")
        return c

    def value(self, name: str, node: str, op: str):
        if name in self.env:
            return self.env[name]
        if name in self.inits or name in self.consts:
            return ("const", name)
        self.fail(node, op, f"input {name!r} is neither the graph input, an initializer nor an earlier node's "
                            "output (a missing initializer?)")

    def tensor(self, name: str, node: str, op: str) -> _Q:
        """A quantized golden tensor (materializing an exact pending concat)."""
        v = self.value(name, node, op)
        if isinstance(v, _Q):
            return v
        if isinstance(v, _Pending) and v.kind == "concat" and not v.relu and v.clip is None \
                and len({q.qtype for q in v.ins}) == 1:
            return self.finish(v, v.ins[0].qtype, node, op)
        if isinstance(v, _Raw):
            self.fail(node, op, f"reads the float graph input {name!r} directly; the input must go through one "
                                "quantizer first")
        if isinstance(v, _Int):
            self.fail(node, op, f"reads the integer output {name!r} of a QuantizeLinear; only a DequantizeLinear "
                                "may read it")
        if isinstance(v, _Pending):
            self.fail(node, op, f"reads {name!r}, the unquantized float output of node {v.node!r} ({v.op}); put a "
                                f"quantizer ({'QuantizeLinear + DequantizeLinear' if self.fmt == 'qdq' else 'Quant'}) "
                                "between them")
        self.fail(node, op, f"input {name!r} is a constant where a quantized tensor is expected")

    def weight(self, name: str, node: str, op: str, what: str) -> _W:
        v = self.value(name, node, op)
        if isinstance(v, _W):
            return v
        if isinstance(v, tuple):
            self.fail(node, op, f"its {what} {name!r} is a float constant without a quantizer; the {what} must be "
                                f"quantized ({'DequantizeLinear of integers' if self.fmt == 'qdq' else 'a Quant node'})")
        self.fail(node, op, f"its {what} {name!r} must be a quantized constant, not a computed tensor")

    # ------------------------------------------------------------------ quantizers
    def quantize(self, v, frac, axis, bits: int, signed: bool, narrow: bool, mode: str, node: str, op: str, src: str):
        """Apply a quantizer (already checked: zero point 0, power-of-two scale) to value *v*."""
        if isinstance(v, tuple):                       # a constant: weights or bias
            c = self.const(v[1], node, op, "input")
            if c.dtype.kind not in "fc":
                self.fail(node, op, f"quantizes the integer constant {v[1]!r}; a float constant is expected")
            lo, hi = QType.range_of(bits, signed)
            if narrow:
                lo, hi = (lo + 1, hi) if signed else (lo, hi - 1)
            try:
                ints = _quantize_const(c, frac, axis, lo, hi, mode)
            except ValueError:
                self.fail(node, op, f"the constant {v[1]!r} holds a non-finite value")
            return _W(v[1], ints, np.asarray(frac), axis, bits, signed)
        # An activation quantizer: checked against the kit's numerics.
        if axis is not None:
            self.fail(node, op, f"quantizes the activation {src!r} per channel (axis {axis}); activations need one "
                                "scale per tensor (the hardware has one shift per layer output)")
        if mode in ("ROUND", "HALF_EVEN"):
            self.modes.add("half_even")
        else:
            self.fail(node, op, f"rounding_mode {mode!r} of an activation quantizer; only ROUND (half to even, "
                                "numpy.round) maps to the kit's rounding (half_even). HALF_UP in QONNX rounds ties "
                                "away from zero, which is not the kit's half_up (toward +inf)")
        if not MIN_BITS <= bits <= MAX_BITS:
            self.fail(node, op, f"quantizes the activation {src!r} to {bits} bits; {MIN_BITS}..{MAX_BITS} bits are "
                                "supported")
        if narrow:
            self.fail(node, op, f"narrow range on the activation {src!r}: a narrow {'signed' if signed else 'unsigned'} "
                                f"{bits}-bit range is not a two's complement / unsigned type of the kit (narrow is "
                                "supported for weights only)")
        t = QType(bits, signed, int(frac))
        if isinstance(v, _Raw):
            if self.input_type is not None:
                self.fail(node, op, f"quantizes the graph input {v.name!r} a second time; one input quantizer is "
                                    "supported")
            self.input_type = t
            return _Q("input", t, self.input_golden_shape)
        if isinstance(v, _Q):
            if v.qtype == t:
                return v
            v = _Pending("requant", node, op, v.shape, (v,), chw=v.chw)
        if isinstance(v, _Pending):
            return self.finish(v, t, node, op)
        self.fail(node, op, f"cannot quantize {src!r} (an integer tensor)")

    def check_exact(self, p: _Pending, bound: int, limit: int, why: str):
        if self.net.require_exact and bound > limit:
            self.fail(p.node, p.op, f"worst-case {why} is {bound} grid steps, beyond {limit}: the source computes it "
                                    "in float32, which is exact only below that, so its outputs could differ from "
                                    "the integer network (pass require_exact=False to import it anyway)")

    def finish(self, p: _Pending, t: QType, node: str, op: str) -> _Q:
        """The golden layer of pending result *p* with output type *t* (from the quantizer *node*)."""
        name = self.net.name(p.node)
        out_max = None
        if p.clip is not None:
            out_max = int(np.rint(np.ldexp(np.float64(p.clip), t.frac_bits)))
            if out_max < 0:
                self.fail(p.node, p.op, f"Clip upper bound {p.clip} is negative")
        relu = p.relu or p.clip is not None
        if p.kind == "gemm":
            x, w = p.ins[0], p.spec["w"]
            f_w = p.spec["f_w"]
            gw = p.spec["gemm_w"]            # (K, N) integers, golden row order
            bias = None
            if p.spec["bias"] is not None:
                bias = self.bias_ints(p, p.spec["bias"], x.qtype.frac_bits + f_w)
            absw = np.abs(gw).sum(axis=0).astype(object)
            amax = max(-x.qtype.lo, x.qtype.hi)
            bound = max(int(v) for v in absw * amax + (0 if bias is None else np.abs(bias).astype(object)))
            self.check_exact(p, bound, FLOAT32_EXACT, "|accumulator + bias|")
            w_type = QType(w.bits, w.signed, int(f_w[0]))
            w_frac = None if np.all(f_w == f_w[0]) else f_w
            kw = dict(weight=p.spec["golden_w"], w_type=w_type, out_type=t, bias=bias, relu=relu, w_frac=w_frac,
                      out_max=out_max)
            try:
                if p.spec["conv"]:
                    layer = Conv2D(name, (x.name,), stride=p.spec["stride"], padding=p.spec["padding"],
                                   groups=p.spec["groups"], **kw)
                else:
                    layer = Dense(name, (x.name,), **kw)
            except ValueError as exc:
                self.fail(p.node, p.op, str(exc))
        elif p.kind == "add":
            a, b = p.ins
            fa, fb = a.qtype.frac_bits, b.qtype.frac_bits
            F = max(fa, fb)
            bound = (max(-a.qtype.lo, a.qtype.hi) << (F - fa)) + (max(-b.qtype.lo, b.qtype.hi) << (F - fb))
            self.check_exact(p, bound, FLOAT32_EXACT, "|aligned sum|")
            layer = Add(name, (a.name, b.name), out_type=t, relu=relu, out_max=out_max)
        elif p.kind in ("avgpool", "requant"):
            if relu and p.kind == "avgpool":
                self.fail(p.node, p.op, "a Relu / Clip after an average pool is not supported")
            x = p.ins[0]
            if p.kind == "requant":
                if len(x.shape) != 3:
                    self.fail(node, op, f"re-quantizes a (features,) tensor from {x.qtype} to {t}"
                                        f"{' after a Relu' if relu else ''}; a requantization outside a "
                                        "Conv/Gemm/Add/pool/Concat is supported for (C, H, W) maps only")
                if (relu and t.signed) or out_max is not None:
                    self.fail(node, op, f"a standalone Relu / Clip on a quantized tensor needs an unsigned quantizer "
                                        f"after it (here {t}) and no upper clip")
                pool, stride, pad = (1, 1), (1, 1), (0, 0, 0, 0)
            else:
                pool, stride, pad = p.spec["pool"], p.spec["stride"], p.spec["padding"]
            area = pool[0] * pool[1]
            s = area * max(-x.qtype.lo, x.qtype.hi)
            self.check_exact(p, s, FLOAT32_EXACT, "|window sum|")
            if area & (area - 1):
                self.check_exact(p, s << max(t.frac_bits - x.qtype.frac_bits, 0), FLOAT32_EXACT >> 1,
                                 f"|window sum * 2**(f_out - f_in)| of a window of area {area} (a float32 division)")
            layer = AvgPool2D(name, (x.name,), pool=pool, stride=stride, padding=pad, out_type=t)
        elif p.kind == "concat":
            if relu:
                self.fail(p.node, p.op, "a Relu / Clip after a Concat is not supported")
            if any(q.chw is not None for q in p.ins):
                self.fail(p.node, p.op, "concatenates flattened (C, H, W) maps; flatten after the Concat instead")
            layer = Concat(name, tuple(q.name for q in p.ins), out_type=t)
        else:                                    # pragma: no cover
            raise AssertionError(p.kind)
        self.net.add(layer)
        return _Q(name, t, p.shape, p.chw)

    def bias_ints(self, p: _Pending, bias, f_acc: np.ndarray) -> np.ndarray:
        """Integer bias at the accumulator's fractional bits ``f_in + f_w[n]``; it must lie exactly on that grid."""
        if isinstance(bias, _W):
            what, value = bias.tensor, bias.value()
        else:
            what, value = bias[0], bias[1]
        n = f_acc.shape[0]
        value = np.asarray(value, dtype=np.float64).reshape(-1)
        if value.size == 1:
            value = np.full(n, value[0])
        if value.shape != (n,):
            self.fail(p.node, p.op, f"bias {what!r} has {value.size} elements for {n} outputs")
        if not np.all(np.isfinite(value)):
            self.fail(p.node, p.op, f"bias {what!r} holds a non-finite value")
        scaled = np.ldexp(value, f_acc)
        if np.any(scaled != np.round(scaled)) or np.any(np.abs(scaled) > 2.0 ** 31):
            i = int(np.flatnonzero((scaled != np.round(scaled)) | (np.abs(scaled) > 2.0 ** 31))[0])
            self.fail(p.node, p.op, f"bias {what!r} element {i} ({float(value[i])!r}) is not an int32 multiple of the "
                                    f"accumulator scale 2**-{int(f_acc[i])} (input scale x weight scale): quantize "
                                    "the bias at that scale (an int32 bias quantizer)")
        b = scaled.astype(np.int64)
        if np.any(b < -(1 << 31)) or np.any(b > (1 << 31) - 1):
            self.fail(p.node, p.op, f"bias {what!r} does not fit int32 at the accumulator scale")
        return b

    # ------------------------------------------------------------------ layers
    def conv(self, n, raw, op, a):
        x = self.tensor(n.input[0], raw, op)
        if len(x.shape) != 3:
            self.fail(raw, op, f"a 2-D convolution needs a (C, H, W) input, not {x.shape}")
        w = self.weight(n.input[1], raw, op, "weight")
        if w.ints.ndim != 4:
            self.fail(raw, op, f"only 2-D convolutions (weight of shape {w.ints.shape})")
        if w.axis not in (None, 0):
            self.fail(raw, op, f"weight {w.tensor!r} is quantized per axis {w.axis}; per output channel (axis 0) "
                               "or per tensor is supported")
        if not MIN_BITS <= w.bits <= MAX_BITS:
            self.fail(raw, op, f"weight {w.tensor!r} has {w.bits} bits; {MIN_BITS}..{MAX_BITS} are supported")
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            self.fail(raw, op, f"auto_pad {a['auto_pad']!r}: give explicit pads")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            self.fail(raw, op, f"dilations {a['dilations']}: only 1")
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if max(pads) > MAX_PADDING:
            self.fail(raw, op, f"padding {max(pads)} is above {MAX_PADDING}")
        g = int(a.get("group", 1))
        cout = w.ints.shape[0]
        if x.shape[2] != w.ints.shape[1] * g:
            self.fail(raw, op, f"input has {x.shape[2]} channels, the weight {w.ints.shape} with group {g} needs "
                               f"{w.ints.shape[1] * g}")
        bias = self.bias_arg(n, 2, raw, op)
        hwio = np.ascontiguousarray(w.ints.transpose(2, 3, 1, 0))
        f_w = np.broadcast_to(np.asarray(w.frac).reshape(-1), (cout,)).astype(np.int64)
        stride = tuple(int(s) for s in a.get("strides", [1, 1]))
        padding = (pads[0], pads[2], pads[1], pads[3])
        try:
            probe = Conv2D("probe", ("input",), weight=np.zeros(hwio.shape, np.int64), w_type=QType(2, True, 0),
                           out_type=QType(8, True, 0), stride=stride, padding=padding, groups=g)
            shape = probe.out_shape([x.shape])
        except ValueError as exc:
            self.fail(raw, op, str(exc).replace("layer 'probe': ", ""))
        spec = dict(w=w, f_w=f_w, gemm_w=hwio.reshape(-1, cout), golden_w=hwio, bias=bias, conv=True,
                    stride=stride, padding=padding, groups=g)
        return _Pending("gemm", raw, op, tuple(shape), (x,), spec)

    def bias_arg(self, n, i, raw, op):
        if len(n.input) <= i or not n.input[i]:
            return None
        v = self.value(n.input[i], raw, op)
        if isinstance(v, _W):
            if v.axis not in (None, 0):
                self.fail(raw, op, f"bias {v.tensor!r} is quantized along axis {v.axis}")
            if v.bits > MAX_BIAS_BITS:
                self.fail(raw, op, f"bias {v.tensor!r} has {v.bits} bits; at most {MAX_BIAS_BITS}")
            return v
        if isinstance(v, tuple):
            c = self.const(v[1], raw, op, "bias")
            if c.dtype.kind != "f":
                self.fail(raw, op, f"bias {v[1]!r} is an integer tensor without a DequantizeLinear")
            return (v[1], c)
        self.fail(raw, op, f"bias {n.input[i]!r} must be a constant")

    def dense(self, raw, op, x: _Q, w: _W, k_axis: int, bias) -> _Pending:
        if len(x.shape) != 1:
            self.fail(raw, op, f"needs a (N, features) input, not a map of shape {x.shape}; flatten it first")
        if w.ints.ndim != 2:
            self.fail(raw, op, f"the weight must be 2-D, not of shape {w.ints.shape}")
        n_axis = 1 - k_axis
        if w.axis not in (None, n_axis):
            self.fail(raw, op, f"weight {w.tensor!r} is quantized per axis {w.axis}; per output channel (axis "
                               f"{n_axis}) or per tensor is supported")
        if not MIN_BITS <= w.bits <= MAX_BITS:
            self.fail(raw, op, f"weight {w.tensor!r} has {w.bits} bits; {MIN_BITS}..{MAX_BITS} are supported")
        kn = w.ints if k_axis == 0 else w.ints.T
        k, nout = kn.shape
        if k != x.shape[0]:
            self.fail(raw, op, f"the weight has {k} inputs, the tensor {x.shape[0]} features")
        if x.chw is not None:                         # rows in ONNX's CHW order -> the golden flatten's HWC order
            c, h, wd = x.chw
            kn = kn.reshape(c, h, wd, nout).transpose(1, 2, 0, 3).reshape(k, nout)
        kn = np.ascontiguousarray(kn)
        f_w = np.broadcast_to(np.asarray(w.frac).reshape(-1), (nout,)).astype(np.int64)
        spec = dict(w=w, f_w=f_w, gemm_w=kn, golden_w=kn, bias=bias, conv=False)
        return _Pending("gemm", raw, op, (nout,), (x,), spec)

    def pool(self, n, raw, op, a, kind):
        x = self.tensor(n.input[0], raw, op)
        if len(x.shape) != 3:
            self.fail(raw, op, f"needs a (C, H, W) map, not {x.shape}")
        if len(n.output) > 1 and n.output[1]:
            self.fail(raw, op, "the Indices output is not supported")
        if op == "GlobalAveragePool":
            pool, stride, pads = (x.shape[0], x.shape[1]), (1, 1), (0, 0, 0, 0)
        else:
            if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])) or a.get("storage_order", 0):
                self.fail(raw, op, "ceil_mode, dilations and storage_order are not supported")
            if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
                self.fail(raw, op, f"auto_pad {a['auto_pad']!r}: give explicit pads")
            k = a.get("kernel_shape")
            if k is None or len(k) != 2:
                self.fail(raw, op, f"kernel_shape {k}: 2-D pools only")
            p = list(a.get("pads", [0, 0, 0, 0]))
            if op == "AveragePool" and any(p) and not a.get("count_include_pad", 0):
                self.fail(raw, op, "padding with count_include_pad=0: the kit divides by the whole window "
                                   "(count_include_pad=1)")
            pool, stride, pads = tuple(k), tuple(a.get("strides", [1, 1])), (p[0], p[2], p[1], p[3])
        cls = MaxPool2D if kind == "max" else AvgPool2D
        try:
            shape = cls("probe", ("input",), pool=pool, stride=stride, padding=pads).out_shape([x.shape])
        except ValueError as exc:
            self.fail(raw, op, str(exc).replace("layer 'probe': ", ""))
        if kind == "max":
            name = self.net.name(raw)
            self.net.add(MaxPool2D(name, (x.name,), pool=pool, stride=stride, padding=pads))
            return _Q(name, x.qtype, tuple(shape))
        return _Pending("avgpool", raw, op, tuple(shape), (x,), dict(pool=pool, stride=stride, padding=pads))

    def flatten(self, raw, op, x: _Q) -> _Q:
        if len(x.shape) == 1:
            return x
        name = self.net.name(raw)
        self.net.add(Flatten(name, (x.name,)))
        h, w, c = x.shape
        return _Q(name, x.qtype, (h * w * c,), (c, h, w) if h * w > 1 else None)

    def activation(self, raw, op, v, clip):
        """Relu (clip None) or Clip(0, clip) of value *v*."""
        if isinstance(v, _Pending) and v.kind in ("gemm", "add") and not v.relu and v.clip is None:
            return replace(v, relu=True, clip=clip, node=v.node)
        if isinstance(v, _Q):
            return _Pending("requant", raw, op, v.shape, (v,), relu=True, clip=clip, chw=v.chw)
        if isinstance(v, _Pending) and (v.relu or v.clip is not None):
            if clip is None or (v.clip is not None and v.clip <= clip):
                return v                                  # relu(relu(x)) = relu(x); a looser clip does nothing
            return replace(v, clip=clip)
        self.fail(raw, op, f"a {op} after {getattr(v, 'op', 'this value')} is not supported; only after a Conv, "
                           "Gemm, MatMul or Add (or a quantized tensor)")

    # ------------------------------------------------------------------ QDQ / QONNX quantizer nodes
    def zero_point_zero(self, zp, node, op, what):
        if zp is not None and np.any(np.asarray(zp, dtype=np.float64) != 0):
            bad = np.asarray(zp).ravel()[np.flatnonzero(np.asarray(zp, dtype=np.float64) != 0)[0]]
            self.fail(node, op, f"the zero point of {what} is {np.asarray(bad).item()!r}; only zero points of 0 are supported "
                                "(symmetric quantization)")

    def qdq_type(self, n, raw, op, a) -> tuple[int, bool]:
        import onnx

        if len(n.input) > 2 and n.input[2]:
            zp_t = self.inits.get(n.input[2])
            dt = zp_t.data_type if zp_t is not None else None
            if dt is None:
                zp = self.need_const(n.input[2], raw, op, "zero point")
                dt = onnx.helper.np_dtype_to_tensor_dtype(zp.dtype)
        else:
            dt = int(a.get("output_dtype", 0)) or onnx.TensorProto.UINT8
        name = onnx.TensorProto.DataType.Name(dt)
        if name not in _INT_TYPES:
            self.fail(raw, op, f"element type {name}; integer types {', '.join(_INT_TYPES)} are supported")
        return _INT_TYPES[name]

    def quantize_linear(self, n, raw, op, a):
        if a.get("block_size", 0):
            self.fail(raw, op, "blocked quantization (block_size) is not supported")
        src = n.input[0]
        v = self.value(src, raw, op)
        scale = self.need_const(n.input[1], raw, op, "scale")
        zp = self.need_const(n.input[2], raw, op, "zero point") if len(n.input) > 2 and n.input[2] else None
        self.zero_point_zero(zp, raw, op, f"{src!r}")
        bits, signed = self.qdq_type(n, raw, op, a)
        if isinstance(v, tuple):
            ndim = self.const(v[1], raw, op, "input").ndim
        elif isinstance(v, _Raw):
            ndim = len(self.input_golden_shape) + 1
        else:
            ndim = len(getattr(v, "shape", (0, 0, 0))) + 1
        frac, axis = _scale_axis(scale, ndim, f"{src!r} (node {raw!r})", self.where, a.get("axis", 1))
        if isinstance(v, _Int):
            self.fail(raw, op, f"quantizes the integer tensor {src!r} again")
        q = self.quantize(v, frac, axis, bits, signed, False, "ROUND", raw, op, src)
        return _Int(q, frac)

    def dequantize_linear(self, n, raw, op, a):
        src = n.input[0]
        v = self.value(src, raw, op)
        scale = self.need_const(n.input[1], raw, op, "scale")
        zp = self.need_const(n.input[2], raw, op, "zero point") if len(n.input) > 2 and n.input[2] else None
        self.zero_point_zero(zp, raw, op, f"{src!r}")
        if isinstance(v, tuple):                        # integer constant: weights or an int32 bias
            import onnx

            c = self.const(v[1], raw, op, "input")
            tname = onnx.TensorProto.DataType.Name(onnx.helper.np_dtype_to_tensor_dtype(c.dtype)) \
                if c.dtype.kind in "iuV" else None
            if tname not in _INT_TYPES:
                self.fail(raw, op, f"dequantizes the constant {v[1]!r} of type {c.dtype}; an integer constant "
                                   f"({', '.join(_INT_TYPES)}) is expected")
            bits, signed = _INT_TYPES[tname]
            frac, axis = _scale_axis(scale, c.ndim, f"{v[1]!r} (node {raw!r})", self.where, a.get("axis", 1))
            return _W(v[1], c.astype(np.int64), np.asarray(frac), axis, bits, signed)
        if not isinstance(v, _Int):
            self.fail(raw, op, f"dequantizes {src!r}, which is not the output of a QuantizeLinear")
        ndim = v.of.ints.ndim if isinstance(v.of, _W) else 4
        frac, axis = _scale_axis(scale, ndim, f"{src!r} (node {raw!r})", self.where, a.get("axis", 1))
        same = np.array_equal(np.asarray(frac).ravel(), np.asarray(v.frac).ravel()) and \
            (axis == (v.of.axis if isinstance(v.of, _W) else None))
        if not same:
            self.fail(raw, op, f"its scale differs from the scale of the QuantizeLinear that made {src!r}; a "
                               "DequantizeLinear must use the same scale")
        return v.of

    def quant(self, n, raw, op, a):
        if len(n.input) != 4:
            self.fail(raw, op, f"has {len(n.input)} inputs; Quant(x, scale, zero_point, bitwidth) has 4")
        src = n.input[0]
        v = self.value(src, raw, op)
        scale = self.need_const(n.input[1], raw, op, "scale")
        zp = self.need_const(n.input[2], raw, op, "zero point")
        bw = self.need_const(n.input[3], raw, op, "bit width")
        self.zero_point_zero(zp, raw, op, f"{src!r}")
        if bw.size != 1 or float(bw.ravel()[0]) != int(bw.ravel()[0]):
            self.fail(raw, op, f"bit width {bw.ravel()[:4]!r} must be one integer")
        bits = int(bw.ravel()[0])
        signed, narrow = bool(a.get("signed", 1)), bool(a.get("narrow", 0))
        mode = str(a.get("rounding_mode", "ROUND")).upper()
        if mode not in _ROUNDERS:
            self.fail(raw, op, f"rounding_mode {mode!r} is unknown")
        if bits < 2 or bits > MAX_BIAS_BITS or (not signed and bits < 2):
            self.fail(raw, op, f"bit width {bits}: {MIN_BITS}..{MAX_BITS} bits are supported "
                               f"({MAX_BIAS_BITS} for a bias)")
        if isinstance(v, tuple):
            ndim = self.const(v[1], raw, op, "input").ndim
        elif isinstance(v, _Raw):
            ndim = len(self.input_golden_shape) + 1
        else:
            ndim = len(getattr(v, "shape", (0, 0, 0))) + 1
        frac, axis = _scale_axis(scale, ndim, f"{src!r} (node {raw!r})", self.where)
        return self.quantize(v, frac, axis, bits, signed, narrow, mode, raw, op, src)

    # ------------------------------------------------------------------ the walk
    def run(self) -> QuantizedNetwork:
        model, where = self.model, self.where
        in_name, self.input_golden_shape, _ = onnx_input(model, where, self.inits)
        self.env[in_name] = _Raw(in_name)
        for k, n in enumerate(model.graph.node):
            raw = n.name or f"{n.op_type.lower()}_{k}"
            op = n.op_type
            a = _attrs(n)
            out = n.output[0] if n.output else None
            if n.domain == QONNX_DOMAIN or (n.domain and n.domain.startswith("qonnx")) or n.domain == "finn.custom_op.general":
                if op != "Quant" or self.fmt != "qonnx":
                    self.fail(raw, f"{n.domain}.{op}", f"is not supported; supported: {', '.join(self.net.supported)}")
                self.env[out] = self.quant(n, raw, op, a)
                continue
            if n.domain not in ("", "ai.onnx"):
                self.fail(raw, f"{n.domain}.{op}", f"custom domain {n.domain!r}; supported: "
                                                   f"{', '.join(self.net.supported)}")
            if op not in self.net.supported:
                self.fail(raw, op, f"is not supported; supported ONNX ops: {', '.join(self.net.supported)}")
            if op == "Constant":
                if "value" not in a:
                    self.fail(raw, op, "only a tensor 'value' constant is supported")
                self.consts[out] = self.np.to_array(a["value"])
                continue
            if op == "QuantizeLinear":
                self.env[out] = self.quantize_linear(n, raw, op, a)
            elif op == "DequantizeLinear":
                self.env[out] = self.dequantize_linear(n, raw, op, a)
            elif op in ("Identity", "Dropout"):
                if len(n.output) > 1 and n.output[1]:
                    self.fail(raw, op, "the mask output is not supported")
                self.env[out] = self.value(n.input[0], raw, op)
            elif op == "Conv":
                self.env[out] = self.conv(n, raw, op, a)
            elif op == "Gemm":
                if a.get("transA", 0):
                    self.fail(raw, op, "transA=1 is not supported")
                if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                    self.fail(raw, op, f"alpha={a.get('alpha', 1.0)}, beta={a.get('beta', 1.0)}: only 1")
                x = self.tensor(n.input[0], raw, op)
                w = self.weight(n.input[1], raw, op, "weight")
                bias = self.bias_arg(n, 2, raw, op)
                self.env[out] = self.dense(raw, op, x, w, 1 if a.get("transB", 0) else 0, bias)
            elif op == "MatMul":
                x = self.tensor(n.input[0], raw, op)
                w = self.weight(n.input[1], raw, op, "weight")
                self.env[out] = self.dense(raw, op, x, w, 0, None)
            elif op == "Add":
                vs = [self.value(i, raw, op) for i in n.input]
                pend = [i for i, v in enumerate(vs) if isinstance(v, _Pending) and v.kind == "gemm"
                        and not v.spec["conv"] and v.spec["bias"] is None and not v.relu and v.clip is None]
                other = [i for i, v in enumerate(vs) if isinstance(v, (tuple, _W))]
                if len(pend) == 1 and len(other) == 1:      # MatMul + Add(bias)
                    p = vs[pend[0]]
                    bv = vs[other[0]]
                    bias = bv if isinstance(bv, _W) else (bv[1], self.const(bv[1], raw, op, "bias"))
                    if isinstance(bias, tuple) and bias[1].dtype.kind != "f":
                        self.fail(raw, op, f"bias {bv[1]!r} is an integer tensor without a DequantizeLinear")
                    self.env[out] = replace(p, spec={**p.spec, "bias": bias})
                elif other:
                    self.fail(raw, op, "adds a constant; only a bias right after a MatMul is supported")
                else:
                    qa, qb = (self.tensor(i, raw, op) for i in n.input)
                    if qa.shape != qb.shape or qa.chw != qb.chw:
                        self.fail(raw, op, f"adds tensors of shapes {qa.shape} and {qb.shape}; broadcasting is "
                                           "not supported")
                    self.env[out] = _Pending("add", raw, op, qa.shape, (qa, qb), chw=qa.chw)
            elif op == "Relu":
                self.env[out] = self.activation(raw, op, self.value(n.input[0], raw, op), None)
            elif op == "Clip":
                lo = self.need_const(n.input[1], raw, op, "min") if len(n.input) > 1 and n.input[1] else None
                hi = self.need_const(n.input[2], raw, op, "max") if len(n.input) > 2 and n.input[2] else None
                if lo is None or float(lo) != 0.0:
                    self.fail(raw, op, f"Clip({lo}, {hi}): only a lower bound of 0")
                self.env[out] = self.activation(raw, op, self.value(n.input[0], raw, op),
                                                None if hi is None else float(hi))
            elif op == "MaxPool":
                self.env[out] = self.pool(n, raw, op, a, "max")
            elif op in ("AveragePool", "GlobalAveragePool"):
                self.env[out] = self.pool(n, raw, op, a, "avg")
            elif op == "Flatten":
                if a.get("axis", 1) != 1:
                    self.fail(raw, op, f"axis {a.get('axis')}: only 1")
                self.env[out] = self.flatten(raw, op, self.tensor(n.input[0], raw, op))
            elif op == "Reshape":
                x = self.tensor(n.input[0], raw, op)
                target = [int(d) for d in self.need_const(n.input[1], raw, op, "shape").reshape(-1)]
                total = math.prod(x.shape)
                if len(target) == 2 and target[0] in (0, -1, 1) and target[1] in (-1, total) and target != [-1, -1]:
                    self.env[out] = self.flatten(raw, op, x)
                else:
                    self.fail(raw, op, f"reshape to {target}: only to (N, -1), flattening each sample")
            elif op == "Concat":
                qs = tuple(self.tensor(i, raw, op) for i in n.input)
                nd = len(qs[0].shape)
                if a.get("axis") not in (1, -3 if nd == 3 else -1):
                    self.fail(raw, op, f"axis {a.get('axis')}: only on channels (axis 1)")
                if len(qs) < 2:
                    self.env[out] = qs[0]
                    continue
                if len({q.shape[:-1] for q in qs}) != 1 or len({len(q.shape) for q in qs}) != 1:
                    self.fail(raw, op, f"concatenates shapes {', '.join(str(q.shape) for q in qs)}")
                shape = (*qs[0].shape[:-1], sum(q.shape[-1] for q in qs))
                self.env[out] = _Pending("concat", raw, op, shape, qs)
            else:                                       # pragma: no cover (the supported list is handled above)
                self.fail(raw, op, f"is not supported; supported ONNX ops: {', '.join(self.net.supported)}")
        outs = list(model.graph.output)
        if len(outs) != 1:
            raise QuantizedImportError(f"{where}: the graph has {len(outs)} outputs; one is supported")
        name = outs[0].name
        if name not in self.env:
            raise QuantizedImportError(f"{where}: the output {name!r} is not computed by any node")
        v = self.env[name]
        if isinstance(v, _Int):
            v = v.of
        if isinstance(v, _Pending) and v.kind == "concat":
            v = self.tensor(name, "output", "Output")
        if not isinstance(v, _Q):
            raise QuantizedImportError(f"{where}: the graph output {name!r} is not a quantized tensor (it must be the "
                                       "output of a quantizer, or of a max pool / flatten of one)")
        if self.input_type is None:
            raise QuantizedImportError(f"{where}: the graph input is never quantized")
        if not self.net.layers:
            raise QuantizedImportError(f"{where}: the model has no layer to import (a quantizer only)")
        if v.name != self.net.layers[-1].name:
            raise QuantizedImportError(f"{where}: the graph output {name!r} is not the last layer computed; "
                                       "layers whose results are unused are not supported")
        used = {i for layer in self.net.layers for i in layer.inputs}
        unused = [layer.name for layer in self.net.layers[:-1] if layer.name not in used]
        if unused:
            raise QuantizedImportError(f"{where}: layer(s) {', '.join(unused)} compute results the output does not "
                                       "use; unused branches are not supported")
        try:
            return QuantizedNetwork(self.input_type, self.input_golden_shape, tuple(self.net.layers),
                                    rounding="half_even",
                                    meta={"source": Path(where).name, "format": self.fmt,
                                          "float32_exact": self.net.require_exact})
        except (ValueError, OverflowError) as exc:
            raise QuantizedImportError(f"{where}: the golden model refuses the imported network: {exc}") from None


def _ops(model) -> tuple[bool, bool]:
    """Whether the graph has QONNX Quant nodes, and QDQ nodes."""
    qonnx = any(n.op_type == "Quant" and n.domain != "" for n in model.graph.node)
    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.domain in ("", "ai.onnx")
              for n in model.graph.node)
    return qonnx, qdq


def from_qdq(path, *, require_exact: bool = True) -> QuantizedNetwork:
    """The golden network of an ONNX QDQ model (``QuantizeLinear`` / ``DequantizeLinear``, power-of-two scales,
    zero points 0). Raises :class:`QuantizedImportError` naming the node or tensor it cannot map exactly."""
    model, where = read_onnx(path, "qdq")
    return _Converter(model, where, "qdq", require_exact).run()


def from_qonnx(path, *, require_exact: bool = True) -> QuantizedNetwork:
    """The golden network of a QONNX model (``Quant`` nodes of ``qonnx.custom_op.general``, e.g. a Brevitas
    export with fixed-point quantizers). Raises :class:`QuantizedImportError` naming what it cannot map exactly."""
    model, where = read_onnx(path, "qonnx")
    return _Converter(model, where, "qonnx", require_exact).run()


def import_quantized_onnx(path, *, require_exact: bool = True) -> QuantizedNetwork:
    """Detect the format (``Quant`` nodes: QONNX; ``QuantizeLinear`` / ``DequantizeLinear``: QDQ) and import.

    A model with neither is a float model: a ``ValueError`` says to quantize it with
    ``systolic quantize FILE.onnx METHOD``.
    """
    model, where = read_onnx(path, "auto")
    qonnx, qdq = _ops(model)
    if qonnx and qdq:
        raise QuantizedImportError(f"{where}: the model mixes QONNX Quant nodes and QuantizeLinear / "
                                   "DequantizeLinear; one format per model is supported")
    if not qonnx and not qdq:
        raise QuantizedImportError(f"{where}: a float model (no Quant, QuantizeLinear or DequantizeLinear nodes); "
                                   f"quantize it first: systolic quantize {where} METHOD")
    return _Converter(model, where, "qonnx" if qonnx else "qdq", require_exact).run()
