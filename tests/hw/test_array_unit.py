"""amaranth.sim tests of the array units (one per dataflow) against a behavioural model.

The unit under test is driven alone: the testbench serves its scratchpad
read ports from NumPy arrays (data one cycle after the address, as
``Scratchpad``) and records its accumulator updates (``busy`` one cycle, as
``AccumulatorBuffer``). MATMULs arrive on the ``matmul`` stream with random
idle cycles. The model: each MATMUL's updates are exactly
``acc + i <- (A[a + i] @ W[w : w + rows]), accumulate, shift`` for ``i < m``,
in program order between MATMULs; its timing is the named latencies'
(``systolic.arch.latency.Latencies``).
"""

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from systolic.arch.config import AcceleratorConfig
from systolic.arch.latency import ACC_UPDATE, QUEUE_SLOT, SCRATCHPAD_READ
from systolic.hw.array_unit import ArrayUnit
from systolic.hw.array_units import ARRAY_UNITS, array_unit

CONFIGS = {
    "ws": AcceleratorConfig(rows=2, cols=3, dataflow="ws", spad_a_bytes=64, spad_w_bytes=48, acc_entries=16),
    "os": AcceleratorConfig(rows=3, cols=2, dataflow="os", spad_a_bytes=96, spad_w_bytes=32, acc_entries=16),
    "ws4": AcceleratorConfig(rows=4, cols=4, dataflow="ws", spad_a_bytes=128, spad_w_bytes=64, acc_entries=32),
    "os4": AcceleratorConfig(rows=4, cols=4, dataflow="os", spad_a_bytes=128, spad_w_bytes=64, acc_entries=32),
}


def _run(cfg, descs, seed=0, idle=0.0, max_cycles=5000):
    """Drive *descs* (dicts with a, w, acc, m, accum, shift, idx) into the unit; returns the trace."""
    dut = array_unit(cfg)
    rng = np.random.default_rng(seed)
    lo_a = -(1 << cfg.in_bits)
    A = rng.integers(lo_a, -lo_a, (cfg.a_lines, cfg.rows))
    W = rng.integers(-(1 << cfg.w_bits), 1 << cfg.w_bits, (cfg.w_lines, cfg.cols))
    gaps = random.Random(seed)
    trace = {"taken": [], "updates": [], "busy": [], "reads": [], "readers": [], "writers": [], "A": A, "W": W}

    async def bench(ctx):
        pending = list(descs)
        a_req = w_req = None
        hist = [False] * ACC_UPDATE     # upd.valid in the last ACC_UPDATE cycles, oldest first
        wait = 0
        for cycle in range(max_cycles):
            if hist[0]:     # the update presented ACC_UPDATE cycles ago is written now: the index its overflow names
                trace["updates"][-1 - sum(hist[1:])][5] = ctx.get(dut.idx)
            # Inputs of this cycle: read data of last cycle's requests, accumulator busy, the next MATMUL.
            if a_req is not None:
                for r in range(cfg.rows):
                    ctx.set(dut.a.data[r], int(A[a_req, r]))
            if w_req is not None:
                for c in range(cfg.cols):
                    ctx.set(dut.w.data[c], int(W[w_req, c]))
            ctx.set(dut.upd.busy, int(any(hist)))      # the accumulator's busy: an update not yet written
            if pending and wait == 0 and idle and gaps.random() < idle:
                wait = gaps.randint(1, 6)            # random idle cycles on the stream
            offer = bool(pending) and wait == 0
            ctx.set(dut.matmul.valid, int(offer))
            if offer:
                d = pending[0]
                for k in ("a", "w", "acc", "m", "accum", "shift", "idx"):
                    ctx.set(getattr(dut.matmul.payload, k), d[k])
            wait = max(0, wait - 1)
            # Outputs of this cycle.
            if offer and ctx.get(dut.matmul.ready):
                trace["taken"].append(cycle)
                pending.pop(0)
            a_req = ctx.get(dut.a.addr) if ctx.get(dut.a.en) else None
            w_req = ctx.get(dut.w.addr) if ctx.get(dut.w.en) else None
            readers = [(ctx.get(r.a) if ctx.get(r.valid) else None, ctx.get(r.m),
                        ctx.get(r.w) if ctx.get(r.w_valid) else None) for r in dut.readers]
            trace["readers"].append(readers)
            trace["writers"].append([(ctx.get(r.acc), ctx.get(r.m)) for r in dut.writers if ctx.get(r.valid)])
            if a_req is not None:
                trace["reads"].append((cycle, "a", a_req))
            if w_req is not None:
                trace["reads"].append((cycle, "w", w_req))
            upd_last = bool(ctx.get(dut.upd.valid))
            hist = hist[1:] + [upd_last]
            if upd_last:
                psum = tuple(ctx.get(dut.upd.psum[c]) for c in range(cfg.cols))
                trace["updates"].append([cycle, ctx.get(dut.upd.addr), psum, ctx.get(dut.upd.accumulate),
                                         ctx.get(dut.upd.shift), None])
            trace["busy"].append(bool(ctx.get(dut.busy)))
            await ctx.tick()
            if not pending and not ctx.get(dut.busy) and not any(hist) and cycle > 2:
                trace["cycles"] = cycle + 1
                return
        raise AssertionError("the unit did not finish")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return trace


