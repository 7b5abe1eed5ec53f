"""The ImageNet-shaped zoo networks (systolic.models.imagenet): their shapes against the published sizes of
ResNet-18, ResNet-50 and MobileNetV2, determinism, the executor against the golden model at a small input
size, and DRAM sized to the network by ``fit_dram``."""

import numpy as np
import pytest

from systolic.arch.config import PRESETS
from systolic.compiler import CompileError, MachineSpec, compile_network, run_compiled
from systolic.flows import MIN_DRAM_BYTES, compile_checked, resolve_model
from systolic.golden.layers import Conv2D, Dense
from systolic.golden.random import random_input
from systolic.models.imagenet import IMAGENET, imagenet_network, mobilenetv2, resnet18

#: Published sizes at 224x224 (multiply-accumulates, weights), as torchvision's model docs list them:
#: ResNet-18 1.81 GFLOPS / 11.69 M, ResNet-50 4.09 / 25.56 M, MobileNetV2 0.30 / 3.50 M (weights include the
#: batch norm parameters and biases there; here the biases are separate and batch norm is folded).
PUBLISHED = {"resnet18-imagenet": (1.81e9, 11.69e6), "resnet50-imagenet": (4.09e9, 25.56e6),
             "mobilenetv2-imagenet": (0.30e9, 3.50e6)}


def _macs_and_weights(net):
    macs = weights = 0
    for layer in net.layers:
        if isinstance(layer, (Conv2D, Dense)):
            out = net.shape(layer.name)
            weights += layer.weight.size
            macs += int(np.prod(out[:-1])) * layer.weight.size      # every output pixel uses every weight once
    return macs, weights


@pytest.mark.parametrize("name", list(IMAGENET))
def test_sizes_are_the_published_networks(name):
    net = imagenet_network(name)
    assert net.input_shape == (224, 224, 3) and net.shape(net.output_name) == (1000,)
    macs, weights = _macs_and_weights(net)
    pub_macs, pub_weights = PUBLISHED[name]
    assert abs(macs / pub_macs - 1) < 0.02, macs
    assert abs(weights / pub_weights - 1) < 0.03, weights
    assert net.meta["accuracy"].startswith("not claimed")


def test_deterministic_from_the_seed_and_resolved_by_name():
    a, b, c = resnet18(3, hw=32), resnet18(3, hw=32), resnet18(4, hw=32)
    assert all(np.array_equal(x.weight, y.weight) for x, y in zip(a.layers, b.layers) if hasattr(x, "weight"))
    assert not np.array_equal(a.layers[0].weight, c.layers[0].weight)
    net, kind = resolve_model("mobilenetv2-imagenet")
    assert kind == "random" and any(getattr(layer, "groups", 1) > 1 for layer in net.layers)   # depthwise
    with pytest.raises(ValueError, match="resnet50-imagenet"):
        resolve_model("resnet34-imagenet")


@pytest.mark.parametrize("build", [resnet18, mobilenetv2], ids=["resnet18", "mobilenetv2"])
def test_small_input_runs_on_the_executor_equal_to_golden(build):
    net = build(1, hw=32, classes=10)
    cn = compile_checked(net, PRESETS["large"], 2)
    x = random_input(net, 2, 0)
    outs, _ = run_compiled(cn, x)
    gold = net.run(x)
    for name in gold:
        assert np.array_equal(outs[name], gold[name]), name


def test_dram_is_sized_to_the_network():
    net = resnet18(0, hw=64)
    spec = MachineSpec.from_config(PRESETS["large"], dram_bytes=MIN_DRAM_BYTES)
    with pytest.raises(CompileError, match=r"DRAM of 262144 bytes is full \(\d+ needed\)"):
        compile_network(net, spec)
    cn = compile_network(net, spec, fit_dram=True)
    size = cn.spec.dram_bytes
    assert size & (size - 1) == 0 and size > MIN_DRAM_BYTES and cn.image.size == size
    end = max(r.addr + int(np.prod(r.shape)) for r in cn.regions.values())
    assert size // 2 < end <= size                       # the smallest power of two that holds every tensor
    again = compile_network(net, MachineSpec.from_config(PRESETS["large"], dram_bytes=size))
    assert np.array_equal(again.image, cn.image) and again.spec == cn.spec
