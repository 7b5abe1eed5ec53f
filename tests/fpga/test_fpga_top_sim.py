"""The FPGA system top (``FpgaTop``) run to HALT / to an error through its CSR port in amaranth.sim.

The host side is what docs/fpga.md describes: program and data in memory,
``prog_addr`` / ``prog_len`` / ``dram_bytes`` written one byte at a time,
``ctrl`` bit 0 written to start, ``irq`` awaited, then ``ctrl``,
``err_index``, ``err_arg`` and the counters read back one byte at a time.
The memory port is served by :class:`systolic.sim.amaranth_backend.SimMemory`
on the image of :func:`systolic.arch.memory.place_program`. References: the
NumPy executor (outputs, event counters, errors), the golden model (layer
output), the cycle formulas of :mod:`systolic.arch.timing` (timing counters)
and hand-derived values.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from systolic.arch.config import AcceleratorConfig
from systolic.arch.isa import encode_program
from systolic.arch.latency import ERROR_COMMIT, EVENT_REGISTER
from systolic.arch.memory import MemoryModel, place_program
from systolic.arch.sysmap import (COUNTERS, CSR_READ_LATENCY, EXECUTOR_COUNTERS, csr_map, error_reason,
                                  unpack_counters)
from systolic.arch.timing import program_cycles
from systolic.compiler import Executor, Instr, MachineSpec, Opcode, ProgramError, Target, compile_network
from systolic.compiler.lower import AccelStep
from systolic.compiler.run import read_region, write_region
from systolic.golden.layers import Dense
from systolic.golden.network import QuantizedNetwork
from systolic.golden.qtypes import QType
from systolic.hw.fpga_top import FpgaTop
from systolic.sim.amaranth_backend import SimMemory

TINY = AcceleratorConfig.preset("tiny")
REGS = csr_map()
#: Non-trivial memory timing: one wait cycle per bus word (4 bytes at 2 bytes / cycle), 3-cycle reads.
MEM = MemoryModel(latency=3, bytes_per_cycle=2)
#: Cycle bound of the testbench loop (the programs below take a few hundred cycles).
LIMIT = 20_000


def _run_top(cfg, dram, program, mem=MEM):
    """Place *program* after *dram*, run it on an ``FpgaTop`` through the CSR port only.

    Returns ``(image, seen)``: the memory image after the run and what the host saw.
    """
    blob = encode_program(program)
    image, prog_addr = place_program(dram, blob)
    dut = FpgaTop(config=cfg)
    memory = SimMemory(dut.bus, image, cfg.bus_bytes, mem)
    seen = {"prog_addr": prog_addr}

    async def bench(ctx):
        async def tick():
            memory.cycle(ctx)         # the memory port is served in every cycle, CSR access or not
            await ctx.tick()

        async def write_byte(addr, value):
            ctx.set(dut.csr_addr, addr)
            ctx.set(dut.csr_wdata, value)
            ctx.set(dut.csr_we, 1)
            await tick()
            ctx.set(dut.csr_we, 0)

        async def write(name, value):
            base, nbytes, _ = REGS[name]
            for b in range(nbytes):                       # little-endian
                await write_byte(base + b, (value >> (8 * b)) & 0xFF)

        async def read(name):
            base, nbytes, _ = REGS[name]
            value = 0
            for b in range(nbytes):
                ctx.set(dut.csr_addr, base + b)
                for _ in range(CSR_READ_LATENCY):
                    await tick()
                value |= ctx.get(dut.csr_rdata) << (8 * b)
            return value

        await write("prog_addr", prog_addr)
        await write("prog_len", len(program))
        await write("dram_bytes", dram.size)
        seen["readback"] = (await read("prog_addr"), await read("prog_len"), await read("dram_bytes"))
        seen["irq_before"] = ctx.get(dut.irq)
        seen["ctrl_before"] = await read("ctrl")
        await write_byte(REGS["ctrl"][0], 0x01)          # start
        # Poll ctrl every cycle until irq: run-length list of the ctrl bytes seen, irq on every cycle.
        ctx.set(dut.csr_addr, REGS["ctrl"][0])
        # The byte read after a tick is ctrl as it was CSR_READ_LATENCY cycles earlier: compare it with irq then.
        ctrl_runs, irq_while_busy, cycles, irqs = [], 0, 0, []
        while True:
            irqs.append(ctx.get(dut.irq))
            await tick()
            cycles += 1
            assert cycles < LIMIT, "no irq within the cycle limit"
            if len(irqs) < CSR_READ_LATENCY:
                continue                                  # no byte of the polled address yet
            irq = irqs[-CSR_READ_LATENCY]
            value = ctx.get(dut.csr_rdata)
            if ctrl_runs and ctrl_runs[-1][0] == value:
                ctrl_runs[-1][1] += 1
            else:
                ctrl_runs.append([value, 1])
            irq_while_busy += irq and value & 1
            if irq:
                break
        seen["ctrl_runs"] = [tuple(r) for r in ctrl_runs]
        seen["irq_while_busy"] = irq_while_busy
        seen["irq_after"] = ctx.get(dut.irq)
        seen["ctrl"] = await read("ctrl")
        seen["err_index"] = await read("err_index")
        seen["err_arg"] = await read("err_arg")
        word = 0
        for i, name in enumerate(COUNTERS):
            word |= await read(f"counter_{name}") << (64 * i)
        seen["counters"] = unpack_counters(word)
        # Still latched a few cycles later (irq is a level).
        for _ in range(5):
            await tick()
        seen["irq_later"] = ctx.get(dut.irq)
        seen["ctrl_later"] = await read("ctrl")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return image, seen


def _dense_network():
    """One 5 -> 3 dense layer, fixed seed; on the 2x2 tiny array it takes 3 K-tiles x 2 N-tiles."""
    rng = np.random.default_rng(20240611)
    w_t = QType(8, True, 5)
    layer = Dense(name="fc", inputs=("input",), weight=rng.integers(-128, 128, (5, 3)), w_type=w_t,
                  out_type=QType(8, True, 0), bias=rng.integers(-2000, 2000, 3), relu=False)
    net = QuantizedNetwork(input_type=QType(8, True, 4), input_shape=(5,), layers=(layer,))
    return net, rng.integers(-128, 128, (3, 5))


def test_fpga_top_runs_compiled_layer_to_halt():
    """A compiled dense layer run through the CSR port: outputs, status, irq and every counter."""
    net, x = _dense_network()
    spec = MachineSpec.from_config(TINY, dram_bytes=256)
    cn = compile_network(net, spec, batch=3)
    (step,) = cn.steps
    assert isinstance(step, AccelStep)
    program = step.program
    # The program uses every opcode but the vector unit's (so the run covers every other unit; VEC and DIV run
    # on the same Accelerator in tests/sim/test_vector_rtl.py).
    assert {i.op for i in program} == set(Opcode) - {Opcode.VEC, Opcode.DIV}
    dram = cn.image.copy()
    write_region(dram, cn.regions["input"], x)
    ref = dram.copy()
    want = Executor(spec, ref).run(program)

    image, seen = _run_top(TINY, dram, program)

    # Registers read back as written.
    assert seen["readback"] == (seen["prog_addr"], len(program), 256)
    assert seen["prog_addr"] == 256                      # first 16-byte boundary after the window
    # Before start: idle, no irq. After: done (ctrl bit 1), not busy, no error; irq high and held.
    assert seen["ctrl_before"] == 0 and seen["irq_before"] == 0
    assert seen["ctrl"] == 0b10 and seen["ctrl_later"] == 0b10
    assert seen["irq_after"] == 1 and seen["irq_later"] == 1 and seen["irq_while_busy"] == 0
    # ctrl while polling: busy (0x01) for the whole run, then done (0x02); nothing else in between.
    c = seen["counters"]
    runs = seen["ctrl_runs"]
    assert [v for v, _ in runs][-2:] == [0x01, 0x02]
    assert [v for v, _ in runs][:-2] in ([], [0x00])    # the cycle of the start pulse itself may read idle
    # The host sees busy for exactly `cycles` cycles, and the status's lag behind the controller.
    assert dict(runs)[0x01] == c["cycles"] + EVENT_REGISTER
    assert seen["err_index"] == 0 and seen["err_arg"] == 0

    # Memory: the data window equals the executor's, the program is untouched, the layer output == golden.
    assert np.array_equal(image[:dram.size], ref)
    assert np.array_equal(image[seen["prog_addr"]:], np.frombuffer(encode_program(program), np.uint8))
    assert np.array_equal(read_region(image, cn.regions["fc"]), net(x))
    assert np.array_equal(read_region(ref, cn.regions["fc"]), net(x))

    # Counters: the event counters equal the executor's, the timing ones the cycle formulas'.
    assert {k: c[k] for k in EXECUTOR_COUNTERS} == {k: getattr(want, k) for k in EXECUTOR_COUNTERS}
    assert c["instructions"] == len(program) == 21
    assert c["fetch_bytes"] == 16 * len(program)
    assert c["dram_bytes_written"] == 3 * 3                     # batch 3 x 3 outputs, 8-bit
    pred = program_cycles(TINY, program, seen["prog_addr"], MEM.base_delay(TINY.bus_bytes), MEM.latency)
    assert {k: c[k] for k in pred} == pred
    # docs/isa.md: every cycle of a run is in exactly one controller unit.
    assert sum(c[f"{u}_busy"] for u in ("ctrl", "load", "loadq", "store", "wait")) == c["cycles"]
    assert set(c) == set(COUNTERS)


# ----------------------------------------------------------------------------------------- errors
def _dram_error_case():
    """A STORE whose third line runs past a 64-byte window: instruction 3, code 3 (docs/isa.md), argument
    the last byte it would write, 50 + 2 * 9 + 2 - 1 = 69."""
    dram = (np.arange(64) * 7 % 11).astype(np.uint8)      # small values: no overflow, no saturation
    program = [
        Instr(Opcode.LOAD, dict(target=Target.A, lines=2, elems=2, dram=0, stride=2)),
        Instr(Opcode.LOAD, dict(target=Target.W, lines=2, elems=2, dram=8, stride=2)),
        Instr(Opcode.MATMUL, dict(m=2)),
        Instr(Opcode.STORE, dict(lines=3, elems=2, bits=8, dram=50, stride=9)),
        Instr(Opcode.HALT),
    ]
    return dram, program, 3, 3, 69, "instruction 3 (STORE): DRAM address 69 is past the end of memory (64 bytes)"


def _overflow_case():
    """MATMUL 3 (m = 40, shift 17) writes (2 * 127 * 127) << 17 = 4228120576 > 2**31 - 1 into its last
    32-bit accumulator line (the 39 lines before it are 0): code 11, no offending value (err_arg 0). The
    array unit finds the overflow only when line 39 comes out, after the controller has gone on with the
    independent LOADs 4 and 5: ``err_index`` must still name the MATMUL (docs/isa.md: ``err_index`` is the
    failing instruction), not the controller's current instruction."""
    assert (2 * 127 * 127) << 17 > 2**31 - 1
    dram = np.zeros(64, dtype=np.uint8)
    dram[0:2] = 127          # A line 39 = [127, 127]
    dram[8:12] = 127         # W rows 0, 1 = [127, 127]
    program = [
        Instr(Opcode.LOAD, dict(target=Target.A, zero=1, lines=40, elems=0)),
        Instr(Opcode.LOAD, dict(target=Target.A, lines=1, spad=39, elems=2, dram=0)),
        Instr(Opcode.LOAD, dict(target=Target.W, lines=2, elems=2, dram=8, stride=2)),
        Instr(Opcode.MATMUL, dict(m=40, shift=17)),
        Instr(Opcode.LOAD, dict(target=Target.A, lines=1, elems=2, dram=16, spad=100)),
        Instr(Opcode.LOAD, dict(target=Target.W, lines=1, elems=2, dram=20, spad=10)),
        Instr(Opcode.LOAD, dict(target=Target.A, lines=1, elems=2, dram=24, spad=101)),
        Instr(Opcode.HALT),
    ]
    return dram, program, 11, 3, 0, "instruction 3 (MATMUL): accumulator overflow: a value leaves the 32-bit range"


