"""Already-quantized ONNX import (systolic.golden.onnx_import): QDQ against onnxruntime, QONNX against
qonnx's executor, every element of the integer output; the refusals; malformed files."""

from __future__ import annotations

import platform

import numpy as np
import pytest

from tests.requirements import require

onnx = require("onnx", "onnx")
ort = require("onnxruntime", "onnx")

from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

from systolic.golden import QType  # noqa: E402
from systolic.golden.onnx_import import (FLOAT32_EXACT, QuantizedImportError, from_qdq, from_qonnx,  # noqa: E402
                                         import_quantized_onnx)

QONNX_DOMAIN = "qonnx.custom_op.general"


# ====================================================================== graph builder


class G:
    """Builds a QDQ (``fmt="qdq"``) or QONNX (``fmt="qonnx"``) graph with power-of-two scales.

    Tensors are tracked by name with their QType (``self.t[name]``); ``quant`` ends a float result with a
    quantizer (QDQ: QuantizeLinear + DequantizeLinear, QONNX: Quant)."""

    def __init__(self, fmt: str, shape, bits=8, signed=True, f=5):
        self.fmt, self.nodes, self.inits, self.t, self.k, self.elem = fmt, [], [], {}, 0, {}
        self.in_shape = tuple(shape)
        self.rank = {"x": len(self.in_shape) + 1}
        self.last_q = None
        self.out = self.quant("x", bits, signed, f)

    def _n(self, p):
        self.k += 1
        return f"{p}{self.k}"

    def node(self, op, ins, n_out=1, domain="", **attrs):
        outs = [self._n(op.lower()) for _ in range(n_out)]
        self.rank[outs[0]] = 2 if op in ("Flatten", "Gemm", "MatMul", "Reshape") else self.rank.get(ins[0], 4)
        self.nodes.append(h.make_node(op, ins, outs, name=self._n(op + "_"), domain=domain, **attrs))
        return outs[0]

    def quant(self, x, bits, signed, f, narrow=False, rounding="ROUND", scale=None, zp=0):
        s = np.float32(2.0 ** -f) if scale is None else np.asarray(scale, np.float32)
        if self.fmt == "qdq":
            et = {(8, True): T.INT8, (8, False): T.UINT8, (4, True): T.INT4, (4, False): T.UINT4,
                  (16, True): T.INT16}[(bits, signed)]
            zpn = self.init(h.make_tensor(self._n("zp"), et, [], [zp]))
            sn = self.init(s)
            q = self.node("QuantizeLinear", [x, sn, zpn])
            self.elem[q] = et
            self.last_q = q
            y = self.node("DequantizeLinear", [q, sn, zpn])
        else:
            y = self.node("Quant", [x, self.init(s), self.init(np.float32(zp)), self.init(np.float32(bits))],
                          domain=QONNX_DOMAIN, signed=int(signed), narrow=int(narrow), rounding_mode=rounding)
            self.last_q = y
        self.t[y] = QType(bits, signed, f)
        return y

    def init(self, arr, dtype=None, name=None):
        name = name or self._n("c")
        if isinstance(arr, onnx.TensorProto):
            arr.name = name
            self.inits.append(arr)
            return name
        a = np.asarray(arr) if dtype is None else np.asarray(arr).astype(dtype)
        self.inits.append(nh.from_array(a, name))
        return name

    def weight(self, w, f_w, axis=0, bits=8):
        """A quantized constant: QDQ int8 + DequantizeLinear(axis), QONNX float + Quant (narrow)."""
        f_w = np.asarray(f_w)
        if self.fmt == "qdq":
            s = np.float32(2.0 ** -f_w) if f_w.ndim == 0 else (2.0 ** -f_w).astype(np.float32)
            attrs = {} if f_w.ndim == 0 else {"axis": axis}
            return self.node("DequantizeLinear", [self.init(np.asarray(w, np.int8)), self.init(s),
                                                  self.init(np.zeros(s.shape, np.int8))], **attrs)
        shape = [1] * np.ndim(w)
        if f_w.ndim:
            shape[axis] = -1
        fb = f_w.reshape(shape) if f_w.ndim else f_w
        wf = np.ldexp(np.asarray(w, np.float64), -fb).astype(np.float32)
        s = (2.0 ** -fb).astype(np.float32)
        return self.node("Quant", [self.init(wf), self.init(s), self.init(np.float32(0)), self.init(np.float32(bits))],
                         domain=QONNX_DOMAIN, signed=1, narrow=1, rounding_mode="ROUND")

    def bias(self, b, f_acc):
        f_acc = np.broadcast_to(np.asarray(f_acc), np.shape(b))
        if self.fmt == "qdq":
            s = (2.0 ** -f_acc).astype(np.float32)
            return self.node("DequantizeLinear", [self.init(np.asarray(b, np.int32)), self.init(s),
                                                  self.init(np.zeros(s.shape, np.int32))], axis=0)
        return self.init(np.ldexp(np.asarray(b, np.float64), -f_acc).astype(np.float32))

    def conv(self, x, w, f_w, bias=None, **attrs):
        ins = [x, self.weight(w, f_w, 0)]
        if bias is not None:
            ins.append(self.bias(bias, self.t[x].frac_bits + np.asarray(f_w)))
        return self.node("Conv", ins, kernel_shape=list(np.shape(w)[2:]), **attrs)

    def model(self, out=None, opset=21):
        out = out or self.last_q
        n = len(self.in_shape)
        x = h.make_tensor_value_info("x", T.FLOAT, ["N", *self.in_shape])
        y = h.make_tensor_value_info(out, self.elem.get(out, T.FLOAT),
                                     ["N", *(f"d{i}" for i in range(1, self.rank[out]))])
        graph = h.make_graph(self.nodes, "g", [x], [y], self.inits)
        ops = [h.make_opsetid("", opset)]
        if self.fmt == "qonnx":
            ops.append(h.make_opsetid(QONNX_DOMAIN, 1))
        m = h.make_model(graph, opset_imports=ops)
        m.ir_version = 10 if opset >= 21 else 9
        assert n in (1, 3)
        return m

    def save(self, tmp_path, out=None, name="m.onnx", **kw):
        m = self.model(out, **kw)
        p = tmp_path / name
        onnx.save(m, str(p))
        return p


