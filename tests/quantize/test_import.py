"""Float import from PyTorch (torch.fx) and ONNX: the same function as the source, quantized golden == fake
quant, the RTL bit-exact, and clear errors for what cannot be imported."""

import copy
import io
import warnings

import numpy as np
import pytest

from tests.requirements import require

torch = require("torch", "quantize")
onnx = require("onnx", "quantize")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from systolic.quantize.importer import UnsupportedModelError, from_onnx, from_torch  # noqa: E402


class Block(nn.Module):
    """Every supported kind at once: conv + BN + ReLU, a depthwise conv + BN + ReLU6, a 1x1 conv, a residual
    add + ReLU, a concat on channels, a padded 3x3 max pool, a flatten and a linear layer."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.dw, self.b2 = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.c3 = nn.Conv2d(8, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.fc = nn.Linear(12 * 16, 10)

    def forward(self, x):
        a = F.relu(self.b1(self.c1(x)))
        y = self.pw(F.relu6(self.b2(self.dw(a))))
        z = torch.relu(a + y)
        c = self.pool(torch.cat([z, F.relu(self.c3(z))], dim=1))
        return self.fc(torch.flatten(c, 1))


class GapNet(nn.Module):
    """Average pools: a padded 3x3 one (divides by 9), and a global one over a 3x3 map (divides by 9)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        self.avg = nn.AvgPool2d(3, 3, padding=1)
        self.c2 = nn.Conv2d(6, 10, 1)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        y = self.c2(self.avg(F.relu(self.c1(x))))
        return torch.flatten(self.gap(F.relu(y)), 1)


def _block(seed=0):
    torch.manual_seed(seed)
    m = Block().eval()
    for bn in (m.b1, m.b2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return m


def _nchw(x):
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def _digits(n=64):
    from systolic.quantize.data import load_split

    return load_split("test", "nhwc")[0][:n]


@pytest.mark.parametrize("make", [_block, lambda: GapNet().eval()], ids=["block", "gap"])
def test_torch_import_computes_the_module(make):
    m = make()
    before = copy.deepcopy(m.state_dict())
    g = from_torch(m, (8, 8, 1))
    x = _digits()
    with torch.no_grad():
        ref = m(_nchw(x)).numpy()
        got = g(torch.from_numpy(x), quant=False).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())      # the user's module is unchanged


def test_torch_import_maps_each_kind():
    g = from_torch(_block(), (8, 8, 1))
    kinds = [(n.name, n.op, n.relu, n.clamp) for n in g.nodes]
    assert kinds == [("c1", "conv", True, None), ("dw", "conv", True, 6.0), ("pw", "conv", False, None),
                     ("add", "add", True, None), ("c3", "conv", True, None), ("cat", "concat", True, None),
                     ("pool", "maxpool", False, None), ("flatten", "flatten", False, None),
                     ("fc", "dense", False, None)]
    assert g.mods["dw"].groups == 8 and set(g.bns) == {"c1", "dw"}
    assert next(n for n in g.nodes if n.name == "pool").padding == (1, 1, 1, 1)


@pytest.fixture(scope="module")
def quantized():
    """The Block trained briefly on digits, quantized with TQT (w8a8) and with max calibration (w4a8)."""
    from systolic.quantize.methods import quantize_model
    from systolic.quantize.train import train_float

    g = from_torch(_block(), (8, 8, 1))
    train_float(g, "digits", seed=0, epochs=3)
    return {"tqt": quantize_model(g, "tqt", w_bits=8, a_bits=8, epochs=1),
            "max": quantize_model(g, "max", w_bits=4, a_bits=8), "float": g}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tqt", "max"])
def test_imported_quantized_golden_equals_fake_quant(quantized, method):
    """The golden model of the imported graph computes exactly what its fake-quant torch model computes
    (float64), every layer kind included (grouped conv, clamp, concat, padded pool)."""
    from systolic.quantize.data import load_split

    res = quantized[method]
    g = res.network
    kinds = {layer.kind for layer in g.layers}
    assert kinds == {"conv2d", "add", "concat", "maxpool2d", "flatten", "dense"}
    assert next(layer for layer in g.layers if layer.name == "dw").groups == 8
    assert next(layer for layer in g.layers if layer.name == "dw").out_max is not None
    x, _ = load_split("test", "nhwc")
    n64 = copy.deepcopy(res.torch_net).double().eval()
    with torch.no_grad():
        fq = n64(torch.from_numpy(x).double(), quant=True).numpy()
    np.testing.assert_array_equal(g.run_float(x)[g.output_name], fq)
    assert res.golden_acc > 0.5                                         # it learned something in 3 epochs


