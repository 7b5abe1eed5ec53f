"""amaranth.sim tests of the STORE pipeline against the golden model's requantize, with random stalls.

The testbench serves the accumulator read port from a NumPy array (data one
cycle after the address), loads a LOADQ parameter block, and raises the
scatter engine's ``ready`` on random cycles. Model: line ``i`` goes out as
``golden.requantize(acc[acc + i, :elems], bias, shift, (bits, signed), relu,
rounding)`` to ``dram + i * stride``; it is read the cycle after ``start`` or
as soon as fewer than ``store_pipeline + 1`` lines are read and not out, and
goes out in the first cycle with ``ready`` at least ``store_pipeline``
cycles after its read.
"""

import random
from collections import deque

import numpy as np
import pytest
from amaranth.sim import Simulator

from systolic.arch.config import AcceleratorConfig
from systolic.arch.latency import ACC_READ
from systolic.golden import QType, requantize
from systolic.hw.store import StorePipeline


def _params(cfg, bias, shift) -> list[int]:
    raw = np.asarray(bias, "<i4").tobytes() + np.asarray(shift, np.int8).tobytes()
    assert len(raw) == cfg.loadq_bytes
    return list(raw)


def _run(cfg, acc, bias, shift, cmds, seed=0, ready_p=1.0):
    """Per STORE: the cycles (from its start) and addresses of its reads, and the cycle, address and bytes of each
    line out; the timing model of the docstring is asserted cycle by cycle."""
    dut = StorePipeline(config=cfg)
    rng = random.Random(seed)
    pipe = cfg.latencies.store_pipeline
    out = []

    async def bench(ctx):
        ctl = dut.ctl
        for p, b in enumerate(_params(cfg, bias, shift)):
            ctx.set(ctl.params[p], b)
        ctx.set(ctl.params_load, 1)
        await ctx.tick()
        ctx.set(ctl.params_load, 0)
        for cmd in cmds:
            for k, v in cmd.items():
                ctx.set(getattr(ctl.cmd, k), v)
            ctx.set(ctl.ready, 0)
            assert not ctx.get(dut.acc.en)
            await ctx.tick()                # the command holds from the cycle before its start (the controller's)
            ctx.set(ctl.start, 1)
            # The accumulator's read port: the line read ACC_READ cycles ago. The start cycle (0) reads line 0.
            asked, reads, lines = deque([None] * ACC_READ, maxlen=ACC_READ), [], []
            req = ctx.get(dut.acc.addr) if ctx.get(dut.acc.en) else None
            assert (req is not None) == (cmd["lines"] != 0)
            if req is not None:
                reads.append((0, req))
            asked.append(req)
            await ctx.tick()
            ctx.set(ctl.start, 0)
            for cycle in range(1, 2000):
                if asked[0] is not None:
                    for c in range(cfg.cols):
                        ctx.set(dut.acc.data[c], int(acc[asked[0], c]))
                ready = rng.random() < ready_p
                ctx.set(ctl.ready, int(ready))
                if ctx.get(ctl.done):
                    assert len(lines) == cmd["lines"] and not ctx.get(dut.acc.en) and not ctx.get(ctl.out_valid)
                    break
                req = ctx.get(dut.acc.addr) if ctx.get(dut.acc.en) else None
                # A read whenever a line is left to read and fewer than pipe + 1 are read and not out.
                assert (req is not None) == (len(reads) < cmd["lines"] and len(reads) - len(lines) < pipe + 1), \
                    (cycle, reads, lines)
                if req is not None:
                    reads.append((cycle, req))
                asked.append(req)
                # A line out whenever ready and a line has been through the pipeline.
                due = sum(r + pipe <= cycle for r, _ in reads) > len(lines)
                sent = ctx.get(ctl.out_valid)
                assert sent == (ready and due), (cycle, reads, lines)
                addr = ctx.get(ctl.out_addr)
                elems = ctx.get(dut.ev_elems)
                await ctx.tick()
                if sent:
                    lines.append((cycle, addr, [ctx.get(dut.bytes[c]) for c in range(elems)]))
            else:
                raise AssertionError(f"the STORE {cmd} did not finish: {reads} {lines}")
            out.append((reads, lines))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("rounding", ["half_even", "half_up"])
