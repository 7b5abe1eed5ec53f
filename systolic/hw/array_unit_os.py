"""The output-stationary array unit: one MATMUL at a time, in chunks of ``rows`` output rows."""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal

from .array import SystolicArray
from .array_unit import MATMUL_LAYOUT, ArrayUnit, read_weight_tile, weight_tile

__all__ = ["OSArrayUnit"]


class OSArrayUnit(ArrayUnit):
    """Output-stationary: weight tile, then per chunk of ``rows`` operand lines a transpose and ``rows`` steps.

    One MATMUL at a time: the unit reads the weight tile into registers; per
    chunk of ``rows`` operand lines (output rows) it reads the lines into a
    transpose buffer (zeros past ``m``) and feeds them as ``rows`` reduction
    steps (``first`` / ``last`` mark the tile), while the array drains the
    previous chunk; the drained rows (bottom first) update their accumulator
    lines, rows past ``m`` are discarded.

    Latency of a MATMUL of ``m`` rows from taking it: exactly
    :meth:`Latencies.os_matmul(m) <systolic.arch.latency.Latencies.os_matmul>`
    busy cycles: ``weight_tile_read``, ``ceil(m / rows) * os_chunk``
    (``os_chunk = 2R + 1``), ``os_drain``. Throughput: ``rows`` reduction
    steps per ``2R + 1`` cycles.
    """

    READERS = 1

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R = cfg.rows
        aw = cfg.array_config.in_bits
        m.submodules.array = array = SystolicArray(config=cfg.array_config)
        wt = weight_tile(cfg)
        m.d.comb += array.o.ready.eq(1)

        cur = Signal(MATMUL_LAYOUT)
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
        upd = self.upd
        m.d.comb += [
            o_line.eq(o_base + o_row), keep.eq(o_line < cur.m),
            upd.valid.eq(array.o.valid & keep),
            upd.addr.eq(cur.acc + o_line),
            upd.accumulate.eq(cur.accum),
            upd.shift.eq(cur.shift),
            upd.psum.eq(array.o.payload),
        ]
        with m.If(array.o.valid):
            m.d.sync += [outs.eq(outs + 1), self.idx.eq(cur.idx)]
            with m.If(o_row == 0):
                m.d.sync += [o_row.eq(R - 1), o_base.eq(o_base + R)]
            with m.Else():
                m.d.sync += o_row.eq(o_row - 1)
        with m.FSM(name="os_unit") as fsm:
            with m.State("IDLE"):
                with m.If(self.matmul.valid):
                    m.d.sync += [cur.eq(self.matmul.payload), k.eq(0), chunk.eq(0), o_base.eq(0),
                                 o_row.eq(R - 1), outs.eq(0), expect.eq(0), rd_valid.eq(0)]
                    m.next = "MM_W"
            with m.State("MM_W"):
                read_weight_tile(m, self.w, k, cur.w, wt)
                with m.If(k == R):
                    m.d.sync += k.eq(0)
                    with m.If(cur.m == 0):
                        m.next = "MM_DRAIN"
                    with m.Else():
                        m.next = "MM_OSA"
            with m.State("MM_OSA"):
                # One M chunk of up to R lines -> transpose registers (zeros past m).
                with m.If((k < R) & (chunk + k < cur.m)):
                    m.d.comb += [self.a.en.eq(1), self.a.addr.eq(cur.a + chunk + k)]
                m.d.sync += [rd_valid.eq((k < R) & (chunk + k < cur.m)), rd_idx.eq(k)]
                with m.If(k > 0):
                    with m.Switch(rd_idx):
                        for r in range(R):
                            with m.Case(r):
                                m.d.sync += at[r].eq(Mux(rd_valid, self.a.data.as_value(), 0))
                m.d.sync += k.eq(k + 1)
                with m.If(k == R):
                    m.d.sync += k.eq(0)
                    m.next = "MM_OSSTEP"
            with m.State("MM_OSSTEP"):
                m.d.comb += [array.i.valid.eq(1), array.i.payload.w.eq(wt[k]),
                             array.i.payload.first.eq(k == 0), array.i.payload.last.eq(k == R - 1),
                             self.stall.eq(~array.i.ready)]
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
                with m.If((outs == expect) & ~array.o.valid & ~upd.busy):
                    m.next = "IDLE"
        m.d.comb += [self.matmul.ready.eq(fsm.ongoing("IDLE")), self.busy.eq(~fsm.ongoing("IDLE"))]
        self._reader(m, 0, ~fsm.ongoing("IDLE"), cur, fsm.ongoing("MM_W"))
        self._writer(m, 0, ~fsm.ongoing("IDLE"), cur)      # (busy until its last write is done)
        return m
