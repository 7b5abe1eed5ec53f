"""amaranth.sim tests of the scratchpad (LOAD conversion, element writes, reads) and the performance counters,
each against a NumPy model, with random idle cycles between operations."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from systolic.arch.latency import EVENT_REGISTER, SCRATCHPAD_WRITE
from systolic.arch.sysmap import COUNTER_BITS, CYCLE_COUNTER_BITS, counter_width
from systolic.golden import QType
from systolic.hw.counters import PerfCounters
from systolic.hw.scratchpad import Scratchpad


def _to_value(byte: int, unsigned: bool) -> int:
    return byte if unsigned or byte < 128 else byte - 256


@pytest.mark.parametrize("bits", [8, 4])
def test_loads_and_reads_equal_the_model(bits):
    width, lines = 5, 7
    dut = Scratchpad(width=width, lines=lines, bits=bits)
    rng = np.random.default_rng(bits)
    gaps = random.Random(bits)
    model = np.zeros((lines, width), np.int64)
    checks = {"writes": 0, "bad": 0, "reads": 0, "zero": 0}

    async def bench(ctx):
        ld, rd = dut.load, dut.read
        fields = None           # the fields presented in the cycle before: the ones a write uses
        pending = []            # (cycle, line, zero, {position: value}): a write lands SCRATCHPAD_WRITE cycles on
        for cycle in range(600):
            # A random LOAD line write (or an idle cycle).
            write = gaps.random() < 0.6
            line = int(rng.integers(0, lines))
            byts = [int(b) for b in rng.integers(0, 256, width)]
            if rng.random() < 0.5:
                byts = [b & ((1 << bits) - 1) for b in byts]       # mostly in range
            new = {"offset": int(rng.integers(0, width + 1)), "zero": bool(rng.integers(0, 2)),
                   "unsigned": bool(rng.integers(0, 2))}
            new["elems"] = int(rng.integers(0, width - new["offset"] + 1))
            write = write and fields is not None
            offset, elems, zero, unsigned = (fields or new)["offset"], (fields or new)["elems"], \
                (fields or new)["zero"], (fields or new)["unsigned"]
            ctx.set(ld.en, int(write))
            ctx.set(ld.addr, line)
            for p, b in enumerate(byts):
                ctx.set(ld.bytes[p], b)
            for k, v in new.items():        # the next write's (registered)
                ctx.set(getattr(ld, k), int(v))
            fields = new
            # A random read, answered next cycle.
            read = gaps.random() < 0.5
            raddr = int(rng.integers(0, lines))
            ctx.set(rd.en, int(read))
            ctx.set(rd.addr, raddr)
            assert ctx.get(dut.ev_write) == int(write) and ctx.get(dut.ev_read) == int(read)
            lo, hi = QType.range_of(bits, not unsigned)
            vals = [_to_value(b, unsigned) for b in byts]
            want_bad = write and any(not lo <= vals[p] <= hi for p in range(offset, offset + elems))
            assert ctx.get(ld.bad) == int(want_bad)
            checks["bad"] += want_bad
            before = model[raddr].copy()
            await ctx.tick()
            if read:
                assert [ctx.get(rd.data[p]) for p in range(width)] == before.tolist()  # the old line
                checks["reads"] += 1
            if write:
                # out-of-range values are still written (the run stops), bits + 1 wide
                pending.append((cycle, line, zero, {p: ((vals[p] + (1 << bits)) % (1 << (bits + 1))) - (1 << bits)
                                                    for p in range(offset, offset + elems)}))
                checks["zero"] += zero
                checks["writes"] += 1
            # The writes whose line is in the memory from the next cycle on.
            while pending and pending[0][0] + SCRATCHPAD_WRITE <= cycle:
                _, wline, wzero, vals_at = pending.pop(0)
                if wzero:
                    model[wline] = 0
                for p, v in vals_at.items():
                    model[wline, p] = v

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert min(checks["writes"], checks["reads"], checks["zero"]) > 20
    # With 8-bit operands every byte fits (signed or unsigned); narrower ones are refused often.
    assert checks["bad"] == 0 if bits == 8 else checks["bad"] > 20


def test_scratchpad_parameter_errors():
    with pytest.raises(ValueError, match="width must be a positive int, not 0"):
        Scratchpad(width=0, lines=4, bits=8)


def test_counters_add_events_and_clear():
    names = ("a", "b", "c")
    dut = PerfCounters(event_max={"a": 1, "b": 17, "c": 17})
    rng = np.random.default_rng(4)
    model = np.zeros(3, np.int64)
    cleared = 0
    history = []                # the events of each cycle since the last clear (None: a clear)

    async def bench(ctx):
        nonlocal cleared
        for t in range(300):
            ev = rng.integers(0, 18, 3)
            ev[0] = rng.integers(0, 2)
            clear = rng.random() < 0.05
            for i, v in enumerate(ev):
                ctx.set(dut.events[i], int(v))
            ctx.set(dut.clear, int(clear))
            await ctx.tick()
            # After cycle t's edge the counters hold the events of the cycles after the last clear before
            # cycle t, up to t - EVENT_REGISTER (an event of cycle u shows in cycle u + 1 + EVENT_REGISTER; a
            # clear zeroes them one cycle later than it would without its register).
            history.append(None if clear else ev)
            cleared += clear
            model[:] = 0
            for u in range(t - EVENT_REGISTER, -1, -1):
                if any(h is None for h in history[u:t]):
                    break
                model[:] += history[u]
            assert [ctx.get(dut.counters[i]) for i in range(3)] == model.tolist()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert cleared and model.max() > 0 and dut.index("c") == 2 and dut.names == names


def test_counters_sized_to_need_and_saturate():
    """Each counter holds 2**48 - 1 cycles of its largest event; at that many cycles every counter stops."""
    top = (1 << CYCLE_COUNTER_BITS) - 1
    dut = PerfCounters(event_max={"cycles": 1, "bit": 1, "byte": 255, "three": 3})
    assert [len(r) for r in dut.regs] == [48, 48, 56, 50] and CYCLE_COUNTER_BITS == 48 and COUNTER_BITS == 64
    seen = []

    async def bench(ctx):
        for i, v in enumerate((1, 1, 255, 3)):
            ctx.set(dut.events[i], v)
        for _ in range(EVENT_REGISTER):     # the events reach the adds
            await ctx.tick()
        # Start just below the limit: the largest values each counter can reach by then.
        for reg, value in zip(dut.regs, (top - 2, top - 2, 255 * (top - 2), 3 * (top - 2))):
            ctx.set(reg, value)
        for _ in range(4):
            await ctx.tick()
            seen.append([ctx.get(dut.counters[i]) for i in range(4)])
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        seen.append([ctx.get(dut.counters[i]) for i in range(4)])      # the clear is registered first
        await ctx.tick()
        seen.append([ctx.get(dut.counters[i]) for i in range(4)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # Two more cycles reach the limit, then nothing moves (no wrap-around); clear still zeroes.
    full = [top, top, 255 * top, 3 * top]
    assert seen == [[top - 1, top - 1, 255 * (top - 1), 3 * (top - 1)], full, full, full, full, [0, 0, 0, 0]]


def test_counter_parameter_errors():
    with pytest.raises(ValueError, match="the first counter, 'a', is the clock: its event_max must be 1, not 2"):
        PerfCounters(event_max={"a": 2})
    with pytest.raises(ValueError, match="event_max names no counter"):
        PerfCounters(event_max={})
    with pytest.raises(ValueError, match="needs 65 bits, more than its 64-bit slot"):
        PerfCounters(event_max={"cycles": 1, "wide": (1 << 16) + 1})
    with pytest.raises(ValueError, match="event_max must be a positive integer, not 0"):
        counter_width(0)
