"""Grouped and depthwise convolutions on the Verilated Accelerator (docs/isa.md, "Grouped and depthwise
convolution"): the compiler's block-diagonal mapping is bit-exact on the RTL and the cycle model follows it.

Two configs, both dataflows, as tests/sim/test_zero_tiles_rtl.py: the ``small`` preset (4x4 output-stationary)
and the ``default`` preset (8x8 weight-stationary). Two networks per config: the shipped mnist-mobilenet with
its ReLU6 clamps removed (the requantizers have no upper clamp; without them every conv, its four depthwise
layers included, runs on the accelerator), and a small random network of grouped convolutions (groups 2 and 4,
depthwise with channel multiplier 2, a multipoint depthwise layer, stride 2, channels not a multiple of the
array). Each must give the golden model's outputs exactly, the executor's event counts (``check_run``), RTL
cycle counters equal to the cycle model (:func:`systolic.report.cycles.predict_network`), and, for a depthwise
layer with ``c_in`` a multiple of the array, exactly ``kh*kw`` MATMULs per N chunk and M tile.
"""

import dataclasses
import math

import numpy as np
import pytest

from systolic.arch.config import PRESETS
from systolic.arch.memory import MemoryModel
from systolic.compiler import MachineSpec, Opcode, compile_network
from systolic.flows import resolve_model
from systolic.golden import Conv2D, QType, QuantizedNetwork
from systolic.golden.random import random_input
from systolic.report.cycles import UNITS, predict_network

from tests.sim.test_system_rtl import check_run

CONFIGS = {"os4x4": PRESETS["small"], "ws8x8": PRESETS["default"]}
KEYS = ("cycles", "bus_reads", "bus_writes", "idle_mem_stall") + tuple(
    f"{u}_{k}" for u in UNITS for k in ("busy", "stall"))
DEPTHWISE = ("b1dw", "b2dw", "b3dw", "b4dw")


def _mobilenet():
    net, _ = resolve_model("mnist-mobilenet")
    layers = [dataclasses.replace(lay, out_max=None) if getattr(lay, "out_max", None) is not None else lay
              for lay in net.layers]
    return QuantizedNetwork(net.input_type, net.input_shape, layers, rounding=net.rounding), 2


def _random_grouped():
    rng = np.random.default_rng(11)
    w_t = QType(8, True, 6)

    def conv(name, src, cin, cout, groups, k, stride, pad, relu, points=1):
        cig = cin // groups
        extra = {}
        if points > 1:
            extra = dict(extra_weights=rng.integers(-9, 10, (points - 1, k, k, cig, cout)), extra_shifts=[5])
        return Conv2D(name=name, inputs=(src,), weight=rng.integers(-60, 61, (k, k, cig, cout)), w_type=w_t,
                      out_type=QType(8, not relu, 2), bias=rng.integers(-3000, 3000, cout), relu=relu,
                      stride=stride, padding=pad, groups=groups, **extra)

    layers = [
        conv("g2", "input", 6, 10, 2, 3, 1, 1, True),            # groups 2, channels not a multiple of 4 / 8
        conv("dw2", "g2", 10, 20, 10, 3, 2, 1, False),           # depthwise, channel multiplier 2, stride 2
        conv("g4", "dw2", 20, 8, 4, 1, 1, 0, True),              # groups 4, 1x1
        conv("dwmp", "g4", 8, 8, 8, 3, 1, 1, False, points=2),   # multipoint depthwise
    ]
    return QuantizedNetwork(QType(8, True, 5), (9, 9, 6), layers), 2


NETWORKS = {"mnist-mobilenet": _mobilenet, "random-grouped": _random_grouped}


@pytest.mark.slow
@pytest.mark.parametrize("cfg_name", list(CONFIGS))
@pytest.mark.parametrize("case", list(NETWORKS))
def test_grouped_convs_on_rtl(cfg_name, case):
    cfg = CONFIGS[cfg_name]
    net, batch = NETWORKS[case]()
    spec = MachineSpec.from_config(cfg, dram_bytes=1 << 20)
    cn = compile_network(net, spec, batch=batch)
    grouped = [lay for lay in net.layers if getattr(lay, "groups", 1) > 1]
    assert grouped and all(cn.placement[lay.name] == "accelerator" for lay in grouped)
    if case == "mnist-mobilenet":
        assert [lay.name for lay in grouped] == list(DEPTHWISE)
    R, C = cfg.rows, cfg.cols
    steps = {s.layer: s for s in cn.steps}
    for lay in grouped:
        kh, kw = lay.kernel
        cin, cout = lay.in_channels, lay.out_channels
        if lay.groups == cin == cout and cin % R == 0 and R == C and lay.extra_weights is None:
            mm = [i for i in steps[lay.name].program if i.op == Opcode.MATMUL]
            M = steps[lay.name].gemm[0]
            # one diagonal tile per kernel tap and N chunk, per M tile
            assert len(mm) == kh * kw * (cout // C) * math.ceil(M / max(i.m for i in mm))
    x = random_input(net, batch, 5)
    memory = MemoryModel(latency=2)
    run = check_run(cn, x, cfg, memory)       # outputs == golden, counters == executor, timing formulas
    gold = net.run(x)
    for name in gold:
        assert np.array_equal(run.outputs[name], gold[name]), name
    pred = predict_network(cn, cfg, memory)
    assert set(pred) == set(run.counters) >= {lay.name for lay in grouped}
    for name, c in run.counters.items():
        assert {k: c.rtl[k] for k in KEYS} == {k: pred[name].counters[k] for k in KEYS}, name
        assert c.macs == steps[name].array_macs, name
