"""amaranth.sim tests of the scratchpad (LOAD conversion, element writes, reads) and the performance counters,
each against a NumPy model, with random idle cycles between operations."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from systolic.arch.sysmap import COUNTER_BITS
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
        for _ in range(600):
            # A random LOAD line write (or an idle cycle).
            write = gaps.random() < 0.6
            line = int(rng.integers(0, lines))
            byts = [int(b) for b in rng.integers(0, 256, width)]
            if rng.random() < 0.5:
                byts = [b & ((1 << bits) - 1) for b in byts]       # mostly in range
            offset = int(rng.integers(0, width + 1))
            elems = int(rng.integers(0, width - offset + 1))
            zero, unsigned = bool(rng.integers(0, 2)), bool(rng.integers(0, 2))
            ctx.set(ld.en, int(write))
            ctx.set(ld.addr, line)
            for p, b in enumerate(byts):
                ctx.set(ld.bytes[p], b)
            for k, v in (("offset", offset), ("elems", elems), ("zero", zero), ("unsigned", unsigned)):
                ctx.set(getattr(ld, k), int(v))
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
                if zero:
                    model[line] = 0
                    checks["zero"] += 1
                # out-of-range values are still written (the run stops), bits + 1 wide
                for p in range(offset, offset + elems):
                    v = vals[p]
                    model[line, p] = ((v + (1 << bits)) % (1 << (bits + 1))) - (1 << bits)
                checks["writes"] += 1

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
    dut = PerfCounters(names=names, event_max=17)
    rng = np.random.default_rng(4)
    model = np.zeros(3, np.int64)
    cleared = 0

    async def bench(ctx):
        nonlocal cleared
        for _ in range(300):
            ev = rng.integers(0, 18, 3)
            clear = rng.random() < 0.05
            for i, v in enumerate(ev):
                ctx.set(dut.events[i], int(v))
            ctx.set(dut.clear, int(clear))
            await ctx.tick()
            if clear:
                model[:] = 0
                cleared += 1
            else:
                model[:] += ev
            assert [ctx.get(dut.counters[i]) for i in range(3)] == model.tolist()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert cleared and model.max() > 0 and dut.index("c") == 2 and COUNTER_BITS == 64
    with pytest.raises(ValueError, match="names must be distinct counter names"):
        PerfCounters(names=("a", "a"), event_max=1)
