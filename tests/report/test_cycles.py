"""The cycle model's bookkeeping (no simulator): busy cycles are hw.timing's, stalls follow the requests."""

import numpy as np
import pytest

from systolic.compiler import Instr, MachineSpec, Opcode, Target, compile_network
from systolic.golden.random import random_input, random_network
from systolic.hw.config import PRESETS
from systolic.hw.timing import program_cycles
from systolic.report.cycles import UNITS, predict_network, predict_program
from systolic.report.profile import profile_network
from systolic.sim.memory import MemoryModel, program_address


@pytest.mark.parametrize("preset", ["small", "default"])
def test_busy_equals_timing_and_stalls_follow_requests(preset):
    cfg = PRESETS[preset]
    net = random_network(2, "resnet", 8, input_hw=6)
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=1 << 16), batch=2)
    mem = MemoryModel(latency=3, bytes_per_cycle=2)
    d = mem.base_delay(cfg.bus_bytes)
    pa = program_address(cn.spec.dram_bytes)
    progs = {s.layer: s.program for s in cn.steps if hasattr(s, "program")}
    for layer, p in predict_network(cn, cfg, mem).items():
        want = program_cycles(cfg, progs[layer], pa, d, mem.latency)
        assert {k: p.counters[k] for k in want} == want
        c = p.counters
        assert p.stall_cycles == (c["bus_reads"] + c["bus_writes"]) * d + c["bus_reads"] * (mem.latency - 1)
        assert c["matmul_stall"] == 0
        assert sum(i.cycles for i in p.instructions) == p.cycles


def test_one_load_by_hand():
    cfg = PRESETS["default"]   # 8-byte bus
    mem = MemoryModel(latency=2, bytes_per_cycle=4)   # d = 1
    prog = [Instr(Opcode.LOAD, dict(target=Target.A, lines=2, elems=8, dram=4, stride=16)), Instr(Opcode.HALT)]
    p = predict_program(cfg, prog, 0, mem)
    load = p.instructions[0]
    # 2 lines of 8 bytes at 4 and 20: 2 words each; a read costs 1 + d + L = 4 cycles, waits d + L - 1 = 2.
    assert load.busy["load"] == 1 + 2 * (1 + 2 * 4) and load.stall["load"] == 4 * 2
    assert load.busy["ctrl"] == 4 + 2 * 4 and load.stall["ctrl"] == 2 * 2   # 16-byte fetch at 0: 2 words
    assert p.counters["bus_reads"] == 4 + 4 and p.counters["bus_writes"] == 0
    assert p.per_opcode()["LOAD"] == {"count": 1, "cycles": load.cycles, "stall": 12}
    r = predict_program(cfg, prog, 0, MemoryModel(latency=2, bytes_per_cycle=4, stall=0.5))
    assert r.counters == p.counters and r.expected_extra == 8 and r.expected()["cycles"] == p.cycles + 8


def test_profile_model_fills_stalls():
    cfg = PRESETS["small"]
    net = random_network(1, "mlp", 8)
    prof = profile_network(net, cfg, random_input(net, 3, 1), source="model", progress=False,
                           memory=MemoryModel(latency=3), dram_bytes=1 << 16)
    for layer, c in prof.cycles.items():
        assert c["stall"] > 0 and c["total"] == c["predicted"]
        assert c["compute"] + c["stall"] + c["other"] == c["total"]
    assert np.isfinite(prof.total_cycles)
