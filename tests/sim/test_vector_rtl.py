"""Every layer on the accelerator, on the RTL: the shipped models (digits and MNIST-28, the depthwise-separable
one included) and random networks mixing convolutions, depthwise and grouped ones, pooling, residual adds,
global average pools and dense layers, with ``host_layers == []``, on both dataflows (``small``: 4x4
output-stationary, ``default``: 8x8 weight-stationary). Each run checks the outputs of every layer against the
golden model, the RTL counters against the executor's and the cycle counters against the cycle model
(:func:`tests.sim.test_system_rtl.check_run`)."""

import pytest

from systolic.arch.config import PRESETS
from systolic.arch.memory import MemoryModel
from systolic.compiler import MachineSpec, compile_network
from systolic.golden.random import random_input, random_network
from systolic.models import SHIPPED, load_shipped
from systolic.quantize.data import load_for_network

from .test_system_rtl import check_run

CONFIGS = {"small": MemoryModel(latency=3, bytes_per_cycle=2), "default": MemoryModel()}


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(CONFIGS))
def test_every_shipped_model_all_on_the_accelerator(preset):
    cfg = PRESETS[preset]
    for name in SHIPPED:
        net = load_shipped(name)
        x, _ = load_for_network(net, "test")
        cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=1 << 20), batch=2)
        assert cn.host_layers == [], (name, cn.host_layers)
        check_run(cn, net.quantize_input(x[:2]), cfg, CONFIGS[preset])


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(CONFIGS))
def test_random_mixed_networks(preset):
    cfg = PRESETS[preset]
    for seed, hw, ch in ((0, 8, 3), (1, 11, 2), (2, 6, 5), (3, 9, 4)):
        net = random_network(seed, "mixed", 8, input_hw=hw, channels=ch)
        kinds = {layer.kind for layer in net.layers}
        assert {"conv2d", "add", "maxpool2d", "avgpool2d", "dense"} <= kinds
        assert any(getattr(layer, "groups", 1) > 1 for layer in net.layers)
        cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=1 << 16), batch=2)
        assert cn.host_layers == []
        check_run(cn, random_input(net, 2, seed), cfg, CONFIGS[preset])
