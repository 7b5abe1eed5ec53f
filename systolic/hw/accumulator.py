"""The accumulator buffer: ``acc_lines`` lines of ``cols`` signed ``acc_bits`` accumulators.

The array units write results into it through an update pipeline
(overwrite, accumulate, or accumulate-with-shift for multipoint layers); the
STORE pipeline reads lines out of it through a second port.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..arch.isa import FIELDS, Opcode
from ..arch.latency import ACC_READ, ACC_UPDATE
from .scratchpad import LineReadSignature, memory_depth

__all__ = ["AccUpdateSignature", "AccumulatorBuffer", "SHIFT_BITS"]

#: Width of the accumulate-with-shift amount: the MATMUL instruction's ``shift`` field.
SHIFT_BITS = FIELDS[Opcode.MATMUL]["shift"][1]


class AccUpdateSignature(wiring.Signature):
    """One result vector into the accumulator buffer, from the writer's side (an array unit).

    In a cycle with ``valid`` high the buffer takes the update ``acc[addr] =
    psum << shift`` or, with ``accumulate``, ``acc[addr] += psum << shift``;
    ``busy`` is high while an update is being written.

    Members
    -------
    valid, accumulate : Out(1)
    addr : Out(range(depth))
    psum : Out(ArrayLayout(signed(psum_bits), cols))
    shift : Out(SHIFT_BITS)
    busy : In(1)
    """

    def __init__(self, *, depth: int, cols: int, psum_bits: int):
        self.depth, self.cols, self.psum_bits = depth, cols, psum_bits
        super().__init__({
            "valid": Out(1), "accumulate": Out(1), "addr": Out(range(depth)),
            "psum": Out(data.ArrayLayout(signed(psum_bits), cols)), "shift": Out(SHIFT_BITS),
            "busy": In(1),
        })

    def __eq__(self, other):
        return type(other) is type(self) and (self.depth, self.cols, self.psum_bits) == \
            (other.depth, other.cols, other.psum_bits)

    def __repr__(self):
        return f"AccUpdateSignature(depth={self.depth}, cols={self.cols}, psum_bits={self.psum_bits})"


class AccumulatorBuffer(wiring.Component):
    """``lines`` lines of ``cols`` signed ``acc_bits`` accumulators with an update pipeline.

    An update ``(addr, psum, accumulate, shift)`` writes
    ``acc[addr] = psum << shift`` (overwrite) or ``acc[addr] += psum << shift``
    (accumulate; with ``shift > 0`` the accumulate-with-shift of multipoint
    layers). The sum is formed exactly; ``overflow`` pulses when a lane's
    result leaves the ``acc_bits`` range (the stored value then wraps).
    The old line is read only when accumulating.

    Latency: the line is written :data:`~systolic.arch.latency.ACC_UPDATE`
    (1) cycle after the update is presented (``upd.busy`` is high meanwhile).
    Throughput: one update per cycle, to any lines (an update of the line
    written in the same cycle sees the new value). ``rd`` is an independent
    read port (:data:`~systolic.arch.latency.ACC_READ` = 1 cycle).

    Members
    -------
    upd : In(AccUpdateSignature(depth, cols, psum_bits))
    rd : In(LineReadSignature(depth, signed(acc_bits), cols))
    overflow : Out(1)
        In the cycle an update is written: a lane's result left the range.
    ev_read, ev_write : Out(1)
        An update read / wrote a line this cycle (the counters' ``acc_reads`` / ``acc_writes``).
    """

    UPDATE_LATENCY = ACC_UPDATE
    READ_LATENCY = ACC_READ

    def __init__(self, *, cols: int, lines: int, acc_bits: int, psum_bits: int):
        self.cols, self.lines, self.acc_bits, self.psum_bits = cols, lines, acc_bits, psum_bits
        depth = memory_depth(lines)
        super().__init__({
            "upd": In(AccUpdateSignature(depth=depth, cols=cols, psum_bits=psum_bits)),
            "rd": In(LineReadSignature(depth=depth, shape=signed(acc_bits), width=cols)),
            "overflow": Out(1), "ev_read": Out(1), "ev_write": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        C, A = self.cols, self.acc_bits
        upd = self.upd
        lay = data.ArrayLayout(signed(A), C)
        m.submodules.mem = mem = Memory(shape=lay, depth=memory_depth(self.lines), init=[])
        wr = mem.write_port()
        # Transparent: an update of the line written in the same cycle reads the new value,
        # so back-to-back updates of one line (consecutive MATMULs) accumulate correctly.
        upd_rd = mem.read_port(transparent_for=(wr,))
        st_rd = mem.read_port()
        m.d.comb += [st_rd.addr.eq(self.rd.addr), st_rd.en.eq(self.rd.en), self.rd.data.eq(st_rd.data)]

        vw = self.psum_bits + (1 << SHIFT_BITS) - 1
        s1_valid = Signal()
        s1_acc = Signal()
        s1_addr = Signal.like(upd.addr)
        s1_val = [Signal(signed(vw), name=f"s1_val{c}") for c in range(C)]
        rd_old = Signal()
        m.d.comb += [
            upd_rd.addr.eq(upd.addr),
            rd_old.eq(upd.valid & upd.accumulate),
            upd_rd.en.eq(rd_old),
            self.ev_read.eq(rd_old),
        ]
        m.d.sync += [s1_valid.eq(upd.valid), s1_acc.eq(upd.accumulate), s1_addr.eq(upd.addr)]
        for c in range(C):
            m.d.sync += s1_val[c].eq(upd.psum[c] << upd.shift)

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
            upd.busy.eq(s1_valid), self.overflow.eq(s1_valid & Cat(*ovf).any()),
        ]
        return m
