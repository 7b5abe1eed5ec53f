"""amaranth.sim unit tests of the system blocks: DMA, accumulator buffer, controller; lint of the system Verilog."""


import numpy as np
import pytest
from amaranth.sim import Simulator

from systolic.compiler import Executor, Instr, MachineSpec, Opcode, ProgramError, Target, compile_network, \
    run_compiled
from systolic.arch.isa import encode_program
from systolic.golden.random import random_input, random_network
from systolic.arch.config import AcceleratorConfig
from systolic.arch.sysmap import ERR_BAD_OPCODE, ERR_NO_HALT, ERR_OVERFLOW, ERR_VALUE, EXECUTOR_COUNTERS, error_reason
from systolic.arch.latency import ACC_READ, ACC_UPDATE
from systolic.hw.accumulator import AccumulatorBuffer
from systolic.hw.system import Accelerator
from systolic.arch.timing import program_cycles, program_timeline
from systolic.arch.memory import MemoryModel, place_program
from systolic.sim.amaranth_backend import run_program_amaranth


# ---------------------------------------------------------------------------- accumulator buffer
def test_accumulator_buffer_overwrite_accumulate_shift_and_overflow():
    dut = AccumulatorBuffer(cols=2, lines=4, acc_bits=16, psum_bits=18)
    seen = []

    async def bench(ctx):
        async def update(addr, psum, acc, shift):
            ctx.set(dut.upd.valid, 1)
            ctx.set(dut.upd.addr, addr)
            ctx.set(dut.upd.accumulate, acc)
            ctx.set(dut.upd.shift, shift)
            for c, v in enumerate(psum):
                ctx.set(dut.upd.psum[c], v)
            reads = ctx.get(dut.ev_read)
            await ctx.tick()
            ctx.set(dut.upd.valid, 0)
            await ctx.tick().repeat(ACC_UPDATE - 1)
            ovf = ctx.get(dut.overflow)         # flagged in the cycle the line is written
            await ctx.tick()
            return reads, ovf

        async def read(addr):
            ctx.set(dut.rd.en, 1)
            ctx.set(dut.rd.addr, addr)
            await ctx.tick()
            ctx.set(dut.rd.en, 0)
            for _ in range(ACC_READ - 1):
                await ctx.tick()
            return [ctx.get(dut.rd.data[c]) for c in range(2)]

        seen.append(await update(1, [5, -7], 0, 0))        # overwrite
        seen.append(await read(1))
        seen.append(await update(1, [3, 2], 1, 0))         # accumulate
        seen.append(await read(1))
        seen.append(await update(1, [1, -1], 1, 4))        # accumulate with shift: += psum << 4
        seen.append(await read(1))
        seen.append(await update(2, [-3, 1], 0, 2))        # overwrite with shift
        seen.append(await read(2))
        seen.append(await update(2, [0, 8191], 1, 2))    # 4 + 32764 leaves the 16-bit range
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen[0] == (0, 0) and seen[1] == [5, -7]
    assert seen[2] == (1, 0) and seen[3] == [8, -5]
    assert seen[4] == (1, 0) and seen[5] == [24, -21]
    assert seen[6] == (0, 0) and seen[7] == [-12, 4]
    assert seen[8] == (1, 1)


# ------------------------------------------------------------------------------- controller
TINY = {
    "ws": AcceleratorConfig(rows=2, cols=3, dataflow="ws", spad_a_bytes=128, spad_w_bytes=64, acc_entries=8,
                            bus_bytes=4),
    "os": AcceleratorConfig(rows=3, cols=2, dataflow="os", spad_a_bytes=192, spad_w_bytes=64, acc_entries=7,
                            bus_bytes=8),
}


def _check_run(cfg, prog, mem, dram, ref, got, want):
    """A completed run: DRAM == the executor's, event counters == the executor's, every timing counter ==
    the cycle timeline's. Returns the RTL counters."""
    assert got.done and got.error == 0
    assert np.array_equal(dram, ref)
    c = got.counters
    assert {k: c[k] for k in EXECUTOR_COUNTERS} == {k: getattr(want, k) for k in EXECUTOR_COUNTERS}
    _, pa = place_program(dram, b"")
    pred = program_cycles(cfg, prog, pa, mem.base_delay(cfg.bus_bytes), mem.latency)
    assert {k: c[k] for k in pred} == pred
    return c


