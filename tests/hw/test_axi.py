"""The AXI pieces of the AXI top in amaranth.sim, against models written here.

- ``AxiMemBridge``: runs of reads and writes to overlapping addresses on the accelerator's side, an AXI slave
  here that takes its time on every channel and lets a write land at a random time before its B (so a read
  issued too early, or a write issued before earlier reads are answered, returns the wrong data). Every read must return
  what the accelerator's in-order port promises (the writes before it, none after), and the master must keep
  the AXI handshake rules (a VALID stays up with its payload until READY).
- ``AxiLiteCsr``: address before data, data before address, byte strobes, read-back, the start pulse,
  unmapped addresses.
"""

import random

import pytest
from amaranth.sim import Simulator

from systolic.arch.sysmap import csr_map
from systolic.arch.latency import MAX_READS
from systolic.hw.axi import MAX_BURST, AxiLiteCsr, AxiMemBridge

BB = 4


def _requests(rng, n_runs: int):
    """Runs of requests as the DMA makes them: one kind, consecutive words, 1 to 24 long, some across a 4 KiB
    page; the addresses overlap between runs, so reads meet recent writes."""
    reqs = []
    for _ in range(n_runs):
        write = rng.random() < 0.5
        start = rng.choice([0, 64, 128, 4096 - 8 * BB, 8192 - 3 * BB]) + BB * rng.randint(0, 6)
        for k in range(rng.randint(1, 24)):
            reqs.append((write, start + BB * k, rng.getrandbits(8 * BB), rng.getrandbits(BB) or 1))
    return reqs


