"""amaranth.sim test of the accumulator buffer against a NumPy model: random updates (overwrite, accumulate,
accumulate-with-shift, back-to-back to one line) with idle cycles between, reads on the second port,
overflow flagged in the cycle the line is written."""

import random
from collections import deque

import numpy as np
from amaranth.sim import Simulator

from systolic.arch.latency import ACC_READ, ACC_UPDATE, VEC_INPUT
from systolic.hw.accumulator import SHIFT_BITS, AccumulatorBuffer

COLS, LINES, ACC, PSUM = 3, 6, 20, 22


def test_updates_and_reads_equal_the_model():
    _check(500, edges=False)


def test_shifted_values_at_the_width_edges():
    """Accumulate-with-shift where ``psum << shift`` is just inside or just outside ``acc_bits + 2`` bits (the
    width the buffer forms it in): overflow flag and stored value (the sum mod 2**acc_bits) as the model."""
    _check(1500, edges=True)


def _check(n, edges):
    dut = AccumulatorBuffer(cols=COLS, lines=LINES, acc_bits=ACC, psum_bits=PSUM)
    rng = np.random.default_rng(1)
    gaps = random.Random(2)
    model = np.zeros((LINES, COLS), np.int64)
    lo, hi = -(1 << (ACC - 1)), (1 << (ACC - 1)) - 1
    seen = {"acc": 0, "shifted": 0, "same_line": 0, "overflow": 0, "reads": 0}

    def wrap(v):
        return ((v - lo) % (1 << ACC)) + lo

    async def bench(ctx):
        # (line, expected value, overflow) of the updates presented in the last ACC_UPDATE cycles, oldest first:
        # the oldest is written now. `model` is what each update sees (every earlier update), `mem` what the
        # read port sees (the updates written).
        pipe = deque([None] * ACC_UPDATE)
        reads = deque()         # the lines read in the last ACC_READ cycles, as the memory held them, oldest first
        mem = model.copy()
        last_line = None
        edge_vals = sorted({v for k in range(PSUM) for v in (1 << k, (1 << k) - 1, -(1 << k), 1 - (1 << k))
                            if -(1 << (PSUM - 1)) <= v < 1 << (PSUM - 1)})
        for _ in range(n):
            upd = gaps.random() < 0.7
            line = last_line if (last_line is not None and gaps.random() < 0.3) else int(rng.integers(0, LINES))
            psum = rng.integers(-(1 << 12), 1 << 12, COLS)
            if rng.random() < 0.05:
                psum[0] = (1 << (PSUM - 1)) - 1                  # overflows once shifted or accumulated
            accumulate = bool(rng.integers(0, 2))
            shift = int(rng.choice([0, 0, 1, 5, (1 << SHIFT_BITS) - 1])) if accumulate else int(rng.integers(0, 3))
            if edges:       # |psum << shift| around 2**(ACC + 1), the old values anywhere in range
                psum = rng.choice(edge_vals, COLS)
                shift = int(rng.integers(0, ACC + 4)) if rng.random() < 0.9 else int(rng.integers(0, 1 << SHIFT_BITS))
                if not accumulate and rng.random() < 0.5:
                    psum, shift = rng.integers(lo, hi + 1, COLS), 0     # a random in-range value to add to
            read_line = int(rng.integers(0, LINES))
            ctx.set(dut.upd.valid, int(upd))
            ctx.set(dut.upd.addr, line)
            ctx.set(dut.upd.accumulate, int(accumulate))
            ctx.set(dut.upd.shift, shift)
            for c in range(COLS):
                ctx.set(dut.upd.psum[c], int(psum[c]))
            ctx.set(dut.rd.en, 1)
            ctx.set(dut.rd.addr, read_line)
            assert ctx.get(dut.ev_read) == int(upd and accumulate)
            # The update presented ACC_UPDATE cycles ago is written now, with its overflow; busy while any
            # presented update is not written.
            pending = pipe.popleft()
            assert ctx.get(dut.upd.busy) == int(pending is not None or any(e is not None for e in pipe))
            assert ctx.get(dut.overflow) == int(pending is not None and pending[2])
            assert ctx.get(dut.ev_write) == int(pending is not None)
            # The read port is not transparent: a line written in this cycle reads as it was, ACC_READ later.
            reads.append(mem[read_line].copy())
            if pending is not None:
                mem[pending[0]] = pending[1]
            entry = None
            if upd:
                new = (model[line] if accumulate else 0) + (psum.astype(object) << shift)
                ovf = any(not lo <= int(v) <= hi for v in new)
                # After the write the line holds the value mod 2**acc_bits (the error stops the run).
                entry = (line, np.array([wrap(int(v)) for v in new], np.int64), ovf)
                model[line] = entry[1]  # the next update of this line sees it, however soon (forwarding)
                seen["acc"] += accumulate
                seen["shifted"] += accumulate and shift > 0
                seen["same_line"] += line == last_line
                seen["overflow"] += ovf
            pipe.append(entry)
            last_line = line if upd else None
            await ctx.tick()
            if len(reads) == ACC_READ:
                assert [ctx.get(dut.rd.data[c]) for c in range(COLS)] == reads.popleft().tolist()
                seen["reads"] += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert min(seen.values()) >= 5, seen
    assert ACC_READ == 2


