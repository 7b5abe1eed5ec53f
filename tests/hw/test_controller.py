"""amaranth.sim test of the controller alone, every neighbour a behavioural model with random stalls.

The DMA model answers gathers line by line after random delays and keeps
``ready`` low while a gather or a scatter is in progress; the array-unit
model takes MATMULs from the queue slot when it likes (random ``ready``),
keeps each busy for a random time and publishes it as a reader and a
writer meanwhile;
the STORE-pipeline model reads a line per cycle from the cycle after its
start and hands each out at the first ``ready`` its pipeline depth later. The controller must produce, in program order, exactly the side
effects docs/isa.md defines (LOAD line writes, MATMUL descriptors, LOADQ
parameter loads, STORE commands and their scatters), respect the interlocks
(no LOAD line written while a MATMUL that reads it is queued or running;
no STORE started while a MATMUL that writes its lines is; FENCE and HALT
only with the array unit idle), and stop with the
executor's error for a bad program.
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from systolic.arch.config import AcceleratorConfig
from systolic.arch.isa import Instr, Opcode, Target, encode_program
from systolic.arch.latency import DECODE_CYCLES
from systolic.arch.machine import MachineSpec
from systolic.arch.sysmap import error_reason
from systolic.compiler.executor import Executor, ProgramError
from systolic.golden import QType
from systolic.hw.controller import Controller

CFG = AcceleratorConfig(rows=2, cols=3, in_bits=6, spad_a_bytes=32, spad_w_bytes=24, acc_entries=6, bus_bytes=4)
DRAM = 160
PIPE = 4        # the STORE model's depth (any: the controller waits for its done)


def _program(rng, n):
    R, C = CFG.rows, CFG.cols
    prog = []
    for _ in range(n):
        op = rng.choice(["LA", "LA", "LW", "LQ", "MM", "MM", "ST", "FE"])
        if op in ("LA", "LW"):
            tgt = Target.A if op == "LA" else Target.W
            width, cap = (R, CFG.a_lines) if tgt == Target.A else (C, CFG.w_lines)
            lines = int(rng.integers(0, 4))
            elems = int(rng.integers(0, width + 1))
            prog.append(Instr(Opcode.LOAD, dict(
                target=tgt, zero=int(rng.integers(0, 2)), unsigned=int(rng.integers(0, 2)), lines=lines,
                spad=int(rng.integers(0, cap - lines + 1)), elems=elems,
                offset=int(rng.integers(0, width - elems + 1)), dram=int(rng.integers(0, 100)),
                stride=int(rng.integers(0, 9)))))
        elif op == "LQ":
            prog.append(Instr(Opcode.LOADQ, dict(dram=int(rng.integers(0, DRAM - CFG.loadq_bytes + 1)))))
        elif op == "MM":
            m = int(rng.integers(0, 4))
            prog.append(Instr(Opcode.MATMUL, dict(
                accumulate=int(rng.integers(0, 2)), shift=int(rng.integers(0, 4)), m=m,
                a=int(rng.integers(0, CFG.a_lines - m + 1)), w=int(rng.integers(0, CFG.w_lines - R + 1)),
                acc=int(rng.integers(0, CFG.acc_lines - m + 1)))))
        elif op == "ST":
            lines = int(rng.integers(0, 4))
            elems = int(rng.integers(0, C + 1))
            prog.append(Instr(Opcode.STORE, dict(
                relu=int(rng.integers(0, 2)), unsigned=int(rng.integers(0, 2)), lines=lines,
                acc=int(rng.integers(0, CFG.acc_lines - lines + 1)), elems=elems, bits=int(rng.integers(2, 9)),
                dram=int(rng.integers(0, 100)), stride=int(rng.integers(0, 7)))))
        else:
            prog.append(Instr(Opcode.FENCE))
    return prog + [Instr(Opcode.HALT)]


def _expected(prog, mem):
    """The side effects of *prog* by docs/isa.md, in order (up to the first error, which the executor names)."""
    out = []
    for i, ins in enumerate(prog):
        a = ins.args
        if ins.op == Opcode.LOAD:
            for ln in range(a["lines"]):
                src = a["dram"] + ln * a["stride"]
                out.append(("load", a["target"], a["spad"] + ln, a["offset"], a["elems"], a["zero"],
                            tuple(mem[src:src + a["elems"]].tolist()) if a["elems"] else ()))
        elif ins.op == Opcode.LOADQ:
            out.append(("loadq", tuple(mem[a["dram"]:a["dram"] + CFG.loadq_bytes].tolist())))
        elif ins.op == Opcode.MATMUL:
            out.append(("matmul", a["a"], a["w"], a["acc"], a["m"], a["accumulate"], a["shift"], i))
        elif ins.op == Opcode.STORE:
            out.append(("store", a["lines"], a["acc"], a["elems"], a["bits"], a["unsigned"], a["relu"]))
            out += [("scatter", a["dram"] + ln * a["stride"], a["elems"]) for ln in range(a["lines"])]
        elif ins.op == Opcode.HALT:
            break
    return out


def _run(prog, mem, seed):
    """Run *prog* on the controller with behavioural neighbours; returns (effects, status, checks)."""
    dut = Controller(config=CFG, readers=2, writers=2)
    rng = random.Random(seed)
    blob = encode_program(prog)
    prog_addr = -(-DRAM // 16) * 16
    image = np.zeros(prog_addr + len(blob), np.uint8)
    image[:DRAM] = mem
    image[prog_addr:] = np.frombuffer(blob, np.uint8)
    B = CFG.dma_buffer_bytes
    effects, checks = [], {"interlocked_loads": 0, "held": 0, "taken_late": 0, "stores_beside": 0}
    status = {}

    async def bench(ctx):
        ctx.set(dut.prog_addr, prog_addr)
        ctx.set(dut.prog_len, len(prog))
        ctx.set(dut.dram_bytes, DRAM)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        lines_due = []              # (cycle, bytes) of the gather in progress
        dma_buf = [0] * B           # the DMA's registered buffer: the last line gathered
        dma_busy_until = -1         # a scatter keeps the DMA busy until then
        inflight = []               # (a, m, w, cycle it finishes, acc) of MATMULs the unit took
        seen = -1                   # program index of the last MATMUL seen in the queue slot
        store = None                # [cmd, cycles since its start, lines out]
        for cycle in range(20000):
            # ---- inputs of this cycle (the models' state)
            inflight = [d for d in inflight if d[3] > cycle]
            line_valid = bool(lines_due) and lines_due[0][0] == cycle
            line = lines_due.pop(0)[1] if line_valid else [0] * B
            for p in range(B):
                ctx.set(dut.dma.line[p], line[p])
                ctx.set(dut.dma_buf[p], dma_buf[p])          # the DMA's buffer: the last line, a cycle later
            ctx.set(dut.dma.line_valid, int(line_valid))
            dma_ready = not lines_due and cycle > dma_busy_until
            ctx.set(dut.dma.ready, int(dma_ready))
            w_ready = cycle > dma_busy_until           # the scatter engine's own readiness
            ctx.set(dut.dma.w_ready, int(w_ready))
            ctx.set(dut.dma.stall, 0)
            for k, r in enumerate(dut.readers):
                d = inflight[k] if k < len(inflight) else None
                ctx.set(r.valid, int(d is not None))
                ctx.set(r.w_valid, int(d is not None))
                if d is not None:
                    ctx.set(r.a, d[0]), ctx.set(r.m, d[1]), ctx.set(r.w, d[2])
                    ctx.set(r.a_end, d[0] + d[1]), ctx.set(r.w_end, d[2] + CFG.rows)     # as the unit forms them
            for k, r in enumerate(dut.writers):
                d = inflight[k] if k < len(inflight) else None
                ctx.set(r.valid, int(d is not None))
                if d is not None:
                    ctx.set(r.acc, d[4]), ctx.set(r.m, d[1]), ctx.set(r.acc_end, d[4] + d[1])
            ctx.set(dut.unit_busy, int(bool(inflight)))
            unit_ready = len(inflight) < 2 and rng.random() < 0.5      # random stalls on the MATMUL stream
            ctx.set(dut.matmul.ready, int(unit_ready))
            ctx.set(dut.overflow, 0)
            out_now = False
            if store is not None:
                cmd = store[0]
                ctx.set(dut.store.done, int(store[2] == cmd["lines"]))
                out_now = bool(ctx.get(dut.store.ready)) and store[1] >= PIPE + store[2] and store[2] < cmd["lines"]
                ctx.set(dut.store.out_valid, int(out_now))
                ctx.set(dut.store.out_addr, cmd["dram"] + store[2] * cmd["stride"])
            else:
                ctx.set(dut.store.out_valid, 0)
                ctx.set(dut.store.done, 0)
            # ---- outputs of this cycle
            for port, tgt in ((dut.load_a, Target.A), (dut.load_w, Target.W)):
                if ctx.get(port.en):
                    bits, off, n = (CFG.in_bits if tgt == Target.A else CFG.w_bits), ctx.get(port.offset), \
                        ctx.get(port.elems)
                    vals = [ctx.get(port.bytes[p]) for p in range(off, off + n)]
                    lo, hi = QType.range_of(bits, not ctx.get(port.unsigned))
                    conv = [v if ctx.get(port.unsigned) or v < 128 else v - 256 for v in vals]
                    ctx.set(port.bad, int(any(not lo <= v <= hi for v in conv)))
                    line_no = ctx.get(port.addr)
                    effects.append(("load", int(tgt), line_no, off, n, ctx.get(port.zero), tuple(vals)))
                    # Interlock: no MATMUL queued or taken reads the line being overwritten.
                    queued = [(ctx.get(dut.matmul.payload.a), ctx.get(dut.matmul.payload.m),
                               ctx.get(dut.matmul.payload.w))] if ctx.get(dut.matmul.valid) else []
                    for a, m, w in [d[:3] for d in inflight] + queued:
                        lo_l, n_l = (a, m) if tgt == Target.A else (w, CFG.rows)
                        assert not lo_l <= line_no < lo_l + n_l, (cycle, line_no, a, m, w)
                    checks["interlocked_loads"] += bool(inflight or queued)
                else:
                    ctx.set(port.bad, 0)
            if ctx.get(dut.matmul.valid):
                p = dut.matmul.payload
                d = tuple(ctx.get(getattr(p, k)) for k in ("a", "w", "acc", "m", "accum", "shift", "idx"))
                if d[-1] != seen:       # (in program order: a STORE may start while it waits in the slot)
                    effects.append(("matmul", *d))
                    seen = d[-1]
                if unit_ready:
                    inflight.append((d[0], d[3], d[1], cycle + 1 + rng.randint(1, 25), d[2]))
            if ctx.get(dut.matmul.valid) and not unit_ready:
                checks["taken_late"] += 1
            if ctx.get(dut.store.params_load):
                effects.append(("loadq", tuple(ctx.get(dut.store.params[p]) for p in range(CFG.loadq_bytes))))
            if ctx.get(dut.store.start):
                cmd = {k: ctx.get(getattr(dut.store.cmd, k)) for k in ("lines", "acc", "elems", "bits", "unsigned",
                                                                       "relu", "dram", "stride")}
                queued = [(ctx.get(dut.matmul.payload.acc), ctx.get(dut.matmul.payload.m))] \
                    if ctx.get(dut.matmul.valid) else []
                for acc, m in [(d[4], d[1]) for d in inflight] + queued:
                    assert not (m and cmd["lines"] and acc < cmd["acc"] + cmd["lines"] and cmd["acc"] < acc + m), \
                        ("STORE started while a MATMUL writes its lines", cycle, cmd, acc, m)
                checks["stores_beside"] += bool(inflight or queued)
                effects.append(("store", cmd["lines"], cmd["acc"], cmd["elems"], cmd["bits"], cmd["unsigned"],
                                cmd["relu"]))
                store = [cmd, 0, 0]
            if ctx.get(dut.dma.start) and (w_ready if ctx.get(dut.dma.write) else dma_ready):
                if ctx.get(dut.dma.write):
                    assert not lines_due, ("a scatter started while a gather is in progress", cycle)
                    addr, n = ctx.get(dut.dma.w_addr), ctx.get(dut.dma.w_n)
                    effects.append(("scatter", addr, n))
                    dma_busy_until = cycle + rng.randint(0, 3)
                else:
                    addr, n = ctx.get(dut.dma.addr), ctx.get(dut.dma.n)
                    off, nl, stride = ctx.get(dut.dma.off), ctx.get(dut.dma.lines), ctx.get(dut.dma.stride)
                    t = cycle
                    for ln in range(nl):
                        t += rng.randint(1, 4)
                        buf = [0] * B
                        buf[off:off + n] = image[addr + ln * stride:addr + ln * stride + n].tolist()
                        lines_due.append((t, buf))
            if store is not None:
                store[2] += out_now
                store[1] += not ctx.get(dut.store.start)
            if not ctx.get(dut.busy) and cycle > 0:
                assert not inflight or ctx.get(dut.error), "HALT with the array unit busy"
                status.update(done=ctx.get(dut.done), error=ctx.get(dut.error), index=ctx.get(dut.err_index),
                              arg=ctx.get(dut.err_arg), cycles=cycle)
                return
            if line_valid:
                dma_buf = list(line)
            await ctx.tick()
        raise AssertionError("the controller did not finish")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return effects, status, checks


@pytest.mark.parametrize("seed", range(6))
def test_side_effects_in_program_order_with_interlocks(seed):
    rng = np.random.default_rng(seed)
    # Bytes 0..62: every LOADQ shift lies in the golden model's range; a signed 6-bit LOAD refuses 32..62.
    mem = rng.integers(0, 63, DRAM).astype(np.uint8)
    mem[:64] &= 0x1F
    prog = _program(rng, 24)
    want = _expected(prog, mem)
    try:
        Executor(MachineSpec.from_config(CFG, dram_bytes=DRAM), mem.copy()).run(prog)
        want_err = None
    except ProgramError as exc:
        want_err = exc
    effects, status, checks = _run(prog, mem, seed)
    if want_err is None:
        assert status["done"] and status["error"] == 0
        assert effects == want
    else:
        # The same instruction fails with the executor's words; everything before it happened in order.
        assert status["error"] and status["index"] == want_err.index
        assert error_reason(status["error"], status["arg"], MachineSpec.from_config(CFG, dram_bytes=DRAM), DRAM,
                            prog[status["index"]]) == want_err.reason
        assert effects[:len(effects) - 1] == want[:len(effects) - 1]


def test_interlock_stalls_and_errors_are_exercised():
    """Across the seeds: LOADs ran while MATMULs were in flight, STOREs beside MATMULs of other lines, the
    MATMUL stream was held back, and some programs stopped with an error."""
    interlocked = errors = late = beside = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        mem = rng.integers(0, 63, DRAM).astype(np.uint8)
        mem[:64] &= 0x1F
        prog = _program(rng, 24)
        effects, status, checks = _run(prog, mem, seed)
        interlocked += checks["interlocked_loads"]
        late += checks["taken_late"]
        beside += checks["stores_beside"]
        errors += status["error"] != 0
    assert interlocked > 5 and late > 5 and beside > 2 and 1 <= errors <= 5


def test_decode_takes_the_named_cycles():
    """A one-instruction program (HALT) with an instant memory: FETCH, the answer, then DECODE_CYCLES to CHECK
    (which executes HALT): the run's length is fixed by the names."""
    effects, status, _ = _run([Instr(Opcode.HALT)], np.zeros(DRAM, np.uint8), 0)
    assert status["done"] and effects == []
    # cycle 0 FETCH (the gather starts), line at 1..4 (random delay), DECODE, CHECK -> idle the cycle after.
    assert 1 + 1 + DECODE_CYCLES <= status["cycles"] <= 4 + 1 + DECODE_CYCLES
