"""The torch fake-quant model and the integer golden model compute the same numbers.

On the whole digits test split: identical predictions, and dequantized golden
logits exactly equal (``==``) to the fake-quant logits computed in float64.
"""

import copy

import numpy as np
import pytest

from tests.requirements import require

torch = require("torch", "quantize")

from systolic.golden import load  # noqa: E402
from systolic.quantize.data import load_for_network, load_split  # noqa: E402
from systolic.quantize.methods import golden_accuracy, quantize_model  # noqa: E402

N_TEST = 360  # images in the digits test split


def fakequant_logits(net, x):
    n64 = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        return n64(torch.from_numpy(x).double(), quant=True).numpy()


def assert_accuracy_is_count(acc, correct):
    """*acc* (a float accuracy on the test split) is exactly ``correct / 360``.

    Exact, not approximate: an accuracy here is ``float((pred == y).mean())``, the correctly rounded
    quotient of two integers (the 0/1 sum is exact in float64), and so is Python's ``correct / 360``;
    two different counts over 360 differ by 1/360, far more than an ulp, so the float identifies
    the count.
    """
    assert isinstance(correct, int)
    assert round(acc * N_TEST) == correct
    assert acc == correct / N_TEST


def assert_identical(res):
    """Golden and fake-quant agree exactly; returns the number of correct test predictions, counted
    from the fake-quant torch model's predictions and the labels (independent of the golden model)."""
    g = res.network
    x, y = load_for_network(g, "test")
    assert len(y) == N_TEST
    logits_fq = fakequant_logits(res.torch_net, x)
    out = g.run_float(x)[g.output_name]
    assert out.shape == logits_fq.shape
    np.testing.assert_array_equal(out, logits_fq)  # exact, not approximate
    pred_fq = logits_fq.argmax(axis=1)
    pred_g = g.predict(g.quantize_input(x))
    np.testing.assert_array_equal(pred_g, pred_fq)
    correct = int(np.count_nonzero(pred_fq == y))
    acc, pred = golden_accuracy(g)  # the function under test, against the independent count
    np.testing.assert_array_equal(pred, pred_fq)
    assert_accuracy_is_count(acc, correct)
    g.check_accumulators(32)
    return correct


@pytest.mark.parametrize("model", ["digits-mlp", "digits-cnn", "digits-resnet"])
@pytest.mark.parametrize("rounding", ["half_even", "half_up"])
def test_tqt_fakequant_equals_golden(model, rounding, float_nets):
    res = quantize_model(model, "tqt", 8, 8, seed=0, rounding=rounding, float_net=float_nets(model), epochs=1)
    correct = assert_identical(res)
    assert_accuracy_is_count(res.golden_acc, correct)
    assert_accuracy_is_count(res.network.meta["test_accuracy"], correct)
    assert res.network.rounding == rounding
    assert correct > N_TEST // 2  # even after 3 float epochs + 1 retraining epoch it learned something


@pytest.mark.parametrize("method,wb,ab", [("tqt", 4, 4), ("max", 4, 8), ("mse", 8, 4), ("klj", 8, 8),
                                          ("percentile", 8, 8), ("multipoint", 2, 8), ("sq", 2, 8),
                                          ("fat", 4, 8), ("lsq", 4, 8)])
def test_methods_fakequant_equals_golden(method, wb, ab, float_nets):
    res = quantize_model("digits-cnn", method, wb, ab, seed=0, float_net=float_nets("digits-cnn"), epochs=1)
    correct = assert_identical(res)
    assert_accuracy_is_count(res.golden_acc, correct)
    if method not in ("fat", "lsq"):  # power-of-two scales throughout: fake quant = golden
        assert_accuracy_is_count(res.fakequant_acc, correct)
    for layer in res.network.layers:
        if hasattr(layer, "w_type"):
            assert layer.w_type.bits == wb and layer.out_type.bits == ab


def test_multipoint_uses_extra_points(float_nets):
    res = quantize_model("digits-resnet", "multipoint", 2, 8, float_net=float_nets("digits-resnet"))
    assert any(l.extra_weights is not None for l in res.network.layers if hasattr(l, "extra_weights"))
    assert_identical(res)


def test_relu_outputs_unsigned_and_bias_at_acc_scale(float_nets):
    res = quantize_model("digits-resnet", "tqt", 8, 8, float_net=float_nets("digits-resnet"), epochs=0)
    g = res.network
    for layer in g.layers:
        if layer.kind in ("conv2d", "dense", "add"):
            assert layer.out_type.signed == (not layer.relu)
        if layer.kind in ("conv2d", "dense"):
            f_in = g.in_types(layer)[0].frac_bits
            m = res.torch_net.mods[layer.name]
            b = m.bias.detach().double().numpy()
            np.testing.assert_array_equal(layer.bias, np.rint(np.ldexp(b, f_in + layer.w_type.frac_bits)))
    assert any(l.kind == "add" for l in g.layers)


def test_save_load_roundtrip(tmp_path, float_nets):
    res = quantize_model("digits-mlp", "max", 8, 8, float_net=float_nets("digits-mlp"))
    p = tmp_path / "m.npz"
    res.network.save(p)
    g2 = load(p)
    x, _ = load_split("test", "flat")
    np.testing.assert_array_equal(g2(g2.quantize_input(x)), res.network(res.network.quantize_input(x)))
    assert g2.meta["method"] == "max"
