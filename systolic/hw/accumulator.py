"""The accumulator buffer: ``acc_lines`` lines of ``cols`` signed ``acc_bits`` accumulators.

The array units write results into it through an update pipeline
(overwrite, accumulate, or accumulate-with-shift for multipoint layers), and
the controller's VEC instructions (the vector unit: set, add, max of DRAM
values shifted left) through the same pipeline; the STORE pipeline reads
lines out of it through a second port.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..arch.isa import FIELDS, Opcode, VecOp
from ..arch.latency import ACC_READ, ACC_UPDATE
from .divider import div_result_bits
from .scratchpad import LineReadSignature, memory_depth

__all__ = ["AccUpdateSignature", "AccVecSignature", "AccumulatorBuffer", "SHIFT_BITS"]

#: Width of the accumulate-with-shift amount: the MATMUL instruction's ``shift`` field.
SHIFT_BITS = FIELDS[Opcode.MATMUL]["shift"][1]
assert FIELDS[Opcode.VEC]["shift"][1] == SHIFT_BITS


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


class AccVecSignature(wiring.Signature):
    """One vector-unit line into the accumulator buffer, from the controller's side (docs/isa.md, VEC, DIV).

    In a cycle with ``valid`` high the buffer writes line ``addr``: for lanes ``c < elems``
    ``op(acc[addr][c], vals[c] << shift)`` (:class:`~systolic.arch.isa.VecOp`); the other lanes keep their
    value. It reads the old line unless the op is SET of every lane. ``vals`` are ``bits`` wide: a VEC's
    DRAM bytes, or a DIV's results (which may leave the accumulator range: the overflow check sees them).
    The array unit's updates and these lines never come in the same cycle (VEC and DIV wait until the array
    unit is idle).

    Members
    -------
    valid : Out(1)
    op : Out(2)
    addr : Out(range(depth))
    vals : Out(ArrayLayout(signed(bits), cols))
    shift : Out(SHIFT_BITS)
    elems : Out(range(cols + 1))
    """

    def __init__(self, *, depth: int, cols: int, bits: int):
        self.depth, self.cols, self.bits = depth, cols, bits
        super().__init__({
            "valid": Out(1), "op": Out(2), "addr": Out(range(depth)),
            "vals": Out(data.ArrayLayout(signed(bits), cols)), "shift": Out(SHIFT_BITS),
            "elems": Out(range(cols + 1)),
        })

    def __eq__(self, other):
        return type(other) is type(self) and (self.depth, self.cols, self.bits) == (other.depth, other.cols,
                                                                                     other.bits)

    def __repr__(self):
        return f"AccVecSignature(depth={self.depth}, cols={self.cols}, bits={self.bits})"


class AccumulatorBuffer(wiring.Component):
    """``lines`` lines of ``cols`` signed ``acc_bits`` accumulators with an update pipeline.

    An update ``(addr, psum, accumulate, shift)`` writes
    ``acc[addr] = psum << shift`` (overwrite) or ``acc[addr] += psum << shift``
    (accumulate; with ``shift > 0`` the accumulate-with-shift of multipoint
    layers). A VEC line ``(addr, vals, op, shift, elems)`` on ``vec`` goes
    through the same pipeline (:class:`AccVecSignature`). The result is formed
    exactly; ``overflow`` pulses when a lane's result leaves the ``acc_bits``
    range (the stored value then wraps). The old line is read only when
    accumulating and for a VEC line.

    Latency: the line is written :data:`~systolic.arch.latency.ACC_UPDATE`
    (1) cycle after the update is presented (``upd.busy`` is high meanwhile).
    Throughput: one update per cycle, to any lines (an update of the line
    written in the same cycle sees the new value). ``rd`` is an independent
    read port (:data:`~systolic.arch.latency.ACC_READ` = 1 cycle).

    Members
    -------
    upd : In(AccUpdateSignature(depth, cols, psum_bits))
    vec : In(AccVecSignature(depth, cols, div_result_bits(acc_bits)))
    rd : In(LineReadSignature(depth, signed(acc_bits), cols))
    overflow : Out(1)
        In the cycle an update is written: a lane's result left the range.
    ev_read, ev_write : Out(1)
        An update read / wrote a line this cycle (the counters' ``acc_reads`` / ``acc_writes``).
    ev_vec_write : Out(1)
        The line written this cycle is a VEC line's (not a MATMUL result: no MACs).
    """

    UPDATE_LATENCY = ACC_UPDATE
    READ_LATENCY = ACC_READ

    def __init__(self, *, cols: int, lines: int, acc_bits: int, psum_bits: int):
        self.cols, self.lines, self.acc_bits, self.psum_bits = cols, lines, acc_bits, psum_bits
        depth = memory_depth(lines)
        super().__init__({
            "upd": In(AccUpdateSignature(depth=depth, cols=cols, psum_bits=psum_bits)),
            "vec": In(AccVecSignature(depth=depth, cols=cols, bits=div_result_bits(acc_bits))),
            "rd": In(LineReadSignature(depth=depth, shape=signed(acc_bits), width=cols)),
            "overflow": Out(1), "ev_read": Out(1), "ev_write": Out(1), "ev_vec_write": Out(1),
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

        # Stage 1 forms v = psum << shift in A + 2 bits, with `huge` when v does not fit them: then every result
        # leaves the A-bit range (|old| <= 2**(A-1)), so the overflow is certain and the stored value, the sum
        # mod 2**A, is the same as with v in full. The add after the memory read is A + 3 bits wide.
        NW, P = A + 2, max(self.psum_bits, div_result_bits(A))
        vec = self.vec
        s1_valid = Signal()
        s1_op = Signal(2)           # VecOp: an array update is SET (overwrite) or ADD (accumulate)
        s1_vec = Signal()
        s1_addr = Signal.like(upd.addr)
        s1_val = [Signal(signed(NW), name=f"s1_val{c}") for c in range(C)]
        s1_huge = [Signal(name=f"s1_huge{c}") for c in range(C)]
        s1_neg = [Signal(name=f"s1_neg{c}") for c in range(C)]
        s1_keep = [Signal(name=f"s1_keep{c}") for c in range(C)]
        valid, addr, shift, rd_old = Signal(), Signal.like(upd.addr), Signal(SHIFT_BITS), Signal()
        m.d.comb += [
            valid.eq(upd.valid | vec.valid),
            addr.eq(Mux(vec.valid, vec.addr, upd.addr)),
            shift.eq(Mux(vec.valid, vec.shift, upd.shift)),
            upd_rd.addr.eq(addr),
            rd_old.eq((upd.valid & upd.accumulate) | (vec.valid & ((vec.op != VecOp.SET) | (vec.elems < C)))),
            upd_rd.en.eq(rd_old),
            self.ev_read.eq(rd_old),
        ]
        m.d.sync += [s1_valid.eq(valid), s1_addr.eq(addr), s1_vec.eq(vec.valid),
                     s1_op.eq(Mux(vec.valid, vec.op, Mux(upd.accumulate, VecOp.ADD, VecOp.SET)))]
        for c in range(C):
            p = Signal(signed(P), name=f"src{c}")
            m.d.comb += p.eq(Mux(vec.valid, vec.vals[c], upd.psum[c]))
            # same[j]: bits j .. P-1 of p all equal its sign; p << s fits NW bits iff same[NW-1-s]
            # (always when NW - s > P; only p == 0 when s >= NW).
            same = [Const(1, 1)] * (P + 1)
            for j in reversed(range(P)):
                sj = Signal(name=f"same{c}_{j}")
                m.d.comb += sj.eq(same[j + 1] & (p[j] == p[P - 1]))
                same[j] = sj
            fits = [Const(1, 1) if NW - 1 - sh >= P else same[NW - 1 - sh] if NW - 1 - sh >= 0 else p == 0
                    for sh in range(1 << SHIFT_BITS)]
            m.d.sync += [s1_val[c].eq((p << shift)[:NW].as_signed()), s1_huge[c].eq(~Array(fits)[shift]),
                         s1_neg[c].eq(p[P - 1]), s1_keep[c].eq(vec.valid & (c >= vec.elems))]

        lo, hi = -(1 << (A - 1)), (1 << (A - 1)) - 1
        ovf = []
        for c in range(C):
            old, v = upd_rd.data[c], s1_val[c]
            new = Signal(signed(NW + 1), name=f"new{c}")
            big = Signal(name=f"big{c}")        # the true value is beyond every accumulator value
            with m.Switch(s1_op):
                with m.Case(VecOp.ADD):
                    m.d.comb += [new.eq(old + v), big.eq(s1_huge[c])]
                with m.Case(VecOp.MAX):
                    # A huge negative value never wins; a huge positive one is the (overflowing) result.
                    m.d.comb += [new.eq(Mux(s1_huge[c] | (old > v), old, v)), big.eq(s1_huge[c] & ~s1_neg[c])]
                with m.Default():
                    m.d.comb += [new.eq(v), big.eq(s1_huge[c])]
            o = Signal(name=f"ovf{c}")
            m.d.comb += [o.eq(~s1_keep[c] & (big | (new < lo) | (new > hi))),
                         wr.data[c].eq(Mux(s1_keep[c], old, new))]
            ovf.append(o)
        m.d.comb += [
            wr.addr.eq(s1_addr), wr.en.eq(s1_valid), self.ev_write.eq(s1_valid), self.ev_vec_write.eq(s1_vec),
            upd.busy.eq(s1_valid & ~s1_vec), self.overflow.eq(s1_valid & Cat(*ovf).any()),
        ]
        return m