@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_controller_runs_compiled_network(dataflow):
    """A small conv net: outputs == golden, counters == executor, cycles == docs/isa.md formulas."""
    cfg = TINY[dataflow]
    spec = MachineSpec.from_config(cfg, dram_bytes=1 << 12)
    net = random_network(4, "cnn", 8, input_hw=4, channels=2, per_channel=True)
    cn = compile_network(net, spec, batch=1)
    x = random_input(net, 1, 4)
    mem = MemoryModel(latency=2, bytes_per_cycle=4)
    checked = []

    def accel(spec, dram, program):
        ref = dram.copy()
        want = Executor(spec, ref).run(program)
        _check_run(cfg, program, mem, dram, ref, run_program_amaranth(cfg, dram, program, mem), want)
        checked.append(len(program))
        return want

    outs, _ = run_compiled(cn, x, accel=accel)
    assert np.array_equal(outs[net.output_name], net(x))
    assert checked


def _error(cfg, blob_or_prog, dram):
    res = run_program_amaranth(cfg, dram, blob_or_prog)
    assert not res.done
    return res


def test_controller_error_codes():
    cfg = TINY["ws"]
    spec = MachineSpec.from_config(cfg, dram_bytes=64)
    blob = encode_program([Instr(Opcode.FENCE)]) + (12).to_bytes(16, "little")
    res = _error(cfg, blob, np.zeros(64, dtype=np.uint8))
    assert (res.error, res.err_index, res.err_arg) == (ERR_BAD_OPCODE, 1, 12)
    res = _error(cfg, [Instr(Opcode.FENCE), Instr(Opcode.FENCE)], np.zeros(64, dtype=np.uint8))
    assert (res.error, res.err_index) == (ERR_NO_HALT, 1)
    assert error_reason(res.error, res.err_arg, spec, 64) == "program ends without HALT"


@pytest.mark.parametrize("shifts,lane", [((62, -62, 0), None), ((0, 63, 0), 1), ((0, -63, 127), 1),
                                          ((-128, 0, 0), 0), ((5, 0, 100), 2)])
def test_loadq_shift_outside_the_golden_range_is_an_error(shifts, lane):
    """A LOADQ shift byte outside [-62, 62] (the golden requantizer's range, docs/isa.md code 12): the same
    error, instruction and lane on the RTL as in the executor; +-62 is accepted and used by the STORE."""
    cfg = TINY["ws"]                                     # 3 lanes
    spec = MachineSpec.from_config(cfg, dram_bytes=64)
    dram = np.zeros(64, dtype=np.uint8)
    dram[32:47] = np.frombuffer(np.array([1, -1, 7], "<i4").tobytes() + np.array(shifts, np.int8).tobytes(),
                                np.uint8)
    prog = [Instr(Opcode.FENCE), Instr(Opcode.LOADQ, dict(dram=32)),
            Instr(Opcode.STORE, dict(lines=1, elems=3, bits=8, dram=0)), Instr(Opcode.HALT)]
    ref = dram.copy()
    if lane is None:
        want = Executor(spec, ref).run(prog)
        got = run_program_amaranth(cfg, dram, prog)
        assert got.done and np.array_equal(dram, ref) and got.counters["dram_bytes_read"] == want.dram_bytes_read
        return
    with pytest.raises(ProgramError) as want:
        Executor(spec, ref).run(prog)
    assert str(want.value) == f"instruction 1 (LOADQ): requantizer lane {lane}: shift outside [-62, 62]"
    res = _error(cfg, prog, dram)
    assert (res.error, res.err_index, res.err_arg) == (12, 1, lane)       # code 12 of docs/isa.md
    assert error_reason(res.error, res.err_arg, spec, 64, prog[1]) == want.value.reason
    assert res.counters["dram_bytes_read"] == 0 and np.array_equal(dram, ref)   # nothing loaded or stored


