"""Bad input gets a clear error that lists what is supported."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn

from systolic.quantize import METHODS, MODELS, check_bits
from systolic.quantize.data import load_split
from systolic.quantize.graph import from_sequential
from systolic.quantize.methods import quantize_model
from systolic.quantize.zoo import build, load_shipped, shipped_model_path


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'digits-vgg'; supported models: digits-mlp, digits-cnn, digits-resnet"):
        quantize_model("digits-vgg", "tqt")
    with pytest.raises(ValueError, match="supported models: digits-mlp"):
        build("lenet")


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown quantization method 'adaround'; supported methods: "
                                         + ", ".join(METHODS)):
        quantize_model("digits-mlp", "adaround")


@pytest.mark.parametrize("bits", [1, 9, 0, 16, -3, 2.5, "8", True])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match="must be an integer between 2 and 8"):
        quantize_model("digits-mlp", "max", w_bits=bits)
    with pytest.raises(ValueError, match="a_bits must be an integer between 2 and 8"):
        quantize_model("digits-mlp", "max", a_bits=bits)


def test_bits_in_range_accepted():
    assert [check_bits(b) for b in range(2, 9)] == list(range(2, 9))


def test_unsupported_torch_layer():
    seq = nn.Sequential(nn.Linear(64, 10), nn.Sigmoid())
    with pytest.raises(TypeError, match=r"layer 1 \(Sigmoid\) is not supported; supported layers: nn.Conv2d, "
                                        r"nn.BatchNorm2d, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.MaxPool2d, "
                                        r"nn.AvgPool2d, nn.Flatten"):
        from_sequential(seq, (64,))
    with pytest.raises(TypeError, match="expected an nn.Sequential, not LSTM; supported layers"):
        from_sequential(nn.LSTM(4, 4), (4,))


def test_unsupported_layer_settings():
    with pytest.raises(ValueError, match="groups=1"):
        from_sequential(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), (8, 8, 2))
    with pytest.raises(ValueError, match="power of two"):
        from_sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(3)), (8, 8, 1))
    with pytest.raises(ValueError, match="must follow a Conv2d or Linear"):
        from_sequential(nn.Sequential(nn.ReLU()), (4,))


def test_unknown_shipped_and_split():
    with pytest.raises(ValueError, match="unknown shipped model 'x'; shipped models are digits-mlp, digits-cnn, digits-resnet"):
        shipped_model_path("x")
    with pytest.raises(ValueError, match="unknown shipped model"):
        load_shipped("digits-vgg")
    with pytest.raises(ValueError, match="unknown split 'dev'; splits are train, val, test"):
        load_split("dev")
    with pytest.raises(ValueError, match="unknown layout"):
        load_split("test", "nchw")


def test_unknown_rounding():
    with pytest.raises(ValueError, match="rounding must be one of half_even, half_up"):
        quantize_model("digits-mlp", "max", rounding="nearest")


def test_from_sequential_matches_torch_nchw():
    """A Sequential trained on NCHW tensors computes the same function after conversion (HWC flatten)."""
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(48, 5))
    x = torch.rand(4, 1, 8, 8)
    ref = seq(x).detach()
    net = from_sequential(seq, (8, 8, 1))
    out = net(x.permute(0, 2, 3, 1), quant=False).detach()
    torch.testing.assert_close(out, ref)
