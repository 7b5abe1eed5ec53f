"""The torch fake-quant model and the integer golden model compute the same numbers.

On the whole digits test split: identical predictions, and dequantized golden
logits exactly equal (``==``) to the fake-quant logits computed in float64. The MNIST zoo
models (LeNet-5, ResNet-8 with its 7x7 average pool, the depthwise MobileNet with ReLU6) the same,
trained briefly on a subset of the MNIST splits (:func:`mnist_small`) to keep the run short.
"""

import copy

import numpy as np
import pytest

from tests.requirements import require

torch = require("torch", "quantize")

from systolic.golden import load  # noqa: E402
from systolic.golden.layers import AvgPool2D, Conv2D  # noqa: E402
from systolic.quantize.data import Dataset, load_dataset, load_for_network, load_split  # noqa: E402
from systolic.quantize.methods import golden_accuracy, quantize_model  # noqa: E402
from systolic.quantize.zoo import train_float  # noqa: E402

N_TEST = 360  # images in the digits test split
MNIST_MODELS = ("mnist-lenet5", "mnist-resnet8", "mnist-mobilenet")
#: Train / val / test images of the MNIST subset the MNIST zoo models are checked on (the first of each
#: stratified split), to keep the three trainings and golden runs within about a minute.
MNIST_SMALL = (1000, 100, 100)
#: Float epochs on that subset (the MobileNet's ReLU6 / batch-norm statistics need two to predict at all).
MNIST_FLOAT_EPOCHS = {"mnist-lenet5": 1, "mnist-resnet8": 1, "mnist-mobilenet": 2}
GOLDEN_BATCH = 100


def fakequant_logits(net, x):
    n64 = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        return n64(torch.from_numpy(x).double(), quant=True).numpy()


def assert_accuracy_is_count(acc, correct, n_test=N_TEST):
    """*acc* (a float accuracy on the test split) is exactly ``correct / n_test`` (default 360).

    Exact, not approximate: an accuracy here is ``float((pred == y).mean())``, the correctly rounded
    quotient of two integers (the 0/1 sum is exact in float64), and so is Python's ``correct / 360``;
    two different counts over 360 differ by 1/360, far more than an ulp, so the float identifies
    the count.
    """
    assert isinstance(correct, int)
    assert round(acc * n_test) == correct
    assert acc == correct / n_test


def assert_identical(res, data=None):
    """Golden and fake-quant agree exactly on the test split of *data* (default: the digits); returns the
    number of correct test predictions, counted from the fake-quant torch model's predictions and the
    labels (independent of the golden model)."""
    g = res.network
    if data is None:
        x, y = load_for_network(g, "test")
        assert len(y) == N_TEST
    else:
        x, y = data.split("test", g.input_shape)
    logits_fq = fakequant_logits(res.torch_net, x)
    b = GOLDEN_BATCH  # the golden model's im2col limit: batches (MNIST ResNet-8: 100 x 28 x 28 x 144 elements)
    out = np.concatenate([g.run_float(x[i:i + b])[g.output_name] for i in range(0, len(x), b)])
    assert out.shape == logits_fq.shape
    np.testing.assert_array_equal(out, logits_fq)  # exact, not approximate
    pred_fq = logits_fq.argmax(axis=1)
    pred_g = np.concatenate([g.predict(g.quantize_input(x[i:i + b])) for i in range(0, len(x), b)])
    np.testing.assert_array_equal(pred_g, pred_fq)
    correct = int(np.count_nonzero(pred_fq == y))
    acc, pred = golden_accuracy(g, data=data)  # the function under test, against the independent count
    np.testing.assert_array_equal(pred, pred_fq)
    assert_accuracy_is_count(acc, correct, len(y))
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
                                          ("fat", 4, 8), ("lsq", 4, 8), ("dsconv", 4, 8), ("inq", 4, 8),
                                          ("multipoint", 4, 4)])
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


@pytest.fixture(scope="module")
def mnist_small():
    """The first 1,000 / 100 / 100 images of the MNIST train / val / test splits, MNIST's input type."""
    ds = load_dataset("mnist")
    splits = {s: tuple(a[:n] for a in ds.splits[s]) for s, n in zip(("train", "val", "test"), MNIST_SMALL)}
    return Dataset.from_splits("mnist-small", splits, ds.input_type, ds.num_classes)


@pytest.mark.parametrize("model", MNIST_MODELS)
def test_mnist_zoo_tqt_fakequant_equals_golden(model, mnist_small):
    ds = mnist_small
    float_net = train_float(model, seed=0, epochs=MNIST_FLOAT_EPOCHS[model], data=ds)
    res = quantize_model(model, "tqt", 8, 8, seed=0, float_net=float_net, epochs=1, data=ds)
    g = res.network
    assert g.input_shape == (28, 28, 1)
    n_test = MNIST_SMALL[2]
    correct = assert_identical(res, ds)
    assert_accuracy_is_count(res.golden_acc, correct, n_test)
    assert_accuracy_is_count(res.fakequant_acc, correct, n_test)
    assert correct > n_test // 2  # 1-2 float epochs + one retraining epoch on 1,000 images learned something
    convs = [l for l in g.layers if isinstance(l, Conv2D)]
    pools = [l for l in g.layers if isinstance(l, AvgPool2D)]
    if model == "mnist-lenet5":
        assert [l.weight.shape for l in convs] == [(5, 5, 1, 6), (5, 5, 6, 16)]
        assert [l.weight.shape for l in g.layers if l.kind == "dense"] == [(400, 120), (120, 84), (84, 10)]
    else:  # the global average pool over 7x7: the golden model divides by 49 (odd area, exact rounding)
        assert [(l.pool, l.area, l.odd_area) for l in pools] == [((7, 7), 49, 49)]
    if model == "mnist-resnet8":
        assert len(convs) == 9 and sum(l.kind == "add" for l in g.layers) == 3
        assert [l.weight.shape[:2] for l in convs if l.name.endswith("sc")] == [(1, 1), (1, 1)]
    if model == "mnist-mobilenet":
        dw = [l for l in convs if l.name.endswith("dw")]
        assert len(dw) == 4 and all(l.groups == l.weight.shape[3] and l.weight.shape[2] == 1 for l in dw)
        assert all(l.out_max == int(np.floor(6.0 * 2.0 ** l.out_type.frac_bits)) for l in convs)
