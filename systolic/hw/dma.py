"""The memory port and the DMA engine that moves byte runs over it.

The external memory port is a request stream (``addr``, ``write``, ``wdata``,
``wstrb``; ``bus_bytes`` wide, word aligned) and a response stream carrying
read data. The port has at most one request in flight: a read is answered
(``resp.valid`` for one cycle, no back-pressure) before the next request is
issued; a write has no response.

:class:`Dma` executes one command at a time: *gather* ``n`` bytes from byte
address ``addr`` into buffer positions ``[off, off + n)`` (unaligned, any
length up to the buffer size), or *scatter* ``n`` bytes from source
positions ``[off, off + n)`` to ``addr`` with byte strobes. The controller
builds instruction fetch, LOAD lines, LOADQ and STORE lines out of these.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MemPortSignature", "Dma"]


def MemPortSignature(bus_bytes: int) -> wiring.Signature:
    """The memory port, from the initiator's side (``Out`` = driven by the accelerator)."""
    return wiring.Signature({
        "req_valid": Out(1), "req_ready": In(1),
        "req_addr": Out(32), "req_write": Out(1),
        "req_wdata": Out(8 * bus_bytes), "req_wstrb": Out(bus_bytes),
        "resp_valid": In(1), "resp_data": In(8 * bus_bytes),
    })