@pytest.mark.parametrize("case", ["check", "shift", "value", "no_halt"])
def test_error_found_while_a_matmul_runs_is_reported_after_it(case):
    """An error the controller finds while the array unit still runs a MATMUL waits in ERR_WAIT until the unit
    is idle and is then reported with the executor's code, argument and instruction index: ERR_WAIT forms them
    from registers that hold still while it waits."""
    cfg = TINY["ws"]
    spec = MachineSpec.from_config(cfg, dram_bytes=64)
    dram = np.zeros(64, dtype=np.uint8)
    dram[32:47] = np.frombuffer(np.array([1, -1, 7], "<i4").tobytes() + np.array([0, 0, 70], np.int8).tobytes(),
                                np.uint8)
    dram[48] = 200                              # -56 as int8: outside a 4-bit LOAD's range
    bad = {"check": Instr(Opcode.LOAD, dict(target=Target.A, lines=3, spad=spec.a_lines - 2, elems=2)),
           "shift": Instr(Opcode.LOADQ, dict(dram=32)),
           "value": Instr(Opcode.LOAD, dict(target=Target.A, lines=1, elems=1, dram=48, spad=20))}
    prog = [Instr(Opcode.MATMUL, dict(m=spec.acc_lines))] + ([bad[case], Instr(Opcode.HALT)] if case in bad else [])
    if case == "value":
        cfg = cfg.replace(in_bits=4)
        spec = MachineSpec.from_config(cfg, dram_bytes=64)
    with pytest.raises(ProgramError) as want:
        Executor(spec, dram.copy()).run(prog)
    res = _error(cfg, prog, dram.copy())
    assert res.err_index == want.value.index == (0 if case == "no_halt" else 1)
    assert f"instruction {res.err_index} " in str(want.value)
    assert error_reason(res.error, res.err_arg, spec, 64, prog[res.err_index]) == want.value.reason
    if case == "check":
        assert res.counters["wait_busy"] > 0         # it did wait for the MATMUL


def test_load_value_range_error_with_narrow_operands():
    """4-bit activations: a byte outside the 4-bit range is refused, as by the executor."""
    cfg = AcceleratorConfig(rows=2, cols=2, in_bits=4, w_bits=4, out_bits=4, acc_bits=16,
                            spad_a_bytes=32, spad_w_bytes=32, acc_entries=4, bus_bytes=4)
    spec = MachineSpec.from_config(cfg, dram_bytes=16)
    dram = np.array([3, 250, 9, 0] + [0] * 12, dtype=np.uint8)   # 250 = -6 signed (ok), 9 > 7 (bad)
    prog = [Instr(Opcode.LOAD, dict(target=Target.A, lines=1, elems=2, dram=0)),
            Instr(Opcode.LOAD, dict(target=Target.A, lines=1, elems=2, dram=2, spad=1)),
            Instr(Opcode.HALT)]
    with pytest.raises(ProgramError) as want:
        Executor(spec, dram.copy()).run(prog)
    res = _error(cfg, prog, dram.copy())
    assert (res.error, res.err_index) == (ERR_VALUE, 1)
    reason = error_reason(res.error, res.err_arg, spec, 16, prog[1])
    assert str(want.value) == f"instruction 1 (LOAD): {reason}"
    # Unsigned: 9 fits 4 bits.
    prog[1] = Instr(Opcode.LOAD, dict(target=Target.A, unsigned=1, lines=1, elems=2, dram=2, spad=1))
    assert run_program_amaranth(cfg, dram.copy(), prog).done


def test_accelerator_parameter_errors():
    with pytest.raises(ValueError, match="in_bits must be at most 8 for the system"):
        Accelerator(config=AcceleratorConfig(in_bits=12))
    with pytest.raises(ValueError, match="spad_w_bytes must hold one 8x8 weight tile, not 32"):
        Accelerator(config=AcceleratorConfig(spad_w_bytes=32))
    with pytest.raises(TypeError, match="config must be an AcceleratorConfig"):
        Accelerator(config="default")