# ====================================================================== references


def ort_int(path, q_in, level, f_out=None):
    """onnxruntime's integer output for integer inputs *q_in* (NCHW / NF): the final QuantizeLinear's integers, or
    (for a float output: the DequantizeLinear after it, when onnxruntime's Python API cannot return the element
    type, e.g. int4) the float value times ``2**f_out``, checked to be an integer."""
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    m = onnx.load(str(path))
    f_in = _input_frac(m)
    x = np.ldexp(q_in.astype(np.float64), -f_in).astype(np.float32)
    y = sess.run(None, {"x": x})[0]
    if y.dtype.kind == "f":
        y = np.ldexp(y.astype(np.float64), f_out)
        assert np.array_equal(y, np.round(y))
    return y.astype(np.int64)


def _input_frac(m):
    inits = {t.name: nh.to_array(t) for t in m.graph.initializer}
    for n in m.graph.node:
        if "x" in n.input:
            return int(-np.log2(inits[n.input[1]]))
    raise AssertionError


_qonnx_patched = False


def qonnx_int(path, q_in, f_out):
    """qonnx's executor's output as integers (``y * 2**f_out``), sample by sample."""
    require("qonnx", "qonnx")
    import qonnx.core.onnx_exec as ox
    from qonnx.core.modelwrapper import ModelWrapper

    global _qonnx_patched
    if not _qonnx_patched:
        # qonnx 1.0.0 builds one-node models with onnx's newest IR version (14 with onnx 1.23), which
        # onnxruntime 1.31 does not read (it reads <= 13): pin the IR version of those models.
        orig = ox.qonnx_make_model

        def make(graph, **kw):
            m = orig(graph, **kw)
            m.ir_version = min(m.ir_version, 10)
            return m

        ox.qonnx_make_model = make
        _qonnx_patched = True
    from qonnx.transformation.infer_shapes import InferShapes

    m = ModelWrapper(str(path))
    f_in = _input_frac(m.model)
    x = np.ldexp(q_in.astype(np.float64), -f_in).astype(np.float32)
    iname, oname = m.graph.input[0].name, m.graph.output[0].name
    outs = []
    for i in range(len(x)):
        m.set_tensor_shape(iname, [1, *x.shape[1:]])
        m = m.transform(InferShapes())
        outs.append(ox.execute_onnx(m, {iname: x[i:i + 1]})[oname])
    y = np.concatenate(outs).astype(np.float64)
    yi = np.ldexp(y, f_out)
    assert np.array_equal(yi, np.round(yi))
    return yi.astype(np.int64)


