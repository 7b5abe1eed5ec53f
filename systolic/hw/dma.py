"""The memory port and the DMA engine that moves byte runs over it.

The external memory port is a request stream (``addr``, ``write``, ``wdata``,
``wstrb``; ``bus_bytes`` wide, word aligned) and a response stream carrying
read data (``resp_valid`` for one cycle, no back-pressure). Reads are
pipelined: the DMA keeps up to :data:`MAX_READS` reads in flight, and the
memory answers them in request order. A write has no response.

:class:`Dma` has two engines that the controller uses one at a time:

* **gather** (read): a 2-D transfer of ``lines`` runs of ``n`` bytes at
  ``addr + i * stride`` into buffer positions ``[off, off + n)`` (any
  alignment, ``n`` up to the buffer size). Requests for all words of all
  lines are issued back to back (one per accepted cycle, while fewer than
  :data:`MAX_READS` reads are unanswered); the cycle the last word of a line
  is answered, ``line_valid`` is high and ``line`` carries that line's bytes.
* **scatter** (write): ``n`` bytes from source positions ``[off, off + n)``
  to ``addr`` with byte strobes. A new scatter may be started in the cycle
  the previous one's last word is accepted (``ready``), so runs go back to
  back.

The controller builds instruction fetch, LOAD, LOADQ and STORE out of these.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ..arch.latency import DMA_ISSUE, MAX_READS
from .params import refuse, require_positive

__all__ = ["MemPortSignature", "DmaCommandSignature", "Dma", "MAX_READS"]


def MemPortSignature(bus_bytes: int) -> wiring.Signature:
    """The memory port, from the initiator's side (``Out`` = driven by the accelerator)."""
    return wiring.Signature({
        "req_valid": Out(1), "req_ready": In(1),
        "req_addr": Out(32), "req_write": Out(1),
        "req_wdata": Out(8 * bus_bytes), "req_wstrb": Out(bus_bytes),
        "resp_valid": In(1), "resp_data": In(8 * bus_bytes),
    })


#: Width of a gather's line count (one more than the ISA's 16-bit ``lines``: the controller's counters).
LINES_BITS = 17
ADDR_BITS = 32


class DmaCommandSignature(wiring.Signature):
    """The DMA's command port, from the commanding unit's side (the controller).

    A command is taken in a cycle with ``start`` and ``ready`` high: a gather
    (``write`` low: ``addr``, ``n``, ``off``, ``lines``, ``stride``) or a
    scatter (``write`` high: ``w_addr``, ``w_n``, ``w_off``; a scatter has
    its own fields so that the scatter engine's registers, which follow them
    while it is idle, are not behind the commanding unit's choice between
    the two). A scatter may also be taken with ``w_ready`` instead of
    ``ready`` (the scatter engine idle or finishing; the commanding unit
    starts a scatter only while no gather is in progress, which ``w_ready``
    does not test). A gather's lines come back on ``line_valid`` / ``line``;
    ``stall`` says the command in progress waits on the memory this cycle.
    See :class:`Dma`.

    Members
    -------
    start, write : Out(1)
    addr, stride, w_addr : Out(32)
    n, off, w_n, w_off : Out(range(max(buf_bytes, src_bytes) + 1))
    lines : Out(17)
    ready, w_ready, line_valid, stall : In(1)
    line : In(ArrayLayout(8, buf_bytes))
    """

    def __init__(self, *, buf_bytes: int, src_bytes: int):
        self.buf_bytes, self.src_bytes = buf_bytes, src_bytes
        nmax = max(buf_bytes, src_bytes)
        super().__init__({
            "start": Out(1), "write": Out(1), "addr": Out(ADDR_BITS),
            "n": Out(range(nmax + 1)), "off": Out(range(nmax + 1)),
            "lines": Out(LINES_BITS), "stride": Out(ADDR_BITS),
            "w_addr": Out(ADDR_BITS), "w_n": Out(range(nmax + 1)), "w_off": Out(range(nmax + 1)),
            "ready": In(1), "w_ready": In(1), "line_valid": In(1), "stall": In(1),
            "line": In(data.ArrayLayout(8, buf_bytes)),
        })

    def __eq__(self, other):
        return type(other) is type(self) and (self.buf_bytes, self.src_bytes) == (other.buf_bytes, other.src_bytes)

    def __repr__(self):
        return f"DmaCommandSignature(buf_bytes={self.buf_bytes}, src_bytes={self.src_bytes})"


