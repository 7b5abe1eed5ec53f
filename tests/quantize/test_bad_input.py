"""Bad input gets a clear error that lists what is supported.

Every case asserts the exception's exact type and its whole message (texts written out here,
read from the product's error strings, not built from the product's own constants).
"""

import pytest

from tests.requirements import require

torch = require("torch", "quantize")
from torch import nn  # noqa: E402

from systolic.quantize import check_bits  # noqa: E402
from systolic.quantize.data import load_split  # noqa: E402
from systolic.quantize.graph import from_sequential  # noqa: E402
from systolic.quantize.methods import quantize_model  # noqa: E402
from systolic.quantize.zoo import build, load_shipped, shipped_model_path  # noqa: E402

MODELS_TEXT = "digits-mlp, digits-cnn, digits-resnet, mnist-lenet5, mnist-resnet8, mnist-mobilenet"
METHODS_TEXT = "max, percentile, mse, klj, tqt, fat, lsq, sq, multipoint, dsconv, inq"
LAYERS_TEXT = ("nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, "
               "nn.Flatten")


def raises_exactly(exc_type, message, fn, *args, **kwargs):
    """Call ``fn``; it must raise exactly ``exc_type`` (not a subclass) with exactly ``message``."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert type(info.value) is exc_type
    assert str(info.value) == message


def test_unknown_model():
    raises_exactly(ValueError, f"unknown model 'digits-vgg'; supported models: {MODELS_TEXT}",
                   quantize_model, "digits-vgg", "tqt")
    raises_exactly(ValueError, f"unknown model 'lenet'; supported models: {MODELS_TEXT}", build, "lenet")


def test_unknown_method():
    raises_exactly(ValueError, f"unknown quantization method 'adaround'; supported methods: {METHODS_TEXT}",
                   quantize_model, "digits-mlp", "adaround")


@pytest.mark.parametrize("bits,shown", [(1, "1"), (9, "9"), (0, "0"), (16, "16"), (-3, "-3"), (2.5, "2.5"),
                                        ("8", "'8'"), (True, "True")])
def test_bits_out_of_range(bits, shown):
    raises_exactly(ValueError, f"w_bits must be an integer between 2 and 8, not {shown}",
                   quantize_model, "digits-mlp", "max", w_bits=bits)
    raises_exactly(ValueError, f"a_bits must be an integer between 2 and 8, not {shown}",
                   quantize_model, "digits-mlp", "max", a_bits=bits)


def test_bits_in_range_accepted():
    assert [check_bits(b) for b in range(2, 9)] == [2, 3, 4, 5, 6, 7, 8]


def test_unsupported_torch_layer():
    seq = nn.Sequential(nn.Linear(64, 10), nn.Sigmoid())
    raises_exactly(TypeError, f"layer 1 (Sigmoid) is not supported; supported layers: {LAYERS_TEXT}",
                   from_sequential, seq, (64,))
    raises_exactly(TypeError, f"expected an nn.Sequential, not LSTM; supported layers: {LAYERS_TEXT}",
                   from_sequential, nn.LSTM(4, 4), (4,))


def test_unsupported_layer_settings():
    raises_exactly(ValueError, "layer 0 (Conv2d): only dilation=1 and integer zero padding are supported",
                   from_sequential, nn.Sequential(nn.Conv2d(2, 2, 3, dilation=2)), (8, 8, 2))
    raises_exactly(ValueError, "layer 0 (Conv2d): only dilation=1 and integer zero padding are supported",
                   from_sequential, nn.Sequential(nn.Conv2d(2, 2, 3, padding="same")), (8, 8, 2))
    raises_exactly(ValueError, "layer 1 (AvgPool2d): count_include_pad=False and divisor_override are not supported "
                               "(the average divides by the whole window)",
                   from_sequential, nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(3, count_include_pad=False)),
                   (8, 8, 1))
    raises_exactly(ValueError, "layer 1 (MaxPool2d): ceil_mode and dilation are not supported",
                   from_sequential, nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, ceil_mode=True)), (8, 8, 1))
    raises_exactly(ValueError, "layer 0 (ReLU) must follow a Conv2d or Linear (with optional batch norm)",
                   from_sequential, nn.Sequential(nn.ReLU()), (4,))
    raises_exactly(ValueError, "layer 0 (BatchNorm1d) must follow a Conv2d or Linear directly",
                   from_sequential, nn.Sequential(nn.BatchNorm1d(4)), (4,))
    raises_exactly(ValueError, "the Sequential has no layers", from_sequential, nn.Sequential(), (4,))


def test_unknown_shipped_and_split():
    raises_exactly(ValueError, f"unknown shipped model 'x'; shipped models are {MODELS_TEXT}", shipped_model_path, "x")
    raises_exactly(ValueError, f"unknown shipped model 'digits-vgg'; shipped models are {MODELS_TEXT}",
                   load_shipped, "digits-vgg")
    raises_exactly(ValueError, "unknown split 'dev'; splits are train, val, test", load_split, "dev")
    raises_exactly(ValueError, "unknown layout 'nchw'; layouts are nhwc, flat", load_split, "test", "nchw")


def test_unknown_rounding():
    raises_exactly(ValueError, "rounding must be one of half_even, half_up, not 'nearest'",
                   quantize_model, "digits-mlp", "max", rounding="nearest")


def test_from_sequential_matches_torch_nchw():
    """A Sequential trained on NCHW tensors computes the same function after conversion (HWC flatten)."""
    gen = torch.Generator().manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(48, 5))
    with torch.no_grad():
        for p in seq.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.rand(4, 1, 8, 8, generator=gen)
    ref = seq(x).detach()
    net = from_sequential(seq, (8, 8, 1))
    out = net(x.permute(0, 2, 3, 1), quant=False).detach()
    torch.testing.assert_close(out, ref)


def mnist_sized_cnn():
    seq = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(98, 10))
    return from_sequential(seq, (28, 28, 1))


DIGITS_SHAPES = "samples of shape (8, 8, 1), or (64,) flattened"


def test_model_and_data_shapes_must_match():
    """A 28x28 network on the digits (once a deep RuntimeError from a matrix product) is a clear error
    naming both shapes, from every entry point, before anything trains."""
    from systolic.quantize.methods import golden_accuracy
    from systolic.quantize.train import accuracy, train_float
    from systolic.quantize.zoo import evaluate

    net = mnist_sized_cnn()
    msg = f"the model has input shape (28, 28, 1), which does not match data set 'digits' ({DIGITS_SHAPES})"
    raises_exactly(ValueError, msg, quantize_model, "digits-cnn", "max", float_net=net)
    raises_exactly(ValueError, msg, quantize_model, net, "max")
    raises_exactly(ValueError, msg, train_float, net, epochs=1)
    raises_exactly(ValueError, msg, accuracy, net, "test")
    raises_exactly(ValueError, msg, evaluate, net, "digits-cnn")
    digits_net = build("digits-mlp")
    raises_exactly(ValueError, "the model has input shape (64,), which does not match data set 'mnist' (samples of "
                   "shape (28, 28, 1), or (784,) flattened)", train_float, digits_net, "mnist", epochs=1)
    g = load_shipped("digits-cnn")
    raises_exactly(ValueError, "the network has input shape (8, 8, 1), which does not match data set 'mnist' "
                   "(samples of shape (28, 28, 1), or (784,) flattened)", golden_accuracy, g, data="mnist")


def test_unknown_data_and_model_data_combinations(tmp_path):
    import numpy as np

    raises_exactly(ValueError, "unknown data set 'cifar10': give digits, mnist or a path to a .npz file",
                   quantize_model, "digits-mlp", "max", data="cifar10")
    raises_exactly(ValueError, "give the float network either as model or as float_net, not both",
                   quantize_model, mnist_sized_cnn(), "max", data="mnist", float_net=mnist_sized_cnn())
    p = tmp_path / "tiny.npz"
    np.savez(p, x_train=np.zeros((4, 3, 3, 1)), y_train=np.arange(4) % 2, x_val=np.zeros((2, 3, 3, 1)),
             y_val=np.arange(2), x_test=np.zeros((2, 3, 3, 1)), y_test=np.arange(2))
    raises_exactly(ValueError, f"model 'digits-resnet' pools twice by 2 and needs images of at least 4x4; data set "
                   f"{str(p)!r} has samples of shape (3, 3, 1)", build, "digits-resnet", data=str(p))
