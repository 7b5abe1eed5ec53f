"""amaranth.sim tests of the DMA: pipelined 2-D gathers and back-to-back scatters, data and exact timing."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from systolic.hw.dma import Dma
from systolic.arch.timing import MAX_READS, gather_accepts, words
from systolic.arch.memory import MemoryModel
from systolic.sim.amaranth_backend import SimMemory


def _run(dut, image, cmds, memory):
    """Issue *cmds* as soon as ``ready``; returns per command (start cycle, [(cycle, line bytes)], ...)."""
    log = []
    mem = SimMemory(dut.bus, image, dut.bus_bytes, memory)

    async def bench(ctx):
        pending = list(cmds)
        cycle = 0
        cur = None
        idle = 0
        while pending or cur is not None or ctx.get(dut.busy):
            mem.cycle(ctx)
            if cur is not None and ctx.get(dut.cmd.line_valid):
                cur[1].append((cycle, [ctx.get(dut.cmd.line[p]) for p in range(dut.buf_bytes)]))
            if pending and ctx.get(dut.cmd.ready):
                write, addr, n, off, lines, stride, src = pending.pop(0)
                for p, v in enumerate(src):
                    ctx.set(dut.src[p], v)
                ctx.set(dut.cmd.start, 1)
                ctx.set(dut.cmd.write, write)
                # A scatter's run is on its own fields; the other engine's get unrelated values (must not matter).
                run, other = (dut.cmd.w_addr, dut.cmd.w_n, dut.cmd.w_off), (dut.cmd.addr, dut.cmd.n, dut.cmd.off)
                if not write:
                    run, other = other, run
                for sig, v in zip(run, (addr, n, off)):
                    ctx.set(sig, v)
                for sig, v in zip(other, (addr ^ 0x55, (n + 1) % (dut.buf_bytes + 1), (off + 3) % (dut.buf_bytes + 1))):
                    ctx.set(sig, v)
                ctx.set(dut.cmd.lines, lines)
                ctx.set(dut.cmd.stride, stride)
                cur = (cycle, [])
                log.append(cur)
            elif cur is not None and not ctx.get(dut.busy) and not pending:
                cur = None
            ctx.set(dut.bus.req_ready, ctx.get(dut.bus.req_ready))
            assert ctx.get(dut.busy) or not ctx.get(dut.bus.req_valid)
            await ctx.tick()
            ctx.set(dut.cmd.start, 0)
            cycle += 1
            idle = idle + 1 if not ctx.get(dut.busy) else 0
            if idle > 3 and not pending:
                break
            assert cycle < 20000

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return log


@pytest.mark.parametrize("bb,latency,bpc", [(1, 1, 64), (4, 2, 2), (8, 3, 64), (4, 12, 64), (8, 20, 4)])
def test_gathers_and_scatters_data_and_timing(bb, latency, bpc):
    rng = random.Random(bb * 100 + latency)
    B = 13
    size = 256
    image = np.array([rng.randrange(256) for _ in range(size)], dtype=np.uint8)
    ref = image.copy()
    memory = MemoryModel(latency=latency, bytes_per_cycle=bpc)
    d = memory.base_delay(bb)
    dut = Dma(bus_bytes=bb, buf_bytes=B, src_bytes=B)
    cmds = []
    for _ in range(14):
        write = rng.random() < 0.4
        n = rng.randrange(0 if write else 1, B + 1)
        off = rng.randrange(0, B - n + 1)
        lines = 1 if write else rng.randrange(1, 5)
        stride = rng.randrange(0, 20)
        addr = rng.randrange(0, size - n - bb - (lines - 1) * stride)
        cmds.append((int(write), addr, n, off, lines, stride, [rng.randrange(256) for _ in range(B)]))
        if write and rng.random() < 0.7:     # a run of scatters back to back
            for _ in range(rng.randrange(1, 4)):
                n2 = rng.randrange(0, B + 1)
                cmds.append((1, rng.randrange(0, size - B - bb), n2, rng.randrange(0, B - n2 + 1), 1, 0,
                             [rng.randrange(256) for _ in range(B)]))
    log = _run(dut, image, cmds, memory)
    assert len(log) == len(cmds)
    expect_start = log[0][0]
    buf = [0] * B
    for (write, addr, n, off, lines, stride, src), (start, got_lines) in zip(cmds, log):
        assert start == expect_start, (write, addr, n)
        if write:
            ref[addr:addr + n] = src[off:off + n]
            expect_start = start + max(1, words(addr, n, bb) * (1 + d))   # the next goes as this one's last word
            continue
        per_line = [words(addr + i * stride, n, bb) for i in range(lines)]
        acc = gather_accepts(start, sum(per_line), d, latency)
        ends = np.cumsum(per_line) - 1
        assert [c for c, _ in got_lines] == [int(acc[e]) + latency for e in ends]
        for i, (_, line) in enumerate(got_lines):
            buf[off:off + n] = ref[addr + i * stride:addr + i * stride + n]
            assert line == buf
        expect_start = int(acc[-1]) + latency       # the next goes in the cycle of this one's last answer
    assert np.array_equal(image, ref)


def test_reads_in_flight_are_capped():
    """A long gather with a slow memory: never more than MAX_READS unanswered reads, at full rate otherwise."""
    bb, latency = 4, 30
    image = np.arange(256, dtype=np.uint8)
    dut = Dma(bus_bytes=bb, buf_bytes=4, src_bytes=4)
    log = _run(dut, image, [(0, 0, 4, 0, 40, 4, [0] * 4)], MemoryModel(latency=latency))
    (start, lines), = log
    assert [c for c, _ in lines] == [int(a) + latency for a in gather_accepts(start, 40, 0, latency)]
    # Groups of MAX_READS accepted on consecutive cycles, one group per latency + 1 cycles.
    assert lines[MAX_READS][0] - lines[0][0] == latency + 1
    assert lines[1][0] - lines[0][0] == 1
    assert [v for _, line in lines for v in line] == list(range(160))


def test_dma_parameter_errors():
    with pytest.raises(ValueError, match="bus_bytes must be a power of two, not 3"):
        Dma(bus_bytes=3, buf_bytes=4, src_bytes=4)
    with pytest.raises(ValueError, match="buf_bytes must be a positive int, not 0"):
        Dma(bus_bytes=4, buf_bytes=0, src_bytes=4)
