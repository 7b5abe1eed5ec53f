"""The cycle model's bookkeeping (no simulator): timeline sums, hand-worked gathers, interlocks and overlap."""

import pytest

from systolic.compiler import Instr, MachineSpec, Opcode, Target, compile_network
from systolic.golden.random import random_input, random_network
from systolic.arch.config import PRESETS, AcceleratorConfig
from systolic.arch.latency import DECODE_CYCLES, INTERLOCK_REGISTER
from systolic.arch.timing import MAX_READS, gather_accepts, program_cycles
from systolic.report.cycles import CONTROLLER_UNITS, extra_accept_cycles, predict_network, predict_program
from systolic.flows import run_images
from systolic.arch.memory import MemoryModel


@pytest.mark.parametrize("preset", ["small", "default"])
def test_counters_are_consistent(preset):
    cfg = PRESETS[preset]
    net = random_network(2, "resnet", 8, input_hw=6)
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=1 << 16), batch=2)
    mem = MemoryModel(latency=3, bytes_per_cycle=2)
    progs = {s.layer: s.program for s in cn.steps if hasattr(s, "program")}
    predicted = predict_network(cn, cfg, mem)
    assert set(predicted) == set(progs)           # one prediction per accelerated layer
    # (That these counters equal the RTL's is tests/sim/test_cycle_model.py; here: their bookkeeping.)
    for layer, p in predicted.items():
        c = p.counters
        assert c["cycles"] == p.cycles == p.instructions[-1].end + 1    # HALT's last cycle ends the program
        # The controller is in exactly one unit per cycle; the array unit overlaps it.
        assert sum(c[f"{u}_busy"] for u in CONTROLLER_UNITS) == c["cycles"] == sum(i.cycles for i in p.instructions)
        if cn.net.layer(layer).kind not in ("dense", "conv2d"):       # the vector unit's: no MATMUL
            assert c["matmul_busy"] == 0 < c["vec_busy"] and {i.op for i in p.instructions} >= {"VEC", "STORE"}
            continue
        assert 0 < c["matmul_busy"] < c["cycles"] and c["matmul_stall"] == 0 and c["vec_busy"] == 0
        assert 0 < c["idle_mem_stall"] <= p.stall_cycles
        split = p.split()
        assert split["compute"] + split["memory_stall"] + split["other"] == c["cycles"] and split["other"] >= 0
        # Overlap: instructions are fetched while the array unit is busy with an earlier MATMUL.
        spans = [i.array for i in p.instructions if i.array]
        assert any(lo <= i.fetch <= hi for i in p.instructions for lo, hi in spans)


def test_gather_closed_form_is_the_recurrence():
    for d, lat in ((0, 1), (0, 2), (1, 2), (0, 20), (2, 40), (0, 7), (0, 8)):
        a = gather_accepts(5, 40, d, lat)
        ref = []
        for j in range(40):
            t = (ref[-1] + 1 if ref else 6)                  # valid the cycle after the previous accept
            if j >= MAX_READS:
                t = max(t, ref[j - MAX_READS] + lat + 1)     # a slot frees the cycle after an answer
            ref.append(t + d)
        assert list(a) == ref, (d, lat)


def test_one_load_by_hand():
    cfg = PRESETS["default"]   # 8-byte bus
    mem = MemoryModel(latency=2, bytes_per_cycle=4)   # d = 1
    prog = [Instr(Opcode.LOAD, dict(target=Target.A, lines=2, elems=8, dram=4, stride=16)), Instr(Opcode.HALT)]
    p = predict_program(cfg, prog, 0, mem)
    load, halt = p.instructions
    # Fetch at 0 (2 words): accepted in 2 and 4 (each d = 1 cycle after it is valid), answered in 4 and 6;
    # FETCH_BUF 7, DECODE 8, CHECK 9: 10 ctrl cycles, 3 of them waiting (1, 3, 5).
    assert DECODE_CYCLES == 3
    assert load.busy["ctrl"] == 10 and load.stall["ctrl"] == 3
    # LOAD state in 10 starts a gather of 4 words (bytes 4..11 and 20..27): accepted 12, 14, 16, 18,
    # answered 14, 16, 18, 20; 10 cycles after the LOAD state, 5 of them waiting (11, 13, 15, 17, 19).
    assert load.busy["load"] == 11 and load.stall["load"] == 5
    # HALT's fetch starts in 20, the LOAD's last cycle: accepted 22 and 24, answered 24 and 26; CHECK 29.
    assert (halt.fetch, halt.start) == (20, 29) and p.cycles == 30
    assert halt.busy["ctrl"] == 29 - 21 + 1 and halt.stall["ctrl"] == 3
    assert p.counters["bus_reads"] == 2 + 4 + 2 and p.counters["bus_writes"] == 0
    assert p.per_opcode()["LOAD"] == {"count": 1, "cycles": load.cycles, "stall": 8, "array": 0}
    r = predict_program(cfg, prog, 0, MemoryModel(latency=2, bytes_per_cycle=4, stall=0.5))
    assert r.counters == p.counters and r.expected_extra == 8