def nhwc(a):
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def nchw(a):
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a


def inputs(net, rng, n=24):
    """Random integers of the input type, plus an all-lo and an all-hi sample (NHWC)."""
    t = net.input_type
    x = rng.integers(t.lo, t.hi + 1, size=(n, *net.input_shape))
    x[0] = t.lo
    x[1] = t.hi
    x[2] = rng.choice([t.lo, t.hi], size=net.input_shape)
    return x


LEVELS = [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL]


def _pair_saturates() -> bool:
    """x86-64 without VNNI: onnxruntime's fused integer kernels (ORT_ENABLE_ALL turns DequantizeLinear -> Conv ->
    QuantizeLinear into QLinearConv) add u8 x s8 product pairs into a saturating int16 (vpmaddubsw), so weights
    beyond +-64 are not exact there (docs/numerics.md, "Platform and runtime caveats"). The unfused graph
    (ORT_DISABLE_ALL: float Conv on dequantized values, the QDQ semantics) is exact everywhere."""
    if platform.machine() not in ("x86_64", "AMD64") or platform.system() != "Linux":
        return False
    with open("/proc/cpuinfo") as f:
        flags = set(f.read().split())
    return not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


PAIR_SATURATES = _pair_saturates()
SAFE_WEIGHT = 64


def levels_for(net):
    """Both optimization levels, or only the unfused one where the fused kernels' int16 pairs could saturate."""
    wmax = max((int(np.abs(l.weight).max()) for l in net.layers if getattr(l, "weight", None) is not None),
               default=0)
    return LEVELS if not PAIR_SATURATES or wmax <= SAFE_WEIGHT else LEVELS[:1]


def check_qdq(path, seed=0, n=24, levels=None):
    net = from_qdq(path)
    assert import_quantized_onnx(path).output_type == net.output_type
    rng = np.random.default_rng(seed)
    x = inputs(net, rng, n)
    g = net(x)
    for level in levels or levels_for(net):
        r = nhwc(ort_int(path, nchw(x), level, net.output_type.frac_bits))
        assert r.shape == g.shape
        assert np.array_equal(g, r), (level, int(np.sum(g != r)))
    return net, x, g


def check_qonnx(path, seed=0, n=6):
    net = from_qonnx(path)
    rng = np.random.default_rng(seed)
    x = inputs(net, rng, n)
    g = net(x)
    r = nhwc(qonnx_int(path, nchw(x), net.output_type.frac_bits))
    assert r.shape == g.shape
    assert np.array_equal(g, r), int(np.sum(g != r))
    return net, x, g


def rint8(rng, *shape, lo=-128, hi=127):
    """Random int8 weights (within +-64 where onnxruntime's fused kernels would saturate, see PAIR_SATURATES)."""
    if PAIR_SATURATES:
        lo, hi = max(lo, -SAFE_WEIGHT), min(hi, SAFE_WEIGHT)
    return rng.integers(lo, hi + 1, size=shape)