@pytest.mark.parametrize("case", [_dram_error_case, _overflow_case], ids=["dram_range", "acc_overflow"])
def test_fpga_top_error_status_through_csr(case):
    dram, program, code, index, arg, message = case()
    spec = MachineSpec.from_config(TINY, dram_bytes=dram.size)
    # The executor refuses the same instruction with the same words.
    ex = Executor(spec, dram.copy())
    with pytest.raises(ProgramError) as exc:
        ex.run(program)
    assert (exc.value.index, str(exc.value)) == (index, message)

    image, seen = _run_top(TINY, dram.copy(), program)

    # ctrl: bits 7:4 the error code, not busy, not done; irq high (and held).
    assert seen["ctrl"] == code << 4 and seen["ctrl_later"] == code << 4
    assert seen["irq_after"] == 1 and seen["irq_later"] == 1 and seen["irq_while_busy"] == 0
    assert [v for v, _ in seen["ctrl_runs"]][-2:] == [0x01, code << 4]
    assert (seen["err_index"], seen["err_arg"]) == (index, arg)
    # The status read through the CSR port gives the executor's message.
    assert f"instruction {index} ({program[index].op.name}): " \
           f"{error_reason(code, arg, spec, dram.size, program[index])}" == message
    # Nothing was written to the data window (the failing STORE writes nothing; no other STOREs).
    c = seen["counters"]
    assert np.array_equal(image[:dram.size], dram)
    assert c["dram_bytes_written"] == 0 and c["bus_writes"] == 0
    # busy also covers the cycles the error status is written in (ERROR_COMMIT), which `cycles` does not count
    assert dict(seen["ctrl_runs"])[0x01] == c["cycles"] + EVENT_REGISTER + ERROR_COMMIT > EVENT_REGISTER
    if code == 3:
        # Found by the instruction checker: the run stops at the STORE, whose own work never starts, so
        # the event counters are the executor's up to the failing instruction (it counts it, too).
        assert c["instructions"] == index + 1
        assert {k: c[k] for k in EXECUTOR_COUNTERS} == \
            {k: getattr(ex.counters, k) for k in EXECUTOR_COUNTERS}
    else:
        # The premise of the overflow case: the controller was past the MATMUL when it failed.
        assert c["instructions"] > index + 1