def test_interlocks_hold_only_conflicting_loads():
    cfg = AcceleratorConfig(rows=4, cols=4, spad_a_bytes=256, spad_w_bytes=256, acc_entries=64, bus_bytes=4)
    mm = Instr(Opcode.MATMUL, dict(m=32, a=0, w=0, acc=0))
    free = Instr(Opcode.LOAD, dict(target=Target.A, lines=4, spad=32, elems=4, dram=0, stride=4))
    clash = Instr(Opcode.LOAD, dict(target=Target.A, lines=4, spad=30, elems=4, dram=0, stride=4))
    # W line 3 of the MATMUL's tile: read into registers in the first rows + 1 cycles after the unit takes it,
    # long before the LOAD is decoded, so the LOAD is not held.
    w_late = Instr(Opcode.LOAD, dict(target=Target.W, lines=1, spad=3, elems=4, dram=0))
    for load, held in ((free, False), (clash, True), (w_late, False)):
        p = predict_program(cfg, [mm, load, Instr(Opcode.HALT)], 0)
        m_i, l_i, h_i = p.instructions
        lo, hi = m_i.array
        assert (l_i.busy.get("wait", 0) > 0) == held
        if held:
            assert l_i.start > hi - cfg.latencies.ws_writeback  # after the last A read of the MATMUL
        else:
            assert l_i.start < hi and l_i.end < hi              # entirely behind the MATMUL
        assert h_i.start == max(hi + 1, h_i.start)              # HALT waits for the array unit
    # A STORE of lines the MATMUL writes waits for its last write; one of other lines runs beside it.
    st = Instr(Opcode.STORE, dict(lines=1, acc=31, elems=4, bits=8, dram=0))
    p = predict_program(cfg, [mm, st, Instr(Opcode.HALT)], 0)
    assert p.instructions[1].start == p.instructions[0].array[1] + 1 + INTERLOCK_REGISTER
    st = Instr(Opcode.STORE, dict(lines=1, acc=32, elems=4, bits=8, dram=0))
    p = predict_program(cfg, [mm, st, Instr(Opcode.HALT)], 0)
    assert p.instructions[1].busy.get("wait", 0) == 0 and p.instructions[1].end < p.instructions[0].array[1]


def test_weight_load_waits_only_while_the_tile_is_read():
    """A LOAD into the W lines of a MATMUL still in the queue slot waits until the weight loader has read
    the tile (weight_tile_read cycles after taking it), not until the MATMUL's operands are fed."""
    cfg = AcceleratorConfig(rows=4, cols=4, spad_a_bytes=256, spad_w_bytes=256, acc_entries=64, bus_bytes=4)
    # Two long MATMULs occupy the feeder and the weight loader, so mm waits in the queue slot, tile unread.
    busy = [Instr(Opcode.MATMUL, dict(m=40, a=0, w=w, acc=0)) for w in (4, 8)]
    mm = Instr(Opcode.MATMUL, dict(m=8, a=40, w=0, acc=40))
    w_load = Instr(Opcode.LOAD, dict(target=Target.W, lines=1, spad=2, elems=4, dram=0))
    p = predict_program(cfg, [*busy, mm, w_load, Instr(Opcode.HALT)], 0)
    _, _, m_i, l_i, _ = p.instructions
    assert l_i.busy.get("wait", 0) > 0                          # held: the tile is not read yet
    assert l_i.start < m_i.array[1] - 8                          # but released long before mm's last write


def test_extra_accept_cycles_follow_the_memory_model():
    import random

    cfg = PRESETS["default"]      # 8-byte bus: base delay 0 at 8 bytes per cycle, 1 at 4
    for bpc, base in ((8, 0), (4, 1)):
        mem = MemoryModel(latency=2, bytes_per_cycle=bpc, stall=0.3, seed=3)
        # The documented draw (systolic.arch.memory): per request, one more cycle while random() < stall,
        # one random.Random(seed) stream; written here from that text, not from MemoryModel.delays.
        rng, ref = random.Random(3), 0
        for _ in range(50):
            while rng.random() < 0.3:
                ref += 1
        assert extra_accept_cycles(50, cfg, mem) == ref > 0
        assert mem.base_delay(cfg.bus_bytes) == base
    # The mean of the geometric stalls: p / (1 - p) per request (3/7 for p = 0.3), within 5 sigma.
    n, p = 20000, 0.3
    extra = extra_accept_cycles(n, cfg, MemoryModel(stall=p, seed=11))
    mean, sd = n * p / (1 - p), (n * p) ** 0.5 / (1 - p)
    assert abs(extra - mean) < 5 * sd
    assert extra_accept_cycles(10, cfg, MemoryModel()) == 0


@pytest.mark.slow
def test_profile_model_fills_stalls():
    cfg = PRESETS["small"]
    net = random_network(1, "mlp", 8)
    x = random_input(net, 3, 1)
    kw = dict(progress=False, memory=MemoryModel(latency=12), dram_bytes=1 << 16)
    prof = run_images(net, cfg, x, source="model", **kw)
    rtl = run_images(net, cfg, x, source="rtl", backend="direct", **kw)     # the independent source
    assert set(prof.cycles) == set(rtl.cycles) and prof.cycles
    for layer, c in prof.cycles.items():
        assert c["stall"] > 0
        assert c["compute"] + c["stall"] + c["other"] == c["total"] and c["other"] >= 0
        assert c["total"] == rtl.cycles[layer]["total"] and c["stall"] == rtl.cycles[layer]["stall"]
    assert prof.total_cycles == sum(c["total"] for c in rtl.cycles.values())
    assert isinstance(prof.total_cycles, int)


@pytest.mark.parametrize("preset", ["tiny", "small", "default", "large"])
def test_cycle_bound_is_an_upper_bound(preset):
    from systolic.arch.timing import cycle_bound

    cfg = PRESETS[preset]
    net = random_network(3, "cnn", 8, input_hw=6)
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=1 << 16), batch=3)
    for mem in (MemoryModel(), MemoryModel(latency=9, bytes_per_cycle=1)):
        d = mem.base_delay(cfg.bus_bytes)
        for s in cn.steps:
            if hasattr(s, "program"):
                exact = program_cycles(cfg, s.program, 1 << 16, d, mem.latency)["cycles"]
                assert exact <= cycle_bound(cfg, s.program, d, mem.latency) <= 20 * exact