def _random_descs(cfg, rng, n):
    out = []
    for j in range(n):
        m = int(rng.choice([0, 1, 2, cfg.rows, cfg.rows + 1, 2 * cfg.rows + cfg.cols + 2, 12]))
        m = min(m, cfg.a_lines, cfg.acc_lines)
        out.append(dict(a=int(rng.integers(0, cfg.a_lines - m + 1)), w=int(rng.integers(0, cfg.w_lines - cfg.rows + 1)),
                        acc=int(rng.integers(0, cfg.acc_lines - m + 1)), m=m, accum=int(rng.integers(0, 2)),
                        shift=int(rng.integers(0, 4)), idx=100 + j))
    return out


def _expected_updates(cfg, d, A, W):
    """The model: MATMUL *d*'s updates as (addr, psum, accumulate, shift, idx)."""
    psum = A[d["a"]:d["a"] + d["m"]] @ W[d["w"]:d["w"] + cfg.rows]
    return sorted((d["acc"] + i, tuple(int(v) for v in psum[i]), d["accum"], d["shift"], d["idx"])
                  for i in range(d["m"]))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_updates_equal_the_model_with_stream_stalls(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    descs = _random_descs(cfg, rng, 10)
    tr = _run(cfg, descs, seed=1, idle=0.4)
    assert len(tr["taken"]) == len(descs)
    got = [tuple(u[1:]) for u in tr["updates"]]
    # In program order between MATMULs (the write-back never reorders two of them) ...
    assert [u[4] for u in got] == sorted(u[4] for u in got)
    for d in descs:
        # ... and each MATMUL's updates exactly the model's (OS drains bottom row first within a chunk).
        assert sorted(u for u in got if u[4] == d["idx"]) == _expected_updates(cfg, d, tr["A"], tr["W"])
    assert sum(d["m"] for d in descs) == len(got) > 0


@pytest.mark.parametrize("name", list(CONFIGS))
def test_reads_stay_inside_the_published_readers(name):
    """The LOAD interlock's contract: every scratchpad line read belongs to a MATMUL published in ``readers``
    (A lines while ``valid``, W lines while ``w_valid``)."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(5 + len(name))
    descs = _random_descs(cfg, rng, 8)
    tr = _run(cfg, descs, seed=2, idle=0.3)
    assert tr["reads"]
    for cycle, port, line in tr["reads"]:
        pub = tr["readers"][cycle]
        if port == "a":
            assert any(a is not None and a <= line < a + m for a, m, _ in pub), (cycle, line, pub)
        else:
            assert any(w is not None and w <= line < w + cfg.rows for _, _, w in pub), (cycle, line, pub)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_writes_stay_inside_the_published_writers(name):
    """The STORE interlock's contract: an accumulator update presented in cycle c (written in c + ACC_UPDATE)
    belongs to a MATMUL published in ``writers`` in every cycle from c to c + ACC_UPDATE."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(11 + len(name))
    descs = _random_descs(cfg, rng, 8)
    tr = _run(cfg, descs, seed=3, idle=0.3)
    assert tr["updates"]
    for cycle, line, *_ in tr["updates"]:
        for c in range(cycle, cycle + ACC_UPDATE + 1):
            pub = tr["writers"][c] if c < len(tr["writers"]) else []
            assert any(acc <= line < acc + m for acc, m in pub), (c, line, pub)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("m", [0, 1, 3, 9])
def test_one_matmul_takes_the_named_latencies(name, m):
    cfg = CONFIGS[name]
    lat = cfg.latencies
    d = dict(a=0, w=0, acc=0, m=m, accum=0, shift=0, idx=7)
    tr = _run(cfg, [d])
    t = tr["taken"][0]
    assert t == 0
    busy = [c for c, b in enumerate(tr["busy"]) if b]
    last = busy[-1] if busy else t
    if m == 0:                      # taken and dropped
        assert last == t and not tr["reads"] and not tr["updates"]
    elif cfg.dataflow == "os":
        assert last == t + lat.os_matmul(m)
        first_read = t + 1
        assert min(c for c, p, _ in tr["reads"] if p == "a") == first_read
        assert max(c for c, p, _ in tr["reads"] if p == "w") == first_read + cfg.rows - 1
    else:
        first_read = t + lat.weight_tile_read + 1 + lat.weight_push
        assert min(c for c, p, _ in tr["reads"] if p == "a") == first_read
        assert last == first_read + m - 1 + lat.ws_writeback
        assert tr["updates"][-1][0] + ACC_UPDATE == last
    assert busy == list(range(t + QUEUE_SLOT, last + 1))      # busy from the cycle after taking it


def test_ws_matmuls_stream_at_the_period():
    """Back-to-back WS MATMULs: feeder starts ws_matmul_period apart when short, m apart when long."""
    cfg = CONFIGS["ws4"]
    lat = cfg.latencies
    P = lat.ws_matmul_period
    for m in (2, P, P + 5):
        descs = [dict(a=0, w=0, acc=0, m=m, accum=1, shift=0, idx=i) for i in range(4)]
        tr = _run(cfg, descs)
        starts = [cycle for cycle, port, line in tr["reads"] if port == "a" and line == 0]   # every one starts at 0
        assert len(starts) == 4, (m, starts)
        assert np.diff(starts).tolist() == [max(m, P)] * 3
        assert SCRATCHPAD_READ == 1


@pytest.mark.parametrize("name", ["os", "os4"])
def test_os_chunks_stream_across_matmuls(name):
    """Back-to-back OS MATMULs of any m: one chunk of R rows every R cycles, across MATMULs, so the last write
    of the stream is the first chunk's fill, R cycles per chunk and the write-back after the first read; the
    cycle model (OSTiming) gives the same last cycle."""
    from systolic.arch.timing import OSTiming

    cfg = CONFIGS[name]
    lat, R = cfg.latencies, cfg.rows
    ms = [1, R, 2 * R + 1, 2, 3 * R]
    descs = [dict(a=0, w=0, acc=0, m=m, accum=1, shift=0, idx=i) for i, m in enumerate(ms)]
    tr = _run(cfg, descs)
    chunks = sum(-(-m // R) for m in ms)
    first_read = min(c for c, p, _ in tr["reads"])
    last = max(c for c, b in enumerate(tr["busy"]) if b)
    assert first_read == tr["taken"][0] + 1
    assert last == first_read + lat.os_fill + chunks * R - 1 + lat.os_writeback
    timing = OSTiming(lat)
    ends = [timing.issue(t, m)[0] for t, m in zip(tr["taken"], ms)]
    assert ends[-1] == last and ends == sorted(ends)


def test_table_and_errors():
    from systolic.arch.config import DATAFLOWS
    from systolic.arch.ports import INPUT_STREAMS
    from systolic.arch.timing import ARRAY_UNIT_TIMING
    from systolic.hw.array import SystolicArray
    from systolic.hw.pe import PES
    from systolic.report.energy import PE_MOVED_BITS
    from systolic.sim.core.driver import PASSES

    # Every dataflow has its unit, PE, array builder, streams, GEMM-bench passes,
    # energy model and the cycle model of its unit: each per-dataflow table
    # (the list in docs/architecture.md) covers exactly DATAFLOWS.
    tables = (ARRAY_UNITS, ARRAY_UNIT_TIMING, PES, SystolicArray.ELABORATE, INPUT_STREAMS, PASSES, PE_MOVED_BITS)
    for table in tables:
        assert set(table) == set(DATAFLOWS) == {"ws", "os"}
    for df, cfg in (("ws", CONFIGS["ws"]), ("os", CONFIGS["os"])):
        unit = array_unit(cfg)
        assert isinstance(unit, ArrayUnit) and type(unit).__name__ == f"{df.upper()}ArrayUnit"
        assert len(unit.readers) == type(unit).READERS
        Fragment.get(unit, None)          # it elaborates (and is used: no UnusedElaboratable warning)
    with pytest.raises(TypeError, match="config must be an AcceleratorConfig, not 'ws'"):
        array_unit("ws")
    with pytest.raises(ValueError, match="in_bits must be at most 8 for the system"):
        array_unit(AcceleratorConfig(in_bits=12))