# ====================================================================== QDQ against onnxruntime


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("signed_out", [False, True])
def test_qdq_conv_relu(tmp_path, per_channel, signed_out):
    rng = np.random.default_rng(1)
    g = G("qdq", (3, 7, 7), 8, True, 6)
    w = rint8(rng, 4, 3, 3, 3)
    w[0] = 127
    w[1] = -128
    f_w = np.array([7, 5, 6, 8]) if per_channel else np.int64(7)
    y = g.conv(g.out, w, f_w, bias=rng.integers(-3000, 3000, 4), pads=[1, 0, 2, 1], strides=[1, 2])
    y = g.node("Relu", [y])
    g.quant(y, 8, signed_out, 4)
    net, x, out = check_qdq(g.save(tmp_path))
    layer = net.layers[0]
    assert layer.kind == "conv2d" and layer.relu and layer.out_type == QType(8, signed_out, 4)
    assert (layer.w_frac is not None) == per_channel
    assert out.max() > 0 and out.min() == 0


def test_qdq_grouped_conv_int4_and_ties(tmp_path):
    rng = np.random.default_rng(2)
    g = G("qdq", (4, 5, 5), 4, True, 2)
    w = rng.integers(-8, 8, size=(8, 2, 3, 3))
    y = g.conv(g.out, w, np.int64(3), pads=[1, 1, 1, 1], group=2)
    y = g.quant(y, 4, True, 4)                   # k = 2 + 3 - 4 = 1: every odd accumulator is a tie
    # The DequantizeLinear is the output (onnxruntime's Python API returns no int4); unfused only: onnxruntime
    # 1.31's optimizer fuses the int4 QDQ conv into a QLinearConv that it then refuses (int4 inputs).
    net, x, out = check_qdq(g.save(tmp_path, out=y), levels=LEVELS[:1])
    assert net.layers[0].groups == 2 and net.output_type == QType(4, True, 4)
    assert out.min() == -8 and out.max() == 7    # saturates both ways


def test_qdq_gemm_after_flatten_and_matmul_bias(tmp_path):
    rng = np.random.default_rng(3)
    g = G("qdq", (2, 3, 3), 8, False, 8)
    y = g.conv(g.out, rint8(rng, 4, 2, 2, 2), np.int64(7), bias=rng.integers(-500, 500, 4))
    y = g.quant(g.node("Relu", [y]), 8, False, 6)
    y = g.node("Flatten", [y], axis=1)                                # CHW order in ONNX
    y = g.node("Gemm", [y, g.weight(rint8(rng, 6, 16), np.array([6, 7, 5, 6, 8, 7]), axis=0),
                        g.bias(rng.integers(-2000, 2000, 6), 6 + np.array([6, 7, 5, 6, 8, 7]))], transB=1)
    y = g.quant(y, 8, True, 3)
    y = g.node("MatMul", [y, g.weight(rint8(rng, 6, 5), np.int64(6))])
    y = g.node("Add", [y, g.bias(rng.integers(-900, 900, 5), np.int64(9))])
    g.quant(g.node("Relu", [y]), 8, False, 4)
    net, x, out = check_qdq(g.save(tmp_path))
    assert [l.kind for l in net.layers] == ["conv2d", "flatten", "dense", "dense"]
    assert net.layers[3].relu and net.layers[3].bias is not None


def test_qdq_residual_add(tmp_path):
    rng = np.random.default_rng(4)
    g = G("qdq", (3, 4, 4), 8, True, 5)
    a = g.quant(g.conv(g.out, rint8(rng, 3, 3, 1, 1), np.int64(7)), 8, True, 4)
    b = g.quant(g.conv(a, rint8(rng, 3, 3, 3, 3), np.int64(7), pads=[1, 1, 1, 1]), 8, True, 6)
    y = g.node("Add", [a, b])
    g.quant(g.node("Relu", [y]), 8, False, 5)
    net, x, out = check_qdq(g.save(tmp_path))
    assert net.layers[-1].kind == "add" and net.layers[-1].relu