@pytest.mark.slow
def test_every_method_on_the_imported_graph(quantized):
    """Every quantization method (the calibration baselines, TQT, FAT, LSQ, SQ, multipoint: its points on the
    depthwise conv come from the block-diagonal dense weight) quantizes the imported block, and each golden
    model equals its fake quant exactly."""
    from systolic.quantize import METHODS
    from systolic.quantize.data import load_split
    from systolic.quantize.methods import quantize_model

    g = quantized["float"]
    x, _ = load_split("test", "nhwc")
    for method in METHODS:
        res = quantize_model(g, method, w_bits=4, a_bits=8, epochs=1)
        n64 = copy.deepcopy(res.torch_net).double().eval()
        with torch.no_grad():
            fq = n64(torch.from_numpy(x).double(), quant=True).numpy()
        np.testing.assert_array_equal(res.network.run_float(x)[res.network.output_name], fq, err_msg=method)
        dw = next(layer for layer in res.network.layers if layer.name == "dw")
        assert dw.groups == 8 and dw.weight.shape == (3, 3, 1, 8), method
        assert int(np.abs(dw.weight).max()) <= 8, method                 # 4-bit weights


@pytest.mark.slow
def test_imported_network_is_bit_exact_on_the_rtl(quantized):
    """The TQT model of the imported Block on the RTL (direct Verilator, ``small`` preset): every layer the
    accelerator runs equals the golden model on every element; the rest run on the host, named."""
    from systolic.arch.config import PRESETS
    from systolic.flows import run_images

    g = quantized["tqt"].network
    x = g.quantize_input(_digits(3))
    run = run_images(g, PRESETS["small"], x, source="rtl", backend="direct", progress=False)
    assert run.bit_exact and run.compared > 0 and sum(run.mismatches.values()) == 0
    assert run.total_cycles == run.predicted_cycles
    on_accel = {n for n, p in run.compiled.placement.items() if p == "accelerator"}
    assert {"c1", "pw", "c3", "fc"} <= on_accel


# ---------------------------------------------------------------- ONNX


def _export(m, path, shape=(1, 1, 8, 8)):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, torch.zeros(*shape), str(path), dynamo=False, opset_version=13,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return path


