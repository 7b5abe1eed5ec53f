"""The accelerator system: controller, scratchpads, array, accumulator buffer, requantizers, DMA.

:class:`Accelerator` executes programs of the ISA in docs/isa.md from an
external memory through one memory port (:func:`~systolic.hw.dma.MemPortSignature`).
The controller fetches and executes instructions in order; MATMULs run in
the background on the array unit (a queue slot, a weight loader, a feeder
and the accumulator write-back, streaming back to back in the
weight-stationary dataflow) while the controller goes on with LOAD, LOADQ
and further MATMULs. Interlocks keep the sequential semantics of
docs/isa.md: a LOAD waits while a queued or running MATMUL reads lines it
would overwrite, a STORE, FENCE and HALT wait until the array unit is idle.
The DMA keeps several reads in flight. Cycle counts follow docs/isa.md
("Timing"); :mod:`systolic.report.cycles` predicts them exactly.

The host interface (docs/architecture.md, "System") is a handful of CSR-like
ports: it writes the program into memory, sets ``prog_addr``, ``prog_len``
and ``dram_bytes`` and pulses ``start``; ``busy`` falls and ``done`` rises at
HALT; ``error`` holds the error code (:data:`systolic.arch.sysmap.ERRORS`),
``err_index`` the failing instruction and ``err_arg`` the offending value;
``counters`` the performance counters (:data:`systolic.arch.sysmap.COUNTERS`).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..arch.isa import FIELDS, INSTR_BYTES, Opcode
from .array import SystolicArray
from ..arch.config import AcceleratorConfig
from .dma import Dma, MemPortSignature
from .pe import _check_cfg
from .requantizer import RequantLane
from ..arch.sysmap import (COUNTER_BITS, COUNTERS, ERR_ACC, ERR_BAD_OPCODE, ERR_BITS, ERR_DRAM, ERR_ELEMS, ERR_LINE,
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
    (``busy`` is high meanwhile). Throughput: one update per cycle, to any
    lines (an update of the line written in the same cycle sees the new value). ``rd_*`` is an independent read port (1-cycle latency).

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
        wr = mem.write_port()
        # Transparent: an update of the line written in the same cycle reads the new value,
        # so back-to-back updates of one line (consecutive MATMULs) accumulate correctly.
        upd_rd = mem.read_port(transparent_for=(wr,))
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
        0, or an error code of :data:`systolic.arch.sysmap.ERRORS` (the run stopped).
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
        ws = cfg.dataflow == "ws"

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
        err_index = Signal(32)
        m.d.comb += [self.error.eq(error), self.err_arg.eq(err_arg), self.err_index.eq(err_index)]

        pend_code = Signal(4)
        pend_arg = Signal(64)
        pend_index = Signal(32)

        def fail_now(code, arg, index):
            m.d.sync += [error.eq(code), err_arg.eq(arg), err_index.eq(index)]
            m.next = "IDLE"

        def fail(code, arg=0, index=None):
            # Precise errors: the run stops only once the array unit is idle, so an
            # accumulator overflow of an earlier MATMUL is reported first (ERR_WAIT).
            m.d.sync += [pend_code.eq(code), pend_arg.eq(arg), pend_index.eq(pc if index is None else index)]
            m.next = "ERR_WAIT"

        # --------------------------------------------------------- check values
        # DRAM end of a 2-D transfer: dram + (lines-1)*stride + elems, formed in DECODE.
        span = Signal(50)       # (lines - 1) * stride
        dram_end = Signal(51)
        m.d.comb += dram_end.eq(f_dram + span + f_elems)
        loadq_end = Signal(34)
        m.d.comb += loadq_end.eq(f_dram + 5 * C)
        is_w = Signal()
        m.d.comb += is_w.eq(f_target == 1)

        # ============================================================ array unit
        # A MATMUL becomes a descriptor in the queue slot `q`; the array unit
        # executes descriptors in order while the controller goes on.
        desc_layout = data.StructLayout({"a": 16, "w": 16, "acc": 16, "m": 16, "accum": 1, "shift": 5, "idx": 32})
        q = Signal(desc_layout)
        q_valid = Signal()
        enqueue = Signal()
        with m.If(enqueue):
            m.d.sync += [q.a.eq(f_a), q.w.eq(f_w), q.acc.eq(f_macc), q.m.eq(f_m), q.accum.eq(f_accum),
                         q.shift.eq(f_shift), q.idx.eq(pc), q_valid.eq(1)]

        aw, ww = acfg.in_bits, acfg.w_bits
        wt = Array(Signal(C * ww, name=f"wt{r}") for r in range(R))
        ovf_idx = Signal(32)     # instruction index of the update the accumulator checks
        m.d.comb += [a_rd.en.eq(0), w_rd.en.eq(0), array.o.ready.eq(1)]
        unit_busy = Signal()

        def read_weight_tile(k, base):
            # Weight tile -> `wt`: R reads of scratchpad W from line *base*, one per cycle
            # (step k = 0 .. R-1), each captured a cycle later (steps 1 .. R).
            with m.If(k < R):
                m.d.comb += [w_rd.en.eq(1), w_rd.addr.eq(base + k)]
            with m.If(k > 0):
                m.d.sync += wt[k - 1].eq(w_rd.data.as_value())
            m.d.sync += k.eq(k + 1)

        # (valid, descriptor) of every MATMUL that may still read scratchpad A / W lines
        readers = [(q_valid, q)]

        if ws:
            # The array's psum input is unused (accumulation happens in the accumulator
            # buffer) and held at 0. A register cleared at start rather than a constant:
            # Amaranth emits a constant-only `always @*` for an undriven payload field,
            # which Verilator lint rejects (ALWNEVER / UNDRIVEN); synthesis folds it away.
            psum_zero = Signal.like(array.i.payload.psum.as_value(), name="psum_zero")
            with m.If(clear):
                m.d.sync += psum_zero.eq(0)
            m.d.comb += array.i.payload.psum.eq(psum_zero)

            # Weight loader: R reads of scratchpad W into `wt`, then R pushes into the
            # array's shadow registers (while the previous tile computes).
            wl = Signal(desc_layout)
            wl_valid, wl_push, wl_done = Signal(), Signal(), Signal()
            wl_k = Signal(range(R + 2))
            with m.If(q_valid & ~wl_valid):
                m.d.sync += [wl.eq(q), wl_valid.eq(1), wl_k.eq(0), wl_push.eq(0), wl_done.eq(0), q_valid.eq(0)]
            with m.If(wl_valid & ~wl_push & ~wl_done):
                read_weight_tile(wl_k, wl.w)
                with m.If(wl_k == R):
                    m.d.sync += wl_k.eq(0)
                    with m.If(wl.m == 0):
                        m.d.sync += wl_valid.eq(0)      # m == 0: nothing to compute
                    with m.Else():
                        m.d.sync += wl_push.eq(1)
            with m.If(wl_valid & wl_push):
                m.d.comb += [array.w.valid.eq(1), array.w.payload.w.eq(wt[wl_k])]
                with m.If(array.w.ready):
                    m.d.sync += wl_k.eq(wl_k + 1)
                    with m.If(wl_k == R - 1):
                        m.d.sync += [wl_push.eq(0), wl_done.eq(1)]

            # Feeder: A lines into the array back to back; the first row of a
            # descriptor swaps in its weight tile (pushed, so never refused).
            fd = Signal(desc_layout)
            fd_valid, i_valid, swap_r = Signal(), Signal(), Signal()
            issued = Signal(17)
            ofl = data.StructLayout({"acc": 16, "m": 16, "accum": 1, "shift": 5, "idx": 32})
            m.submodules.ofifo = ofifo = SyncFIFO(width=ofl.size, depth=4)
            fd_more, start_next, adv_f = Signal(), Signal(), Signal()
            m.d.comb += [
                array.i.valid.eq(i_valid), array.i.payload.a.eq(a_rd.data), array.i.payload.swap.eq(swap_r),
                adv_f.eq(~i_valid | array.i.ready),
                fd_more.eq(fd_valid & (issued < fd.m)),
                start_next.eq(~fd_more & wl_valid & wl_done & ofifo.w_rdy),
                ev["matmul_stall"].eq(i_valid & ~array.i.ready),
            ]
            ow = Signal(ofl)
            m.d.comb += [ow.acc.eq(wl.acc), ow.m.eq(wl.m), ow.accum.eq(wl.accum), ow.shift.eq(wl.shift),
                         ow.idx.eq(wl.idx), ofifo.w_data.eq(ow)]
            with m.If(adv_f):
                with m.If(fd_more):
                    m.d.comb += [a_rd.en.eq(1), a_rd.addr.eq(fd.a + issued)]
                    m.d.sync += [issued.eq(issued + 1), i_valid.eq(1), swap_r.eq(0)]
                with m.Elif(start_next):
                    m.d.comb += [a_rd.en.eq(1), a_rd.addr.eq(wl.a), ofifo.w_en.eq(1)]
                    m.d.sync += [issued.eq(1), i_valid.eq(1), swap_r.eq(1), fd.eq(wl), fd_valid.eq(1),
                                 wl_valid.eq(0)]
                with m.Else():
                    m.d.sync += [i_valid.eq(0), fd_valid.eq(0)]

            # Write-back: output vectors of the head descriptor into the accumulator.
            head = Signal(ofl)
            o_cnt = Signal(17)
            m.d.comb += [
                head.eq(ofifo.r_data),
                accbuf.upd_valid.eq(array.o.valid),
                accbuf.upd_addr.eq(head.acc + o_cnt),
                accbuf.upd_accumulate.eq(head.accum),
                accbuf.upd_shift.eq(head.shift),
                accbuf.upd_psum.eq(array.o.payload),
            ]
            with m.If(array.o.valid):
                m.d.sync += ovf_idx.eq(head.idx)
                with m.If(o_cnt + 1 == head.m):
                    m.d.sync += o_cnt.eq(0)
                    m.d.comb += ofifo.r_en.eq(1)
                with m.Else():
                    m.d.sync += o_cnt.eq(o_cnt + 1)
            with m.If(clear):
                m.d.sync += [q_valid.eq(0), wl_valid.eq(0), fd_valid.eq(0), i_valid.eq(0), o_cnt.eq(0)]
            m.d.comb += unit_busy.eq(q_valid | wl_valid | fd_valid | ofifo.r_rdy | accbuf.busy)
            readers += [(wl_valid, wl), (fd_valid, fd)]
        else:
            # Output-stationary: one descriptor at a time (weight tile; per M chunk of
            # R lines: read + transpose, R reduction steps; drain), in the background.
            cur = Signal(desc_layout)
            k = Signal(range(R + 2))
            rd_valid = Signal()     # a scratchpad read issued last cycle
            rd_idx = Signal(range(R + 1))
            chunk = Signal(17)      # first line of the current M chunk
            o_base = Signal(18)     # line of the drained chunk's row 0
            o_row = Signal(range(max(R, 2)))
            outs = Signal(17)       # output vectors received
            expect = Signal(18)     # output vectors expected
            at = [Signal(R * aw, name=f"at{r}") for r in range(R)]
            o_line = Signal(18)
            keep = Signal()
            m.d.comb += [
                o_line.eq(o_base + o_row), keep.eq(o_line < cur.m),
                accbuf.upd_valid.eq(array.o.valid & keep),
                accbuf.upd_addr.eq(cur.acc + o_line),
                accbuf.upd_accumulate.eq(cur.accum),
                accbuf.upd_shift.eq(cur.shift),
                accbuf.upd_psum.eq(array.o.payload),
            ]
            with m.If(array.o.valid):
                m.d.sync += [outs.eq(outs + 1), ovf_idx.eq(cur.idx)]
                with m.If(o_row == 0):
                    m.d.sync += [o_row.eq(R - 1), o_base.eq(o_base + R)]
                with m.Else():
                    m.d.sync += o_row.eq(o_row - 1)
            with m.FSM(name="os_unit") as ufsm:
                with m.State("IDLE"):
                    with m.If(q_valid):
                        m.d.sync += [cur.eq(q), q_valid.eq(0), k.eq(0), chunk.eq(0), o_base.eq(0),
                                     o_row.eq(R - 1), outs.eq(0), expect.eq(0), rd_valid.eq(0)]
                        m.next = "MM_W"
                with m.State("MM_W"):
                    read_weight_tile(k, cur.w)
                    with m.If(k == R):
                        m.d.sync += k.eq(0)
                        with m.If(cur.m == 0):
                            m.next = "MM_DRAIN"
                        with m.Else():
                            m.next = "MM_OSA"
                with m.State("MM_OSA"):
                    # One M chunk of up to R lines -> transpose registers (zeros past m).
                    with m.If((k < R) & (chunk + k < cur.m)):
                        m.d.comb += [a_rd.en.eq(1), a_rd.addr.eq(cur.a + chunk + k)]
                    m.d.sync += [rd_valid.eq((k < R) & (chunk + k < cur.m)), rd_idx.eq(k)]
                    with m.If(k > 0):
                        with m.Switch(rd_idx):
                            for r in range(R):
                                with m.Case(r):
                                    m.d.sync += at[r].eq(Mux(rd_valid, a_rd.data.as_value(), 0))
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == R):
                        m.d.sync += k.eq(0)
                        m.next = "MM_OSSTEP"
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
                            with m.If(chunk + R >= cur.m):
                                m.next = "MM_DRAIN"
                            with m.Else():
                                m.next = "MM_OSA"
                with m.State("MM_DRAIN"):
                    with m.If((outs == expect) & ~array.o.valid & ~accbuf.busy):
                        m.next = "IDLE"
            with m.If(clear):
                m.d.sync += q_valid.eq(0)
            m.d.comb += unit_busy.eq(q_valid | ~ufsm.ongoing("IDLE"))
            readers += [(~ufsm.ongoing("IDLE"), cur)]

        # ------------------------------------------------------------ interlocks
        def overlaps(x, n, y, k):
            return (n != 0) & (k != 0) & (x < y + k) & (y < x + n)

        load_conflict = Signal()
        conflicts = []
        for valid, d in readers:
            conflicts.append(valid & Mux(is_w, overlaps(f_spad, f_lines, d.w, R), overlaps(f_spad, f_lines, d.a, d.m)))
        m.d.comb += load_conflict.eq(Cat(*conflicts).any())
        blocked = Signal()
        with m.Switch(op):
            with m.Case(Opcode.LOAD):
                m.d.comb += blocked.eq(load_conflict)
            with m.Case(Opcode.MATMUL):
                m.d.comb += blocked.eq(q_valid)
            with m.Case(Opcode.STORE, Opcode.FENCE, Opcode.HALT):
                m.d.comb += blocked.eq(unit_busy)

        # ------------------------------------------------------------- LOAD data
        def convert(byte, bits):
            v = Signal(signed(10))
            m.d.comb += v.eq(Mux(f_unsigned, byte.as_unsigned(), byte.as_signed()))
            lo = Mux(f_unsigned, 0, -(1 << (bits - 1)))
            hi = Mux(f_unsigned, (1 << bits) - 1, (1 << (bits - 1)) - 1)
            bad = Signal()
            m.d.comb += bad.eq((v < lo) | (v > hi))
            return v, bad

        i = Signal(17)          # line counter of LOAD / STORE

        def load_write(line):
            # Line `spad + i` <- *line* bytes (zeros outside [offset, offset+elems));
            # returns "a value is out of range".
            m.d.comb += ev["dram_bytes_read"].eq(f_elems)
            bad_any = []
            for tgt, port, width, bits in ((0, a_wr, R, cfg.in_bits), (1, w_wr, C, cfg.w_bits)):
                m.d.comb += port.addr.eq(f_spad + i)
                for p in range(width):
                    v, bad = convert(line[p], bits)
                    inside = Signal(name=f"in_line{tgt}_{p}")
                    m.d.comb += [inside.eq((p >= f_offset) & (p < f_offset + f_elems)),
                                 port.data[p].eq(Mux(inside, v, 0)),
                                 port.en[p].eq((f_target == tgt) & (inside | f_zero))]
                    bad_any.append((f_target == tgt) & inside & bad)
            m.d.comb += [ev["spad_a_writes"].eq(~is_w), ev["spad_w_writes"].eq(is_w)]
            return Cat(*bad_any).any()

        # ------------------------------------------------------- STORE pipeline
        # Accumulator read -> lanes (3 stages) -> saturate + scatter, advancing
        # together whenever the scatter engine can take the next line.
        sbytes = Signal(data.ArrayLayout(8, C))
        m.d.comb += dma.src.eq(sbytes)
        s_adv = Signal()
        sv = Signal(RequantLane_LATENCY + 1)     # valid bits: read port, lane stages
        si = Signal(17)                          # lines handed to the scatter engine
        saddr = Signal(33)
        acc_read_store = Signal()
        for c in range(C):
            sh = Signal(signed(7), name=f"lane_shift{c}")
            m.d.comb += sh.eq(Mux(shift[c] > 63, 63, Mux(shift[c] < -64, -64, shift[c])))
            m.d.comb += [lanes[c].en.eq(s_adv), lanes[c].acc.eq(accbuf.rd_data[c]), lanes[c].bias.eq(bias[c]),
                         lanes[c].shift.eq(sh), lanes[c].relu.eq(f_relu)]
        sat_lo = Signal(signed(10))
        sat_hi = Signal(signed(10))
        bits_m1 = Signal(6)
        m.d.comb += [
            bits_m1.eq(f_bits - 1),
            sat_lo.eq(Mux(f_sunsigned, 0, -(Const(1, 10) << bits_m1))),
            sat_hi.eq(Mux(f_sunsigned, (Const(1, 10) << f_bits) - 1, (Const(1, 10) << bits_m1) - 1)),
        ]
        m.d.comb += ev["acc_reads"].eq(accbuf.ev_read + acc_read_store)
        m.d.comb += [
            ev["bus_reads"].eq(dma.words_read),
            ev["bus_writes"].eq(dma.words_written),
            ev["spad_a_reads"].eq(a_rd.en),
            ev["spad_w_reads"].eq(w_rd.en),
            ev["macs"].eq(Mux(accbuf.ev_write, R * C, 0)),
            ev["acc_writes"].eq(accbuf.ev_write),
        ]

        def check_overflow():
            # Last in its state, so it wins over the state's own transition.
            with m.If(accbuf.overflow):
                fail_now(ERR_OVERFLOW, 0, ovf_idx)

        # ================================================================ controller
        def execute():
            """Start the decoded, checked, unblocked instruction."""
            with m.Switch(op):
                with m.Case(Opcode.HALT):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
                with m.Case(Opcode.FENCE):
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
                with m.Case(Opcode.LOAD):
                    m.d.sync += i.eq(0)
                    m.next = "LOAD"
                with m.Case(Opcode.LOADQ):
                    m.d.comb += [dma.start.eq(1), dma.write.eq(0), dma.addr.eq(f_dram), dma.n.eq(5 * C),
                                 dma.off.eq(0), dma.lines.eq(1)]
                    m.next = "LOADQ_WAIT"
                with m.Case(Opcode.MATMUL):
                    m.d.comb += enqueue.eq(1)
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
                with m.Case(Opcode.STORE):
                    m.d.sync += [i.eq(0), si.eq(0), sv.eq(0), saddr.eq(f_dram)]
                    m.next = "STORE"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += clear.eq(1)
                    m.d.sync += [pc.eq(0), error.eq(0), err_arg.eq(0), err_index.eq(0), self.done.eq(0)]
                    m.next = "FETCH"

            with m.State("ERR_WAIT"):
                with m.If(~unit_busy):
                    fail_now(pend_code, pend_arg, pend_index)
                check_overflow()

            # ------------------------------------------------ fetch and decode
            with m.State("FETCH"):
                with m.If(pc >= self.prog_len):
                    fail(ERR_NO_HALT, index=pc - 1)
                with m.Else():
                    m.d.comb += [dma.start.eq(1), dma.write.eq(0), dma.addr.eq(self.prog_addr + (pc << 4)),
                                 dma.n.eq(INSTR_BYTES), dma.off.eq(0), dma.lines.eq(1)]
                    m.next = "FETCH_WAIT"
                check_overflow()
            with m.State("FETCH_WAIT"):
                with m.If(dma.line_valid):
                    m.d.sync += ins.eq(Cat(*(dma.line[b] for b in range(INSTR_BYTES))))
                    m.d.comb += ev["fetch_bytes"].eq(INSTR_BYTES)
                    m.next = "DECODE"
                check_overflow()
            with m.State("DECODE"):
                m.d.comb += ev["instructions"].eq(1)
                m.d.sync += span.eq(Mux(f_lines == 0, 0, (f_lines - 1) * f_stride))
                with m.If(op > max(Opcode)):
                    fail(ERR_BAD_OPCODE, op)
                with m.Else():
                    m.next = "CHECK"
                check_overflow()
            with m.State("CHECK"):
                with m.Switch(op):
                    with m.Case(Opcode.LOAD):
                        cap = Mux(is_w, g["w_lines"], g["a_lines"])
                        width = Mux(is_w, C, R)
                        with m.If(f_spad + f_lines > cap):
                            fail(Mux(is_w, ERR_SPAD_W, ERR_SPAD_A), f_spad + f_lines - 1)
                        with m.Elif(f_offset + f_elems > width):
                            fail(ERR_LINE)
                        with m.Elif((f_lines != 0) & (f_elems != 0) & (dram_end > self.dram_bytes)):
                            fail(ERR_DRAM, dram_end - 1)
                        with m.Elif(blocked):
                            m.next = "HOLD"
                        with m.Else():
                            execute()
                    with m.Case(Opcode.LOADQ):
                        with m.If(loadq_end > self.dram_bytes):
                            fail(ERR_DRAM, loadq_end - 1)
                        with m.Else():
                            execute()
                    with m.Case(Opcode.MATMUL):
                        with m.If(f_a + f_m > g["a_lines"]):
                            fail(ERR_SPAD_A, f_a + f_m - 1)
                        with m.Elif(f_w + R > g["w_lines"]):
                            fail(ERR_SPAD_W, f_w + R - 1)
                        with m.Elif(f_macc + f_m > g["acc_lines"]):
                            fail(ERR_ACC, f_macc + f_m - 1)
                        with m.Elif(blocked):
                            m.next = "HOLD"
                        with m.Else():
                            execute()
                    with m.Case(Opcode.STORE):
                        with m.If(f_sacc + f_lines > g["acc_lines"]):
                            fail(ERR_ACC, f_sacc + f_lines - 1)
                        with m.Elif((f_bits < 1) | (f_bits > cfg.out_bits)):
                            fail(ERR_BITS)
                        with m.Elif(f_elems > C):
                            fail(ERR_ELEMS)
                        with m.Elif((f_lines != 0) & (f_elems != 0) & (dram_end > self.dram_bytes)):
                            fail(ERR_DRAM, dram_end - 1)
                        with m.Elif(blocked):
                            m.next = "HOLD"
                        with m.Else():
                            execute()
                    with m.Default():   # HALT, FENCE
                        with m.If(blocked):
                            m.next = "HOLD"
                        with m.Else():
                            execute()
                check_overflow()
            with m.State("HOLD"):
                # Interlock: wait until the array unit no longer conflicts.
                with m.If(~blocked):
                    execute()
                check_overflow()

            # --------------------------------------------------------- LOAD
            with m.State("LOAD"):
                with m.If(f_lines == 0):
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
                with m.Elif(f_elems == 0):
                    # Zero-fill lines: one per cycle.
                    load_write(dma.line)
                    m.d.sync += i.eq(1)
                    m.next = "LOAD_ZERO"
                with m.Else():
                    m.d.comb += [dma.start.eq(1), dma.write.eq(0), dma.addr.eq(f_dram), dma.n.eq(f_elems),
                                 dma.off.eq(f_offset), dma.lines.eq(f_lines), dma.stride.eq(f_stride)]
                    m.next = "LOAD_WAIT"
                check_overflow()
            with m.State("LOAD_ZERO"):
                with m.If(i == f_lines):
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
                with m.Else():
                    load_write(dma.line)
                    m.d.sync += i.eq(i + 1)
                check_overflow()
            with m.State("LOAD_WAIT"):
                # Each line is written the cycle its last word arrives.
                with m.If(dma.line_valid):
                    bad = load_write(dma.line)
                    with m.If(bad):
                        fail(ERR_VALUE)
                    with m.Else():
                        m.d.sync += i.eq(i + 1)
                        with m.If(i + 1 == f_lines):
                            m.d.sync += pc.eq(pc + 1)
                            m.next = "FETCH"
                check_overflow()

            # -------------------------------------------------------- LOADQ
            with m.State("LOADQ_WAIT"):
                with m.If(dma.line_valid):
                    m.d.comb += ev["dram_bytes_read"].eq(5 * C)
                    for c in range(C):
                        m.d.sync += [bias[c].eq(Cat(*(dma.line[4 * c + b] for b in range(4)))),
                                     shift[c].eq(dma.line[4 * C + c])]
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
                check_overflow()

            # -------------------------------------------------------- STORE
            with m.State("STORE"):
                m.d.comb += s_adv.eq(dma.ready)
                with m.If(s_adv):
                    with m.If(i < f_lines):
                        m.d.comb += [accbuf.rd_en.eq(1), accbuf.rd_addr.eq(f_sacc + i), acc_read_store.eq(1)]
                        m.d.sync += i.eq(i + 1)
                    m.d.sync += sv.eq(Cat(i < f_lines, sv[:-1]))
                    with m.If(sv[-1]):
                        for c in range(C):
                            y = lanes[c].y
                            m.d.sync += sbytes[c].eq(Mux(y < sat_lo, sat_lo, Mux(y > sat_hi, sat_hi, y))[:8])
                        m.d.comb += [dma.start.eq(1), dma.write.eq(1), dma.addr.eq(saddr), dma.n.eq(f_elems),
                                     dma.off.eq(0), ev["dram_bytes_written"].eq(f_elems),
                                     ev["requant_ops"].eq(f_elems)]
                        m.d.sync += [si.eq(si + 1), saddr.eq(saddr + f_stride)]
                    with m.If(si == f_lines):
                        m.d.sync += pc.eq(pc + 1)
                        m.next = "FETCH"

        # ------------------------------------------------------ busy / stall
        running = Signal()
        m.d.comb += [running.eq(~fsm.ongoing("IDLE")), self.busy.eq(running), ev["cycles"].eq(running)]
        unit_states = {
            "ctrl": ("FETCH", "FETCH_WAIT", "DECODE", "CHECK"),
            "load": ("LOAD", "LOAD_ZERO", "LOAD_WAIT"),
            "loadq": ("LOADQ_WAIT",),
            "store": ("STORE",),
            "wait": ("HOLD", "ERR_WAIT"),
        }
        assert set(unit_states) | {"matmul"} == set(UNITS)
        for u, states in unit_states.items():
            inside = Signal(name=f"in_{u}")
            m.d.comb += inside.eq(Cat(*(fsm.ongoing(s) for s in states)).any())
            m.d.comb += [ev[f"{u}_busy"].eq(inside), ev[f"{u}_stall"].eq(inside & dma.stall)]
        m.d.comb += [ev["matmul_busy"].eq(running & unit_busy),
                     ev["idle_mem_stall"].eq(running & ~unit_busy & dma.stall)]
        return m