def test_qdq_pools(tmp_path):
    g = G("qdq", (2, 7, 7), 8, False, 4)
    y = g.node("MaxPool", [g.out], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    a = g.node("AveragePool", [y], kernel_shape=[2, 2], strides=[1, 1])
    a = g.quant(a, 8, False, 5)                                # power-of-two area, ties
    b = g.node("AveragePool", [a], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1,
               strides=[1, 1])
    b = g.quant(b, 8, False, 6)                                # area 9, padded
    c = g.node("GlobalAveragePool", [b])
    g.quant(c, 8, False, 7)
    net, x, out = check_qdq(g.save(tmp_path))
    assert [l.kind for l in net.layers] == ["maxpool2d", "avgpool2d", "avgpool2d", "avgpool2d"]
    assert net.layers[-1].pool == (3, 3)


def test_qdq_avgpool_ties_of_even_area(tmp_path):
    """Area 6 (1x6): window sums 3, 9, -3, -9 are exact ties; both pick the even neighbour."""
    g = G("qdq", (1, 1, 6), 8, True, 0)
    g.quant(g.node("AveragePool", [g.out], kernel_shape=[1, 6]), 8, True, 0)
    p = g.save(tmp_path)
    net = from_qdq(p)
    x = np.zeros((8, 1, 6, 1), np.int64)
    x[:, 0, 0, 0] = [3, 9, -3, -9, 7, -7, 15, -15]
    g_out = net(x).ravel()
    assert g_out.tolist() == [0, 2, 0, -2, 1, -1, 2, -2]
    for level in LEVELS:
        assert np.array_equal(nhwc(ort_int(p, nchw(x), level)).ravel(), g_out)


def test_qdq_concat_mixed_types(tmp_path):
    rng = np.random.default_rng(6)
    g = G("qdq", (2, 4, 4), 8, True, 6)
    a = g.quant(g.node("Relu", [g.conv(g.out, rint8(rng, 3, 2, 1, 1), np.int64(7))]), 8, False, 5)
    b = g.quant(g.conv(g.out, rint8(rng, 2, 2, 3, 3), np.int64(6), pads=[1, 1, 1, 1]), 4, True, 2)
    y = g.node("Concat", [a, b, a], axis=1)
    g.quant(y, 8, True, 4)
    net, x, out = check_qdq(g.save(tmp_path))
    assert net.layers[-1].kind == "concat" and net.shape(net.output_name) == (4, 4, 8)


def test_qdq_every_rounding_tie_of_a_gemm(tmp_path):
    """A 1x1 dense over every int8 input: acc = x * w, k = 1, 2, 3: ties on 1/2 of the odd... every 2**k-th value."""
    for k in (1, 2, 3):
        g = G("qdq", (1,), 8, True, 3)
        y = g.node("Gemm", [g.out, g.weight(np.array([[3]]), np.int64(4))], transB=1)
        g.quant(y, 8, True, 3 + 4 - k)
        p = g.save(tmp_path, name=f"t{k}.onnx")
        net = from_qdq(p)
        x = np.arange(-128, 128).reshape(-1, 1)
        acc = 3 * x.ravel()
        ties = int(np.sum(acc % (1 << k) == 1 << (k - 1)))
        assert ties >= 256 // (1 << k) - 1
        out = net(x)
        for level in LEVELS:
            assert np.array_equal(ort_int(p, x, level), out)
        # and the golden rule itself: half to even on the ties
        ref = np.clip(np.round(acc / 2.0 ** k), -128, 127).astype(np.int64)
        assert np.array_equal(out.ravel(), ref)


def test_qdq_clip_relu6(tmp_path):
    rng = np.random.default_rng(7)
    g = G("qdq", (4,), 8, True, 4)
    y = g.node("Gemm", [g.out, g.weight(rint8(rng, 4, 6), np.int64(6))])
    y = g.node("Clip", [y, g.init(np.float32(0)), g.init(np.float32(1.7))])
    g.quant(y, 8, False, 4)
    net, x, out = check_qdq(g.save(tmp_path))
    assert net.layers[0].out_max == round(1.7 * 16) and out.max() == 27


# ====================================================================== QONNX against qonnx's executor


def test_qonnx_graph_against_qonnx_executor(tmp_path):
    rng = np.random.default_rng(8)
    g = G("qonnx", (2, 6, 6), 8, True, 6)
    y = g.conv(g.out, rint8(rng, 4, 2, 3, 3, lo=-127), np.array([7, 6, 8, 7]), bias=rng.integers(-4000, 4000, 4),
               pads=[1, 1, 1, 1])
    a = g.quant(g.node("Relu", [y]), 8, False, 5)
    b = g.quant(g.node("MaxPool", [a], kernel_shape=[2, 2], strides=[2, 2]), 8, False, 5)
    c = g.quant(g.node("AveragePool", [b], kernel_shape=[3, 3], strides=[1, 1]), 8, False, 6)
    d = g.node("Flatten", [c], axis=1)
    e = g.node("Gemm", [d, g.weight(rint8(rng, 3, 4, lo=-127), np.int64(6), axis=0),
                        g.bias(rng.integers(-999, 999, 3), 12)], transB=1)
    g.quant(e, 8, True, 3)
    net, x, out = check_qonnx(g.save(tmp_path))
    assert [l.kind for l in net.layers] == ["conv2d", "maxpool2d", "avgpool2d", "flatten", "dense"]


def test_qonnx_add_concat_ties(tmp_path):
    rng = np.random.default_rng(9)
    g = G("qonnx", (2, 3, 3), 4, True, 1)
    a = g.quant(g.conv(g.out, rng.integers(-7, 8, (2, 2, 1, 1)), np.int64(2)), 8, True, 2)
    s = g.quant(g.node("Add", [a, g.out]), 8, True, 1)            # aligned at f=2, k = 1: ties
    g.quant(g.node("Concat", [s, a], axis=1), 4, False, 1)
    net, x, out = check_qonnx(g.save(tmp_path), n=8)
    assert [l.kind for l in net.layers] == ["conv2d", "add", "concat"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")
def test_brevitas_fixed_point_export(tmp_path):
    """A Brevitas model with fixed-point (power-of-two) quantizers, exported to QONNX."""
    torch = require("torch", "quantize")
    require("brevitas", "qonnx")
    require("onnxoptimizer", "qonnx")
    import warnings

    import brevitas.nn as qnn
    from brevitas.export import export_qonnx
    from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint
    from torch import nn

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
            self.conv = qnn.QuantConv2d(2, 4, 3, padding=1, weight_quant=Int8WeightPerTensorFixedPoint, bias=False,
                                        return_quant_tensor=True)
            self.relu = qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
            self.pool = nn.MaxPool2d(2)
            self.fc = qnn.QuantLinear(4 * 3 * 3, 5, weight_quant=Int8WeightPerTensorFixedPoint, bias=False,
                                      return_quant_tensor=True)
            self.out = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint)

        def forward(self, x):
            y = self.pool(self.relu(self.conv(self.inp(x))))
            return self.out(self.fc(y.flatten(1)))

    torch.manual_seed(0)
    m = M().eval()
    x = torch.randn(1, 2, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m(x)
        p = tmp_path / "brevitas.onnx"
        export_qonnx(m, x, export_path=str(p))
    net, xs, out = check_qonnx(p, n=6)
    assert [l.kind for l in net.layers][:2] == ["conv2d", "maxpool2d"] and net.layers[-1].kind == "dense"
    # and the golden output is Brevitas's own integer output on an on-grid input
    xf = np.ldexp(nchw(xs).astype(np.float64), -net.input_type.frac_bits).astype(np.float32)
    with torch.no_grad():
        tb = m(torch.from_numpy(xf)).numpy().astype(np.float64)
    assert np.array_equal(np.ldexp(tb, net.output_type.frac_bits), out)


# ====================================================================== refusals


def _one_conv(fmt, **kw):
    g = G(fmt, (1, 3, 3), 8, True, 5)
    y = g.conv(g.out, np.ones((2, 1, 3, 3), np.int64), np.int64(6))
    g.quant(y, 8, True, 4, **kw)
    return g


def test_refuses_a_scale_that_is_not_a_power_of_two(tmp_path):
    g = _one_conv("qdq", scale=np.float32(0.1))
    with pytest.raises(ValueError, match=r"the scale of '\w+' \(node '\w+'\) is 0\.10000000149011612, not a power of two"):
        from_qdq(g.save(tmp_path))


def test_refuses_a_nonzero_zero_point(tmp_path):
    g = _one_conv("qdq", zp=3)
    with pytest.raises(ValueError, match=r"the zero point of '\w+' is 3; only zero points of 0"):
        from_qdq(g.save(tmp_path))


def test_refuses_per_channel_activations(tmp_path):
    g = G("qonnx", (2, 3, 3), 8, True, 5)
    y = g.conv(g.out, np.ones((2, 2, 1, 1), np.int64), np.int64(6))
    g.quant(y, 8, True, 4, scale=np.array([0.5, 0.25], np.float32).reshape(1, 2, 1, 1))
    with pytest.raises(ValueError, match=r"quantizes the activation '\w+' per channel \(axis 1\)"):
        from_qonnx(g.save(tmp_path))


def test_refuses_a_weight_axis_other_than_the_output_channel(tmp_path):
    g = G("qdq", (2, 3, 3), 8, True, 5)
    y = g.node("Conv", [g.out, g.weight(np.ones((2, 2, 1, 1)), np.array([5, 6]), axis=1)], kernel_shape=[1, 1])
    g.quant(y, 8, True, 4)
    with pytest.raises(ValueError, match=r"weight '\w+' is quantized per axis 1; per output channel \(axis 0\)"):
        from_qdq(g.save(tmp_path))


@pytest.mark.parametrize("mode", ["HALF_UP", "FLOOR"])
def test_refuses_a_rounding_mode_of_an_activation(tmp_path, mode):
    g = _one_conv("qonnx", rounding=mode)
    with pytest.raises(ValueError, match=rf"rounding_mode '{mode}' of an activation quantizer; only ROUND"):
        from_qonnx(g.save(tmp_path))


def test_refuses_a_narrow_activation(tmp_path):
    g = _one_conv("qonnx", narrow=True)
    with pytest.raises(ValueError, match=r"narrow range on the activation '\w+': a narrow signed 8-bit range"):
        from_qonnx(g.save(tmp_path))


def test_refuses_bit_widths_outside_2_to_8(tmp_path):
    g = _one_conv("qdq")
    g2 = G("qdq", (1, 3, 3), 8, True, 5)
    y = g2.conv(g2.out, np.ones((2, 1, 3, 3), np.int64), np.int64(6))
    g2.quant(y, 16, True, 4)
    with pytest.raises(ValueError, match=r"quantizes the activation '\w+' to 16 bits; 2\.\.8 bits are supported"):
        from_qdq(g2.save(tmp_path))
    g3 = _one_conv("qonnx")
    g3.quant(g3.out, 9, True, 4)
    with pytest.raises(ValueError, match=r"to 9 bits; 2\.\.8 bits are supported"):
        from_qonnx(g3.save(tmp_path, name="q.onnx"))
    assert from_qdq(g.save(tmp_path, name="ok.onnx")).output_type == QType(8, True, 4)


def test_refuses_an_unsupported_op(tmp_path):
    g = G("qdq", (1, 3, 3), 8, True, 5)
    g.quant(g.node("Sigmoid", [g.out]), 8, True, 4)
    with pytest.raises(ValueError, match=r"node 'Sigmoid_\d+' \(Sigmoid\): is not supported; supported ONNX ops: "
                                         r"QuantizeLinear, DequantizeLinear, Conv, Gemm"):
        from_qdq(g.save(tmp_path))


def test_a_float_model_says_to_quantize_it(tmp_path):
    x = h.make_tensor_value_info("x", T.FLOAT, ["N", 4])
    y = h.make_tensor_value_info("y", T.FLOAT, ["N", 2])
    w = nh.from_array(np.ones((4, 2), np.float32), "w")
    m = h.make_model(h.make_graph([h.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w]),
                     opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 9
    p = tmp_path / "float.onnx"
    onnx.save(m, str(p))
    with pytest.raises(ValueError, match=r"a float model \(no Quant, QuantizeLinear or DequantizeLinear nodes\); "
                                         r"quantize it first: systolic quantize .*float\.onnx METHOD"):
        import_quantized_onnx(p)


def test_refuses_a_layer_beyond_the_float32_limit(tmp_path):
    """K = 1024 weights of 127 on uint8 inputs: 255 * 127 * 1024 > 2**24."""
    g = G("qdq", (1024,), 8, False, 8)
    g.quant(g.node("MatMul", [g.out, g.weight(np.full((1024, 2), 127), np.int64(7))]), 8, True, 0)
    p = g.save(tmp_path)
    with pytest.raises(ValueError, match=r"worst-case \|accumulator \+ bias\| is 33162240 grid steps, beyond "
                                         rf"{FLOAT32_EXACT}: the source computes it in float32"):
        from_qdq(p)
    assert from_qdq(p, require_exact=False).meta["float32_exact"] is False


def test_refuses_a_bias_off_the_accumulator_grid(tmp_path):
    g = G("qonnx", (1, 3, 3), 8, True, 5)
    y = g.node("Conv", [g.out, g.weight(np.ones((2, 1, 3, 3)), np.int64(6)),
                        g.init(np.array([0.3, 0.5], np.float32))], kernel_shape=[3, 3])
    g.quant(y, 8, True, 4)
    with pytest.raises(ValueError, match=r"bias '\w+' element 0 \(0\.30000001192092896\) is not an int32 multiple of "
                                         r"the accumulator scale 2\*\*-11"):
        from_qonnx(g.save(tmp_path))


def test_refuses_an_unquantized_result(tmp_path):
    g = G("qdq", (1, 3, 3), 8, True, 5)
    y = g.conv(g.out, np.ones((2, 1, 3, 3), np.int64), np.int64(6))
    y = g.node("MaxPool", [y], kernel_shape=[1, 1])
    g.quant(y, 8, True, 4)
    with pytest.raises(ValueError, match=r"reads '\w+', the unquantized float output of node 'Conv_\d+' \(Conv\); "
                                         r"put a quantizer"):
        from_qdq(g.save(tmp_path))


# ====================================================================== malformed files


def test_refuses_garbage_bytes(tmp_path):
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"\x08\x07garbage\xff\xfe" * 50)
    with pytest.raises(QuantizedImportError, match=r"junk\.onnx: not an ONNX model"):
        import_quantized_onnx(p)


def _with_init(tmp_path, t, name="bad.onnx"):
    g = _one_conv("qdq")
    m = g.model()
    m.graph.initializer.append(t)
    p = tmp_path / name
    p.write_bytes(m.SerializeToString())
    return p


def test_refuses_a_huge_declared_shape_before_allocating(tmp_path):
    t = onnx.TensorProto(name="huge", data_type=T.INT8, dims=[100000, 100000, 1000])
    with pytest.raises(ValueError, match=r"tensor 'huge' declares 10000000000000 elements .* above the limit of "
                                         r"67108864 \(MAX_MODEL_ELEMENTS\)"):
        from_qdq(_with_init(tmp_path, t))


def test_refuses_raw_data_of_the_wrong_length(tmp_path):
    t = onnx.TensorProto(name="short", data_type=T.FLOAT, dims=[1000], raw_data=b"\x00" * 12)
    with pytest.raises(ValueError, match=r"tensor 'short' holds 12 bytes, its shape \[1000\] needs 4000"):
        from_qdq(_with_init(tmp_path, t))


def test_refuses_external_data(tmp_path):
    t = onnx.TensorProto(name="ext", data_type=T.FLOAT, dims=[4],
                         data_location=onnx.TensorProto.EXTERNAL)
    e = t.external_data.add()
    e.key, e.value = "location", "weights.bin"
    with pytest.raises(ValueError, match=r"tensor 'ext' keeps its data in an external file"):
        import_quantized_onnx(_with_init(tmp_path, t))


def test_refuses_an_old_opset_and_a_dynamic_dimension(tmp_path):
    g = _one_conv("qdq")
    m = g.model(opset=21)
    m.opset_import[0].version = 12
    p = tmp_path / "old.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(ValueError, match=r"opset 12; opset 13 or later is supported"):
        from_qdq(p)
    m = g.model()
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    p = tmp_path / "dyn.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(ValueError, match=r"input 'x' has a dynamic dimension 2 \(H\); only the batch may be dynamic"):
        from_qdq(p)
