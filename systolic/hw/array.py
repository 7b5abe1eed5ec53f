"""The rows x cols systolic array with input skew and output de-skew inside."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch.config import AcceleratorConfig
from ..arch.latency import PRODUCT_STAGES
from ..arch.ports import payload_fields, streams
from .params import require_config
from .pe import OSProcessingElement, WSProcessingElement, delay, operand_shapes

__all__ = ["SystolicArray", "array_layouts", "field_layout"]


def field_layout(fields) -> data.StructLayout:
    """The Amaranth layout of a payload described by :func:`systolic.arch.ports.payload_fields` (same bits)."""
    def shape(f):
        return signed(f.bits) if f.signed else unsigned(f.bits)

    return data.StructLayout({f.name: data.ArrayLayout(shape(f), f.lanes) if f.lanes else shape(f)
                              for f in fields})


def array_layouts(cfg: AcceleratorConfig) -> dict:
    """Payload layouts of the array's streams: the core's input streams (``i``, and ``w`` for WS) and ``o``,
    the aligned accumulator vector."""
    _, _, acc = operand_shapes(cfg)
    out = {port: field_layout(payload_fields(cfg, port)) for port in streams(cfg) if port != "o"}
    out["o"] = data.ArrayLayout(acc, cfg.cols)
    return out


class SystolicArray(wiring.Component):
    """``rows x cols`` PEs; callers see aligned vectors in and aligned vectors out.

    The whole array is one pipeline with a single stall: it advances
    (``en``) whenever its output register is empty or being read
    (``en = ~o.valid | o.ready``); an input cycle without a transfer enters a
    bubble. Input skew (row ``k`` delayed ``k`` cycles, column ``n`` delayed
    ``n``, its partial sums ``n + PRODUCT_STAGES`` to meet the PEs' registered
    products) and output de-skew (column ``n`` delayed ``cols-1-n``) are
    ``en``-gated registers inside, so every stream payload is one aligned
    vector.

    Weight-stationary (``dataflow="ws"``): PE ``(k, n)`` holds ``W[k, n]``.
    Stream ``w`` takes ``rows`` transfers of weight rows ``W[0, :]`` ..
    ``W[rows-1, :]`` into the shadow registers; an ``i`` transfer with
    ``swap=1`` (held back until the shadow is full; a row is written into the
    shadow registers the cycle after its transfer) switches to them, and the
    shadow may be refilled ``weight_refill`` = ``rows + cols`` cycles after the
    swap transfer (:attr:`systolic.arch.latency.Latencies.weight_refill`),
    while the array computes. Each ``i`` transfer ``(a[0:rows], psum[0:cols])`` yields
    one ``o`` vector ``psum[n] + sum_k a[k] * W[k, n]`` (mod ``2**acc_bits``).

    - latency ``i`` -> ``o``: ``rows + cols - 1 + PRODUCT_STAGES`` cycles
      (:attr:`latency`);
    - throughput: 1 vector per cycle, ``rows * cols`` MACs per cycle;
    - weight load: ``rows`` cycles, hidden behind computation by the double buffer.

    Output-stationary (``dataflow="os"``): each ``i`` transfer carries one
    reduction step ``(a[0:rows] = A[:, k], w[0:cols] = W[k, :])``; ``last``
    marks ``k = K-1`` of a tile, and the next step starts the next tile (each
    PE's accumulator is zeroed as it captures ``last``). PE ``(r, n)``
    accumulates ``sum_k A[r, k] W[k, n]``. After ``last`` the tile is drained
    down the columns as ``rows`` ``o`` vectors, **bottom row first**
    (``r = rows-1, ..., 0``), while the next tile already accumulates.

    - latency from the ``last`` transfer to the first ``o`` vector:
      ``rows + cols - 1 + PRODUCT_STAGES`` cycles (:attr:`latency`); ``rows``
      vectors follow on consecutive cycles;
    - throughput: 1 reduction step per cycle when ``K >= rows``; a ``last``
      transfer is held back until ``rows`` cycles after the previous one, so
      tiles with ``K < rows`` run at ``K / rows`` of the peak.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    i : In(stream.Signature(...))
        Operand vectors; layout from :func:`array_layouts`.
    w : In(stream.Signature(...))
        Weight rows (weight-stationary only).
    o : Out(stream.Signature(data.ArrayLayout(signed(acc_bits), cols)))
        Aligned result vectors.
    """

    def __init__(self, *, config: AcceleratorConfig):
        require_config(config, self)
        self.config = config
        lay = array_layouts(config)
        super().__init__({port: (Out if port == "o" else In)(stream.Signature(layout))
                          for port, layout in lay.items()})

    @property
    def latency(self) -> int:
        """Cycles from an ``i`` transfer (WS) / the ``last`` transfer (OS) to its first ``o`` vector
        (:attr:`systolic.arch.latency.Latencies.array`)."""
        return self.config.latencies.array

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        self.ELABORATE[self.config.dataflow](self, m, en)
        return m

    def _elaborate_ws(self, m, en):
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        pes = [[WSProcessingElement(config=cfg) for _ in range(C)] for _ in range(R)]
        for k in range(R):
            for n in range(C):
                m.submodules[f"pe_{k}_{n}"] = pes[k][n]
                m.d.comb += pes[k][n].en.eq(en)

        full = Signal()     # shadow registers hold a complete weight tile
        wsel = Signal(R, init=1)  # one-hot: the PE row the next weight row goes to
        # Cycles until the last swap has passed every PE: the shadow takes weights again
        # `weight_refill` cycles after the swap transfer (counted down from the next cycle).
        refill = self.config.latencies.weight_refill
        guard = Signal(range(refill))
        m.d.comb += self.i.ready.eq(en & (~self.i.payload.swap | full))
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)

        # Weight rows: a row counter addresses the shadow registers of one PE row.
        m.d.comb += self.w.ready.eq(~full & ~guard.any())
        wtake = Signal()
        m.d.comb += wtake.eq(self.w.valid & self.w.ready)
        # A weight row reaches the shadow registers from registers, a cycle after its transfer: one write enable
        # per PE row and the row's weights, so the transfer's handshake does not drive the clock enables of every
        # shadow register. The swap that uses the row comes later still: it is taken at the earliest the cycle
        # after the last row's transfer (`full`) and reaches PE row k k cycles later, so for rows >= 2 every
        # shadow is written before a swap copies it. (rows == 1: the swap could copy the shadow in the very
        # cycle it is written, so there the row goes in with its transfer.)
        ld = [wtake & wsel[k] for k in range(R)]
        wd = [self.w.payload.w[n] for n in range(C)]
        if R > 1:
            ld_r = [Signal(name=f"load{k}") for k in range(R)]
            wd_r = [Signal.like(pes[0][n].load_data, name=f"load_data{n}") for n in range(C)]
            m.d.sync += [a.eq(b) for a, b in zip(ld_r + wd_r, ld + wd)]
            ld, wd = ld_r, wd_r
        for k in range(R):
            for n in range(C):
                m.d.comb += [pes[k][n].load.eq(ld[k]), pes[k][n].load_data.eq(wd[n])]
        with m.If(wtake):
            m.d.sync += wsel.eq(wsel.rotate_left(1))
            with m.If(wsel[R - 1]):
                m.d.sync += full.eq(1)
        # The swap flag reaches PE (k, n) k + n cycles after its transfer; a
        # shadow must not be overwritten before that, hence the guard.
        with m.If(take & self.i.payload.swap):
            m.d.sync += [full.eq(0), guard.eq(refill - 1)]
        with m.Elif(en & guard.any()):
            m.d.sync += guard.eq(guard - 1)

        # Input skew: row k waits k cycles, psum lane n waits n cycles.
        swap = Signal()
        m.d.comb += swap.eq(take & self.i.payload.swap)
        for k in range(R):
            a_k = delay(m, en, self.i.payload.a[k], k, f"skew_a{k}")
            s_k = delay(m, en, swap, k, f"skew_swap{k}")
            m.d.comb += [pes[k][0].a_in.eq(a_k), pes[k][0].swap_in.eq(s_k)]
            for n in range(1, C):
                m.d.comb += [pes[k][n].a_in.eq(pes[k][n - 1].a_out),
                             pes[k][n].swap_in.eq(pes[k][n - 1].swap_out)]
        for n in range(C):
            m.d.comb += pes[0][n].psum_in.eq(delay(m, en, self.i.payload.psum[n], n + PRODUCT_STAGES, f"skew_p{n}"))
            for k in range(1, R):
                m.d.comb += pes[k][n].psum_in.eq(pes[k - 1][n].psum_out)
            # De-skew: column n finishes n cycles before the last column.
            m.d.comb += self.o.payload[n].eq(
                delay(m, en, pes[R - 1][n].psum_out, C - 1 - n, f"deskew{n}"))

        m.d.comb += self.o.valid.eq(delay(m, en, take, self.latency, "valid"))

    def _elaborate_os(self, m, en):
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        pes = [[OSProcessingElement(config=cfg) for _ in range(C)] for _ in range(R)]
        for r in range(R):
            for n in range(C):
                m.submodules[f"pe_{r}_{n}"] = pes[r][n]
                m.d.comb += pes[r][n].en.eq(en)

        # Tile spacing: a column's drain takes `rows` cycles, so two `last`
        # transfers must be at least `rows` cycles apart (see class docstring).
        since_last = Signal(range(R + 1), init=R)
        spaced = Signal()
        m.d.comb += [
            spaced.eq(since_last >= R),
            self.i.ready.eq(en & (~self.i.payload.last | spaced)),
        ]
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        with m.If(en):
            with m.If(take & self.i.payload.last):
                m.d.sync += since_last.eq(1)
            with m.Elif(~spaced):
                m.d.sync += since_last.eq(since_last + 1)

        # A bubble must add nothing to the accumulators: zero its activation.
        a_shape, _, _ = operand_shapes(cfg)
        last = Signal()
        m.d.comb += last.eq(take & self.i.payload.last)
        for r in range(R):
            a_r = Signal(a_shape, name=f"a_in{r}")
            m.d.comb += a_r.eq(Mux(take, self.i.payload.a[r], 0))
            m.d.comb += [
                pes[r][0].a_in.eq(delay(m, en, a_r, r, f"skew_a{r}")),
                pes[r][0].last_in.eq(delay(m, en, last, r, f"skew_last{r}")),
            ]
            for n in range(1, C):
                m.d.comb += [
                    pes[r][n].a_in.eq(pes[r][n - 1].a_out),
                    pes[r][n].last_in.eq(pes[r][n - 1].last_out),
                ]
        busy_last = None
        for n in range(C):
            m.d.comb += pes[0][n].w_in.eq(delay(m, en, self.i.payload.w[n], n, f"skew_w{n}"))
            for r in range(1, R):
                m.d.comb += [pes[r][n].w_in.eq(pes[r - 1][n].w_out),
                             pes[r][n].d_in.eq(pes[r - 1][n].d_out)]
            m.d.comb += pes[0][n].d_in.eq(0)
            # Column drain: starts the cycle after the bottom PE captured its tile (`last` passed it
            # PRODUCT_STAGES cycles earlier, beside its product) and pops one row per cycle, bottom first.
            # Step s shifts only rows > s, so rows that have been read are free for the next tile's capture.
            busy = Signal(name=f"drain_busy{n}")
            step = Signal(range(max(R, 2)), name=f"drain_step{n}")
            captured = delay(m, en, pes[R - 1][n].last_in, PRODUCT_STAGES, f"captured{n}")
            with m.If(en):
                with m.If(captured):
                    m.d.sync += [busy.eq(1), step.eq(0)]
                with m.Elif(busy):
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == R - 1):
                        m.d.sync += busy.eq(0)
            for r in range(1, R):
                m.d.comb += pes[r][n].shift.eq(busy & (step < r))
            m.d.comb += self.o.payload[n].eq(
                delay(m, en, pes[R - 1][n].d_out, C - 1 - n, f"deskew{n}"))
            busy_last = busy
        # The last column needs no de-skew, so its drain state is the output valid.
        m.d.comb += self.o.valid.eq(busy_last)

    #: The array builder per dataflow.
    ELABORATE = {"ws": _elaborate_ws, "os": _elaborate_os}