@pytest.mark.parametrize("make", [_block, lambda: GapNet().eval()], ids=["block", "gap"])
def test_onnx_import_computes_what_onnxruntime_computes(make, tmp_path):
    ort = require("onnxruntime", "onnx")
    m = make()
    path = _export(m, tmp_path / "m.onnx")
    g = from_onnx(path)
    x = _digits()
    ref = ort.InferenceSession(str(path)).run(None, {"x": _nchw(x).numpy()})[0]
    with torch.no_grad():
        got = g(torch.from_numpy(x), quant=False).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def _graph(nodes, inits, in_shape=("n", 1, 4, 4), out_shape=None, opset=13):
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape or in_shape))],
                          [numpy_helper.from_array(np.asarray(v, dtype=np.float32 if k != "shape" else np.int64),
                                                   k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)   # onnxruntime reads <= 13


def _save(model, tmp_path, name="m.onnx"):
    p = tmp_path / name
    p.write_bytes(model.SerializeToString())
    return p


def test_onnx_matmul_bias_clip_asymmetric_pads(tmp_path):
    """MatMul + Add (a bias), Clip(0, 6) and a Conv with asymmetric pads, against onnxruntime."""
    ort = require("onnxruntime", "onnx")
    from onnx import helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 0, 0, 1], name="conv"),
             helper.make_node("Clip", ["c", "lo", "hi"], ["r"], name="clip"),
             helper.make_node("Flatten", ["r"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "m"], ["mm"], name="mm"),
             helper.make_node("Add", ["mm", "b"], ["y"], name="bias")]
    inits = {"w": rng.normal(size=(3, 1, 2, 2)), "lo": 0.0, "hi": 6.0, "m": rng.normal(size=(48, 5)),
             "b": rng.normal(size=5)}
    path = _save(_graph(nodes, inits, out_shape=("n", 5)), tmp_path)
    g = from_onnx(path)
    assert [n.op for n in g.nodes] == ["conv", "flatten", "dense"]
    assert g.nodes[0].padding == (1, 0, 0, 1) and g.nodes[0].clamp == 6.0
    x = rng.normal(size=(7, 4, 4, 1)).astype(np.float32) * 4
    ref = ort.InferenceSession(str(path)).run(None, {"x": _nchw(x).numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(g(torch.from_numpy(x), quant=False).numpy(), ref, rtol=1e-5, atol=1e-5)


def _bad(tmp_path, model):
    with pytest.raises(UnsupportedModelError) as info:
        from_onnx(_save(model, tmp_path))
    return str(info.value)


def test_onnx_unsupported_op_names_node_op_and_list(tmp_path):
    from onnx import helper

    msg = _bad(tmp_path, _graph([helper.make_node("Sigmoid", ["x"], ["y"], name="act")], {}))
    assert msg.startswith(f"{tmp_path / 'm.onnx'}: node 'act' (Sigmoid): is not supported; supported ONNX ops: "
                          "Conv, Gemm, MatMul, Add, BatchNormalization, Relu, Clip")


def test_onnx_dynamic_shape_is_refused(tmp_path):
    from onnx import helper

    msg = _bad(tmp_path, _graph([helper.make_node("Relu", ["x"], ["y"])], {}, in_shape=("n", 1, "h", 4)))
    assert msg.endswith("input 'x' has a dynamic dimension 2 (h); only the batch may be dynamic")


def test_onnx_missing_initializer_is_refused(tmp_path):
    from onnx import helper

    msg = _bad(tmp_path, _graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], {}))
    assert "'w'" in msg and ("checker" in msg or "constant" in msg)


def test_onnx_huge_declared_shape_is_refused_before_reading(tmp_path):
    from onnx import TensorProto, helper

    model = _graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], {})
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20, 1, 1], raw_data=b"\0" * 16)
    model.graph.initializer.append(t)
    msg = _bad(tmp_path, model)
    assert msg.endswith("tensor 'w' declares 1099511627776 elements [1048576, 1048576, 1, 1], above the limit of "
                        "67108864 (MAX_MODEL_ELEMENTS)")


def test_onnx_external_data_old_opset_and_garbage_are_refused(tmp_path):
    from onnx import TensorProto, helper

    model = _graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], {})
    t = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])
    t.data_location = TensorProto.EXTERNAL
    t.ClearField("float_data")
    t.external_data.add(key="location", value="/etc/passwd")
    model.graph.initializer.append(t)
    assert "keeps its data in an external file" in _bad(tmp_path, model)
    assert _bad(tmp_path, _graph([helper.make_node("Relu", ["x"], ["y"])], {}, opset=12)).endswith(
        "opset 12; opset 13 or later is supported (onnx.version_converter can upgrade it)")
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"\x00\xffnot a protobuf" * 10)
    with pytest.raises(UnsupportedModelError, match=r"junk\.onnx: (not an ONNX model|the ONNX checker)"):
        from_onnx(p)


def test_onnx_average_pool_without_counting_padding_is_refused(tmp_path):
    from onnx import helper

    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="ap")
    assert _bad(tmp_path, _graph([node], {})).endswith(
        "node 'ap' (AveragePool): padding with count_include_pad=0: the kit divides by the whole window "
        "(count_include_pad=1)")


# ---------------------------------------------------------------- PyTorch errors


class _Sig(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 2, 3)
        self.act = nn.Sigmoid()

    def forward(self, x):
        return self.act(self.c(x))


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        y = self.c(x)
        if y.sum() > 0:             # data-dependent control flow: torch.fx cannot trace it
            return y
        return -y


class _SharedPreRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        y = self.c(x)
        return F.relu(y) + y


