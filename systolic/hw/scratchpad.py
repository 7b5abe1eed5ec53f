"""Scratchpads A and W: lines of operands, written by LOAD from bytes, read by the array units.

A scratchpad holds ``lines`` lines of ``width`` elements (``rows`` for A,
``cols`` for W). Elements are ``bits + 1`` wide signed values, so one array
takes signed and unsigned bytes alike (docs/architecture.md, "System"): a
LOAD converts each byte as signed or unsigned, refuses a value outside the
``bits``-bit range, and writes the elements ``[offset, offset + elems)`` of a
line (with ``zero``, the rest of the line becomes 0).

Two interfaces, each a named signature seen from the unit that drives it:

- :class:`LineReadSignature`: ``en``, ``addr`` -> ``data`` (also the
  accumulator buffer's STORE port);
- :class:`LineLoadSignature`: one LOAD line write.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..arch.isa import FIELDS, Opcode
from ..arch.latency import DECODE_CYCLES, QUEUE_SLOT, SCRATCHPAD_READ, SCRATCHPAD_WRITE
from .params import require_positive

__all__ = ["LineReadSignature", "LineLoadSignature", "Scratchpad", "memory_depth"]


def memory_depth(lines: int) -> int:
    """Depth of the memory that holds *lines* lines: at least 2, since a 1-line memory would have a 0-bit
    address (the controller's range checks use the real line count)."""
    return max(lines, 2)


class LineReadSignature(wiring.Signature):
    """A synchronous line read, from the reader's side: ``data`` is the line addressed by ``addr`` in the
    cycle before in which ``en`` was high (:data:`~systolic.arch.latency.SCRATCHPAD_READ` = 1 cycle).

    Members
    -------
    en : Out(1)
    addr : Out(range(depth))
    data : In(ArrayLayout(shape, width))
    """

    def __init__(self, *, depth: int, shape, width: int):
        self.depth, self.shape, self.width = depth, shape, width
        super().__init__({
            "en": Out(1), "addr": Out(range(depth)),
            "data": In(data.ArrayLayout(shape, width)),
        })

    def __eq__(self, other):
        return (type(other) is type(self) and (self.depth, self.shape, self.width) ==
                (other.depth, other.shape, other.width))

    def __repr__(self):
        return f"LineReadSignature(depth={self.depth}, shape={self.shape!r}, width={self.width})"


_OFFSET_BITS = FIELDS[Opcode.LOAD]["offset"][1]
_ELEMS_BITS = FIELDS[Opcode.LOAD]["elems"][1]


class LineLoadSignature(wiring.Signature):
    """One LOAD line write, from the writer's side (the controller).

    In a cycle with ``en`` high, line ``addr`` takes ``bytes[p]`` at positions
    ``offset <= p < offset + elems`` (converted as ``unsigned`` or signed
    bytes) and, with ``zero``, 0 at the other positions; other positions keep
    their values. ``offset``, ``elems``, ``zero`` and ``unsigned`` (the LOAD's
    fields) are registered: a write uses the values of the cycle before it
    (the controller holds them from the LOAD's CHECK on). ``bad``
    (combinational) says that a converted byte lies outside the scratchpad's
    ``bits``-bit range: the LOAD's error (the line is written anyway; the run
    stops).

    Members
    -------
    en, zero, unsigned : Out(1)
    addr : Out(range(depth))
    bytes : Out(ArrayLayout(8, width))
    offset, elems : Out(12)
    bad : In(1)
    """

    def __init__(self, *, depth: int, width: int):
        self.depth, self.width = depth, width
        super().__init__({
            "en": Out(1), "zero": Out(1), "unsigned": Out(1), "addr": Out(range(depth)),
            "bytes": Out(data.ArrayLayout(8, width)),
            "offset": Out(_OFFSET_BITS), "elems": Out(_ELEMS_BITS),
            "bad": In(1),
        })

    def __eq__(self, other):
        return type(other) is type(self) and (self.depth, self.width) == (other.depth, other.width)

    def __repr__(self):
        return f"LineLoadSignature(depth={self.depth}, width={self.width})"


class Scratchpad(wiring.Component):
    """``lines`` lines of ``width`` signed ``bits + 1`` elements: LOAD writes, one read port.

    Latency: a LOAD line is in the memory
    :data:`~systolic.arch.latency.SCRATCHPAD_WRITE` (1) cycle after its
    ``load.en`` cycle (written at the end of the next cycle); a read returns
    the line :data:`~systolic.arch.latency.SCRATCHPAD_READ` (1) cycle after
    its address (a write and a read of one line in the same cycle read the
    old line). Throughput: one line write and one line read per cycle.

    Parameters
    ----------
    width : int
        Elements per line.
    lines : int
        Lines (the memory has :func:`memory_depth` of them).
    bits : int
        The accelerator's operand width: LOADed values must fit ``bits``
        signed or unsigned, elements are ``bits + 1`` signed.

    Members
    -------
    load : In(LineLoadSignature(depth, width))
    read : In(LineReadSignature(depth, signed(bits + 1), width))
    ev_read, ev_write : Out(1)
        A line read / written this cycle (the counters' ``spad_*_reads`` / ``_writes``).
    """

    READ_LATENCY = SCRATCHPAD_READ

    def __init__(self, *, width: int, lines: int, bits: int):
        require_positive(self, width=width, lines=lines, bits=bits)
        self.width, self.lines, self.bits = width, lines, bits
        depth = memory_depth(lines)
        super().__init__({
            "load": In(LineLoadSignature(depth=depth, width=width)),
            "read": In(LineReadSignature(depth=depth, shape=signed(bits + 1), width=width)),
            "ev_read": Out(1), "ev_write": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        ld, bits = self.load, self.bits
        shape = data.ArrayLayout(signed(bits + 1), self.width)
        # A line is never written and read in the same cycle (the LOAD / MATMUL interlock, docs/isa.md), so
        # synthesis is told that a collision cannot happen (Yosys's `no_rw_check`): without it, Yosys emulates
        # the read port's read-before-write behaviour with a register of the write data and a select after
        # the block RAM's output (some 130 LUTs and 170 flip-flops per scratchpad on an ECP5).
        m.submodules.mem = mem = Memory(shape=shape, depth=memory_depth(self.lines), init=[],
                                        attrs={"no_rw_check": 1})
        wr, rd = mem.write_port(granularity=1), mem.read_port()
        m.d.comb += [rd.addr.eq(self.read.addr), rd.en.eq(self.read.en), self.read.data.eq(rd.data),
                     self.ev_read.eq(self.read.en), self.ev_write.eq(ld.en)]
        # The write, registered (SCRATCHPAD_WRITE): the converted line, its element enables and its address
        # go to the block RAM from flip-flops a cycle after load.en. Nothing reads a LOADed line that soon
        # (the interlock, and a MATMUL's fetch, decode and queue after the LOAD: latency.SCRATCHPAD_WRITE).
        assert SCRATCHPAD_WRITE == 1 and SCRATCHPAD_WRITE < DECODE_CYCLES + QUEUE_SLOT + 1
        w_data, w_en = Signal.like(wr.data, name="w_data"), Signal.like(wr.en, name="w_en")
        w_addr = Signal.like(wr.addr, name="w_addr")
        m.d.sync += w_addr.eq(ld.addr)
        m.d.comb += [wr.addr.eq(w_addr), wr.data.eq(w_data), wr.en.eq(w_en)]
        # The fields, registered: which positions the line's run covers, zero, unsigned (a cycle ahead, so only
        # the byte conversion lies between the DMA's line and the block RAM).
        unsigned, zero = Signal(name="unsigned_r"), Signal(name="zero_r")
        m.d.sync += [unsigned.eq(ld.unsigned), zero.eq(ld.zero)]
        lo = Mux(unsigned, 0, -(1 << (bits - 1)))
        hi = Mux(unsigned, (1 << bits) - 1, (1 << (bits - 1)) - 1)
        bad = []
        for p in range(self.width):
            v = Signal(signed(10), name=f"v{p}")
            inside = Signal(name=f"inside{p}")
            m.d.sync += inside.eq((p >= ld.offset) & (p < ld.offset + ld.elems))
            m.d.comb += v.eq(Mux(unsigned, ld.bytes[p].as_unsigned(), ld.bytes[p].as_signed()))
            m.d.sync += [w_data[p].eq(Mux(inside, v, 0)), w_en[p].eq(ld.en & (inside | zero))]
            bad.append(inside & ((v < lo) | (v > hi)))
        m.d.comb += ld.bad.eq(ld.en & Cat(*bad).any())
        return m
