"""The shift PE (pe="shift") in the whole Accelerator on Verilator: random networks with power-of-two weights.

A WS (2x2, the ``tiny`` preset) and an OS (4x4, the ``small`` preset) config with the shift PE run random
mlp / cnn / resnet networks whose weights are all 0 or +-2**e (:func:`systolic.golden.random.random_shift_network`):
every layer's output equals the golden model's exactly, the RTL counters equal the executor's, and the
cycle model (:func:`systolic.report.cycles.predict_network`, the named latencies of systolic.arch) equals
the RTL's cycle and unit counters: the shift PE keeps the multiplier PE's timing.
"""

import pytest

from systolic.arch.config import PRESETS
from systolic.arch.memory import MemoryModel
from systolic.compiler import MachineSpec, compile_network
from systolic.golden.random import NETWORK_KINDS, random_input, random_shift_network
from systolic.report.cycles import UNITS, predict_network
from systolic.sim.system import run_network_rtl

from .test_system_rtl import check_run

CONFIGS = {"ws2x2": PRESETS["tiny"].replace(pe="shift"), "os4x4": PRESETS["small"].replace(pe="shift")}
DRAM_BYTES = 1 << 16
KEYS = ("cycles", "bus_reads", "bus_writes", "idle_mem_stall") + tuple(f"{u}_{k}" for u in UNITS
                                                                       for k in ("busy", "stall"))


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("kind", NETWORK_KINDS)
def test_shift_network_on_rtl_equals_golden_and_cycle_model(name, kind):
    cfg = CONFIGS[name]
    seed = NETWORK_KINDS.index(kind) + 3 * list(CONFIGS).index(name)
    net = random_shift_network(seed, kind, 8, per_channel=bool(seed % 2))
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=DRAM_BYTES), batch=2)
    assert any(p == "accelerator" for p in cn.placement.values())
    memory = MemoryModel(latency=2)
    run = check_run(cn, random_input(net, 2, seed), cfg, memory)     # outputs == golden, counters == executor
    pred = predict_network(cn, cfg, memory)
    assert list(run.counters) == list(pred)
    for layer, c in run.counters.items():
        assert {k: c.rtl[k] for k in KEYS} == {k: pred[layer].counters[k] for k in KEYS}, layer