class Dma(wiring.Component):
    """Pipelined 2-D gather and back-to-back scatter of byte runs over the memory port.

    A command is taken when ``cmd.start`` is high (``cmd.write`` selects
    scatter, whose run is ``cmd.w_addr``, ``cmd.w_n``, ``cmd.w_off``) while
    ``cmd.ready`` is high (:class:`DmaCommandSignature`). A
    run of ``n`` bytes at ``a`` covers the words
    ``a // bus_bytes`` .. ``(a + n - 1) // bus_bytes``; each word is one
    request. A gather needs ``n >= 1`` and ``lines >= 1``; a scatter with
    ``w_n == 0`` issues nothing.

    Timing with a memory that accepts a request ``d`` cycles after it is
    first valid and answers a read ``L`` cycles after accepting it: the
    first request is valid :data:`~systolic.arch.latency.DMA_ISSUE` (1)
    cycle after ``start``; request ``j`` of a gather (words of all its lines
    in order) is accepted in cycle
    ``a_j = a_0 + (j mod Q)(1 + d) + (j div Q) * max(Q(1 + d), L + 1 + d)``
    (``Q`` = :data:`~systolic.arch.latency.MAX_READS`, ``a_0`` = start +
    DMA_ISSUE + d) and answered in
    ``a_j + L``. A scatter word takes ``1 + d`` cycles. ``stall`` is high on
    the cycles a command is in progress but neither a request is accepted nor
    a response arrives.

    Members
    -------
    bus : Out(MemPortSignature(bus_bytes))
    cmd : In(DmaCommandSignature(buf_bytes, src_bytes))
        ``start``, ``write``, ``addr``, ``n``, ``off`` (a gather's run; a scatter's is ``w_addr``, ``w_n``,
        ``w_off``); ``lines`` (gather:
        number of runs, >= 1), ``stride`` (gather: bytes between the starts of
        consecutive runs). ``ready``: a command may start this cycle (gather:
        the scatter engine idle or finishing and the gather engine with no
        request left and no read unanswered after this cycle: a gather may
        start in the cycle the one before gets its last answer; scatter: the
        same, or the scatter engine alone for ``w_ready``). ``line_valid``: a gathered line completes this cycle;
        ``line`` holds its bytes. ``stall``: see above.
    busy : Out(1)
        Requests left to issue or reads unanswered.
    words_read, words_written : Out(1)
        One-cycle pulses per answered read / accepted write.
    buf : Out(data.ArrayLayout(8, buf_bytes))
        Gathered bytes (registered; positions outside the runs keep old values).
    src : In(data.ArrayLayout(8, src_bytes))
        Bytes to scatter; hold them until the command's last word is accepted.
    """

    #: Cycles from taking a command to its first request (the request is registered).
    ISSUE_LATENCY = DMA_ISSUE
    #: Reads in flight at most.
    MAX_READS = MAX_READS

    def __init__(self, *, bus_bytes: int, buf_bytes: int, src_bytes: int):
        require_positive(self, bus_bytes=bus_bytes, buf_bytes=buf_bytes, src_bytes=src_bytes)
        if bus_bytes & (bus_bytes - 1):
            refuse(self, ValueError(f"bus_bytes must be a power of two, not {bus_bytes}"))
        self.bus_bytes, self.buf_bytes, self.src_bytes = bus_bytes, buf_bytes, src_bytes
        super().__init__({
            "bus": Out(MemPortSignature(bus_bytes)),
            "cmd": In(DmaCommandSignature(buf_bytes=buf_bytes, src_bytes=src_bytes)),
            "busy": Out(1), "words_read": Out(1), "words_written": Out(1),
            "buf": Out(data.ArrayLayout(8, buf_bytes)),
            "src": In(data.ArrayLayout(8, src_bytes)),
        })

    def elaborate(self, platform):
        m = Module()
        cmd = self.cmd
        bb = self.bus_bytes
        lg = (bb - 1).bit_length()
        nmax = max(self.buf_bytes, self.src_bytes)
        bus = self.bus

        # `cur` = (position of the first byte of a word) relative to the run's
        # buffer positions: byte j of the word is buffer position j + cur.
        cw = (nmax + 2 * bb).bit_length() + 2

        def aligned(a):
            return (a >> lg) << lg if lg else a

        # ------------------------------------------------------------ gather
        r_act = Signal()                 # requests left to issue
        r_lines = Signal(LINES_BITS)     # lines left, the current one included
        r_laddr = Signal(34)             # DRAM address of the current line
        r_word = Signal(34)              # address of the next word to request
        r_wleft = Signal(range(nmax // bb + 2))     # words of the current line left after the next one
        r_cur = Signal(signed(cw))
        r_n = Signal.like(cmd.n)
        r_off = Signal.like(cmd.off)
        r_hi = Signal(len(cmd.off) + 1)     # r_off + r_n: the gather's run end
        r_stride = Signal(32)
        inflight = Signal(range(MAX_READS + 1))
        m.submodules.meta = meta = SyncFIFO(width=cw + 1, depth=MAX_READS)

        # ------------------------------------------------------------ scatter
        w_busy = Signal()
        w_idle = Signal(init=1)                 # ~w_busy, for `ready` only (inverted, so kept apart)
        w_last = Signal(reset_less=True)        # w_left == 1
        infl0 = Signal(init=1)                  # inflight == 0
        infl1 = Signal(init=1)                  # inflight <= 1
        w_word = Signal(32)
        w_left = Signal(range(nmax // bb + 3))
        w_cur = Signal(signed(cw))
        w_lo = Signal(range(nmax + 1))
        w_hi = Signal(range(2 * nmax + 1))

        r_req = Signal()
        accept = Signal()
        w_accept = Signal()     # a scatter word accepted: while the scatter is busy, its request is the one offered
        w_fin = Signal()
        m.d.comb += [
            r_req.eq(r_act & (inflight < MAX_READS)),
            bus.req_valid.eq(r_req | w_busy),
            bus.req_write.eq(w_busy),
            bus.req_addr.eq(Mux(w_busy, w_word, r_word)),
            accept.eq(bus.req_valid & bus.req_ready),
            # (w_busy & accept, formed without the gather's request, which cannot matter then: the scatter's
            # registers advance on w_busy and the port's ready alone.)
            w_accept.eq(w_busy & bus.req_ready),
            w_fin.eq(w_accept & (w_left == 1)),
            # The same as ~r_act & (no read unanswered after this cycle) & (~w_busy | w_fin), from registers
            # kept for it: `ready` reaches the controller and `w_ready` (~w_busy | w_fin) the STORE's hand-out.
            # A gather may be taken in the cycle the last read of the one before is answered (for the
            # controller: the fetch after a LOAD starts with the LOAD's last line).
            cmd.w_ready.eq(w_idle | (bus.req_ready & w_last)),
            cmd.ready.eq(~r_act & (infl0 | (infl1 & bus.resp_valid)) & cmd.w_ready),
            self.busy.eq(r_act | (inflight != 0) | w_busy),
            cmd.stall.eq(self.busy & ~accept & ~bus.resp_valid),
            self.words_read.eq(bus.resp_valid),
            self.words_written.eq(w_accept),
        ]

        # Scatter data: byte lane j carries source position j + cur when it lies in the run.
        src = Array(self.src[p] for p in range(self.src_bytes))
        sbits = max(1, (self.src_bytes - 1).bit_length())
        for j in range(bb):
            pos = Signal(signed(cw), name=f"wpos{j}")
            m.d.comb += pos.eq(w_cur + j)
            inside = Signal(name=f"win{j}")
            m.d.comb += inside.eq((pos >= w_lo) & (pos < w_hi) & (pos < self.src_bytes))
            m.d.comb += [
                bus.req_wstrb[j].eq(inside),
                bus.req_wdata[8 * j:8 * j + 8].eq(Mux(inside, src[pos.as_unsigned()[:sbits]], 0)),
            ]

        take = Signal()
        m.d.comb += take.eq(cmd.start & Mux(cmd.write, cmd.w_ready, cmd.ready))

        def words_after_first(a, n):
            # Words of a run of n >= 1 bytes at a, minus 1: from the low address bits only (no wide add).
            return (a[:lg] + n - 1) >> lg if lg else n - 1

        cmd_end = Signal(len(cmd.off) + 1)  # the end of the gather's run [off, off + n)
        m.d.comb += cmd_end.eq(cmd.off + cmd.n)

        # While the scatter engine is idle or finishing (it can take a command then), its registers follow the
        # scatter's command inputs, so a taken scatter finds them loaded and the take (which the controller's
        # decisions drive) sets only w_busy, not the clock enables of the run's registers.
        with m.If(~w_busy | w_fin):
            m.d.sync += [
                w_word.eq(aligned(cmd.w_addr)),
                w_left.eq(words_after_first(cmd.w_addr, cmd.w_n) + 1),
                w_last.eq(words_after_first(cmd.w_addr, cmd.w_n) == 0),
                w_cur.eq(cmd.w_off - cmd.w_addr[:lg] if lg else cmd.w_off),
                w_lo.eq(cmd.w_off), w_hi.eq(cmd.w_off + cmd.w_n),
            ]
        with m.Elif(w_accept):
            m.d.sync += [w_cur.eq(w_cur + bb), w_word.eq(w_word + bb), w_left.eq(w_left - 1), w_last.eq(w_left == 2)]
        with m.If(take & cmd.write):
            m.d.sync += [w_busy.eq(cmd.w_n != 0), w_idle.eq(cmd.w_n == 0)]
        with m.Elif(w_fin):
            m.d.sync += [w_busy.eq(0), w_idle.eq(1)]

        # Gather request side: words of line after line, metadata into `meta`.
        next_laddr = Signal(34)
        m.d.comb += next_laddr.eq(r_laddr + r_stride)
        # While the gather engine can take a gather (no request left, at most one read in flight: that read's
        # entry is decoded in the response side's head already, so nothing reads these), its registers follow
        # the command inputs, so a taken gather finds them loaded and the take (which the controller's decisions
        # drive) sets only r_act, not the clock enables of some 200 flip-flops.
        with m.If(~r_act & infl1):
            m.d.sync += [
                r_lines.eq(cmd.lines), r_laddr.eq(cmd.addr), r_n.eq(cmd.n), r_off.eq(cmd.off),
                r_hi.eq(cmd_end),
                r_stride.eq(cmd.stride), r_word.eq(aligned(cmd.addr)),
                r_wleft.eq(words_after_first(cmd.addr, cmd.n)),
                r_cur.eq(cmd.off - cmd.addr[:lg] if lg else cmd.off),
            ]
        with m.If(take & ~cmd.write):
            m.d.sync += r_act.eq(1)
        r_accept = Signal()
        end_line = Signal()
        m.d.comb += [r_accept.eq(r_req & bus.req_ready & ~w_busy), end_line.eq(r_wleft == 0)]
        with m.If(r_accept):
            with m.If(end_line):
                with m.If(r_lines == 1):
                    m.d.sync += r_act.eq(0)
                m.d.sync += [
                    r_lines.eq(r_lines - 1), r_laddr.eq(next_laddr), r_word.eq(aligned(next_laddr)),
                    r_wleft.eq(words_after_first(next_laddr, r_n)),
                    r_cur.eq(r_off - next_laddr[:lg] if lg else r_off),
                ]
            with m.Else():
                m.d.sync += [r_word.eq(r_word + bb), r_cur.eq(r_cur + bb), r_wleft.eq(r_wleft - 1)]
        nxt_inflight = Signal.like(inflight)
        m.d.comb += nxt_inflight.eq(inflight + r_accept - bus.resp_valid)
        m.d.sync += [inflight.eq(nxt_inflight), infl0.eq(nxt_inflight == 0), infl1.eq(nxt_inflight <= 1)]

        self._gather_response(m, meta, r_accept, r_cur, end_line, r_off, r_hi, cw)
        return m

    def _gather_response(self, m, meta, r_accept, r_cur, end_line, r_off, r_hi, cw):
        """The gather's response side: each answered word's bytes into ``line`` and ``buf``. *meta* holds the
        ``(cur, last word of a line)`` of the reads in flight; *r_accept*, *r_cur*, *end_line* are the request
        side's accepted request this cycle and its entry; ``[r_off, r_hi)`` the gather's run."""
        bb = self.bus_bytes
        lg = (bb - 1).bit_length()
        # Gather response side: byte lane j of a word goes to buffer position j + cur (its request's `cur`).
        # The reads in flight wait in `meta` as (cur, last word of a line); the next response's entry is held
        # decoded in registers (the head): per buffer position, whether the word carries it (`h_hit`), and the
        # word's rotation (cur mod bus_bytes). A response is rotated once, so that rotated byte j is the one for
        # the positions p with p mod bus_bytes == j, and each position then only chooses between its rotated
        # byte and its buffered one: no arithmetic between the memory's data and `line`, and bus_bytes
        # multiplexers of bus_bytes bytes instead of one per buffer position. Each rotated byte has its own
        # copy of the rotation (`h_rot<j>`, 0 when no position of its byte is carried: distinct flip-flops,
        # which synthesis keeps apart, each driving one byte's multiplexer where one register drove them all).
        # The head is refilled, the cycle it is used or while empty, from `meta`
        # or, when `meta` is empty, straight from the request accepted in that cycle (so a read can be
        # answered the cycle after it is accepted, as with a plain FIFO).
        h_end = Signal()
        h_hit = Signal(self.buf_bytes)
        lsel = max(1, lg)
        h_rot = [Signal(lsel, name=f"h_rot{j}") for j in range(bb)]
        h_valid = Signal()
        refill = Signal()
        bypass = Signal()
        m.d.comb += [
            refill.eq(~h_valid | self.bus.resp_valid),
            bypass.eq(refill & ~meta.r_rdy & r_accept),
            meta.w_en.eq(r_accept & ~bypass),
            meta.w_data.eq(Cat(r_cur, end_line)),
            meta.r_en.eq(refill),
            self.cmd.line_valid.eq(self.bus.resp_valid & h_end),
        ]
        lo, hi = r_off, r_hi                # the current gather's run (registered when it is taken)
        # Each position is decoded for both candidate entries (the FIFO's head and the request accepted now),
        # and the FIFO's readiness only chooses between the two at the end.
        # Position p = p_hi * bb + p_lo takes byte lane p - cur iff 0 <= p - cur < bb, that is (with cur =
        # c_hi * bb + c_lo, 0 <= c_lo < bb) iff p_hi == c_hi and p_lo >= c_lo, or p_hi == c_hi + 1 and
        # p_lo < c_lo; the lane is (p_lo - c_lo) mod bb. So a candidate is decoded once into c_hi's few
        # equalities and c_lo's compares, shared by the positions (no subtraction per position).
        his = range(-1, (self.buf_bytes - 1) // bb + 1)
        decoded = []
        for k, cur in enumerate((meta.r_data[:cw].as_signed(), r_cur)):
            c_hi, c_lo = cur >> lg, cur.as_unsigned()[:lg] if lg else Const(0, 1)
            eq = {h: Signal(name=f"hi{k}_{h + 1}") for h in his}
            ge = [Signal(name=f"ge{k}_{j}") for j in range(bb)]             # p_lo >= c_lo
            m.d.comb += [eq[h].eq(c_hi == h) for h in his]
            m.d.comb += [ge[j].eq(c_lo <= j if j < bb - 1 else 1) for j in range(bb)]     # (c_lo < bb)
            decoded.append((eq, ge, c_lo))
        with m.If(refill):
            m.d.sync += [h_valid.eq(meta.r_rdy | r_accept), h_end.eq(Mux(meta.r_rdy, meta.r_data[cw], end_line))]
            hit_next = []
            for p in range(self.buf_bytes):
                p_hi, p_lo = divmod(p, bb)
                dec = [(eq[p_hi] & ge[p_lo]) | (eq[p_hi - 1] & ~ge[p_lo]) for eq, ge, _ in decoded]
                inside = (p >= lo) & (p < hi)
                hn = Signal(name=f"hit_next{p}")
                m.d.comb += hn.eq(Mux(meta.r_rdy, dec[0], dec[1]) & inside)
                m.d.sync += h_hit[p].eq(hn)
                hit_next.append(hn)
            clo_next = Mux(meta.r_rdy, decoded[0][2], decoded[1][2])
            for j in range(bb):
                used = Cat(*hit_next[j::bb]).any()
                m.d.sync += h_rot[j].eq(Mux(used, clo_next, 0))
        # The rotated word: byte j is lane (j - c_lo) mod bb, a multiplexer tree on byte j's copy of c_lo.
        lanes = [self.bus.resp_data[8 * j:8 * j + 8] for j in range(bb)]
        rotated = []
        for j in range(bb):
            byte = Signal(8, name=f"rotated{j}")
            items = [lanes[(j - c) % bb] for c in range(bb)]
            level = 0
            while len(items) > 1:
                items = [Mux(h_rot[j][level], items[i + 1], items[i]) for i in range(0, len(items), 2)]
                level += 1
            m.d.comb += byte.eq(items[0])
            rotated.append(byte)
        for p in range(self.buf_bytes):
            hit = Signal(name=f"hit{p}")
            m.d.comb += [
                hit.eq(self.bus.resp_valid & h_hit[p]),
                self.cmd.line[p].eq(Mux(hit, rotated[p % bb], self.buf[p])),
            ]
            with m.If(hit):
                m.d.sync += self.buf[p].eq(self.cmd.line[p])