@pytest.mark.parametrize("ready_p", [1.0, 0.4, 0.15])
def test_lines_equal_golden_requantize(rounding, ready_p):
    cfg = AcceleratorConfig(rows=2, cols=4, rounding=rounding, acc_entries=16)
    rng = np.random.default_rng(3)
    acc = rng.integers(-2 ** 31, 2 ** 31, (16, 4))
    acc[:8] = rng.integers(-5000, 5000, (8, 4))
    acc[2, :] = [96, 96, -80, 6]                          # x = acc + bias: 80, 112, -80: ties (shift 5), both parities
    bias = np.array([-(1 << 4), 1 << 4, 0, -100])
    shift = np.array([5, 5, 5, -2])                       # a left shift too
    cmds = [dict(relu=0, unsigned=0, lines=6, acc=0, elems=4, bits=8, dram=1000, stride=7),
            dict(relu=1, unsigned=1, lines=3, acc=1, elems=3, bits=8, dram=64, stride=4),
            dict(relu=0, unsigned=0, lines=4, acc=8, elems=4, bits=5, dram=0, stride=4),
            dict(relu=0, unsigned=0, lines=0, acc=0, elems=4, bits=8, dram=0, stride=4)]
    runs = _run(cfg, acc, bias, shift, cmds, seed=9, ready_p=ready_p)
    lat = cfg.latencies
    ties = saturated = 0
    for cmd, (reads, lines) in zip(cmds, runs):
        e, n = cmd["elems"], cmd["lines"]
        assert [r for _, r in reads] == [cmd["acc"] + i for i in range(n)]
        assert len(lines) == n
        want_t = QType(cmd["bits"], not cmd["unsigned"], 0)
        if ready_p == 1.0:           # the scatter always ready: a line per cycle, from the start cycle on
            assert [t for t, _ in reads] == list(range(n))
            assert [t for t, _, _ in lines] == [i + lat.store_pipeline for i in range(n)]
        for i, (t, addr, got) in enumerate(lines):
            assert t >= reads[i][0] + lat.store_pipeline
            assert addr == cmd["dram"] + i * cmd["stride"]
            x = acc[cmd["acc"] + i, :e]
            want = requantize(x, bias[:e], shift[:e], want_t, bool(cmd["relu"]), rounding)
            assert got == [int(v) & 0xFF for v in want]
            ties += int(np.sum((shift[:e] > 0) & ((x + bias[:e]) % 32 == 16)))
            saturated += int(np.sum((want == want_t.lo) | (want == want_t.hi)))
    assert ties >= 3 and saturated >= 4


def test_shift_beyond_the_lanes_is_clamped_exactly():
    """The int8 shift is clamped to the lanes' 7 bits (63 / -64): exact, since a right shift past the
    accumulator gives 0 and a left shift past the output width saturates (golden at +-40 already does)."""
    cfg = AcceleratorConfig(rows=2, cols=2, acc_entries=4)
    acc = np.array([[2 ** 31 - 1, -5], [7, 0], [0, 0], [0, 0]])
    (_, lines), = _run(cfg, acc, [0, 0], [100, -100], [dict(relu=0, unsigned=0, lines=2, acc=0, elems=2, bits=8,
                                                             dram=0, stride=2)])
    t = QType(8, True, 0)
    want = [requantize(acc[i], [0, 0], [40, -40], t, False, "half_even") for i in range(2)]
    assert [ln[2] for ln in lines] == [[int(v) & 0xFF for v in w] for w in want]
    assert lines[1][2] == [0, 0] and lines[0][2] == [0, 0x80]     # -5 << 100 saturates to -128


def test_config_type_error():
    with pytest.raises(TypeError, match="config must be an AcceleratorConfig, not 3"):
        StorePipeline(config=3)
