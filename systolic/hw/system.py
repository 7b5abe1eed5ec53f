"""The accelerator system: the units of ``systolic.hw`` wired behind one memory port and a host interface.

:class:`Accelerator` executes programs of the ISA in docs/isa.md from an
external memory through one memory port (:class:`~systolic.hw.dma.MemPortSignature`).
It only instantiates and connects units, each in its own file with its
latency and throughput in its docstring:

- ``controller.Controller``: fetch, decode and check (``checker.InstrChecker``),
  interlocks, LOAD / LOADQ / STORE sequencing, the MATMUL queue slot;
- ``dma.Dma``: pipelined gathers and scatters over the memory port;
- ``scratchpad.Scratchpad``: A (``rows`` wide) and W (``cols`` wide), LOAD conversion;
- ``array_units.array_unit``: the dataflow's array unit (:data:`~systolic.hw.array_units.ARRAY_UNITS`);
- ``accumulator.AccumulatorBuffer``: ``=``, ``+=``, ``+= << s``;
- ``store.StorePipeline``: accumulator lines -> requantizer lanes -> bytes for the scatter;
- ``counters.PerfCounters``: the performance counters.

Cycle counts follow docs/isa.md ("Timing"); :mod:`systolic.arch.timing`
predicts them exactly from the units' named latencies.

The host interface (docs/architecture.md, "System") is a handful of CSR-like
ports: it writes the program into memory, sets ``prog_addr``, ``prog_len``
and ``dram_bytes`` and pulses ``start``; ``busy`` falls and ``done`` rises at
HALT; ``error`` holds the error code (:data:`systolic.arch.sysmap.ERRORS`),
``err_index`` the failing instruction and ``err_arg`` the offending value;
``counters`` the performance counters (:data:`systolic.arch.sysmap.COUNTERS`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..arch.config import AcceleratorConfig
from ..arch.latency import EVENT_REGISTER
from ..arch.sysmap import CONTROLLER_UNITS, COUNTER_BITS, COUNTERS, ERROR_ARG_BITS, ERROR_CODE_BITS, PC_BITS
from .accumulator import AccumulatorBuffer
from .array_units import array_unit
from .controller import Controller
from .counters import PerfCounters
from .dma import Dma, MemPortSignature
from .params import require_system_config
from .scratchpad import Scratchpad
from .store import StorePipeline

__all__ = ["Accelerator"]


class Accelerator(wiring.Component):
    """The whole accelerator behind one memory port and a CSR-like host interface.

    Parameters
    ----------
    config : AcceleratorConfig
        ``in_bits``, ``w_bits``, ``out_bits`` at most 8 (bytes in memory);
        see :meth:`AcceleratorConfig.check_system`.

    Members
    -------
    bus : Out(MemPortSignature(bus_bytes))
        Memory port (request / response streams, pipelined reads).
    start : In(1)
        Pulse (while not busy) to run the program.
    prog_addr : In(32)
        Byte address of instruction 0 (16-byte aligned is fastest, not required).
    prog_len : In(32)
        Number of instructions; running past it is the "program ends without HALT" error.
    dram_bytes : In(32)
        Size of the data window ``[0, dram_bytes)`` that LOAD / LOADQ / STORE may touch.
    busy, done : Out(1)
        Running; finished at HALT without error (cleared by ``start``). The status ports (these, ``error``,
        ``err_index``, ``err_arg``) lag the controller by :data:`~systolic.arch.latency.EVENT_REGISTER` cycles,
        as the counters do, so the counters are final when ``busy`` falls; the cycle after a ``start`` the
        controller takes, ``busy`` is 1 and the rest 0.
    error : Out(4)
        0, or an error code of :data:`systolic.arch.sysmap.ERRORS` (the run stopped).
    err_index : Out(32)
        Index of the instruction that failed.
    err_arg : Out(64)
        The offending value (address, line, opcode), see the error table.
    counters : Out(data.ArrayLayout(unsigned(64), len(COUNTERS)))
        Performance counters, cleared by ``start``, each as wide as it needs
        (:class:`~systolic.hw.counters.PerfCounters`: all stop when ``cycles`` reaches
        ``2**CYCLE_COUNTER_BITS - 1``).
    """

    def __init__(self, *, config: AcceleratorConfig):
        self.config = require_system_config(config, self)
        super().__init__({
            "bus": Out(MemPortSignature(config.bus_bytes)),
            "start": In(1), "prog_addr": In(32), "prog_len": In(PC_BITS), "dram_bytes": In(32),
            "busy": Out(1), "done": Out(1), "error": Out(ERROR_CODE_BITS), "err_index": Out(PC_BITS),
            "err_arg": Out(ERROR_ARG_BITS),
            "counters": Out(data.ArrayLayout(COUNTER_BITS, len(COUNTERS))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        B = cfg.dma_buffer_bytes
        m.submodules.dma = dma = Dma(bus_bytes=cfg.bus_bytes, buf_bytes=B, src_bytes=C)
        m.submodules.spad_a = spad_a = Scratchpad(width=R, lines=cfg.a_lines, bits=cfg.in_bits)
        m.submodules.spad_w = spad_w = Scratchpad(width=C, lines=cfg.w_lines, bits=cfg.w_bits)
        m.submodules.accbuf = accbuf = AccumulatorBuffer(cols=C, lines=cfg.acc_lines, acc_bits=cfg.acc_bits,
                                                         psum_bits=cfg.array_config.acc_bits)
        m.submodules.array_unit = unit = array_unit(cfg)
        m.submodules.store = store = StorePipeline(config=cfg)
        m.submodules.controller = ctrl = Controller(config=cfg, readers=unit.READERS, writers=unit.WRITERS)

        wiring.connect(m, dma.bus, wiring.flipped(self.bus))
        wiring.connect(m, ctrl.dma, dma.cmd)
        wiring.connect(m, ctrl.load_a, spad_a.load)
        wiring.connect(m, ctrl.load_w, spad_w.load)
        wiring.connect(m, ctrl.matmul, unit.matmul)
        wiring.connect(m, unit.a, spad_a.read)
        wiring.connect(m, unit.w, spad_w.read)
        wiring.connect(m, unit.upd, accbuf.upd)
        wiring.connect(m, ctrl.vec, accbuf.vec)
        wiring.connect(m, ctrl.store, store.ctl)
        # The accumulator's read port: the STORE pipeline's, or DIV's (the controller runs one at a time).
        m.d.comb += [accbuf.rd.en.eq(store.acc.en | ctrl.acc_rd.en),
                     accbuf.rd.addr.eq(Mux(ctrl.div_mode, ctrl.acc_rd.addr, store.acc.addr)),
                     store.acc.data.eq(accbuf.rd.data), ctrl.acc_rd.data.eq(accbuf.rd.data)]
        # The array unit clears a cycle after the start (a register drives its resets, not the logic that takes
        # the start): a run's first MATMUL reaches it only after its fetch, DECODE and CHECK.
        clear_r = Signal()
        m.d.sync += clear_r.eq(ctrl.clear)
        m.d.comb += [
            dma.src.eq(store.bytes), ctrl.dma_buf.eq(dma.buf),
            ctrl.readers.eq(unit.readers), ctrl.writers.eq(unit.writers), ctrl.unit_busy.eq(unit.busy),
            unit.clear.eq(clear_r),
            ctrl.overflow.eq(accbuf.overflow), ctrl.overflow_idx.eq(unit.idx),
            ctrl.start.eq(self.start), ctrl.prog_addr.eq(self.prog_addr), ctrl.prog_len.eq(self.prog_len),
            ctrl.dram_bytes.eq(self.dram_bytes),
        ]
        # The status lags the controller by EVENT_REGISTER cycles, as the counters do, so the counters are final
        # when it shows the end of a run; the start the controller takes shows at once (busy, the rest cleared).
        status = [(self.busy, ctrl.busy), (self.done, ctrl.done), (self.error, ctrl.error),
                  (self.err_index, ctrl.err_index), (self.err_arg, ctrl.err_arg)]
        taken = Signal(EVENT_REGISTER)      # the start taken in each of the last EVENT_REGISTER cycles
        m.d.sync += taken.eq(Cat(self.start & ~ctrl.busy, taken[:-1]))
        for out, src in status:
            for k in range(EVENT_REGISTER):
                reg = Signal.like(src, name=f"{out.name}_r{k}")
                m.d.sync += reg.eq(src)
                src = reg
            m.d.comb += out.eq(Mux(taken.any(), out is self.busy, src))

        # Each counter's event (definitions: docs/isa.md, "Counters").
        ev = ctrl.events
        events = {
            "cycles": ev.cycles, "instructions": ev.instructions,
            "macs": Mux(accbuf.ev_write & ~accbuf.ev_vec_write, R * C, 0), "vec_ops": ev.vec_ops, "div_ops": ev.div_ops,
            "dram_bytes_read": ev.dram_bytes_read, "dram_bytes_written": store.ev_elems,
            "spad_a_reads": spad_a.ev_read, "spad_a_writes": spad_a.ev_write,
            "spad_w_reads": spad_w.ev_read, "spad_w_writes": spad_w.ev_write,
            "acc_reads": accbuf.ev_read + store.ev_acc_read + ctrl.acc_rd.en, "acc_writes": accbuf.ev_write,
            "requant_ops": store.ev_elems, "fetch_bytes": ev.fetch_bytes,
            "bus_reads": dma.words_read, "bus_writes": dma.words_written,
            "matmul_busy": ev.matmul_busy, "matmul_stall": unit.stall, "idle_mem_stall": ev.idle_mem_stall,
        }
        for u in CONTROLLER_UNITS:
            for k in ("busy", "stall"):
                events[f"{u}_{k}"] = getattr(ev, f"{u}_{k}")
        assert set(events) == set(COUNTERS), set(COUNTERS) ^ set(events)
        # Each counter as wide as its event's largest value needs (the event's width bounds it).
        event_max = {name: (1 << len(Value.cast(events[name]))) - 1 for name in COUNTERS}
        m.submodules.counters = counters = PerfCounters(event_max=event_max)
        m.d.comb += [counters.clear.eq(ctrl.clear), self.counters.eq(counters.counters)]
        for name, value in events.items():
            m.d.comb += counters.events[counters.index(name)].eq(value)
        return m
