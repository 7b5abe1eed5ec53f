"""The accelerator system: controller, scratchpads, array, accumulator buffer, requantizers, DMA.

:class:`Accelerator` executes programs of the ISA in docs/isa.md from an
external memory through one memory port (:func:`~systolic.hw.dma.MemPortSignature`).
Instructions run strictly one after another (no overlap between units), so
the cycle count of a program is the sum of per-instruction formulas given in
docs/isa.md ("Timing") and every cycle is attributed to exactly one unit.

The host interface (docs/architecture.md, "System") is a handful of CSR-like
ports: it writes the program into memory, sets ``prog_addr``, ``prog_len``
and ``dram_bytes`` and pulses ``start``; ``busy`` falls and ``done`` rises at
HALT; ``error`` holds the error code (:data:`systolic.hw.sysmap.ERRORS`),
``err_index`` the failing instruction and ``err_arg`` the offending value;
``counters`` the performance counters (:data:`systolic.hw.sysmap.COUNTERS`).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..compiler.isa import FIELDS, INSTR_BYTES, Opcode
from .array import SystolicArray
from .config import AcceleratorConfig
from .dma import Dma, MemPortSignature
from .pe import _check_cfg
from .requantizer import RequantLane
from .sysmap import (COUNTER_BITS, COUNTERS, ERR_ACC, ERR_BAD_OPCODE, ERR_BITS, ERR_DRAM, ERR_ELEMS, ERR_LINE,
                     ERR_NO_HALT, ERR_OVERFLOW, ERR_SPAD_A, ERR_SPAD_W, ERR_VALUE, UNITS)

RequantLane_LATENCY = 3  # Requantizer.LATENCY: cycles from a lane input to y

__all__ = ["Accelerator", "AccumulatorBuffer", "system_geometry", "array_config", "lane_config"]


def system_geometry(cfg: AcceleratorConfig) -> dict:
    """Line counts of the memories (the same as :meth:`MachineSpec.from_config`)."""
    return {"a_lines": cfg.spad_a_bytes // cfg.rows, "w_lines": cfg.spad_w_bytes // cfg.cols,
            "acc_lines": cfg.acc_entries}


def _check_system(cfg: AcceleratorConfig, component):
    _check_cfg(cfg, component)
    for name in ("in_bits", "w_bits", "out_bits"):
        if getattr(cfg, name) > 8:
            component._MustUse__silence = True
            raise ValueError(f"{name} must be at most 8 for the system (one-byte containers), "
                             f"not {getattr(cfg, name)}")
    g = system_geometry(cfg)
    if g["a_lines"] < 1:
        component._MustUse__silence = True
        raise ValueError(f"spad_a_bytes must hold at least one {cfg.rows}-element line, not {cfg.spad_a_bytes}")
    if g["w_lines"] < cfg.rows:
        component._MustUse__silence = True
        raise ValueError(f"spad_w_bytes must hold one {cfg.rows}x{cfg.cols} weight tile, not {cfg.spad_w_bytes}")


def array_config(cfg: AcceleratorConfig) -> AcceleratorConfig:
    """The array inside the system: operands one bit wider and signed.

    A LOAD's ``unsigned`` flag decides per transfer whether bytes are signed
    or unsigned (ReLU outputs are unsigned), so scratchpad elements and the
    array operands are ``bits + 1`` wide signed values, which hold both.
    """
    a, w = cfg.in_bits + 1, cfg.w_bits + 1
    return cfg.replace(in_bits=a, in_signed=True, w_bits=w, w_signed=True,
                       acc_bits=max(cfg.acc_bits, a + w))


def lane_config(cfg: AcceleratorConfig) -> AcceleratorConfig:
    """The requantizer lanes inside the system.

    The ISA gives every lane an int32 bias and an int8 shift and lets each
    STORE choose the output width (``bits``) and signedness at run time. The
    lanes therefore add in at least 33 bits, take a 7-bit shift (the int8
    shift is clamped into -64..63, which changes no result: a right shift by
    ``>= acc_bits + 1`` already gives 0 and a left shift by ``> out_bits``
    already saturates) and saturate to the signed ``out_bits + 1`` range,
    which contains both the signed and the unsigned ``out_bits`` ranges; the
    STORE's own range is applied after them (saturating twice to nested
    ranges equals saturating once to the inner one).
    """
    return cfg.replace(acc_bits=max(cfg.acc_bits, 32), out_bits=cfg.out_bits + 1, out_signed=True,
                       shift_bits=7, per_channel_shift=True)


class AccumulatorBuffer(wiring.Component):
    """``acc_lines`` lines of ``cols`` signed ``acc_bits`` accumulators with an update pipeline.

    An update ``(addr, psum, accumulate, shift)`` writes
    ``acc[addr] = psum << shift`` (overwrite) or ``acc[addr] += psum << shift``
    (accumulate; with ``shift > 0`` the accumulate-with-shift of multipoint
    layers). The sum is formed exactly; ``overflow`` pulses when a lane's
    result leaves the ``acc_bits`` range (the stored value then wraps).
    The old line is read only when accumulating.

    Latency: the line is written 1 cycle after the update is presented
    (``busy`` is high meanwhile). Throughput: one update per cycle, to
    distinct lines. ``rd_*`` is an independent read port (1-cycle latency).

    Members
    -------
    upd_valid, upd_accumulate : In(1)
    upd_addr : In(range(acc_lines))
    upd_psum : In(data.ArrayLayout(signed(psum_bits), cols))
    upd_shift : In(5)
    rd_en : In(1)
    rd_addr : In(range(acc_lines))
    rd_data : Out(data.ArrayLayout(signed(acc_bits), cols))
    busy, overflow, ev_read, ev_write : Out(1)
    """

    def __init__(self, *, cols: int, lines: int, acc_bits: int, psum_bits: int):
        self.cols, self.lines, self.acc_bits, self.psum_bits = cols, lines, acc_bits, psum_bits
        aw = max(1, (max(lines, 2) - 1).bit_length())
        super().__init__({
            "upd_valid": In(1), "upd_accumulate": In(1), "upd_addr": In(aw),
            "upd_psum": In(data.ArrayLayout(signed(psum_bits), cols)), "upd_shift": In(5),
            "rd_en": In(1), "rd_addr": In(aw),
            "rd_data": Out(data.ArrayLayout(signed(acc_bits), cols)),
            "busy": Out(1), "overflow": Out(1), "ev_read": Out(1), "ev_write": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        C, A = self.cols, self.acc_bits
        lay = data.ArrayLayout(signed(A), C)
        # Depth at least 2: a 1-line memory would have a 0-bit address (the
        # controller's range checks use the real line count).
        m.submodules.mem = mem = Memory(shape=lay, depth=max(self.lines, 2), init=[])
        upd_rd = mem.read_port()
        wr = mem.write_port()
        st_rd = mem.read_port()
        m.d.comb += [st_rd.addr.eq(self.rd_addr), st_rd.en.eq(self.rd_en), self.rd_data.eq(st_rd.data)]

        vw = self.psum_bits + 31
        s1_valid = Signal()
        s1_acc = Signal()
        s1_addr = Signal.like(self.upd_addr)
        s1_val = [Signal(signed(vw), name=f"s1_val{c}") for c in range(C)]
        rd_old = Signal()
        m.d.comb += [
            upd_rd.addr.eq(self.upd_addr),
            rd_old.eq(self.upd_valid & self.upd_accumulate),
            upd_rd.en.eq(rd_old),
            self.ev_read.eq(rd_old),
        ]
        m.d.sync += [s1_valid.eq(self.upd_valid), s1_acc.eq(self.upd_accumulate), s1_addr.eq(self.upd_addr)]
        for c in range(C):
            m.d.sync += s1_val[c].eq(self.upd_psum[c] << self.upd_shift)

        lo, hi = -(1 << (A - 1)), (1 << (A - 1)) - 1
        ovf = []
        for c in range(C):
            new = Signal(signed(vw + 1), name=f"new{c}")
            m.d.comb += new.eq(Mux(s1_acc, upd_rd.data[c] + s1_val[c], s1_val[c]))
            o = Signal(name=f"ovf{c}")
            m.d.comb += [o.eq((new < lo) | (new > hi)), wr.data[c].eq(new)]
            ovf.append(o)
        m.d.comb += [
            wr.addr.eq(s1_addr), wr.en.eq(s1_valid), self.ev_write.eq(s1_valid),
            self.busy.eq(s1_valid), self.overflow.eq(s1_valid & Cat(*ovf).any()),
        ]
        return m


def _field(ins, op, name):
    lsb, width = FIELDS[op][name]
    return ins[lsb:lsb + width]


class Accelerator(wiring.Component):
    """The whole accelerator behind one memory port and a CSR-like host interface.

    Parameters
    ----------
    config : AcceleratorConfig
        ``in_bits``, ``w_bits``, ``out_bits`` at most 8 (bytes in memory).

    Members
    -------
    bus : Out(MemPortSignature(bus_bytes))
        Memory port (request / response streams, one request in flight).
    start : In(1)
        Pulse (while not busy) to run the program.
    prog_addr : In(32)
        Byte address of instruction 0 (16-byte aligned is fastest, not required).
    prog_len : In(32)
        Number of instructions; running past it is the "program ends without HALT" error.
    dram_bytes : In(32)
        Size of the data window ``[0, dram_bytes)`` that LOAD / LOADQ / STORE may touch.
    busy, done : Out(1)
        Running; finished at HALT without error (cleared by ``start``).
    error : Out(4)
        0, or an error code of :data:`systolic.hw.sysmap.ERRORS` (the run stopped).
    err_index : Out(32)
        Index of the instruction that failed.
    err_arg : Out(64)
        The offending value (address, line, opcode), see the error table.
    counters : Out(data.ArrayLayout(unsigned(64), len(COUNTERS)))
        Performance counters, cleared by ``start``.
    """

    def __init__(self, *, config: AcceleratorConfig):
        _check_system(config, self)
        self.config = config
        self.geometry = system_geometry(config)
        super().__init__({
            "bus": Out(MemPortSignature(config.bus_bytes)),
            "start": In(1), "prog_addr": In(32), "prog_len": In(32), "dram_bytes": In(32),
            "busy": Out(1), "done": Out(1), "error": Out(4), "err_index": Out(32), "err_arg": Out(64),
            "counters": Out(data.ArrayLayout(unsigned(COUNTER_BITS), len(COUNTERS))),
        })

    @property
    def dma_buffer_bytes(self) -> int:
        c = self.config
        return max(INSTR_BYTES, c.rows, c.cols, 5 * c.cols)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        g = self.geometry
        acfg = array_config(cfg)
        lcfg = lane_config(cfg)
        ashape = signed(acfg.in_bits)
        wshape = signed(acfg.w_bits)

        # ---------------------------------------------------------------- blocks
        B = self.dma_buffer_bytes
        m.submodules.dma = dma = Dma(bus_bytes=cfg.bus_bytes, buf_bytes=B, src_bytes=C)
        wiring.connect(m, dma.bus, wiring.flipped(self.bus))
        m.submodules.array = array = SystolicArray(config=acfg)
        m.submodules.accbuf = accbuf = AccumulatorBuffer(cols=C, lines=g["acc_lines"], acc_bits=cfg.acc_bits,
                                                         psum_bits=acfg.acc_bits)
        m.submodules.spad_a = spad_a = Memory(shape=data.ArrayLayout(ashape, R), depth=max(g["a_lines"], 2), init=[])
        m.submodules.spad_w = spad_w = Memory(shape=data.ArrayLayout(wshape, C), depth=max(g["w_lines"], 2), init=[])
        a_wr, a_rd = spad_a.write_port(granularity=1), spad_a.read_port()
        w_wr, w_rd = spad_w.write_port(granularity=1), spad_w.read_port()
        lanes = []
        for c in range(C):
            lane = RequantLane(config=lcfg)
            m.submodules[f"lane{c}"] = lane
            lanes.append(lane)

        # ------------------------------------------------------- architectural
        ins = Signal(128)
        op = Signal(4)
        m.d.comb += op.eq(ins[:4])
        pc = Signal(32)
        bias = [Signal(signed(32), name=f"bias{c}") for c in range(C)]
        shift = [Signal(signed(8), name=f"shift{c}") for c in range(C)]

        # Instruction fields (LOAD and STORE share lines / dram / stride / elems positions).
        L = Opcode.LOAD
        f_target = _field(ins, L, "target")
        f_zero = _field(ins, L, "zero")
        f_unsigned = _field(ins, L, "unsigned")
        f_lines = _field(ins, L, "lines")
        f_spad = _field(ins, L, "spad")
        f_elems = _field(ins, L, "elems")
        f_offset = _field(ins, L, "offset")
        f_dram = _field(ins, L, "dram")
        f_stride = _field(ins, L, "stride")
        S = Opcode.STORE
        f_relu = _field(ins, S, "relu")
        f_sunsigned = _field(ins, S, "unsigned")
        f_sacc = _field(ins, S, "acc")
        f_bits = _field(ins, S, "bits")
        M_ = Opcode.MATMUL
        f_accum = _field(ins, M_, "accumulate")
        f_shift = _field(ins, M_, "shift")
        f_m = _field(ins, M_, "m")
        f_a = _field(ins, M_, "a")
        f_w = _field(ins, M_, "w")
        f_macc = _field(ins, M_, "acc")

        # ------------------------------------------------------------ counters
        ev = {name: Signal(range(max(R * C, B, 2) + 1), name=f"ev_{name}") for name in COUNTERS}
        cnt = {name: Signal(COUNTER_BITS, name=f"cnt_{name}") for name in COUNTERS}
        clear = Signal()
        for i, name in enumerate(COUNTERS):
            m.d.comb += self.counters[i].eq(cnt[name])
            with m.If(clear):
                m.d.sync += cnt[name].eq(0)
            with m.Else():
                m.d.sync += cnt[name].eq(cnt[name] + ev[name])

        # --------------------------------------------------------- error status
        error = Signal(4)
        err_arg = Signal(64)
        m.d.comb += [self.error.eq(error), self.err_arg.eq(err_arg), self.err_index.eq(pc)]

        def fail(code, arg=0):
            m.d.sync += [error.eq(code), err_arg.eq(arg)]
            m.next = "IDLE"

        def overflow_stop():
            # Last in its state, so it wins over the state's own transition.
            with m.If(accbuf.overflow):
                fail(ERR_OVERFLOW)

        # --------------------------------------------------------- check values
        # DRAM end of a 2-D transfer: dram + (lines-1)*stride + elems, formed in DECODE.
        span = Signal(50)       # (lines - 1) * stride
        dram_end = Signal(51)
        m.d.comb += dram_end.eq(f_dram + span + f_elems)
        loadq_end = Signal(34)
        m.d.comb += loadq_end.eq(f_dram + 5 * C)
        is_w = Signal()
        m.d.comb += is_w.eq(f_target == 1)

        # --------------------------------------------------------- loop state
        i = Signal(17)          # line / step counter
        k = Signal(range(max(R, RequantLane_LATENCY) + 2))
        laddr = Signal(33)      # DRAM address of the current line
        issued = Signal(17)
        outs = Signal(17)       # array output vectors received
        expect = Signal(18)     # array output vectors expected
        i_valid = Signal()      # WS feed register holds a vector
        swap_r = Signal()
        # Weight tile (R lines of C) and, for OS, the transposed A chunk (R lines of R), as raw bits.
        aw, ww = acfg.in_bits, acfg.w_bits
        wt = Array(Signal(C * ww, name=f"wt{r}") for r in range(R))
        at = [Signal(R * aw, name=f"at{r}") for r in range(R)]
        rd_valid = Signal()     # a scratchpad read issued last cycle
        rd_idx = Signal(range(R + 1))
        chunk = Signal(17)      # OS: first line of the current M chunk
        o_base = Signal(18)     # OS: line of the drained chunk's row 0
        o_row = Signal(range(max(R, 2)))
        sbytes = Signal(data.ArrayLayout(8, C))
        m.d.comb += dma.src.eq(sbytes)

        # Value conversion for LOAD: byte -> element, with the range check.
        def convert(byte, bits):
            v = Signal(signed(10))
            m.d.comb += v.eq(Mux(f_unsigned, byte.as_unsigned(), byte.as_signed()))
            lo = Mux(f_unsigned, 0, -(1 << (bits - 1)))
            hi = Mux(f_unsigned, (1 << bits) - 1, (1 << (bits - 1)) - 1)
            bad = Signal()
            m.d.comb += bad.eq((v < lo) | (v > hi))
            return v, bad

        # Requantizer lanes: acc line from the accumulator's read port.
        for c in range(C):
            sh = Signal(signed(7), name=f"lane_shift{c}")
            m.d.comb += sh.eq(Mux(shift[c] > 63, 63, Mux(shift[c] < -64, -64, shift[c])))
            m.d.comb += [lanes[c].en.eq(1), lanes[c].acc.eq(accbuf.rd_data[c]), lanes[c].bias.eq(bias[c]),
                         lanes[c].shift.eq(sh), lanes[c].relu.eq(f_relu)]
        sat_lo = Signal(signed(10))
        sat_hi = Signal(signed(10))
        bits_m1 = Signal(6)
        m.d.comb += [
            bits_m1.eq(f_bits - 1),
            sat_lo.eq(Mux(f_sunsigned, 0, -(Const(1, 10) << bits_m1))),
            sat_hi.eq(Mux(f_sunsigned, (Const(1, 10) << f_bits) - 1, (Const(1, 10) << bits_m1) - 1)),
        ]

        if cfg.dataflow == "ws":
            # The array's psum input is unused (accumulation happens in the accumulator
            # buffer) and held at 0. A register cleared at start rather than a constant:
            # Amaranth emits a constant-only `always @*` for an undriven payload field,
            # which Verilator lint rejects (ALWNEVER / UNDRIVEN); synthesis folds it away.
            psum_zero = Signal.like(array.i.payload.psum.as_value(), name="psum_zero")
            with m.If(clear):
                m.d.sync += psum_zero.eq(0)
            m.d.comb += array.i.payload.psum.eq(psum_zero)

        # Array outputs -> accumulator buffer (any MATMUL state).
        ws = cfg.dataflow == "ws"
        m.d.comb += array.o.ready.eq(1)
        o_line = Signal(18)
        keep = Signal()
        if ws:
            m.d.comb += [o_line.eq(outs), keep.eq(1)]
        else:
            m.d.comb += [o_line.eq(o_base + o_row), keep.eq(o_line < f_m)]
        m.d.comb += [
            accbuf.upd_valid.eq(array.o.valid & keep),
            accbuf.upd_addr.eq(f_macc + o_line),
            accbuf.upd_accumulate.eq(f_accum),
            accbuf.upd_shift.eq(f_shift),
            accbuf.upd_psum.eq(array.o.payload),
        ]
        with m.If(array.o.valid):
            m.d.sync += outs.eq(outs + 1)
            if not ws:
                with m.If(o_row == 0):
                    m.d.sync += [o_row.eq(R - 1), o_base.eq(o_base + R)]
                with m.Else():
                    m.d.sync += o_row.eq(o_row - 1)
        m.d.comb += [
            ev["macs"].eq(Mux(accbuf.ev_write, R * C, 0)),
            ev["acc_writes"].eq(accbuf.ev_write),
        ]
        acc_read_store = Signal()
        m.d.comb += ev["acc_reads"].eq(accbuf.ev_read + acc_read_store)

        m.d.comb += [
            ev["bus_reads"].eq(dma.words_read),
            ev["bus_writes"].eq(dma.words_written),
            ev["spad_a_reads"].eq(a_rd.en),
            ev["spad_w_reads"].eq(w_rd.en),
        ]
        # Reads are enabled only when issued; the ports keep their data otherwise.
        m.d.comb += [a_rd.en.eq(0), w_rd.en.eq(0)]

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += clear.eq(1)
                    m.d.sync += [pc.eq(0), error.eq(0), err_arg.eq(0), self.done.eq(0)]
                    m.next = "FETCH"

            # ------------------------------------------------ fetch and decode
            with m.State("FETCH"):
                with m.If(pc >= self.prog_len):
                    m.d.sync += pc.eq(pc - 1)
                    fail(ERR_NO_HALT)
                with m.Else():
                    m.d.comb += [dma.start.eq(1), dma.write.eq(0), dma.addr.eq(self.prog_addr + (pc << 4)),
                                 dma.n.eq(INSTR_BYTES), dma.off.eq(0)]
                    m.next = "FETCH_WAIT"
            with m.State("FETCH_WAIT"):
                with m.If(~dma.busy):
                    m.d.sync += ins.eq(Cat(*(dma.buf[b] for b in range(INSTR_BYTES))))
                    m.d.comb += ev["fetch_bytes"].eq(INSTR_BYTES)
                    m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += ev["instructions"].eq(1)
                m.d.sync += span.eq(Mux(f_lines == 0, 0, (f_lines - 1) * f_stride))
                with m.If(op > max(Opcode)):
                    fail(ERR_BAD_OPCODE, op)
                with m.Else():
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += [i.eq(0), laddr.eq(f_dram), k.eq(0), issued.eq(0), outs.eq(0), i_valid.eq(0),
                             rd_valid.eq(0), chunk.eq(0), o_base.eq(0), o_row.eq(R - 1)]
                with m.Switch(op):
                    with m.Case(Opcode.HALT):
                        m.d.sync += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Case(Opcode.FENCE):
                        m.d.sync += pc.eq(pc + 1)
                        m.next = "FETCH"
                    with m.Case(Opcode.LOAD):
                        cap = Mux(is_w, g["w_lines"], g["a_lines"])
                        width = Mux(is_w, C, R)
                        with m.If(f_spad + f_lines > cap):
                            fail(Mux(is_w, ERR_SPAD_W, ERR_SPAD_A), f_spad + f_lines - 1)
                        with m.Elif(f_offset + f_elems > width):
                            fail(ERR_LINE)
                        with m.Elif((f_lines != 0) & (f_elems != 0) & (dram_end > self.dram_bytes)):
                            fail(ERR_DRAM, dram_end - 1)
                        with m.Else():
                            m.next = "LOAD_LINE"
                    with m.Case(Opcode.LOADQ):
                        with m.If(loadq_end > self.dram_bytes):
                            fail(ERR_DRAM, loadq_end - 1)
                        with m.Else():
                            m.d.comb += [dma.start.eq(1), dma.write.eq(0), dma.addr.eq(f_dram),
                                         dma.n.eq(5 * C), dma.off.eq(0)]
                            m.next = "LOADQ_WAIT"
                    with m.Case(Opcode.MATMUL):
                        with m.If(f_a + f_m > g["a_lines"]):
                            fail(ERR_SPAD_A, f_a + f_m - 1)
                        with m.Elif(f_w + R > g["w_lines"]):
                            fail(ERR_SPAD_W, f_w + R - 1)
                        with m.Elif(f_macc + f_m > g["acc_lines"]):
                            fail(ERR_ACC, f_macc + f_m - 1)
                        with m.Else():
                            # OS: R output vectors per M chunk, counted as chunks are issued.
                            m.d.sync += expect.eq(f_m if ws else 0)
                            m.next = "MM_W"
                    with m.Case(Opcode.STORE):
                        with m.If(f_sacc + f_lines > g["acc_lines"]):
                            fail(ERR_ACC, f_sacc + f_lines - 1)
                        with m.Elif((f_bits < 1) | (f_bits > cfg.out_bits)):
                            fail(ERR_BITS)
                        with m.Elif(f_elems > C):
                            fail(ERR_ELEMS)
                        with m.Elif((f_lines != 0) & (f_elems != 0) & (dram_end > self.dram_bytes)):
                            fail(ERR_DRAM, dram_end - 1)
                        with m.Else():
                            m.next = "STORE_LINE"

            # --------------------------------------------------------- LOAD
            def load_write():
                # Line `spad + i` <- the gathered bytes (or zeros); returns "a value is out of range".
                m.d.comb += ev["dram_bytes_read"].eq(f_elems)
                bad_any = []
                for tgt, port, width, bits in ((0, a_wr, R, cfg.in_bits), (1, w_wr, C, cfg.w_bits)):
                    m.d.comb += port.addr.eq(f_spad + i)
                    for p in range(width):
                        v, bad = convert(dma.buf[p], bits)
                        inside = Signal(name=f"in_line{tgt}_{p}")
                        m.d.comb += [inside.eq((p >= f_offset) & (p < f_offset + f_elems)),
                                     port.data[p].eq(Mux(inside, v, 0)),
                                     port.en[p].eq((f_target == tgt) & (inside | f_zero))]
                        bad_any.append((f_target == tgt) & inside & bad)
                m.d.comb += [ev["spad_a_writes"].eq(~is_w), ev["spad_w_writes"].eq(is_w)]
                return Cat(*bad_any).any()

            def gather_line(addr):
                m.d.comb += [dma.start.eq(1), dma.write.eq(0), dma.addr.eq(addr),
                             dma.n.eq(f_elems), dma.off.eq(f_offset)]

            with m.State("LOAD_LINE"):
                # First cycle of a LOAD; zero-fill lines (elems == 0) take one cycle each here.
                with m.If(i == f_lines):
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
                with m.Elif(f_elems != 0):
                    gather_line(laddr)
                    m.next = "LOAD_WAIT"
                with m.Else():
                    load_write()
                    m.d.sync += i.eq(i + 1)
            with m.State("LOAD_WAIT"):
                # The cycle the gather ends writes the line and starts the next line's gather.
                with m.If(~dma.busy):
                    bad = load_write()
                    with m.If(bad):
                        fail(ERR_VALUE)
                    with m.Else():
                        m.d.sync += [i.eq(i + 1), laddr.eq(laddr + f_stride)]
                        with m.If(i + 1 == f_lines):
                            m.d.sync += pc.eq(pc + 1)
                            m.next = "FETCH"
                        with m.Else():
                            gather_line(laddr + f_stride)

            # -------------------------------------------------------- LOADQ
            with m.State("LOADQ_WAIT"):
                with m.If(~dma.busy):
                    m.d.comb += ev["dram_bytes_read"].eq(5 * C)
                    for c in range(C):
                        m.d.sync += [bias[c].eq(Cat(*(dma.buf[4 * c + b] for b in range(4)))),
                                     shift[c].eq(dma.buf[4 * C + c])]
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"

            # ------------------------------------------------------- MATMUL
            with m.State("MM_W"):
                # Weight tile -> registers: R reads, one per cycle, captured a cycle later.
                with m.If(k < R):
                    m.d.comb += [w_rd.en.eq(1), w_rd.addr.eq(f_w + k)]
                with m.If(k > 0):
                    m.d.sync += wt[k - 1].eq(w_rd.data.as_value())
                m.d.sync += k.eq(k + 1)
                with m.If(k == R):
                    m.d.sync += k.eq(0)
                    with m.If(f_m == 0):
                        m.next = "MM_DRAIN"
                    with m.Else():
                        m.next = "MM_PUSH" if ws else "MM_OSA"
            if ws:
                with m.State("MM_PUSH"):
                    m.d.comb += [array.w.valid.eq(1), array.w.payload.w.eq(wt[k])]
                    with m.If(array.w.ready):
                        m.d.sync += k.eq(k + 1)
                        with m.If(k == R - 1):
                            m.next = "MM_FEED"
                with m.State("MM_FEED"):
                    adv = Signal()
                    m.d.comb += [
                        array.i.valid.eq(i_valid), array.i.payload.a.eq(a_rd.data),
                        array.i.payload.swap.eq(swap_r), adv.eq(~i_valid | array.i.ready),
                        ev["matmul_stall"].eq(i_valid & ~array.i.ready),
                    ]
                    with m.If(adv):
                        with m.If(issued < f_m):
                            m.d.comb += [a_rd.en.eq(1), a_rd.addr.eq(f_a + issued)]
                            m.d.sync += [issued.eq(issued + 1), i_valid.eq(1), swap_r.eq(issued == 0)]
                        with m.Else():
                            m.d.sync += i_valid.eq(0)
                            m.next = "MM_DRAIN"
                    overflow_stop()
            else:
                with m.State("MM_OSA"):
                    # One M chunk of up to R lines -> transpose registers (zeros past m).
                    with m.If((k < R) & (chunk + k < f_m)):
                        m.d.comb += [a_rd.en.eq(1), a_rd.addr.eq(f_a + chunk + k)]
                    m.d.sync += [rd_valid.eq((k < R) & (chunk + k < f_m)), rd_idx.eq(k)]
                    with m.If(k > 0):
                        with m.Switch(rd_idx):
                            for r in range(R):
                                with m.Case(r):
                                    m.d.sync += at[r].eq(Mux(rd_valid, a_rd.data.as_value(), 0))
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == R):
                        m.d.sync += k.eq(0)
                        m.next = "MM_OSSTEP"
                    overflow_stop()
                with m.State("MM_OSSTEP"):
                    m.d.comb += [array.i.valid.eq(1), array.i.payload.w.eq(wt[k]),
                                 array.i.payload.first.eq(k == 0), array.i.payload.last.eq(k == R - 1),
                                 ev["matmul_stall"].eq(~array.i.ready)]
                    for r in range(R):
                        col = Array(at[r][kk * aw:(kk + 1) * aw] for kk in range(R))
                        m.d.comb += array.i.payload.a[r].eq(col[k])
                    with m.If(array.i.ready):
                        m.d.sync += k.eq(k + 1)
                        with m.If(k == R - 1):
                            m.d.sync += [k.eq(0), chunk.eq(chunk + R), expect.eq(expect + R)]
                            with m.If(chunk + R >= f_m):
                                m.next = "MM_DRAIN"
                            with m.Else():
                                m.next = "MM_OSA"
                    overflow_stop()
            with m.State("MM_DRAIN"):
                with m.If((outs == expect) & ~array.o.valid & ~accbuf.busy):
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
                overflow_stop()

            # -------------------------------------------------------- STORE
            def read_acc_line(line):
                m.d.comb += [accbuf.rd_en.eq(1), accbuf.rd_addr.eq(f_sacc + line), acc_read_store.eq(1)]
                m.d.sync += k.eq(0)
                m.next = "STORE_RQ"

            with m.State("STORE_LINE"):
                with m.If(i == f_lines):
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
                with m.Else():
                    read_acc_line(i)
            with m.State("STORE_RQ"):
                # The lanes take the line 1 cycle after the read and give y 3 cycles later;
                # the scatter starts as the saturated bytes are registered (it reads them
                # from the next cycle on).
                m.d.sync += k.eq(k + 1)
                with m.If(k == RequantLane_LATENCY):
                    for c in range(C):
                        y = lanes[c].y
                        m.d.sync += sbytes[c].eq(Mux(y < sat_lo, sat_lo, Mux(y > sat_hi, sat_hi, y))[:8])
                    m.d.comb += [dma.start.eq(1), dma.write.eq(1), dma.addr.eq(laddr), dma.n.eq(f_elems),
                                 dma.off.eq(0)]
                    m.next = "STORE_WAIT"
            with m.State("STORE_WAIT"):
                with m.If(~dma.busy):
                    m.d.comb += [ev["dram_bytes_written"].eq(f_elems), ev["requant_ops"].eq(f_elems)]
                    m.d.sync += [i.eq(i + 1), laddr.eq(laddr + f_stride)]
                    with m.If(i + 1 == f_lines):
                        m.d.sync += pc.eq(pc + 1)
                        m.next = "FETCH"
                    with m.Else():
                        read_acc_line(i + 1)

        # ------------------------------------------------------ busy / stall
        running = Signal()
        m.d.comb += [running.eq(~fsm.ongoing("IDLE")), self.busy.eq(running), ev["cycles"].eq(running)]
        unit_states = {
            "ctrl": ("FETCH", "FETCH_WAIT", "DECODE", "CHECK"),
            "load": ("LOAD_LINE", "LOAD_WAIT"),
            "loadq": ("LOADQ_WAIT",),
            "matmul": ("MM_W", "MM_DRAIN") + (("MM_PUSH", "MM_FEED") if ws else ("MM_OSA", "MM_OSSTEP")),
            "store": ("STORE_LINE", "STORE_RQ", "STORE_WAIT"),
        }
        assert set(unit_states) == set(UNITS)
        for u, states in unit_states.items():
            inside = Signal(name=f"in_{u}")
            m.d.comb += inside.eq(Cat(*(fsm.ongoing(s) for s in states)).any())
            m.d.comb += ev[f"{u}_busy"].eq(inside)
            if u != "matmul":
                m.d.comb += ev[f"{u}_stall"].eq(inside & dma.stall)
        return m

