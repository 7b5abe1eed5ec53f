"""The accumulator buffer: ``acc_lines`` lines of ``cols`` signed ``acc_bits`` accumulators.

The array units write results into it through an update pipeline
(overwrite, accumulate, or accumulate-with-shift for multipoint layers), and
the controller's VEC instructions (the vector unit: set, add, max of DRAM
values shifted left) through the same pipeline; the STORE pipeline reads
lines out of it through a second port.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..arch.isa import FIELDS, Opcode, VecOp
from ..arch.latency import ACC_READ, ACC_UPDATE, VEC_INPUT
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
    The buffer registers the line first: it enters the update pipeline
    :data:`~systolic.arch.latency.VEC_INPUT` cycles after it is presented. An array unit's update never enters
    in the same cycle (VEC and DIV wait until the array unit is idle and until their last line is written).

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
    through the same pipeline after a register (:class:`AccVecSignature`). The result is formed
    exactly; ``overflow`` pulses when a lane's result leaves the ``acc_bits``
    range (the stored value then wraps). The old line is read only when
    accumulating and for a VEC line.

    Latency: the line is written, and its overflow flagged,
    :data:`~systolic.arch.latency.ACC_UPDATE` (4) cycles after the update is
    presented (``upd.busy`` is high meanwhile): an input register, the old
    line's read, a register after the memory, the operation, the write. A VEC line is
    presented :data:`~systolic.arch.latency.VEC_INPUT` cycles earlier. Throughput: one
    update per cycle, to any lines: an update reads the old line from the
    updates still in flight (forwarding) where the memory has not got them
    yet, so back-to-back updates of one line accumulate. ``rd`` is an
    independent read port (:data:`~systolic.arch.latency.ACC_READ` = 2
    cycles: the memory's synchronous read, then a register): its line is the
    one in the memory in the cycle it was addressed. It reads in every cycle
    (``rd.en`` only counts reads): a line is on ``rd.data`` in the one cycle
    ACC_READ after its address.

    Members
    -------
    upd : In(AccUpdateSignature(depth, cols, psum_bits))
    vec : In(AccVecSignature(depth, cols, div_result_bits(acc_bits)))
    rd : In(LineReadSignature(depth, signed(acc_bits), cols))
    overflow : Out(1)
        In the cycle an update is written: a lane's result left the range.
    ev_read, ev_write : Out(1)
        An update that reads its old line is presented / an update writes its line this cycle (the
        counters' ``acc_reads`` / ``acc_writes``).
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

    def _read_port(self, m, mem):
        """``rd``: the memory's read port, its line ACC_READ cycles after its address (a register after the
        block RAM for each cycle beyond the memory's own)."""
        st_rd = mem.read_port()
        rd_data = st_rd.data.as_value()
        for k in range(ACC_READ - 1):
            q = Signal.like(rd_data, name=f"rd_q{k}")
            m.d.sync += q.eq(rd_data)
            rd_data = q
        # The port reads in every cycle: its readers take a line exactly ACC_READ after addressing it, so
        # nothing needs it to hold, and the block RAM's output needs no enable (Yosys would add flip-flops with
        # ``rd.en`` as their enable beside each block RAM).
        m.d.comb += [st_rd.addr.eq(self.rd.addr), st_rd.en.eq(1), self.rd.data.as_value().eq(rd_data)]

    def elaborate(self, platform):
        m = Module()
        C, A = self.cols, self.acc_bits
        upd = self.upd
        lay = data.ArrayLayout(signed(A), C)
        m.submodules.mem = mem = Memory(shape=lay, depth=memory_depth(self.lines), init=[])
        wr = mem.write_port()
        upd_rd = mem.read_port(transparent_for=())
        self._read_port(m, mem)

        # Five stages, one update per cycle (ACC_UPDATE = 4 cycles from presenting an update to its write):
        #   in: the update (or the VEC line) is registered, with per-lane copies of its shift;
        #   0: the old line is addressed; v = psum << shift is formed;
        #   1: the old line comes out of the memory into a register;
        #   2: old (forwarded from the updates written since its read, newest first) op v -> new, registered
        #      with its overflow test;
        #   3: new is written, and its overflow flagged.
        # Stage 0 forms v in A + 2 bits, with `huge` (over stages 0 and 1) when v does not fit them: then every
        # result leaves the A-bit range (|old| <= 2**(A-1)), so the overflow is certain and the stored value, the sum mod 2**A,
        # is the same as with v in full. The result is formed in A + 3 bits.
        assert ACC_UPDATE == 4, "the stages below are ACC_UPDATE's"
        NW, P = A + 2, max(self.psum_bits, div_result_bits(A))
        # The VEC line, registered (VEC_INPUT): it comes from the DMA's response logic or the divider.
        assert VEC_INPUT == 1, "one register below"
        vec = SimpleNamespace(**{name: Signal(getattr(self.vec, name).shape(), name=f"vec_{name}")
                                 for name in ("valid", "op", "addr", "vals", "shift", "elems")})
        m.d.sync += [getattr(vec, name).eq(getattr(self.vec, name)) for name in vars(vec)]
        addr_shape = upd.addr.shape()

        def stage(n):
            return {"valid": Signal(name=f"s{n}_valid"), "vec": Signal(name=f"s{n}_vec"),
                    "addr": Signal(addr_shape, name=f"s{n}_addr"), "op": Signal(2, name=f"s{n}_op"),
                    "val": [Signal(signed(NW), name=f"s{n}_val{c}") for c in range(C)],
                    "huge": [Signal(name=f"s{n}_huge{c}") for c in range(C)],
                    "neg": [Signal(name=f"s{n}_neg{c}") for c in range(C)],
                    "keep": [Signal(name=f"s{n}_keep{c}") for c in range(C)]}

        s1, s2 = stage(1), stage(2)
        # Input stage: the source (VEC line or partial sums) chosen and registered, so stage 0 starts from
        # registers. Each lane has its own copy of the shift (a register driving all cols lanes' shifters was
        # the buffer's critical path); a kept lane's copy is 0, which keeps the copies distinct (Yosys merges
        # identical registers) and does not matter (a kept lane keeps its old value).
        s0_valid, s0_vec, s0_addr, s0_op, s0_rd = Signal(), Signal(), Signal(addr_shape), Signal(2), Signal()
        s0_p = [Signal(signed(P), name=f"s0_p{c}") for c in range(C)]
        s0_shift = [Signal(SHIFT_BITS, name=f"s0_shift{c}") for c in range(C)]
        s0_keep = [Signal(name=f"s0_keep{c}") for c in range(C)]
        rd_old = Signal()
        m.d.comb += [
            rd_old.eq((upd.valid & upd.accumulate) | (vec.valid & ((vec.op != VecOp.SET) | (vec.elems < C)))),
            self.ev_read.eq(rd_old),
        ]
        m.d.sync += [
            s0_valid.eq(upd.valid | vec.valid),
            s0_vec.eq(vec.valid),
            s0_addr.eq(Mux(vec.valid, vec.addr, upd.addr)),
            s0_op.eq(Mux(vec.valid, vec.op, Mux(upd.accumulate, VecOp.ADD, VecOp.SET))),
            s0_rd.eq(rd_old),
        ]
        for c in range(C):
            keep = vec.valid & (c >= vec.elems)
            m.d.sync += [s0_p[c].eq(Mux(vec.valid, vec.vals[c], upd.psum[c])), s0_keep[c].eq(keep),
                         s0_shift[c].eq(Mux(keep, 0, Mux(vec.valid, vec.shift, upd.shift)))]
        m.d.comb += [upd_rd.addr.eq(s0_addr), upd_rd.en.eq(s0_rd)]
        m.d.sync += [s1["valid"].eq(s0_valid), s1["addr"].eq(s0_addr), s1["vec"].eq(s0_vec), s1["op"].eq(s0_op)]
        # Whether v fits is formed over two stages: stage 0 registers, for every shift, whether p << shift fits
        # (the sign runs of p), with a copy of the shift; stage 1 picks the one of its shift (the old line's
        # read leaves the stage nothing else to do), so `huge` reaches stage 2 as before.
        s1_fits = [Signal(1 << SHIFT_BITS, name=f"s1_fits{c}") for c in range(C)]
        s1_shift = [Signal(SHIFT_BITS, name=f"s1_shift{c}") for c in range(C)]
        for c in range(C):
            p, shift = s0_p[c], s0_shift[c]
            m.d.sync += [s1["val"][c].eq((p << shift)[:NW].as_signed()),
                         s1_fits[c].eq(_shift_fits(m, p, SHIFT_BITS, NW, f"{c}_")), s1_shift[c].eq(shift),
                         s1["neg"][c].eq(p[-1]), s1["keep"][c].eq(s0_keep[c])]
            m.d.comb += s1["huge"][c].eq(~Array(s1_fits[c])[s1_shift[c]])

        # Stage 1 -> 2: the old line into a register, the stage's fields along.
        for key in ("valid", "vec", "addr", "op"):
            m.d.sync += s2[key].eq(s1[key])
        for key in ("val", "huge", "neg", "keep"):
            m.d.sync += [s2[key][c].eq(s1[key][c]) for c in range(C)]
        # The writes an update's memory read (in stage 0) missed, when it is in stage 2: the line in stage 3
        # (written now) and the lines written one and two cycles ago (w1; w2, written in the very cycle of the
        # read, which the read port does not see). The pipeline never stalls, so the last two are the lines in
        # stage 3 and w1 when the update is in stage 1: there they are chosen instead of the memory's line as
        # it is registered (old_q), by selects formed in stage 0 (the lines then in stages 2 and 3), and stage 2
        # chooses only between old_q and stage 3's line (fwd3, registered in stage 1).
        s3_valid, s3_vec, s3_addr = Signal(), Signal(), Signal(addr_shape)
        s3_new = [Signal(signed(NW + 1), name=f"s3_new{c}") for c in range(C)]
        s3_ovf = [Signal(name=f"s3_ovf{c}") for c in range(C)]
        s3_line = Signal(lay)
        w1_valid, w1_addr, w1_line = Signal(), Signal(addr_shape), Signal(lay)
        # One copy of each select per lane: one register driving all cols * acc_bits multiplexer bits was the
        # buffer's critical path. Each lane's copy is also low where the lane does not read its old value (a
        # SET that is not kept), which keeps the copies distinct (Yosys merges identical registers).
        fwd3 = [Signal(name=f"fwd3_{c}") for c in range(C)]
        pre1 = [Signal(name=f"pre1_{c}") for c in range(C)]    # stage 1: take stage 3's line (w1 in stage 2)
        pre2 = [Signal(name=f"pre2_{c}") for c in range(C)]    # stage 1: take w1's line (w2 in stage 2)
        old_q = Signal(lay)
        def uses_old(op, keep):
            return (op != VecOp.SET) | keep

        for c in range(C):
            uses_old0, uses_old1 = uses_old(s0_op, s0_keep[c]), uses_old(s1["op"], s1["keep"][c])
            m.d.sync += [pre1[c].eq(uses_old0 & s2["valid"] & (s2["addr"] == s0_addr)),
                         pre2[c].eq(uses_old0 & s3_valid & (s3_addr == s0_addr)),
                         fwd3[c].eq(uses_old1 & s2["valid"] & (s2["addr"] == s1["addr"])),
                         old_q[c].eq(Mux(pre1[c], s3_line[c], Mux(pre2[c], w1_line[c], upd_rd.data[c])))]
        old = Signal(lay)
        for c in range(C):
            m.d.comb += old[c].eq(Mux(fwd3[c], s3_line[c], old_q[c]))

        m.d.sync += [s3_valid.eq(s2["valid"]), s3_vec.eq(s2["vec"]), s3_addr.eq(s2["addr"])]
        self._operate(m, s1, s2, old, s3_new, s3_ovf)

        # Stage 3: the write, and the overflow.
        for c in range(C):
            m.d.comb += s3_line[c].eq(s3_new[c][:A].as_signed())
        m.d.sync += [w1_valid.eq(s3_valid), w1_addr.eq(s3_addr), w1_line.eq(s3_line)]
        m.d.comb += [
            wr.addr.eq(s3_addr), wr.en.eq(s3_valid), wr.data.eq(s3_line),
            self.ev_write.eq(s3_valid), self.ev_vec_write.eq(s3_vec),
            upd.busy.eq((s0_valid & ~s0_vec) | (s1["valid"] & ~s1["vec"]) | (s2["valid"] & ~s2["vec"])
                        | (s3_valid & ~s3_vec)),
            self.overflow.eq(s3_valid & Cat(*s3_ovf).any()),
        ]
        return m

    def _operate(self, m, s1, s2, old, s3_new, s3_ovf):
        """Stage 2's operation per lane (registered into *s3_new* / *s3_ovf*), and its addend registered from
        stage 1. *old* is each lane's old value, forwarded."""
        C, A = self.cols, self.acc_bits
        NW = len(s2["val"][0])           # the stage values' width
        # Stage 2's one adder per lane forms old + v for ADD and old - v for MAX: the addend (v, or ~v with a
        # carry in) is registered here, with whether v fits the accumulator's A bits (its bits A-1 .. NW-1 all
        # equal: the overflow of a result that is v).
        s2_addend = [Signal(signed(NW), name=f"s2_addend{c}") for c in range(C)]
        s2_vfits = [Signal(name=f"s2_vfits{c}") for c in range(C)]
        s2_sub = Signal(name="s2_sub")
        m.d.sync += s2_sub.eq(s1["op"] == VecOp.MAX)
        for c in range(C):
            v, vtop = s1["val"][c], s1["val"][c][A - 1:]
            m.d.sync += [s2_addend[c].eq(Mux(s1["op"] == VecOp.MAX, ~v, v)),
                         s2_vfits[c].eq(vtop.all() | ~vtop.any())]
        # Stage 2: the operation; a kept lane (VEC, c >= elems) keeps its old value and never overflows.
        # sum = old + v (ADD) or old - v (MAX, where old >= v iff sum >= 0: on a tie old and v are equal, so
        # MAX takes old), in NW + 1 bits, which hold both. Each operation's overflow is formed beside it, so
        # the adder's result goes through one choice to the registers.
        for c in range(C):
            o, v, huge, keep = old[c], s2["val"][c], s2["huge"][c], s2["keep"][c]
            total = Signal(signed(NW + 1), name=f"sum{c}")
            m.d.comb += total.eq(o + s2_addend[c] + s2_sub)
            # ADD: the sum fits A bits iff its bits A-1 .. A+2 all equal its sign (a 4-bit test).
            top = total[A - 1:]
            add_ovf = huge | ~(top.all() | ~top.any())
            # MAX: a huge negative v never wins, a huge positive one is the (overflowing) result, kept as old;
            # otherwise v wins when old < v, and then overflows iff it does not fit (old always fits).
            take_v = ~huge & total[-1]
            max_ovf = (huge & ~s2["neg"][c]) | (take_v & ~s2_vfits[c])
            new, ovf = Signal(signed(NW + 1), name=f"new{c}"), Signal(name=f"ovf{c}")
            with m.Switch(s2["op"]):
                with m.Case(VecOp.ADD):
                    m.d.comb += [new.eq(total), ovf.eq(add_ovf)]
                with m.Case(VecOp.MAX):
                    m.d.comb += [new.eq(Mux(take_v, v, o)), ovf.eq(max_ovf)]
                with m.Default():
                    m.d.comb += [new.eq(v), ovf.eq(huge | ~s2_vfits[c])]
            # The lane's overflow, registered with its result, so stage 3 only ORs the lanes' flags.
            m.d.sync += [s3_new[c].eq(Mux(keep, o, new)), s3_ovf[c].eq(~keep & ovf)]


def _shift_fits(m, p, shift_bits, nw, prefix):
    """Bit ``s`` (``0 <= s < 2**shift_bits``): whether ``p << s`` fits ``nw`` signed bits, that is, bits
    ``nw - 1 - s`` .. top of *p* all equal its sign."""
    P = len(p)
    # same[j]: bits j .. P-1 of p all equal its sign; p << s fits nw bits iff same[nw-1-s]
    # (always when nw - s > P; only p == 0 when s >= nw).
    same = [Const(1, 1)] * (P + 1)
    for j in reversed(range(P)):
        sj = Signal(name=f"same{prefix}{j}")
        m.d.comb += sj.eq(same[j + 1] & (p[j] == p[P - 1]))
        same[j] = sj
    return Cat(*(Const(1, 1) if nw - 1 - sh >= P else same[nw - 1 - sh] if nw - 1 - sh >= 0 else p == 0
                 for sh in range(1 << shift_bits)))
