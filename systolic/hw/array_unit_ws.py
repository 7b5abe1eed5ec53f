"""The weight-stationary array unit: three stages that stream consecutive MATMULs."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data

from ..arch.latency import ACC_UPDATE
from .array import SystolicArray
from .array_unit import (MATMUL_LAYOUT, ArrayUnit, last_writer, read_weight_tile, weight_tile,
                         written_idx)

__all__ = ["WSArrayUnit"]

#: Write-back descriptors in flight: a MATMUL's is pushed when the feeder starts it and popped with its last
#: result, ``m + array`` (``m + R + C``) cycles later. The next start comes at least ``m`` and the one after that at
#: least ``2R + C + 1`` cycles later still, so at most two are ever in flight: a two-entry queue (``wb0`` the
#: head) that never fills at a push and never holds the feeder back (which the cycle model relies on).
#: A MATMUL in the write-back queue, with ``m == 1`` and ``m - 2`` (formed as it is queued): the head's
#: last-output test is a flag register, set as an entry becomes the head (``m == 1``) or as output ``m - 2`` of
#: it arrives (an equality of registers), so a pop starts from a flip-flop.
_WRITEBACK = data.StructLayout({**{name: MATMUL_LAYOUT.members[name]
                                   for name in ("acc", "m", "accum", "shift", "idx", "acc_end")},
                                "m_is1": 1, "m_m2": MATMUL_LAYOUT.members["m"]})


class WSArrayUnit(ArrayUnit):
    """Weight-stationary: a weight loader, a feeder and the write-back stream MATMULs back to back.

    - **weight loader**: takes a MATMUL from ``matmul``, reads its ``rows``
      weight lines into registers
      (:attr:`~systolic.arch.latency.Latencies.weight_tile_read` cycles), then
      pushes them into the array's shadow weights, one row per cycle, as soon
      as the array accepts them (``weight_refill`` cycles after the previous
      tile's swap);
    - **feeder**: streams the MATMUL's ``m`` operand lines into the array, one
      per cycle, right behind the previous MATMUL's lines; the first carries
      ``swap``;
    - **write-back**: result vector ``i`` updates accumulator line
      ``acc + i`` (a FIFO of write-back descriptors follows the MATMULs through
      the array).

    Latency of one MATMUL from taking it (cycle ``t``) with an idle array: the
    first push in ``t + weight_tile_read + 1``, the first operand read
    ``weight_push`` cycles later, the last accumulator write ``ws_writeback``
    cycles after the last operand read. Throughput: one operand line (``rows
    * cols`` MACs) per cycle; consecutive MATMULs start at least
    :attr:`~systolic.arch.latency.Latencies.ws_matmul_period` (``2R + C + 1``)
    cycles apart, so a MATMUL of ``m`` rows streams at full rate when ``m`` is
    at least that. ``m == 0`` is taken and dropped (no reads, no writes).
    """

    READERS = 2
    #: The weight loader's, the two write-back entries, those whose last write is still in the accumulator.
    WRITERS = 3 + ACC_UPDATE

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R = cfg.rows
        m.submodules.array = array = SystolicArray(config=cfg.array_config)
        wt = weight_tile(cfg)
        m.d.comb += array.o.ready.eq(1)

        # The array's psum input is unused (accumulation happens in the accumulator
        # buffer) and held at 0. A register cleared at start rather than a constant:
        # Amaranth emits a constant-only `always @*` for an undriven payload field,
        # which Verilator lint rejects (ALWNEVER / UNDRIVEN); synthesis folds it away.
        psum_zero = Signal.like(array.i.payload.psum.as_value(), name="psum_zero")
        with m.If(self.clear):
            m.d.sync += psum_zero.eq(0)
        m.d.comb += array.i.payload.psum.eq(psum_zero)

        # Weight loader: R reads of scratchpad W into `wt`, then R pushes into the
        # array's shadow registers (while the previous tile computes).
        wl = Signal(MATMUL_LAYOUT)
        wl_valid, wl_push, wl_done = Signal(), Signal(), Signal()
        wl_k = Signal(range(R + 2))
        m.d.comb += self.matmul.ready.eq(~wl_valid)
        with m.If(self.matmul.valid & ~wl_valid & (self.matmul.payload.m != 0)):     # m == 0: dropped
            m.d.sync += [wl.eq(self.matmul.payload), wl_valid.eq(1), wl_k.eq(0), wl_push.eq(0), wl_done.eq(0)]
        with m.If(wl_valid & ~wl_push & ~wl_done):
            read_weight_tile(m, self.w, wl_k, wl.w, wt)
            with m.If(wl_k == R):
                m.d.sync += [wl_k.eq(0), wl_push.eq(1)]
        with m.If(wl_valid & wl_push):
            m.d.comb += [array.w.valid.eq(1), array.w.payload.w.eq(wt[wl_k])]
            with m.If(array.w.ready):
                m.d.sync += wl_k.eq(wl_k + 1)
                with m.If(wl_k == R - 1):
                    m.d.sync += [wl_push.eq(0), wl_done.eq(1)]

        # Feeder: A lines into the array back to back; the first row of a
        # MATMUL swaps in its weight tile (pushed, so never refused).
        fd = Signal(MATMUL_LAYOUT)
        fd_valid, i_valid, swap_r = Signal(), Signal(), Signal()
        issued = Signal(17)
        wb = [Signal(_WRITEBACK, name=f"wb{n}") for n in range(2)]
        wb_v = [Signal(name=f"wb{n}_valid") for n in range(2)]
        push, pop = Signal(), Signal()
        # fd_more: the feeder's MATMUL has rows left (fd_valid & issued < fd.m), a register set with issued, so the
        # feeder's choice (which loads the write-back queue) starts from flip-flops, not from a compare.
        fd_more, start_next, adv_f = Signal(name="fd_more"), Signal(), Signal()
        m.d.comb += [
            array.i.valid.eq(i_valid), array.i.payload.a.eq(self.a.data), array.i.payload.swap.eq(swap_r),
            adv_f.eq(~i_valid | array.i.ready),
            start_next.eq(~fd_more & wl_valid & wl_done & ~wb_v[1]),
            self.stall.eq(i_valid & ~array.i.ready),
        ]
        wb_in = Signal(_WRITEBACK)
        m.d.comb += [wb_in.acc.eq(wl.acc), wb_in.m.eq(wl.m), wb_in.accum.eq(wl.accum), wb_in.shift.eq(wl.shift),
                     wb_in.idx.eq(wl.idx), wb_in.acc_end.eq(wl.acc_end), wb_in.m_is1.eq(wl.m == 1),
                     wb_in.m_m2.eq(wl.m - 2)]
        with m.If(adv_f):
            with m.If(fd_more):
                m.d.comb += [self.a.en.eq(1), self.a.addr.eq(fd.a + issued)]
                m.d.sync += [issued.eq(issued + 1), i_valid.eq(1), swap_r.eq(0), fd_more.eq(issued + 1 < fd.m)]
            with m.Elif(start_next):
                m.d.comb += [self.a.en.eq(1), self.a.addr.eq(wl.a), push.eq(1)]
                m.d.sync += [issued.eq(1), i_valid.eq(1), swap_r.eq(1), fd.eq(wl), fd_valid.eq(1),
                             wl_valid.eq(0), fd_more.eq(wl.m > 1)]
            with m.Else():
                m.d.sync += [i_valid.eq(0), fd_valid.eq(0), fd_more.eq(0)]

        # Write-back: output vectors of the head MATMUL into the accumulator.
        head = wb[0]
        o_cnt = Signal(17)
        o_last = Signal(name="o_last")      # the head's next output is its last (o_cnt == head.m - 1)
        upd = self.upd
        m.d.comb += [
            upd.valid.eq(array.o.valid),
            upd.addr.eq(head.acc + o_cnt),
            upd.accumulate.eq(head.accum),
            upd.shift.eq(head.shift),
            upd.psum.eq(array.o.payload),
        ]
        written_idx(m, array.o.valid, head.idx, self.idx)
        with m.If(array.o.valid):
            with m.If(o_last):
                m.d.sync += [o_cnt.eq(0), o_last.eq(Mux(wb_v[1], wb[1].m_is1, wb_in.m_is1))]
                m.d.comb += pop.eq(1)
            with m.Else():
                m.d.sync += [o_cnt.eq(o_cnt + 1), o_last.eq(o_cnt == head.m_m2)]
        with m.Elif(push & ~wb_v[0]):
            m.d.sync += o_last.eq(wb_in.m_is1)
        # The two-entry queue: a pop moves wb1 to the head; a push fills the first free entry after it. An
        # empty entry's fields follow the entry a push would put there (wb_in; after a pop, the head takes wb1
        # when it is full), so a push, which the array's readiness decides, sets only the valid bits, and the
        # fields' clock enables come from registers (an entry's valid bit, the pop: o.valid & o_last).
        with m.If(~wb_v[0] | pop):
            m.d.sync += wb[0].eq(Mux(wb_v[1], wb[1], wb_in))
        with m.If(~wb_v[1] | pop):
            m.d.sync += wb[1].eq(wb_in)
        with m.If(pop):
            m.d.sync += [wb_v[0].eq(wb_v[1] | push), wb_v[1].eq(push & wb_v[1])]
        with m.Elif(push & wb_v[0]):
            m.d.sync += wb_v[1].eq(1)
        with m.Elif(push):
            m.d.sync += wb_v[0].eq(1)
        done = last_writer(m, pop, head, _WRITEBACK)
        with m.If(self.clear):
            m.d.sync += [wl_valid.eq(0), fd_valid.eq(0), fd_more.eq(0), i_valid.eq(0), o_cnt.eq(0), wb_v[0].eq(0), wb_v[1].eq(0),
                         *(v.eq(0) for v, _ in done)]
        m.d.comb += self.busy.eq(wl_valid | fd_valid | wb_v[0] | upd.busy)
        self._reader(m, 0, wl_valid, wl, wl_valid & ~wl_push & ~wl_done)   # W: while reading the tile
        self._reader(m, 1, fd_valid, fd, 0)                                 # (the feeder reads A only)
        for n, (valid, desc) in enumerate(((wl_valid, wl), (wb_v[0], wb[0]), (wb_v[1], wb[1]), *done)):
            self._writer(m, n, valid, desc)
        return m
