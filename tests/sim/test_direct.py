"""The direct Verilator driver (systolic.sim.direct): pokes, and networks == golden, counters == executor.

Uses the ``small`` preset (4x4 output-stationary, 4-byte bus); one build
(cached) serves every test. The long model runs of tests/sim/test_system_rtl.py
go through the same driver (the default backend of run_network_rtl); the
cross-check with the cocotb testbench is here.
"""

import numpy as np
import pytest

from systolic.compiler import Instr, MachineSpec, Opcode, ProgramError, compile_network, run_compiled
from systolic.arch.isa import encode_program
from systolic.compiler.lower import AccelStep
from systolic.golden.random import random_input, random_network
from systolic.arch.config import PRESETS
from systolic.arch.sysmap import CONTROLLER_UNITS, EXECUTOR_COUNTERS
from systolic.arch.timing import program_cycles
from systolic.sim import SimulationError
from systolic.sim.direct import DirectSim
from systolic.arch.memory import MemoryModel, program_address
from systolic.sim.system import run_network_rtl, run_program_rtl

CFG = PRESETS["small"]
DRAM_BYTES = 1 << 16


def _check(cn, x, memory, run):
    gold = cn.net.run(x)
    assert list(run.outputs) == list(gold)
    for name in gold:
        assert np.array_equal(run.outputs[name], gold[name]), name
    _, ex = run_compiled(cn, x)
    programs = {s.layer: s.program for s in cn.steps if isinstance(s, AccelStep)}
    assert list(run.counters) == list(ex)
    for layer, c in run.counters.items():
        want = ex[layer].to_dict()
        assert c.executor_view() == {k: want[k] for k in EXECUTOR_COUNTERS}, layer
        assert c.by_opcode == want["by_opcode"], layer
        assert c.rtl["cycles"] == sum(c.rtl[f"{u}_busy"] for u in CONTROLLER_UNITS)
        if memory.stall == 0:
            pred = program_cycles(CFG, programs[layer], program_address(cn.spec.dram_bytes),
                                  memory.base_delay(CFG.bus_bytes), memory.latency)
            assert {k: c.rtl[k] for k in pred} == pred, layer


def test_poke_peek_step():
    with DirectSim(CFG, mem_bytes=256) as sim:
        assert sim.ports["bus__req_wdata"] == 8 * CFG.bus_bytes
        assert sim.peek("busy") == 0 and sim.peek("done") == 0
        sim.poke("prog_len", 5)
        sim.eval()
        assert sim.peek("prog_len") == 5
        with pytest.raises(ValueError) as info:
            sim.poke("prog_addr", 1 << 32)
        assert type(info.value) is ValueError
        assert str(info.value) == "prog_addr is 32 bits wide; 4294967296 does not fit"
        with pytest.raises(KeyError) as info:
            sim.peek("nope")
        assert info.value.args == ("no port 'nope'; ports: " + ", ".join(sim.ports),)
        assert set(sim.ports) >= {"clk", "start", "done", "error", "bus__req_valid", "bus__resp_data"}
        before = sim.cycles
        sim.step(7)
        assert sim.cycles == before + 7
        # A one-instruction program (HALT) by hand: start for one cycle, wait for busy to fall.
        blob = encode_program([Instr(Opcode.HALT)])
        sim.mem[16:32] = np.frombuffer(blob, dtype=np.uint8)
        sim.poke("prog_addr", 16)
        sim.poke("prog_len", 1)
        sim.poke("dram_bytes", 16)
        sim.poke("start", 1)
        sim.step(1)
        sim.poke("start", 0)
        for _ in range(100):
            sim.step(1)
            if not sim.peek("busy"):
                break
        assert sim.peek("done") == 1 and sim.peek("error") == 0


@pytest.mark.parametrize("kind", ["mlp", "resnet"])
def test_network_equals_golden_and_executor(kind):
    net = random_network(3, kind, 8, input_hw=6)
    cn = compile_network(net, MachineSpec.from_config(CFG, dram_bytes=DRAM_BYTES), batch=2)
    x = random_input(net, 2, 3)
    memory = MemoryModel(latency=2)
    _check(cn, x, memory, run_network_rtl(cn, x, CFG, memory, backend="direct"))


def test_random_stalls_same_as_cocotb():
    """Every RTL counter (cycles included) equals the cocotb testbench's under random stalls."""
    net = random_network(5, "cnn", 8, input_hw=6)
    cn = compile_network(net, MachineSpec.from_config(CFG, dram_bytes=DRAM_BYTES), batch=1)
    x = random_input(net, 1, 5)
    memory = MemoryModel(latency=3, bytes_per_cycle=2, stall=0.3, seed=4)
    direct = run_network_rtl(cn, x, CFG, memory, backend="direct")
    _check(cn, x, memory, direct)
    ref = run_network_rtl(cn, x, CFG, memory, backend="cocotb")
    assert {k: c.rtl for k, c in direct.counters.items()} == {k: c.rtl for k, c in ref.counters.items()}
    for name in ref.outputs:
        assert np.array_equal(direct.outputs[name], ref.outputs[name])


def test_amaranth_backend_same_as_direct():
    """The amaranth.sim backend through the same network loop: every RTL counter equal to the direct
    driver's under random stalls (its memory's stall stream goes on across programs, as theirs)."""
    net = random_network(1, "mlp", 8)           # three dense layers
    cn = compile_network(net, MachineSpec.from_config(CFG, dram_bytes=DRAM_BYTES), batch=2)
    x = random_input(net, 2, 7)
    memory = MemoryModel(latency=2, bytes_per_cycle=2, stall=0.2, seed=9)
    direct = run_network_rtl(cn, x, CFG, memory, backend="direct")
    amaranth = run_network_rtl(cn, x, CFG, memory, backend="amaranth")
    _check(cn, x, memory, amaranth)
    assert len(amaranth.counters) >= 2          # several programs: the stall stream crosses them
    assert {k: c.rtl for k, c in direct.counters.items()} == {k: c.rtl for k, c in amaranth.counters.items()}
    assert sum(c.rtl["load_stall"] for c in amaranth.counters.values()) > 0


def test_bad_program_raises_like_executor():
    prog = [Instr(Opcode.LOAD, dict(target=0, lines=1, elems=4, dram=254, stride=4)), Instr(Opcode.HALT)]
    dram = np.zeros(256, dtype=np.uint8)
    with pytest.raises(ProgramError) as want:
        from systolic.compiler import Executor
        Executor(MachineSpec.from_config(CFG, dram_bytes=256), dram.copy()).run(prog)
    with pytest.raises(ProgramError) as got:
        run_program_rtl(CFG, dram, prog, backend="direct")
    assert str(got.value) == str(want.value)


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"^backend must be one of direct, cocotb, amaranth, not 'x'$"):
        run_program_rtl(CFG, np.zeros(16, dtype=np.uint8), [Instr(Opcode.HALT)], backend="x")


def test_memory_past_end_is_an_error():
    with DirectSim(CFG, mem_bytes=8) as sim:   # a 16-byte instruction fetch from 0 reads past the end
        sim.poke("prog_len", 1)
        sim.poke("dram_bytes", 8)
        sim.poke("start", 1)
        sim.step(1)
        sim.poke("start", 0)
        with pytest.raises(SimulationError, match=r"^memory access at byte 8 past the end of the 8-byte memory$"):
            sim.step(50)
