"""The cycle model (systolic.report.cycles) against the RTL's counters, on every shipped model.

Every accelerated layer of digits-mlp, digits-cnn and digits-resnet (4 test
images) runs on the Verilated Accelerator (direct backend, builds cached per
config) on three configs covering both dataflows and three memory timings;
the prediction equals ``cycles``, every ``<unit>_busy`` and ``<unit>_stall``,
``idle_mem_stall``, ``bus_reads`` and ``bus_writes`` exactly. The key layer
of docs/results/cycles.md (GEMM 256x512x128 on the 16x16 ``large`` preset)
is checked the same way. With random stalls the RTL is later than the
prediction by at most the random extra accept cycles (the stated error).
"""

import dataclasses

import numpy as np
import pytest

from systolic.compiler import MachineSpec, compile_network
from systolic.arch.config import PRESETS, AcceleratorConfig
from systolic.arch.isa import Opcode
from systolic.models import SHIPPED, load_shipped
from systolic.quantize.data import load_for_network
from systolic.report.cycles import UNITS, extra_accept_cycles, predict_network
from systolic.arch.memory import MemoryModel
from systolic.sim.system import run_network_rtl

DRAM_BYTES = 1 << 18
IMAGES = 4

#: (config, memory): both dataflows, accept delays d = 0 / 1 / 3, latencies 1 / 2 / 3.
CASES = {
    "os4x4-d1-L3": (PRESETS["small"], MemoryModel(latency=3, bytes_per_cycle=2)),
    "ws8x8-default": (PRESETS["default"], MemoryModel()),
    "os8x8-d3-L1": (AcceleratorConfig(rows=8, cols=8, dataflow="os"), MemoryModel(latency=1, bytes_per_cycle=2)),
}
#: The 8x8 OS case needs a build of its own (about a minute): the long set. The default run keeps the
#: 8x8 WS case (the demo's build) and the 4x4 OS one.
LONG_CASES = ("os8x8-d3-L1",)
MODELS = ("digits-mlp", "digits-cnn", "digits-resnet")
KEYS = ("cycles", "bus_reads", "bus_writes", "idle_mem_stall") + tuple(f"{u}_{k}" for u in UNITS for k in ("busy", "stall"))


def _model(name, cfg):
    net = load_shipped(name)      # shipped with the package: a missing or corrupt one is a failure
    x, _ = load_for_network(net, "test")
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=DRAM_BYTES), batch=IMAGES)
    return cn, net.quantize_input(x[:IMAGES])


def test_every_shipped_digits_model_listed():
    """The digits models run here on the RTL. The MNIST ones (larger) are not: their programs are checked on
    the executor against the golden model (tests/compiler/test_schedule.py), not against RTL counters."""
    assert set(MODELS) == {m for m in SHIPPED if m.startswith("digits-")}


@pytest.mark.slow
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.long) if c in LONG_CASES else c for c in CASES])
def test_prediction_equals_rtl_counters(case):
    cfg, memory = CASES[case]
    for name in MODELS:
        cn, x = _model(name, cfg)
        pred = predict_network(cn, cfg, memory)
        run = run_network_rtl(cn, x, cfg, memory)
        assert list(run.counters) == list(pred), name
        assert pred, name
        for layer, c in run.counters.items():
            p = pred[layer]
            assert {k: c.rtl[k] for k in KEYS} == {k: p.counters[k] for k in KEYS}, (name, layer)
            assert p.cycles == sum(i.cycles for i in p.instructions)
            assert len(p.instructions) == c.instructions
            assert p.expected_extra == 0


def _bench():
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "bench_cycles", pathlib.Path(__file__).parents[2] / "scripts" / "bench_cycles.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.slow
@pytest.mark.parametrize("shape", [("gemm", 64, 512, 32), ("conv", 8, 8, 128, 16, 3, 1)], ids=["gemm", "conv"])
def test_ksplit_layers_on_rtl(shape):
    """Large-K layers take the K-split schedule (MATMULs long enough to stream); RTL == golden == model."""
    bench = _bench()
    cfg = PRESETS["default"]
    cn, (M, K, N) = bench.compiled(shape, cfg)
    (step,) = [s for s in cn.steps if hasattr(s, "program")]
    ms = [i.args["m"] for i in step.program if i.op.name == "MATMUL"]
    assert min(ms) >= 2 * cfg.rows + cfg.cols + 1          # the plain tiling would give m = 16 / 7
    memory = MemoryModel()
    (p,) = predict_network(cn, cfg, memory).values()
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, size=(cn.batch,) + tuple(cn.net.input_shape))
    run = run_network_rtl(cn, x, cfg, memory)
    (c,) = run.counters.values()
    assert {k: c.rtl[k] for k in KEYS} == {k: p.counters[k] for k in KEYS}
    assert np.array_equal(run.outputs[cn.net.output_name], cn.net(x))


