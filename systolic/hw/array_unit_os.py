"""The output-stationary array unit: a fetcher and a stepper stream chunks of ``rows`` output rows."""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import data

from ..arch.latency import ACC_UPDATE, SCRATCHPAD_READ
from .array import SystolicArray
from .array_unit import MATMUL_LAYOUT, ArrayUnit, last_writer, weight_row, weight_tile, written_idx

__all__ = ["OSArrayUnit"]

#: A chunk of ``rows`` output rows of a MATMUL, from its first read to its last accumulator write: the
#: MATMUL's accumulator lines (``acc``, ``m``: published whole in ``writers`` until the last chunk's last
#: write, as the cycle model's STORE interlock has them), its first row ``row``, the update mode, the
#: program index and the weight bank it steps with.
_CHUNK = data.StructLayout({
    "acc": MATMUL_LAYOUT.members["acc"], "m": MATMUL_LAYOUT.members["m"], "row": MATMUL_LAYOUT.members["m"],
    "accum": 1, "shift": MATMUL_LAYOUT.members["shift"], "idx": 32, "wb": 1,
    "acc_end": MATMUL_LAYOUT.members["acc_end"],
})


def writeback_depth(cfg) -> int:
    """Chunks whose results are still to come out of the array: one is pushed at each chunk's last step,
    which are ``rows`` or more cycles apart, and popped with its last result ``array + rows - 1`` cycles
    later, so at most ``(rows - 2 + array) // rows + 1`` are in flight (the queue never fills at a push)."""
    lat = cfg.latencies
    return (lat.rows - 2 + lat.array) // lat.rows + 1