def test_vector_lines_equal_the_model():
    """VEC / DIV lines on the ``vec`` port, between array updates (never one in the cycle after a VEC line, which
    enters the update pipeline then): SET / ADD / MAX of ``vals << shift`` on the
    first ``elems`` lanes (the others keep their value), huge shifted values (a huge negative one never wins a
    MAX and does not overflow), overflow flagged in the cycle the line is written, and the old line read
    unless the line is a SET of every lane."""
    dut = AccumulatorBuffer(cols=COLS, lines=LINES, acc_bits=ACC, psum_bits=PSUM)
    vbits = ACC + 2
    rng = np.random.default_rng(4)
    model = np.zeros((LINES, COLS), np.int64)
    lo, hi = -(1 << (ACC - 1)), (1 << (ACC - 1)) - 1
    nw_lo, nw_hi = -(1 << (ACC + 1)), (1 << (ACC + 1)) - 1
    seen = {"set": 0, "add": 0, "max": 0, "keep": 0, "overflow": 0, "huge_neg_max": 0, "array": 0}

    def wrap(v):
        return ((v - lo) % (1 << ACC)) + lo

    async def bench(ctx):
        # Per cycle: the line written then (line, value, overflow, is a VEC line) and whether the old line is read
        # then. A VEC line enters the update pipeline VEC_INPUT cycles after it is presented, an array update at
        # once; both are written ACC_UPDATE cycles after they enter. Each line is computed from every earlier
        # one (`model`), written or not.
        due, reads, vec_at = {}, {}, set()
        for t in range(1500):
            pending = due.pop(t, None)
            assert ctx.get(dut.overflow) == int(pending is not None and pending[2])
            assert ctx.get(dut.ev_vec_write) == int(pending is not None and pending[3])
            assert ctx.get(dut.upd.busy) == int(any(e is not None and not e[3]
                                                    for e in [pending] + [due.get(t + k) for k in range(1, ACC_UPDATE)]))
            kinds = ["vec", "vec", "idle"] + ([] if t - VEC_INPUT in vec_at else ["array"])
            kind = rng.choice(kinds)
            line = int(rng.integers(0, LINES))
            ctx.set(dut.upd.valid, 0)
            ctx.set(dut.vec.valid, 0)
            new = None
            if kind == "vec":
                op = int(rng.integers(0, 3))
                elems = int(rng.choice([0, 1, COLS, COLS]))
                wide = rng.random() < 0.3
                vals = rng.integers(-(1 << (vbits - 1)), 1 << (vbits - 1), COLS) if wide else \
                    rng.integers(-256, 256, COLS)
                shift = int(rng.choice([0, 0, 3, ACC - 8, ACC, (1 << SHIFT_BITS) - 1]))
                ctx.set(dut.vec.valid, 1)
                ctx.set(dut.vec.addr, line)
                ctx.set(dut.vec.op, op)
                ctx.set(dut.vec.shift, shift)
                ctx.set(dut.vec.elems, elems)
                for c in range(COLS):
                    ctx.set(dut.vec.vals[c], int(vals[c]))
                reads[t + VEC_INPUT] = op != 0 or elems < COLS
                vec_at.add(t)
                new, ovf = model[line].copy(), False
                for c in range(elems):
                    v, old = int(vals[c]) << shift, int(model[line, c])
                    huge = not nw_lo <= v <= nw_hi
                    if op == 2:
                        r = old if (huge or old > v) else v
                        ovf |= (huge and v > 0) or not lo <= r <= hi
                        seen["huge_neg_max"] += huge and v < 0
                    else:
                        r = v if op == 0 else old + v
                        ovf |= not lo <= r <= hi
                    new[c] = wrap(r)
                seen[["set", "add", "max"][op]] += 1
                seen["keep"] += elems < COLS
                seen["overflow"] += ovf
                due[t + VEC_INPUT + ACC_UPDATE] = (line, new, ovf, True)
            elif kind == "array":
                psum = rng.integers(-(1 << 12), 1 << 12, COLS)
                ctx.set(dut.upd.valid, 1)
                ctx.set(dut.upd.addr, line)
                ctx.set(dut.upd.accumulate, 1)
                ctx.set(dut.upd.shift, 0)
                for c in range(COLS):
                    ctx.set(dut.upd.psum[c], int(psum[c]))
                r = model[line] + psum
                new, ovf = np.array([wrap(int(v)) for v in r]), bool(((r < lo) | (r > hi)).any())
                seen["array"] += 1
                reads[t] = True
                due[t + ACC_UPDATE] = (line, new, ovf, False)
            assert ctx.get(dut.ev_read) == int(reads.pop(t, False)), t
            if new is not None:
                model[line] = new
            await ctx.tick()
        ctx.set(dut.vec.valid, 0)
        ctx.set(dut.upd.valid, 0)
        for _ in range(VEC_INPUT + ACC_UPDATE):
            await ctx.tick()
        for ln in range(LINES):
            ctx.set(dut.rd.en, 1)
            ctx.set(dut.rd.addr, ln)
            for _ in range(ACC_READ):
                await ctx.tick()
            assert [ctx.get(dut.rd.data[c]) for c in range(COLS)] == model[ln].tolist(), ln

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert min(seen.values()) >= 5, seen
