"""``fold_batchnorm`` against torch: conv/linear followed by ``BatchNorm`` in eval mode (running
statistics) computes the same function as the folded conv/linear alone."""

import copy

import numpy as np
import pytest

from tests.requirements import require

torch = require("torch", "quantize")
from torch import nn  # noqa: E402

from systolic.quantize.graph import fold_batchnorm, from_sequential  # noqa: E402

SEED = 20240611


def randomize(seq, gen):
    """Random weights and non-trivial BN statistics/affine parameters (float64, fixed seed)."""
    with torch.no_grad():
        for m in seq:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen, dtype=torch.float64))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen, dtype=torch.float64))
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
                m.running_var.copy_(torch.rand(c, generator=gen, dtype=torch.float64) * 4 + 0.05)
                m.weight.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
                m.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
    return seq


def folded_graph(seq, input_shape):
    """Convert a deep copy (from_sequential shares modules) and fold it; check the BN is gone so the
    folded net's output comes from the folded weights alone."""
    net = from_sequential(copy.deepcopy(seq), input_shape).eval()
    before = {k: m.weight.detach().clone() for k, m in net.mods.items()}
    out = fold_batchnorm(net)
    assert out is net and len(net.bns) == 0
    assert all(not torch.equal(net.mods[k].weight, before[k]) for k in before)  # weights really changed
    return net


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_conv_bn_eval_equals_folded_conv(bias, eps):
    gen = torch.Generator().manual_seed(SEED)
    seq = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, bias=bias), nn.BatchNorm2d(5, eps=eps)).double()
    randomize(seq, gen).eval()
    x = torch.randn(6, 3, 8, 8, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        ref = seq(x)  # torch's conv then torch's BatchNorm2d with running statistics
        # Guard: the BN is far from the identity, so an unfolded conv would not pass.
        plain = seq[0](x)
        assert float((ref - plain).abs().max()) > 0.5
        net = folded_graph(seq, (8, 8, 3))
        out = net(x.permute(0, 2, 3, 1), quant=False).permute(0, 3, 1, 2)
    assert net.mods["l0"].bias is not None  # a conv without bias gets one from the BN shift
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)


def test_linear_bn1d_eval_equals_folded_linear():
    gen = torch.Generator().manual_seed(SEED + 1)
    seq = nn.Sequential(nn.Linear(12, 7), nn.BatchNorm1d(7)).double()
    randomize(seq, gen).eval()
    x = torch.randn(9, 12, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        ref = seq(x)
        out = folded_graph(seq, (12,))(x, quant=False)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)


def test_fold_in_a_network_with_relu_and_pool():
    """Two conv+BN+ReLU blocks with pooling and a dense head (the digits-cnn shape)."""
    gen = torch.Generator().manual_seed(SEED + 2)
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(24, 10)).double()
    randomize(seq, gen).eval()
    x = torch.rand(5, 1, 8, 8, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        ref = seq(x)
        net = from_sequential(copy.deepcopy(seq), (8, 8, 1)).eval()  # Flatten -> Linear: HWC columns
        fold_batchnorm(net)
        assert len(net.bns) == 0
        out = net(x.permute(0, 2, 3, 1), quant=False)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)
