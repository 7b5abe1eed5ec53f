"""amaranth.sim test of the vector unit's divider against the definition of DIV (docs/isa.md): after ``load``
and ``acc_bits`` steps each lane holds ``4 * floor(a / d) + 2 * [2r >= d] + [r != 0]``."""

import numpy as np
from amaranth.sim import Simulator

from systolic.hw.divider import DIVISOR_BITS, LineDivider

COLS, ACC = 3, 20


def test_quotients_and_rounding_bits_equal_the_definition():
    dut = LineDivider(cols=COLS, acc_bits=ACC)
    rng = np.random.default_rng(7)
    lo, hi = -(1 << (ACC - 1)), (1 << (ACC - 1)) - 1
    edge = [lo, lo + 1, -1, 0, 1, hi - 1, hi]
    cases = []
    for d in [1, 3, 5, 7, 49, 255, (1 << DIVISOR_BITS) - 1] + [int(v) | 1 for v in rng.integers(1, 1 << 16, 12)]:
        for _ in range(4):
            a = rng.integers(lo, hi + 1, COLS)
            if rng.random() < 0.5:
                a[0] = rng.choice(edge)
                a[1] = int(rng.integers(lo // d + 1, hi // d)) * d       # an exact multiple
            cases.append((d, a))
    got = []

    async def bench(ctx):
        for i, (d, a) in enumerate(cases):
            # The system steps every cycle, the load's too (load wins); half the cases step during it.
            ctx.set(dut.step, i % 2)
            ctx.set(dut.divisor, d)
            for c in range(COLS):
                ctx.set(dut.line[c], int(a[c]))
            ctx.set(dut.load, 1)
            await ctx.tick()
            ctx.set(dut.load, 0)
            ctx.set(dut.divisor, 0)         # taken at load: later changes do not matter
            ctx.set(dut.step, 1)
            await ctx.tick().repeat(ACC)
            ctx.set(dut.step, 0)
            ctx.set(dut.line[0], 12345)     # and the lines after the load do not matter either
            await ctx.tick()                 # the result holds without steps
            got.append([ctx.get(dut.y[c]) for c in range(COLS)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for (d, a), y in zip(cases, got):
        q, r = a // d, a % d
        assert y == (4 * q + 2 * (2 * r >= d) + (r != 0)).tolist(), (d, a.tolist())