@pytest.mark.parametrize("cfg", [
    AcceleratorConfig(),
    AcceleratorConfig(rows=1, cols=1, bus_bytes=1, spad_a_bytes=16, spad_w_bytes=16, acc_entries=1),
    AcceleratorConfig(rows=3, cols=5, dataflow="os", bus_bytes=16, rounding="half_up", acc_bits=24),
], ids=lambda c: f"{c.dataflow}{c.rows}x{c.cols}b{c.bus_bytes}")
def test_system_verilog_passes_lint(cfg, tmp_path):
    from systolic.hw.generate import module_name, verilog_text
    from systolic.sim.verilator import lint

    path = tmp_path / "top.v"
    path.write_text(verilog_text(cfg, "system"))
    lint(path, top=module_name(cfg, "system"))


def test_system_counters_add_up():
    from systolic.sim.backend import SystemCounters

    a = SystemCounters(macs=3, instructions=2, by_opcode={"HALT": 1}, rtl={"cycles": 10, "ctrl_busy": 10})
    b = SystemCounters(macs=4, instructions=1, by_opcode={"HALT": 1, "LOAD": 2}, rtl={"cycles": 5})
    a += b
    assert (a.macs, a.instructions, a.cycles) == (7, 3, 15)
    assert a.by_opcode == {"HALT": 2, "LOAD": 2} and a.rtl == {"cycles": 15, "ctrl_busy": 10}
    assert a.executor_view()["macs"] == 7


def test_error_reason_texts():
    spec = MachineSpec.from_config(TINY["ws"], dram_bytes=64)
    assert error_reason(3, 70, spec, 64) == "DRAM address 70 is past the end of memory (64 bytes)"
    assert error_reason(6, 9, spec, 64) == "accumulator line 9 is past the end (8 lines)"
    assert error_reason(99, 1, spec, 64) == "unknown error code 99 (argument 1)"


