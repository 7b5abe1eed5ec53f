"""The array unit interface: MATMUL descriptors in, accumulator updates out, one implementation per dataflow.

An array unit owns a :class:`~systolic.hw.array.SystolicArray` and executes
MATMUL descriptors (docs/isa.md) in order, in the background of the
controller: it reads the weight tile from scratchpad W and the operand lines
from scratchpad A, and writes every result vector into the accumulator
buffer. The implementation is chosen by the config's dataflow from
:data:`systolic.hw.array_units.ARRAY_UNITS`
(:func:`~systolic.hw.array_units.array_unit`); the rest of the accelerator
sees only the interface of :class:`ArrayUnit`.

To add a dataflow: its PE and array (``hw/pe.py``, ``hw/array.py``), a
subclass of :class:`ArrayUnit` in its own file, an entry in
``ARRAY_UNITS``, its timing in :mod:`systolic.arch.timing` (and its
latencies in :mod:`systolic.arch.latency`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch.config import AcceleratorConfig
from ..arch.isa import FIELDS, Opcode
from ..arch.latency import ACC_UPDATE
from .accumulator import AccUpdateSignature
from .params import require_system_config
from .scratchpad import LineReadSignature, memory_depth

__all__ = ["MATMUL_LAYOUT", "READER_LAYOUT", "WRITER_LAYOUT", "ArrayUnit", "last_writer", "written_idx",
           "read_weight_tile", "weight_row", "weight_tile"]

_M = FIELDS[Opcode.MATMUL]
#: Ends of the line ranges a MATMUL reads and writes (``a + m``, ``w + rows``, ``acc + m``), formed once when
#: it is queued, so that the interlocks compare ranges without an adder.
_END_BITS = {"a_end": max(_M["a"][1], _M["m"][1]) + 1, "w_end": _M["w"][1] + 1,
             "acc_end": max(_M["acc"][1], _M["m"][1]) + 1}
#: A queued MATMUL: its instruction fields, its index in the program (for a precise overflow error) and the
#: ends of its line ranges.
MATMUL_LAYOUT = data.StructLayout({
    "a": _M["a"][1], "w": _M["w"][1], "acc": _M["acc"][1], "m": _M["m"][1],
    "accum": _M["accumulate"][1], "shift": _M["shift"][1], "idx": 32, **_END_BITS,
})
#: What the interlocks need to know of a MATMUL that may still read scratchpad lines: A lines ``[a, a_end)``
#: (``a_end = a + m``) while ``valid``, W lines ``[w, w_end)`` (``w_end = w + rows``) only while ``w_valid``
#: (the weight tile is read into registers first, so its W lines are free long before its A lines).
READER_LAYOUT = data.StructLayout({"valid": 1, "a": _M["a"][1], "m": _M["m"][1], "w": _M["w"][1], "w_valid": 1,
                                   "a_end": _END_BITS["a_end"], "w_end": _END_BITS["w_end"]})
#: What the STORE interlock needs to know of a MATMUL that may still write accumulator lines ``[acc, acc_end)``
#: (``acc_end = acc + m``).
WRITER_LAYOUT = data.StructLayout({"valid": 1, "acc": _M["acc"][1], "m": _M["m"][1],
                                   "acc_end": _END_BITS["acc_end"]})


class ArrayUnit(wiring.Component):
    """Executes MATMULs on the systolic array; the interface every dataflow implements.

    Parameters
    ----------
    config : AcceleratorConfig
        The system's config (the array inside is ``config.array_config``).

    Members
    -------
    matmul : In(stream.Signature(MATMUL_LAYOUT))
        The next MATMUL (from the controller's queue slot); taken when ``ready``.
    a, w : Out(LineReadSignature(...))
        Reads of scratchpad A (``rows`` operands per line) and W (``cols`` weights per line).
    upd : Out(AccUpdateSignature(...))
        Result vectors into the accumulator buffer (``acc[acc + i] (+)= psum << shift``).
    clear : In(1)
        Start of a run: drop everything.
    busy : Out(1)
        A MATMUL has been taken and its last accumulator write is not done.
    idx : Out(32)
        Program index of the MATMUL whose update the accumulator buffer writes this cycle (the
        accumulator-overflow error names it).
    readers : Out(ArrayLayout(READER_LAYOUT, READERS))
        MATMULs taken that may still read scratchpad lines (the controller's LOAD interlock): A lines while
        ``valid``, W lines while ``w_valid`` (up to and including the cycle of the last tile read).
    writers : Out(ArrayLayout(WRITER_LAYOUT, WRITERS))
        MATMULs taken whose accumulator writes are not all done, each valid up to and including the cycle
        of its last write (the controller's STORE interlock).
    stall : Out(1)
        An operand transfer is held back by the array (the ``matmul_stall`` counter).
    """

    #: How many taken MATMULs may read scratchpads at once (length of ``readers``).
    READERS = 1
    #: How many taken MATMULs may have accumulator writes to come at once (length of ``writers``).
    WRITERS = 1

    def __init__(self, *, config: AcceleratorConfig):
        self.config = require_system_config(config, self)
        acfg = config.array_config
        R, C = config.rows, config.cols
        super().__init__({
            "matmul": In(stream.Signature(MATMUL_LAYOUT)),
            "a": Out(LineReadSignature(depth=memory_depth(config.a_lines), shape=signed(acfg.in_bits), width=R)),
            "w": Out(LineReadSignature(depth=memory_depth(config.w_lines), shape=signed(config.w_bits + 1),
                                       width=C)),
            "upd": Out(AccUpdateSignature(depth=memory_depth(config.acc_lines), cols=C, psum_bits=acfg.acc_bits)),
            "clear": In(1), "busy": Out(1), "idx": Out(32),
            "readers": Out(data.ArrayLayout(READER_LAYOUT, self.READERS)),
            "writers": Out(data.ArrayLayout(WRITER_LAYOUT, self.WRITERS)),
            "stall": Out(1),
        })

    def _reader(self, m, n: int, valid, desc, reads_w):
        """Publish MATMUL *desc* (a MATMUL_LAYOUT view) as reader *n* while *valid*, of its W lines while
        *reads_w*."""
        r = self.readers[n]
        m.d.comb += [r.valid.eq(valid), r.a.eq(desc.a), r.m.eq(desc.m), r.w.eq(desc.w), r.w_valid.eq(reads_w),
                     r.a_end.eq(desc.a_end), r.w_end.eq(desc.w_end)]

    def _writer(self, m, n: int, valid, desc):
        """Publish MATMUL *desc* (anything with ``acc``, ``m`` and ``acc_end``) as writer *n* while *valid*."""
        r = self.writers[n]
        m.d.comb += [r.valid.eq(valid), r.acc.eq(desc.acc), r.m.eq(desc.m), r.acc_end.eq(desc.acc_end)]


def last_writer(m, pop, desc, layout):
    """``[(valid, desc), ...]``: :data:`~systolic.arch.latency.ACC_UPDATE` registers of the entries a
    write-back popped (*pop*) with their last result, one per cycle since: the accumulator writes a result
    that many cycles after it is presented, so an entry stays a writer until its last write is done."""
    chain = []
    prev_v, prev = pop, desc
    for n in range(ACC_UPDATE):
        v, d = Signal(name=f"done{n}_valid"), Signal(layout, name=f"done{n}")
        m.d.sync += [v.eq(prev_v), d.eq(prev)]
        chain.append((v, d))
        prev_v, prev = v, d
    return chain


def written_idx(m, present, idx, out):
    """Drive *out* (the unit's ``idx``) with the program index of the MATMUL whose result the accumulator
    writes this cycle: *idx* of the result presented (*present*) :data:`~systolic.arch.latency.ACC_UPDATE`
    cycles before."""
    r = Signal(len(out), name="idx_presented")
    with m.If(present):
        m.d.sync += r.eq(idx)
    for n in range(ACC_UPDATE - 1):
        nxt = Signal(len(out), name=f"idx_stage{n}")
        m.d.sync += nxt.eq(r)
        r = nxt
    m.d.comb += out.eq(r)


def read_weight_tile(m, w_port, k, base, tile):
    """One step of reading a weight tile into registers: ``rows`` reads of scratchpad W from line *base*.

    Step ``k = 0 .. rows - 1`` reads line ``base + k``; the line read in step
    ``k`` is captured into ``tile[k]`` in step ``k + 1`` (``SCRATCHPAD_READ``
    later), so the tile is complete after step ``rows`` (``rows + 1`` steps:
    :attr:`~systolic.arch.latency.Latencies.weight_tile_read`). *k* advances by one.
    """
    rows = len(tile)
    with m.If(k < rows):
        m.d.comb += [w_port.en.eq(1), w_port.addr.eq(base + k)]
    with m.If(k > 0):
        m.d.sync += tile[k - 1].eq(_row(w_port, len(tile[0])))
    m.d.sync += k.eq(k + 1)


def weight_row(cfg: AcceleratorConfig, w_port):
    """The weight line on scratchpad W's read port as one row of the weight registers of :func:`weight_tile`:
    each element keeps the array's weight width, all of the ``w_bits + 1`` bit scratchpad element, or its low
    ``w_bits`` bits, the word of a shift PE."""
    return _row(w_port, cfg.cols * cfg.array_config.w_bits)


def _row(w_port, width: int):
    data = w_port.data
    bits = width // len(data)
    return data.as_value() if bits == len(data[0]) else Cat(data[n][:bits] for n in range(len(data)))


def weight_tile(cfg: AcceleratorConfig, prefix: str = "wt"):
    """Registers for one weight tile: ``rows`` signals of ``cols`` packed weights (an Array, indexable by a
    signal), named *prefix* and the row."""
    from amaranth.hdl import Array

    bits = cfg.array_config.w_bits
    return Array(Signal(cfg.cols * bits, name=f"{prefix}{r}") for r in range(cfg.rows))