def _bridge_run(seed: int, n_runs: int = 100):
    rng = random.Random(seed)
    dut = AxiMemBridge(BB)
    reqs = _requests(rng, n_runs)
    seen = {"reads": [], "violations": [], "bursts": {"ar": [], "aw": []}}

    def merge(old, data, strb):
        mask = sum(0xFF << (8 * b) for b in range(BB) if strb >> b & 1)
        return (old & ~mask) | (data & mask)

    async def bench(ctx):
        ref, slave = {}, {}                  # the in-order port's memory; the AXI slave's
        expect = []                          # read answers, in order
        r_beats = []                         # (due cycle, address, last)
        aw_q, w_beats, b_queue = [], [], []
        held = {}                            # channel -> payload while VALID without READY
        i, cycle, tail = 0, 0, 100           # tail: cycles after the last answer, for the last writes to go out
        while i < len(reqs) or expect or tail:
            cycle += 1
            tail -= i == len(reqs) and not expect
            assert cycle < 50_000, "the bridge stopped making progress"
            # The accelerator's side: request i shown until taken, at most MAX_READS reads unanswered.
            show = i < len(reqs) and (reqs[i][0] or len(expect) < MAX_READS)
            ctx.set(dut.mem.req_valid, show)
            if show:
                write, addr, data, strb = reqs[i]
                ctx.set(dut.mem.req_write, write)
                ctx.set(dut.mem.req_addr, addr)
                ctx.set(dut.mem.req_wdata, data)
                ctx.set(dut.mem.req_wstrb, strb)
            # The slave: random readiness; R beats when due; a write applied when its B goes out.
            for ch in ("ar", "aw", "w"):
                ctx.set(getattr(dut, f"m_axi_{ch}ready"), rng.random() < 0.6)
            r_due = bool(r_beats) and r_beats[0][0] <= cycle
            ctx.set(dut.m_axi_rvalid, r_due)
            ctx.set(dut.m_axi_rdata, slave.get(r_beats[0][1], 0) if r_due else 0)
            ctx.set(dut.m_axi_rlast, r_due and r_beats[0][2])
            ctx.set(dut.m_axi_rresp, 0)
            for entry in b_queue:             # a write lands in the slave's memory some time before its B
                if entry[0] <= cycle and entry[2]:
                    for addr, data, strb in entry[2]:
                        slave[addr] = merge(slave.get(addr, 0), data, strb)
                    entry[2] = []
            b_due = bool(b_queue) and b_queue[0][1] <= cycle
            ctx.set(dut.m_axi_bvalid, b_due)
            ctx.set(dut.m_axi_bresp, 0)
            if b_due:
                b_queue.pop(0)
            # Handshake rules: a VALID without READY last cycle must still be up with the same payload.
            chans = (("ar", ("araddr", "arlen", "arsize", "arburst")), ("aw", ("awaddr", "awlen", "awsize", "awburst")),
                     ("w", ("wdata", "wstrb", "wlast")))
            for ch, payload in chans:
                valid = ctx.get(getattr(dut, f"m_axi_{ch}valid"))
                now = tuple(ctx.get(getattr(dut, f"m_axi_{p}")) for p in payload)
                if ch in held and (not valid or now != held[ch]):
                    seen["violations"].append((cycle, ch))
                ready = ctx.get(getattr(dut, f"m_axi_{ch}ready"))
                held.pop(ch, None)
                if valid and not ready:
                    held[ch] = now
                if valid and ready:
                    if ch == "ar":
                        addr, n = now[0], now[1] + 1
                        seen["bursts"]["ar"].append((addr, n, now[2], now[3]))
                        due = cycle + (rng.randint(1, 3) if rng.random() < 0.5 else rng.randint(12, 30))
                        for k in range(n):
                            r_beats.append((due + k + (rng.random() < 0.3), addr + BB * k, k == n - 1))
                    elif ch == "aw":
                        aw_q.append(now)
                        seen["bursts"]["aw"].append((now[0], now[1] + 1, now[2], now[3]))
                    else:
                        w_beats.append(now)
            # A burst's writes are answered (and applied) once its AW and all its W beats are in.
            while aw_q and len(w_beats) >= aw_q[0][1] + 1:
                addr, length = aw_q[0][0], aw_q.pop(0)[1] + 1
                beats, w_beats[:] = w_beats[:length], w_beats[length:]
                if [b[2] for b in beats] != [0] * (length - 1) + [1]:
                    seen["violations"].append((cycle, "wlast"))
                # Same ID: writes land and are answered in order (AXI's ordering for one ID).
                lands = max(cycle + (rng.randint(0, 2) if rng.random() < 0.5 else rng.randint(10, 30)),
                            b_queue[-1][0] if b_queue else 0)
                b_queue.append([lands, lands + rng.randint(1, 4), [(addr + BB * k, d, s) for k, (d, s, _) in
                                                                     enumerate(beats)]])
            if r_due:
                r_beats.pop(0)
            # The accelerator's side: an answered read, an accepted request.
            if ctx.get(dut.mem.resp_valid):
                seen["reads"].append((ctx.get(dut.mem.resp_data), expect.pop(0)))
            if show and ctx.get(dut.mem.req_ready):
                write, addr, data, strb = reqs[i]
                if write:
                    ref[addr] = merge(ref.get(addr, 0), data, strb)
                else:
                    expect.append(ref.get(addr, 0))
                i += 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return reqs, seen


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bridge_keeps_the_ports_order_and_the_axi_rules(seed):
    reqs, seen = _bridge_run(seed)
    n_reads = sum(1 for r in reqs if not r[0])
    assert len(seen["reads"]) == n_reads > 200
    bad = [(k, got, want) for k, (got, want) in enumerate(seen["reads"]) if got != want]
    assert not bad, f"reads that do not see exactly the writes before them: {bad[:5]}"
    assert seen["violations"] == []
    for ch in ("ar", "aw"):
        bursts = seen["bursts"][ch]
        # Every request went out in exactly one beat of a burst; bursts are INCR of bus words in one page.
        assert sum(n for _, n, _, _ in bursts) == sum(1 for r in reqs if r[0] == (ch == "aw"))
        assert all(size == BB.bit_length() - 1 and burst == 1 for _, _, size, burst in bursts)
        assert all(1 <= n <= MAX_BURST and addr // 4096 == (addr + BB * n - 1) // 4096 for addr, n, _, _ in bursts)
        assert max(n for _, n, _, _ in bursts) >= 8, f"{ch}: no long burst formed"


def test_bridge_flags_error_responses():
    dut = AxiMemBridge(BB)
    seen = []

    async def bench(ctx):
        for rresp, bresp in ((0, 0), (2, 0), (0, 3), (1, 0)):
            ctx.set(dut.m_axi_rvalid, 1)
            ctx.set(dut.m_axi_rresp, rresp)
            ctx.set(dut.m_axi_bvalid, 1)
            ctx.set(dut.m_axi_bresp, bresp)
            seen.append((ctx.get(dut.read_error), ctx.get(dut.write_error)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # SLVERR (2) and DECERR (3) are errors; OKAY (0) and EXOKAY (1) are not.
    assert seen == [(0, 0), (1, 0), (0, 1), (0, 0)]


def test_axi_lite_csr_writes_reads_and_start():
    regs = csr_map()
    sources = {"ctrl": 8, "err_index": 32, "err_arg": 64, "bus_status": 2,
               **{n: 64 for n in regs if n.startswith("counter_")}}
    dut = AxiLiteCsr(sources)
    out, pulses = {}, []

    async def count_starts(ctx):
        async for clk_edge, rst, start in ctx.tick().sample(dut.start):
            if start:
                pulses.append(1)

    async def bench(ctx):
        async def write(addr, data, strb=0xF, aw_first=True, gap=2):
            first, second = (("aw", "w") if aw_first else ("w", "aw"))
            for ch in (first, second):
                if ch == "aw":
                    ctx.set(dut.s_axil_awaddr, addr)
                else:
                    ctx.set(dut.s_axil_wdata, data)
                    ctx.set(dut.s_axil_wstrb, strb)
                ctx.set(getattr(dut, f"s_axil_{ch}valid"), 1)
                while not ctx.get(getattr(dut, f"s_axil_{ch}ready")):
                    await ctx.tick()
                await ctx.tick()
                ctx.set(getattr(dut, f"s_axil_{ch}valid"), 0)
                if gap:
                    await ctx.tick().repeat(gap)
            ctx.set(dut.s_axil_bready, 1)
            for _ in range(20):
                if ctx.get(dut.s_axil_bvalid):
                    break
                await ctx.tick()
            else:
                raise AssertionError("no B response")
            await ctx.tick()
            ctx.set(dut.s_axil_bready, 0)
            await ctx.tick().repeat(3)
            return len(pulses)

        async def read(addr):
            ctx.set(dut.s_axil_araddr, addr)
            ctx.set(dut.s_axil_arvalid, 1)
            while not ctx.get(dut.s_axil_arready):
                await ctx.tick()
            await ctx.tick()
            ctx.set(dut.s_axil_arvalid, 0)
            ctx.set(dut.s_axil_rready, 1)
            while not ctx.get(dut.s_axil_rvalid):
                await ctx.tick()
            value = ctx.get(dut.s_axil_rdata)
            await ctx.tick()
            ctx.set(dut.s_axil_rready, 0)
            return value

        ctx.set(dut.src_err_arg, 0x1122334455667788)
        ctx.set(dut.src_counter_macs, 0xAABBCCDD_00000007)
        ctx.set(dut.src_ctrl, 0x32)
        out["start_aw_first"] = await write(regs["prog_addr"][0], 0x12345678)
        out["prog_addr"] = await read(regs["prog_addr"][0])
        await write(regs["prog_addr"][0], 0xA0B0, strb=0b0010, aw_first=False)   # only byte 1
        out["prog_addr_strobed"] = await read(regs["prog_addr"][0])
        out["dram_bytes"] = (await write(regs["dram_bytes"][0], 0x10000, gap=0), await read(regs["dram_bytes"][0]))
        out["err_arg"] = (await read(regs["err_arg"][0]), await read(regs["err_arg"][0] + 4))
        out["macs"] = (await read(regs["counter_macs"][0]), await read(regs["counter_macs"][0] + 4))
        out["ctrl"] = await read(regs["ctrl"][0])
        before = len(pulses)
        out["start"] = await write(regs["ctrl"][0], 1, aw_first=False) - before
        out["start_masked"] = await write(regs["ctrl"][0], 1, strb=0b1110) - before - out["start"]
        out["unmapped"] = await read(0x1FC)
        out["rw"] = (ctx.get(dut.rw_prog_addr), ctx.get(dut.rw_dram_bytes))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.add_process(count_starts)
    sim.run_until(1e-4)
    assert out["start_aw_first"] == 0
    assert out["prog_addr"] == 0x12345678
    assert out["prog_addr_strobed"] == 0x1234A078
    assert out["dram_bytes"] == (0, 0x10000)
    assert out["err_arg"] == (0x55667788, 0x11223344)
    assert out["macs"] == (0x00000007, 0xAABBCCDD)
    assert out["ctrl"] == 0x32
    assert out["start"] == 1 and out["start_masked"] == 0
    used = {base + 4 * w for base, n, _ in regs.values() for w in range((n + 3) // 4)}
    assert 0x1FC not in used and out["unmapped"] == 0
    assert out["rw"] == (0x1234A078, 0x10000)