def test_torch_errors_name_node_and_reason():
    with pytest.raises(UnsupportedModelError) as info:
        from_torch(_Sig(), (8, 8, 1))
    assert str(info.value).startswith("_Sig: node 'act' (Sigmoid): is not supported; supported: Conv2d, Linear,")
    with pytest.raises(UnsupportedModelError, match=r"^_Branchy: torch\.fx cannot trace the module"):
        from_torch(_Branchy(), (8, 8, 1))
    with pytest.raises(UnsupportedModelError, match=r"node 'relu' \(relu\): a ReLU / clamp of a value that is also "
                                                    r"used without it \(by 2 consumers\)"):
        from_torch(_SharedPreRelu(), (8, 8, 1))
    with pytest.raises(UnsupportedModelError, match=r"node 'c1' \(Conv2d\): expects 1 input channels, gets 3"):
        from_torch(_block(), (8, 8, 3))
    with pytest.raises(ValueError, match=r"input_shape must be \(H, W, C\) or \(features,\)"):
        from_torch(_block(), (8, 8))


def test_sequential_grouped_conv_and_any_pool_match_torch():
    """from_sequential takes grouped convolutions and average pools of any area and padding now."""
    from systolic.quantize.graph import from_sequential

    torch.manual_seed(1)
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4, padding=1),
                        nn.AvgPool2d(3, 2, padding=1), nn.MaxPool2d(3, 1, padding=1), nn.Flatten(),
                        nn.Linear(64, 10)).eval()
    x = _digits()
    with torch.no_grad():
        ref = seq(_nchw(x)).numpy()
        got = from_sequential(copy.deepcopy(seq), (8, 8, 1))(torch.from_numpy(x), quant=False).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- command line

USER_FILE = '''
import torch
from torch import nn
from torch.nn import functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8 * 16, 10)

    def forward(self, x):
        a = F.relu(self.c1(x))
        y = torch.relu(a + self.pw(F.relu(self.dw(a))))
        return self.fc(torch.flatten(F.max_pool2d(y, 2), 1))


def make():
    torch.manual_seed(3)
    return Net()
'''


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["py", "onnx"])
def test_cli_quantize_imported_then_simulate_json(kind, tmp_path, capsys):
    """`systolic quantize FILE.py:FUNCTION|FILE.onnx tqt` writes a golden model; `systolic simulate --json`
    prints its RTL run as JSON on stdout with 0 mismatches; eval and simulate refuse the float model."""
    import importlib.util
    import json

    from systolic.cli import main

    src = tmp_path / "user_net.py"
    src.write_text(USER_FILE)
    spec = f"{src}:make"
    if kind == "onnx":
        mspec = importlib.util.spec_from_file_location("user_net", src)
        mod = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(mod)
        spec = str(_export(mod.make().eval(), tmp_path / "user_net.onnx"))
    out = tmp_path / "q.npz"
    assert main(["quantize", spec, "tqt", "--epochs", "1", "--out", str(out), "--json"]) == 0
    q = json.loads(capsys.readouterr().out)
    assert q["model"] == "custom" and q["method"] == "tqt" and q["data"] == "digits"
    assert main(["simulate", "--model", str(out), "--config", "small", "--images", "2", "--json",
                 "--no-progress"]) == 0
    sim = json.loads(capsys.readouterr().out)
    assert sim["mismatches"] == 0 and sim["images"] == 2 and sim["compared_elements"] > 0
    assert main(["eval", spec, "--json"]) == 1
    err = capsys.readouterr().err
    assert "a float model" in err and "quantize it first" in err and "systolic quantize" in err


def test_commands_take_an_already_quantized_onnx(tmp_path):
    """`resolve_model` (eval, simulate, report, demo) reads a QDQ file through the quantized importer."""
    from systolic.flows import resolve_model
    from systolic.golden.onnx_import import from_qdq
    from tests.golden.test_qimport import G, rint8

    rng = np.random.default_rng(4)
    g = G("qdq", (1, 8, 8), 8, False, 8)
    y = g.node("Relu", [g.conv(g.out, rint8(rng, 4, 1, 3, 3, lo=-64, hi=63), 7, pads=[1, 1, 1, 1])])
    g.quant(y, 8, False, 4)
    path = g.save(tmp_path)
    net, kind = resolve_model(str(path))
    ref = from_qdq(path)
    x = net.quantize_input(_digits(4))
    assert kind == "file"
    assert [layer.kind for layer in net.layers] == ["conv2d"]
    assert np.array_equal(net.run(x)[net.output_name], ref.run(x)[ref.output_name])