def _random_program(rng, cfg, spec, dram):
    """Mostly valid random instructions (unaligned DMA, offsets, zero fill, signed/unsigned, shifts, runtime
    output types); LOADQ parameter blocks with biases of every size and shifts from -28 to 62."""
    R, C, n = cfg.rows, cfg.cols, dram.size
    qbase = n - 4 * 5 * C
    for j in range(4):
        b = rng.integers(-2**31, 2**31, C).astype("<i4")
        b[::2] = rng.integers(-300, 300, (C + 1) // 2)
        s = rng.integers(-28, 63, C).astype(np.int8)
        s[::2] = rng.integers(-3, 12, (C + 1) // 2)
        dram[qbase + 5 * C * j:qbase + 5 * C * (j + 1)] = np.frombuffer(b.tobytes() + s.tobytes(), np.uint8)
    prog = []
    for _ in range(int(rng.integers(8, 16))):
        op = rng.choice(["LOAD", "LOAD", "LOADQ", "MATMUL", "MATMUL", "STORE"])
        if op == "LOAD":
            tgt = int(rng.integers(0, 2))
            width, cap = (C, spec.w_lines) if tgt else (R, spec.a_lines)
            lines = int(rng.integers(0, 5))
            elems = int(rng.integers(0, width + 1))
            stride = int(rng.integers(0, 9))
            prog.append(Instr(Opcode.LOAD, dict(
                target=tgt, zero=int(rng.integers(0, 2)), unsigned=int(rng.integers(0, 2)), lines=lines,
                spad=int(rng.integers(0, cap - lines + 1)), elems=elems,
                offset=int(rng.integers(0, width - elems + 1)),
                dram=int(rng.integers(0, qbase - 4 * stride - elems)), stride=stride)))
        elif op == "LOADQ":
            prog.append(Instr(Opcode.LOADQ, dict(dram=qbase + 5 * C * int(rng.integers(0, 4)))))
        elif op == "MATMUL":
            m = int(rng.integers(0, 2 * R + 2))
            prog.append(Instr(Opcode.MATMUL, dict(
                accumulate=int(rng.integers(0, 2)), shift=int(rng.choice([0, 0, 1, 3, 9, 20])), m=m,
                a=int(rng.integers(0, spec.a_lines - m + 1)), w=int(rng.integers(0, spec.w_lines - R + 1)),
                acc=int(rng.integers(0, spec.acc_lines - m + 1)))))
        else:
            # bits >= 2: the executor's QType refuses a 1-bit signed output (a ValueError, not a
            # ProgramError); the hardware saturates bits=1 to [-1, 0] / [0, 1].
            lines = int(rng.integers(0, 4))
            elems = int(rng.integers(0, C + 1))
            stride = int(rng.integers(0, 7))
            prog.append(Instr(Opcode.STORE, dict(
                relu=int(rng.integers(0, 2)), unsigned=int(rng.integers(0, 2)), lines=lines,
                acc=int(rng.integers(0, spec.acc_lines - lines + 1)), elems=elems, bits=int(rng.integers(2, 9)),
                dram=int(rng.integers(0, qbase - 3 * stride - elems)), stride=stride)))
    return prog + [Instr(Opcode.HALT)]


@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_random_programs_match_executor(dataflow):
    """Random programs: same DRAM, counters and errors as the executor; cycles as the formulas."""
    cfg = TINY[dataflow].replace(rounding="half_up" if dataflow == "os" else "half_even")
    spec = MachineSpec.from_config(cfg, dram_bytes=192)
    rng = np.random.default_rng(7 if dataflow == "ws" else 8)
    mem = MemoryModel(latency=1, bytes_per_cycle=2)
    errors = completed = 0
    for trial in range(8):
        dram = rng.integers(0, 256, spec.dram_bytes).astype(np.uint8)
        prog = _random_program(rng, cfg, spec, dram)
        if trial >= 6:
            # An accumulator line past the end in the middle of the program.
            j = len(prog) // 2
            prog[j] = Instr(Opcode.MATMUL, dict(m=2, acc=spec.acc_lines - 1))
        ref = dram.copy()
        try:
            want = Executor(spec, ref).run(prog)
            want_err = None
        except ProgramError as exc:
            want, want_err = None, exc
        got = run_program_amaranth(cfg, dram, prog, mem)
        if want_err is not None:
            errors += 1
            assert got.error and got.err_index == want_err.index
            reason = error_reason(got.error, got.err_arg, spec, spec.dram_bytes, prog[got.err_index])
            assert f"instruction {want_err.index} ({want_err.instr.op.name}): {reason}" == str(want_err)
            continue
        completed += 1
        _check_run(cfg, prog, mem, dram, ref, got, want)
    assert completed >= 3 and errors >= 2


def test_zero_fill_after_load_clears_the_lines():
    """A zero-fill LOAD (elems == 0) right after a LOAD of the same lines: the lines read back as 0."""
    cfg = TINY["ws"]
    spec = MachineSpec.from_config(cfg, dram_bytes=64)
    dram = np.arange(1, 65, dtype=np.uint8)
    prog = [Instr(Opcode.LOAD, dict(target=Target.A, lines=3, elems=2, dram=0, stride=2)),
            Instr(Opcode.LOAD, dict(target=Target.A, zero=1, lines=3, spad=0, elems=0)),
            Instr(Opcode.LOAD, dict(target=Target.W, lines=2, elems=3, dram=8, stride=3)),
            Instr(Opcode.MATMUL, dict(m=3)),
            Instr(Opcode.STORE, dict(lines=3, elems=3, bits=8, dram=32, stride=3)),
            Instr(Opcode.HALT)]
    ref = dram.copy()
    Executor(spec, ref).run(prog)
    assert not ref[32:41].any()
    got = run_program_amaranth(cfg, dram, prog)
    assert got.done and np.array_equal(dram, ref)


def _overlap_program(rng, cfg, spec, dram):
    """Many MATMULs (m from 0 to 3*rows, accumulate chains on shared accumulator lines) with LOADs aimed at
    the lines the queued MATMULs read, STOREs and FENCEs between: the interlocks' and the streaming's cases."""
    R, C = cfg.rows, cfg.cols
    qbase = dram.size - 5 * C
    dram[qbase:qbase + 4 * C] = np.frombuffer(rng.integers(-50, 50, C).astype("<i4").tobytes(), np.uint8)
    dram[qbase + 4 * C:] = rng.integers(0, 4, C).astype(np.uint8)
    prog = [Instr(Opcode.LOADQ, dict(dram=qbase))]
    recent = []
    for _ in range(int(rng.integers(14, 24))):
        r = rng.random()
        if r < 0.5:
            m = int(rng.choice([0, 1, 2, R, 2 * R + 1, 3 * R, spec.acc_lines]))
            m = min(m, spec.acc_lines, spec.a_lines)
            a = int(rng.integers(0, spec.a_lines - m + 1))
            w = int(rng.integers(0, spec.w_lines - R + 1))
            acc = int(rng.integers(0, spec.acc_lines - m + 1))
            prog.append(Instr(Opcode.MATMUL, dict(accumulate=int(rng.random() < 0.7), m=m, a=a, w=w, acc=acc,
                                                 shift=int(rng.choice([0, 0, 1])))))
            recent.append((a, m, w))
        elif r < 0.85:
            tgt = int(rng.integers(0, 2))
            width, cap = (C, spec.w_lines) if tgt else (R, spec.a_lines)
            lines = int(rng.integers(1, 5))
            if recent and rng.random() < 0.7:       # aim at a queued MATMUL's lines
                a, m, w = recent[int(rng.integers(0, len(recent)))]
                lo = w if tgt else a
                spad = min(max(0, lo + int(rng.integers(-2, 3))), cap - lines)
            else:
                spad = int(rng.integers(0, cap - lines + 1))
            elems = int(rng.integers(0, width + 1))
            prog.append(Instr(Opcode.LOAD, dict(
                target=tgt, zero=int(rng.integers(0, 2)), lines=lines, spad=spad, elems=elems,
                offset=int(rng.integers(0, width - elems + 1)), dram=int(rng.integers(0, qbase - 4 * 7 - width)),
                stride=int(rng.integers(0, 7)))))
        elif r < 0.95:
            lines = int(rng.integers(1, spec.acc_lines + 1))
            prog.append(Instr(Opcode.STORE, dict(lines=lines, acc=int(rng.integers(0, spec.acc_lines - lines + 1)),
                                                elems=C, bits=8, dram=int(rng.integers(0, qbase - C * lines)),
                                                stride=C)))
            recent = []
        else:
            prog.append(Instr(Opcode.FENCE))
            recent = []
    return prog + [Instr(Opcode.STORE, dict(lines=spec.acc_lines, elems=C, bits=8, dram=0, stride=C)),
                   Instr(Opcode.HALT)]


@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_overlapping_programs_match_executor_and_timeline(dataflow):
    """Back-to-back MATMULs and LOADs into the lines they read: sequential results, exact cycles."""
    cfg = TINY[dataflow]
    spec = MachineSpec.from_config(cfg, dram_bytes=256)
    rng = np.random.default_rng(21 if dataflow == "ws" else 22)
    held = 0
    for trial in range(10):
        mem = MemoryModel(latency=int(rng.integers(1, 4)), bytes_per_cycle=int(rng.choice([2, 8])))
        dram = rng.integers(0, 8, spec.dram_bytes).astype(np.uint8)     # small: few results saturate
        prog = _overlap_program(rng, cfg, spec, dram)
        ref = dram.copy()
        try:
            want = Executor(spec, ref).run(prog)
        except ProgramError as exc:      # an accumulator overflow: the same error, same instruction
            got = run_program_amaranth(cfg, dram, prog, mem)
            # Code 11 of the documented error table (docs/isa.md): the overflow, not merely some error.
            assert exc.reason.startswith("accumulator overflow"), str(exc)
            assert (got.err_index, got.error, got.done) == (exc.index, 11, False), (trial, str(exc))
            continue
        c = _check_run(cfg, prog, mem, dram, ref, run_program_amaranth(cfg, dram, prog, mem), want)
        held += c["wait_busy"] > 0 and c["matmul_busy"] > 0
    assert held >= 5


def test_streamed_matmuls_accumulate_into_the_line_just_written():
    """MATMUL 2's first output lands on MATMUL 1's last accumulator line in the very next cycle (streaming
    back to back): the accumulator's read-modify-write must see the value written the cycle before."""
    cfg = AcceleratorConfig(rows=2, cols=2, spad_a_bytes=64, spad_w_bytes=16, acc_entries=32, bus_bytes=4)
    spec = MachineSpec.from_config(cfg, dram_bytes=128)
    rng = np.random.default_rng(3)
    dram = rng.integers(1, 6, 128).astype(np.uint8)       # small: no result saturates
    m1 = 2 * cfg.rows + cfg.cols + 3          # long enough to stream at full rate
    prog = [Instr(Opcode.LOAD, dict(target=Target.A, lines=m1, elems=2, dram=0, stride=2)),
            Instr(Opcode.LOAD, dict(target=Target.W, lines=4, elems=2, dram=40, stride=2)),
            Instr(Opcode.MATMUL, dict(m=m1, a=0, w=0, acc=0)),
            Instr(Opcode.MATMUL, dict(accumulate=1, m=3, a=0, w=2, acc=m1 - 1)),
            Instr(Opcode.STORE, dict(lines=m1 + 2, elems=2, bits=8, dram=64, stride=2)),
            Instr(Opcode.HALT)]
    tl = program_timeline(cfg, prog, 0)
    first, second = (i for i in tl.instructions if i.op == "MATMUL")
    assert second.array[1] - 3 == first.array[1]            # the feeds, so the write-backs, back to back
    ref = dram.copy()
    Executor(spec, ref).run(prog)
    got = run_program_amaranth(cfg, dram, prog, MemoryModel(latency=1))
    assert got.done and np.array_equal(dram, ref)


def test_overflow_while_a_store_runs_is_reported_after_it_with_its_matmul():
    """A MATMUL's accumulator overflow that happens while a STORE of other lines runs beside it is kept and
    reported once the STORE is done, naming the MATMUL (not the STORE, nor the instruction running then)."""
    cfg = TINY["ws"].replace(acc_bits=16)          # 2 x 127 x 127 fits, twice that does not
    spec = MachineSpec.from_config(cfg, dram_bytes=256)
    dram = np.full(256, 127, dtype=np.uint8)
    m = 4
    prog = [Instr(Opcode.LOAD, dict(target=Target.A, lines=m, elems=cfg.rows, dram=0, stride=cfg.rows)),
            Instr(Opcode.LOAD, dict(target=Target.W, lines=cfg.rows, elems=cfg.cols, dram=0, stride=cfg.cols)),
            Instr(Opcode.MATMUL, dict(m=m, a=0, w=0, acc=0)),
            Instr(Opcode.MATMUL, dict(m=m, a=0, w=0, acc=0, accumulate=1)),
            # lines m.. of the accumulator: no MATMUL writes them, so it runs beside the second MATMUL
            Instr(Opcode.STORE, dict(lines=spec.acc_lines - m, acc=m, elems=cfg.cols, bits=8, dram=130, stride=9)),
            Instr(Opcode.HALT)]
    with pytest.raises(ProgramError) as want:
        Executor(spec, dram.copy()).run(prog)
    assert want.value.index == 3 and want.value.reason.startswith("accumulator overflow")
    mem = MemoryModel(latency=1, bytes_per_cycle=8)
    # The second MATMUL writes its lines (and overflows) while the STORE runs: the timing does not depend on
    # the values.
    tl = program_timeline(cfg, prog, 0, mem.base_delay(cfg.bus_bytes), mem.latency).instructions
    assert tl[4].start < tl[3].array[1] - m + 1 <= tl[4].end     # its first accumulator write
    res = run_program_amaranth(cfg, dram.copy(), prog, mem)
    assert not res.done
    assert (res.error, res.err_index) == (ERR_OVERFLOW, 3)