class Dma(wiring.Component):
    """Gather / scatter of byte runs over the memory port, one bus word per request.

    A command is taken when ``start`` is high while ``busy`` is low. A run of
    ``n`` bytes at ``addr`` covers the words ``addr // bus_bytes`` ..
    ``(addr + n - 1) // bus_bytes``; each word is one request. ``n == 0``
    issues no request.

    Timing (cycles from the ``start`` cycle until ``busy`` falls, memory
    accepting a request ``d`` cycles after it is first valid and answering a
    read ``L`` cycles after accepting it): a gather of ``w`` words takes
    ``1 + w * (1 + d + L)`` cycles, a scatter ``1 + w * (1 + d)``; ``n == 0``
    takes 1 cycle. ``stall`` is high on the cycles spent waiting for the
    memory (``d`` per request, plus ``L - 1`` per read: the response cycle
    itself counts as work).

    Parameters
    ----------
    bus_bytes : int
        Port width in bytes (power of two).
    buf_bytes : int
        Gather buffer size in bytes.
    src_bytes : int
        Scatter source size in bytes.

    Members
    -------
    bus : Out(MemPortSignature(bus_bytes))
    start, write : In(1)
    addr : In(32)
    n, off : In(range(max(buf_bytes, src_bytes) + 1))
    busy, stall : Out(1)
    words_read, words_written : Out(1)
        One-cycle pulses per completed bus word.
    buf : Out(data.ArrayLayout(8, buf_bytes))
        Gathered bytes (positions outside the last command keep old values).
    src : In(data.ArrayLayout(8, src_bytes))
        Bytes to scatter; hold them while ``busy``.
    """

    def __init__(self, *, bus_bytes: int, buf_bytes: int, src_bytes: int):
        for name, v in (("bus_bytes", bus_bytes), ("buf_bytes", buf_bytes), ("src_bytes", src_bytes)):
            if not isinstance(v, int) or v < 1:
                self._MustUse__silence = True
                raise ValueError(f"{name} must be a positive int, not {v!r}")
        if bus_bytes & (bus_bytes - 1):
            self._MustUse__silence = True
            raise ValueError(f"bus_bytes must be a power of two, not {bus_bytes}")
        self.bus_bytes, self.buf_bytes, self.src_bytes = bus_bytes, buf_bytes, src_bytes
        nmax = max(buf_bytes, src_bytes)
        super().__init__({
            "bus": Out(MemPortSignature(bus_bytes)),
            "start": In(1), "write": In(1), "addr": In(32),
            "n": In(range(nmax + 1)), "off": In(range(nmax + 1)),
            "busy": Out(1), "stall": Out(1), "words_read": Out(1), "words_written": Out(1),
            "buf": Out(data.ArrayLayout(8, buf_bytes)),
            "src": In(data.ArrayLayout(8, src_bytes)),
        })

    def elaborate(self, platform):
        m = Module()
        bb = self.bus_bytes
        lg = (bb - 1).bit_length()
        nmax = max(self.buf_bytes, self.src_bytes)
        bus = self.bus

        # `cur` = (position of the first byte of the current word) relative to
        # the run's buffer positions: byte j of the word is buffer position
        # j + cur. It moves by bus_bytes per word, so each byte lane needs only
        # a small adder and a mux, whatever the run's alignment.
        cw = (nmax + 2 * bb).bit_length() + 2
        cur = Signal(signed(cw))
        lo = Signal(range(nmax + 1))
        hi = Signal(range(2 * nmax + 1))
        words_left = Signal(range(nmax // bb + 3))
        word_addr = Signal(32)
        write = Signal()

        first_word = Signal(32)
        last_word = Signal(32)
        m.d.comb += [
            first_word.eq(self.addr >> lg),
            last_word.eq((self.addr + self.n - 1) >> lg),
        ]

        m.d.comb += [bus.req_addr.eq(word_addr), bus.req_write.eq(write)]

        # Scatter data: byte lane j carries source position j + cur when it lies in the run.
        src = Array(self.src[p] for p in range(self.src_bytes))
        sbits = max(1, (self.src_bytes - 1).bit_length())
        for j in range(bb):
            pos = Signal(signed(cw), name=f"wpos{j}")
            m.d.comb += pos.eq(cur + j)
            inside = Signal(name=f"win{j}")
            m.d.comb += inside.eq((pos >= lo) & (pos < hi) & (pos < self.src_bytes))
            m.d.comb += [
                bus.req_wstrb[j].eq(inside),
                bus.req_wdata[8 * j:8 * j + 8].eq(Mux(inside, src[pos.as_unsigned()[:sbits]], 0)),
            ]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        write.eq(self.write),
                        word_addr.eq(first_word << lg),
                        words_left.eq(last_word - first_word + 1),
                        cur.eq(self.off - self.addr[:lg] if lg else self.off),
                        lo.eq(self.off), hi.eq(self.off + self.n),
                    ]
                    with m.If(self.n != 0):
                        m.next = "REQ"
            with m.State("REQ"):
                m.d.comb += [self.busy.eq(1), bus.req_valid.eq(1), self.stall.eq(~bus.req_ready)]
                with m.If(bus.req_ready):
                    with m.If(write):
                        m.d.comb += self.words_written.eq(1)
                        self._advance(m, bb, cur, word_addr, words_left)
                    with m.Else():
                        m.next = "RESP"
            with m.State("RESP"):
                m.d.comb += [self.busy.eq(1), self.stall.eq(~bus.resp_valid)]
                with m.If(bus.resp_valid):
                    m.d.comb += self.words_read.eq(1)
                    # Byte lane j of the word goes to buffer position j + cur.
                    lanes = Array(bus.resp_data[8 * j:8 * j + 8] for j in range(bb))
                    for p in range(self.buf_bytes):
                        rel = Signal(signed(cw), name=f"rel{p}")
                        m.d.comb += rel.eq(p - cur)
                        with m.If((rel >= 0) & (rel < bb) & (p >= lo) & (p < hi)):
                            m.d.sync += self.buf[p].eq(lanes[rel.as_unsigned()[:max(1, lg)]])
                    self._advance(m, bb, cur, word_addr, words_left)
        return m

    @staticmethod
    def _advance(m, bb, cur, word_addr, words_left):
        m.d.sync += [cur.eq(cur + bb), word_addr.eq(word_addr + bb), words_left.eq(words_left - 1)]
        with m.If(words_left == 1):
            m.next = "IDLE"
        with m.Else():
            m.next = "REQ"