class OSArrayUnit(ArrayUnit):
    """Output-stationary: per chunk of ``rows`` output rows a transpose-bank fill, then ``rows`` steps.

    - **fetcher**: takes a MATMUL from ``matmul`` and reads it chunk by chunk:
      ``rows`` operand lines, one per cycle, into the next of two transpose
      banks (zeros past ``m``), and with the first chunk the ``rows`` weight
      lines into the next of two weight banks. A bank is read into again from
      the last step of the chunk in it; the fetcher takes the next MATMUL in
      the cycle of its last read. ``m == 0`` is taken and dropped.
    - **stepper**: feeds a full bank to the array as ``rows`` reduction steps
      (``last`` marks the tile's end), chunk after chunk, while the array
      drains the previous ones;
    - **write-back**: the drained rows (bottom first) update their
      accumulator lines, rows past ``m`` are discarded (a short queue of
      chunks follows them through the array, :func:`writeback_depth`).

    Timing (:class:`systolic.arch.timing.OSTiming`): a chunk read from cycle
    ``f`` steps from ``max(f + os_fill, the previous chunk's first step +
    rows)``; its last accumulator write is ``os_writeback`` after its last
    step. Throughput: ``rows`` reduction steps (``rows * rows * cols`` MACs)
    every ``rows`` cycles, across MATMULs.
    """

    READERS = 1

    @property
    def WRITERS(self):  # noqa: N802 (the interface's name)
        """The fetcher's MATMUL, the two banks' chunks, the write-back queue, the chunks whose last write is
        still in the accumulator."""
        return 3 + writeback_depth(self.config) + ACC_UPDATE

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R = cfg.rows
        aw = cfg.array_config.in_bits
        D = writeback_depth(cfg)
        m.submodules.array = array = SystolicArray(config=cfg.array_config)
        wt = [weight_tile(cfg, f"wt{b}_") for b in range(2)]
        at = [[Signal(R * aw, name=f"at{b}_{r}") for r in range(R)] for b in range(2)]
        m.d.comb += array.o.ready.eq(1)

        occ = Array(Signal(name=f"occ{b}") for b in range(2))     # a bank holds a chunk (first read .. last step)
        full = Array(Signal(name=f"full{b}") for b in range(2))   # ... all of whose lines are captured
        meta = Array(Signal(_CHUNK, name=f"chunk{b}") for b in range(2))

        # Stepper: bank `sb`, step `sk`, whenever that bank is full.
        sb = Signal()
        sk = Signal(range(R))
        step = Signal()
        step_last = Signal()
        smeta = meta[sb]
        m.d.comb += [step.eq(full[sb]), step_last.eq(step & (sk == R - 1)),
                     array.i.valid.eq(step), self.stall.eq(step & ~array.i.ready),
                     array.i.payload.last.eq(sk == R - 1),
                     array.i.payload.w.eq(Mux(smeta.wb, wt[1][sk], wt[0][sk]))]
        for r in range(R):
            row = Mux(sb, at[1][r], at[0][r])
            m.d.comb += array.i.payload.a[r].eq(Array(row[kk * aw:(kk + 1) * aw] for kk in range(R))[sk])
        with m.If(step & array.i.ready):
            m.d.sync += sk.eq(sk + 1)
            with m.If(sk == R - 1):
                m.d.sync += [sk.eq(0), sb.eq(~sb), occ[sb].eq(0), full[sb].eq(0)]

        # Fetcher: chunk `fchunk` of MATMUL `fd`, read `fk` into bank `tb`; weight bank `wbi`.
        fd = Signal(MATMUL_LAYOUT)
        fv, frd = Signal(), Signal()
        fk = Signal(range(R))
        fchunk = Signal(MATMUL_LAYOUT.members["m"])
        tb, wbi = Signal(), Signal()
        bank_ok, start, reading, f_last, f_done = Signal(), Signal(), Signal(), Signal(), Signal()
        k_now = Signal(range(R))
        m.d.comb += [
            bank_ok.eq(~occ[tb] | (step_last & (sb == tb))),
            start.eq(fv & ~frd & bank_ok), reading.eq(start | frd),
            k_now.eq(Mux(frd, fk, 0)),
            f_last.eq(reading & (k_now == R - 1)),
            f_done.eq(f_last & (fchunk + R >= fd.m)),
            self.matmul.ready.eq(~fv | f_done),
        ]
        rd_a, rd_w, rd_cap, rd_bank, rd_wb = Signal(), Signal(), Signal(), Signal(), Signal()
        rd_idx = Signal(range(R))
        assert SCRATCHPAD_READ == 1, "the capture registers assume a one-cycle scratchpad read"
        m.d.sync += [rd_cap.eq(reading), rd_a.eq(0), rd_w.eq(0), rd_idx.eq(k_now), rd_bank.eq(tb), rd_wb.eq(wbi)]
        with m.If(reading):
            with m.If(fchunk + k_now < fd.m):
                m.d.comb += [self.a.en.eq(1), self.a.addr.eq(fd.a + fchunk + k_now)]
                m.d.sync += rd_a.eq(1)
            with m.If(fchunk == 0):
                m.d.comb += [self.w.en.eq(1), self.w.addr.eq(fd.w + k_now)]
                m.d.sync += rd_w.eq(1)
            m.d.sync += [frd.eq(~f_last), fk.eq(k_now + 1)]
            with m.If(f_last):
                m.d.sync += [fk.eq(0), tb.eq(~tb), fchunk.eq(fchunk + R)]
            with m.If(f_done):
                m.d.sync += [fv.eq(0), wbi.eq(~wbi)]
        with m.If(start):
            cm = Signal(_CHUNK)
            m.d.comb += [cm.acc.eq(fd.acc), cm.m.eq(fd.m), cm.row.eq(fchunk), cm.accum.eq(fd.accum),
                         cm.shift.eq(fd.shift), cm.idx.eq(fd.idx), cm.wb.eq(wbi), cm.acc_end.eq(fd.acc_end)]
            m.d.sync += [meta[tb].eq(cm), occ[tb].eq(1)]
        with m.If(self.matmul.valid & self.matmul.ready & (self.matmul.payload.m != 0)):
            m.d.sync += [fd.eq(self.matmul.payload), fv.eq(1), frd.eq(0), fk.eq(0), fchunk.eq(0)]
        # Capture: the line read last cycle into its bank (zeros past m), the weight line into its bank.
        a_line = self.a.data.as_value()
        w_line = weight_row(cfg, self.w)
        for b in range(2):
            for r in range(R):
                with m.If(rd_cap & (rd_bank == b) & (rd_idx == r)):
                    m.d.sync += at[b][r].eq(Mux(rd_a, a_line, 0))
                with m.If(rd_w & (rd_wb == b) & (rd_idx == r)):
                    m.d.sync += wt[b][r].eq(w_line)
        with m.If(rd_cap & (rd_idx == R - 1)):
            m.d.sync += full[rd_bank].eq(1)

        # Write-back: a queue of chunks pushed at their last step, popped with their last result (row 0).
        wbq = Array(Signal(_CHUNK, name=f"wbq{n}") for n in range(D))
        wbv = Array(Signal(name=f"wbq{n}_valid") for n in range(D))
        head = Signal(range(D))
        tail = Signal(range(D))
        o_row = Signal(range(R), init=R - 1)
        hd = wbq[head]
        o_line = Signal(range(2 ** MATMUL_LAYOUT.members["m"] + R))
        upd = self.upd
        m.d.comb += [
            o_line.eq(hd.row + o_row),
            upd.valid.eq(array.o.valid & (o_line < hd.m)),
            upd.addr.eq(hd.acc + o_line), upd.accumulate.eq(hd.accum), upd.shift.eq(hd.shift),
            upd.psum.eq(array.o.payload),
        ]
        pop = Signal()
        written_idx(m, array.o.valid, hd.idx, self.idx)
        with m.If(array.o.valid):
            m.d.sync += o_row.eq(o_row - 1)
            with m.If(o_row == 0):
                m.d.comb += pop.eq(1)
                m.d.sync += [o_row.eq(R - 1), head.eq(Mux(head == D - 1, 0, head + 1)),
                             wbv[head].eq(0)]
        with m.If(step_last & array.i.ready):
            m.d.sync += [wbq[tail].eq(smeta), wbv[tail].eq(1),
                         tail.eq(Mux(tail == D - 1, 0, tail + 1))]
        done = last_writer(m, pop, hd, _CHUNK)

        with m.If(self.clear):
            m.d.sync += [fv.eq(0), frd.eq(0), rd_cap.eq(0), rd_a.eq(0), rd_w.eq(0),
                         *(v.eq(0) for v in (*occ, *full, *wbv)), head.eq(0), tail.eq(0), o_row.eq(R - 1),
                         sb.eq(0), sk.eq(0), tb.eq(0), wbi.eq(0), *(v.eq(0) for v, _ in done)]
        m.d.comb += self.busy.eq(fv | occ[0] | occ[1] | Cat(*wbv).any() | upd.busy)
        self._reader(m, 0, fv, fd, fv & (fchunk == 0))
        self._writer(m, 0, fv, fd)
        for b in range(2):
            self._writer(m, 1 + b, occ[b], meta[b])
        for n in range(D):
            self._writer(m, 3 + n, wbv[n], wbq[n])
        for n, (valid, desc) in enumerate(done):
            self._writer(m, 3 + D + n, valid, desc)
        return m
