"""The cycle model (systolic.report.cycles) against the RTL's counters, on every shipped model.

Every accelerated layer of digits-mlp, digits-cnn and digits-resnet (4 test
images) runs on the Verilated Accelerator (direct backend, builds cached per
config) on three configs covering both dataflows and three memory timings;
the prediction equals ``cycles``, every ``<unit>_busy`` and ``<unit>_stall``,
``bus_reads`` and ``bus_writes`` exactly. With random stalls, the RTL's
counters are the prediction plus the random extra accept cycles, each on the
unit that made the request (the stated error of the model).
"""

import pytest

from systolic.compiler import MachineSpec, compile_network
from systolic.hw.config import PRESETS, AcceleratorConfig
from systolic.models import SHIPPED, load_shipped
from systolic.quantize.data import load_for_network
from systolic.report.cycles import UNITS, extra_stall_cycles, predict_network
from systolic.sim.memory import MemoryModel
from systolic.sim.system import run_network_rtl

DRAM_BYTES = 1 << 18
IMAGES = 4

#: (config, memory): both dataflows, accept delays d = 0 / 1 / 3, latencies 1 / 2 / 3.
CASES = {
    "os4x4-d1-L3": (PRESETS["small"], MemoryModel(latency=3, bytes_per_cycle=2)),
    "ws8x8-default": (PRESETS["default"], MemoryModel()),
    "os8x8-d3-L1": (AcceleratorConfig(rows=8, cols=8, dataflow="os"), MemoryModel(latency=1, bytes_per_cycle=2)),
}
MODELS = ("digits-mlp", "digits-cnn", "digits-resnet")
KEYS = ("cycles", "bus_reads", "bus_writes") + tuple(f"{u}_{k}" for u in UNITS for k in ("busy", "stall"))


def _model(name, cfg):
    try:
        net = load_shipped(name)
    except ValueError as exc:
        pytest.skip(str(exc))
    x, _ = load_for_network(net, "test")
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=DRAM_BYTES), batch=IMAGES)
    return cn, net.quantize_input(x[:IMAGES])


def test_every_shipped_model_listed():
    assert set(MODELS) == set(SHIPPED)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
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
            assert p.stall_cycles > 0 and p.expected_extra == 0


@pytest.mark.slow
def test_random_stalls_error_is_the_extra_accept_cycles():
    cfg = PRESETS["small"]
    memory = MemoryModel(latency=2, bytes_per_cycle=2, stall=0.25, seed=5)
    cn, x = _model("digits-cnn", cfg)
    pred = predict_network(cn, cfg, memory)
    run = run_network_rtl(cn, x, cfg, memory)
    total_extra = total_expected = total_var = 0.0
    for layer, c in run.counters.items():
        p = pred[layer]
        extra = extra_stall_cycles(c.rtl, cfg, memory)
        assert extra > 0
        assert c.rtl["cycles"] == p.cycles + extra, layer
        for u in UNITS:   # each extra cycle is on the unit that made the request
            assert c.rtl[f"{u}_busy"] - p.counters[f"{u}_busy"] == c.rtl[f"{u}_stall"] - p.counters[f"{u}_stall"]
        assert c.rtl["bus_reads"] == p.counters["bus_reads"] and c.rtl["bus_writes"] == p.counters["bus_writes"]
        total_extra += extra
        total_expected += p.expected_extra
        total_var += p.extra_std ** 2
    # The stated error: mean n*p/(1-p), standard deviation sqrt(n*p)/(1-p); 5 sigma.
    assert abs(total_extra - total_expected) < 5 * total_var ** 0.5