@pytest.mark.slow
@pytest.mark.long      # a 16x16 build and a 69,000-cycle layer
@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_key_layer_prediction_equals_rtl(dataflow):
    """GEMM 256x512x128 on 16x16, both dataflows: the overlapped schedule the bench reports (STOREs beside the
    next N chunk's MATMULs; OS chunks streamed across MATMULs), cycle for cycle on the RTL, at 95 %
    utilization."""
    bench = _bench()
    cfg = dataclasses.replace(PRESETS["large"], dataflow=dataflow)
    cn, (M, K, N) = bench.compiled(bench.SHAPES["gemm 256x512x128"], cfg)
    c = _layer_on_rtl(cn, cfg, np.random.default_rng(0).integers(-128, 128, size=(M, K)))
    assert M * K * N / (c.rtl["cycles"] * cfg.rows * cfg.cols) >= 0.95


@pytest.mark.slow
@pytest.mark.long      # the 16x16 builds of the key layer's test
@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_conv_layer_on_16x16_rtl(dataflow):
    """A 3x3 conv 16x16x32 -> 32 (batch 2) on 16x16, both dataflows: A double-buffered over several tiles,
    weights preloaded, STOREs beside MATMULs; model == RTL counters, outputs == golden."""
    from tests.compiler.test_schedule import _conv_net

    cfg = dataclasses.replace(PRESETS["large"], dataflow=dataflow)
    net = _conv_net(np.random.default_rng(16), 16, 32, 32, 3, 1, 1)
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=DRAM_BYTES), batch=2)
    prog = cn.steps[0].program
    assert len({i.acc for i in prog if i.op == Opcode.STORE}) == 2      # the two accumulator regions
    _layer_on_rtl(cn, cfg, net.quantize_input(np.random.default_rng(1).random((2, 16, 16, 32))))


def _layer_on_rtl(cn, cfg, x):
    """Run *cn* on the RTL: every timing counter equals the model's and the outputs the golden model's."""
    memory = MemoryModel()
    (p,) = predict_network(cn, cfg, memory).values()
    run = run_network_rtl(cn, x, cfg, memory)
    (c,) = run.counters.values()
    assert {k: c.rtl[k] for k in KEYS} == {k: p.counters[k] for k in KEYS}
    assert np.array_equal(run.outputs[cn.net.output_name], cn.net(x))
    return c


@pytest.mark.slow
def test_random_stalls_error_is_bounded_by_the_extra_accept_cycles():
    cfg = PRESETS["small"]
    memory = MemoryModel(latency=2, bytes_per_cycle=2, stall=0.25, seed=5)
    cn, x = _model("digits-cnn", cfg)
    pred = predict_network(cn, cfg, memory)
    run = run_network_rtl(cn, x, cfg, memory)
    requests = diff = 0
    bound_expected = bound_var = 0.0
    for layer, c in run.counters.items():
        p = pred[layer]
        assert c.rtl["bus_reads"] == p.counters["bus_reads"] and c.rtl["bus_writes"] == p.counters["bus_writes"]
        assert c.rtl["cycles"] >= p.cycles, layer       # stalls only postpone
        requests += p.requests
        diff += c.rtl["cycles"] - p.cycles
        bound_expected += p.expected_extra
        bound_var += p.extra_std ** 2
    # The layers' programs draw their accept delays from one seeded stream, in order.
    extra = extra_accept_cycles(requests, cfg, memory)
    assert 0 < diff <= extra
    # The bound's statistics: mean n*p/(1-p), standard deviation sqrt(n*p)/(1-p); 5 sigma.
    assert abs(extra - bound_expected) < 5 * bound_var ** 0.5
