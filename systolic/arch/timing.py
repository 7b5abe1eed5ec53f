"""Exact cycle timeline of the :class:`~systolic.hw.system.Accelerator` (docs/isa.md, "Timing").

The controller runs instructions in order; MATMULs go to the array unit and
run in the background (a queue slot, then, weight-stationary, the weight
loader, the feeder and the write-back, streaming back to back;
output-stationary, one at a time), and interlocks hold an instruction while
the array unit still uses what it touches. With a memory that accepts a
request ``d`` cycles after it is first valid and answers a read ``L`` cycles
after accepting it (:class:`systolic.arch.memory.MemoryModel` without random
stalls: ``d = ceil(bus_bytes / bytes_per_cycle) - 1``), everything is
deterministic and :func:`program_timeline` reproduces the RTL's counters
exactly, cycle by cycle of the units in ``systolic/hw`` (tests/hw and
tests/sim check it against amaranth.sim and Verilator). Every latency it
adds is a name of :mod:`systolic.arch.latency`, the names the units are
built from; a bare ``+ 1`` here means "the next cycle".
Plain Python and NumPy, no amaranth.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from .isa import INSTR_BYTES, Opcode
from .latency import DECODE_CYCLES, DMA_ISSUE, MAX_READS, QUEUE_SLOT
from .sysmap import CONTROLLER_UNITS

__all__ = ["MAX_READS", "words", "gather_accepts", "InstrTiming", "Timeline", "ArrayUnitTiming", "WSTiming",
           "OSTiming", "ARRAY_UNIT_TIMING", "program_timeline", "program_cycles", "cycle_bound"]


def words(addr: int, n: int, bus_bytes: int) -> int:
    """Bus words (= memory requests) covering bytes ``[addr, addr + n)``."""
    if n <= 0:
        return 0
    return (addr + n - 1) // bus_bytes - addr // bus_bytes + 1


def gather_accepts(start: int, n: int, d: int, latency: int) -> np.ndarray:
    """Accept cycles of the ``n`` read requests of a gather started in cycle *start*.

    Request ``j`` is valid the cycle after request ``j - 1`` is accepted
    (the first: :data:`~systolic.arch.latency.DMA_ISSUE` after *start*) once
    fewer than :data:`MAX_READS` reads are unanswered, and is accepted ``d``
    cycles later; read ``j`` is answered in ``accept + latency``. That
    recurrence, ``a_j = max(a_{j-1} + 1 + d, a_{j-Q} + latency + 1 + d)``, has
    the closed form ``a_j = a_0 + (j mod Q)(1 + d) + (j div Q) * max(Q(1 + d), latency + 1 + d)``.
    """
    j = np.arange(n, dtype=np.int64)
    period = max(MAX_READS * (1 + d), latency + 1 + d)
    return start + DMA_ISSUE + d + (j % MAX_READS) * (1 + d) + (j // MAX_READS) * period


@dataclass
class InstrTiming:
    """When one instruction ran and what it cost."""

    index: int
    op: str
    fetch: int                      #: cycle of its FETCH state
    start: int                      #: cycle it started executing (after any interlock wait)
    end: int                        #: last controller cycle of the instruction
    busy: dict                      #: controller cycles per unit (ctrl, wait, and its own unit)
    stall: dict                     #: memory-wait cycles per unit (included in busy)
    reads: int                      #: read requests (fetch included)
    writes: int
    array: tuple | None = None      #: MATMUL: (first, last) cycle the array unit is busy with it

    @property
    def unit(self) -> str:
        """The unit that executes it (``ctrl`` for HALT / FENCE, ``matmul`` for MATMUL)."""
        return {"LOAD": "load", "LOADQ": "loadq", "MATMUL": "matmul", "STORE": "store"}.get(self.op, "ctrl")

    @property
    def cycles(self) -> int:
        """Controller cycles from its fetch to its last cycle (MATMUL: the issue only)."""
        return sum(self.busy.values())

    @property
    def stall_cycles(self) -> int:
        return sum(self.stall.values())

    @property
    def array_cycles(self) -> int:
        """Cycles the array unit is busy with it (MATMUL; overlaps other instructions)."""
        return self.array[1] - self.array[0] + 1 if self.array else 0


@dataclass
class Timeline:
    """The per-instruction timeline of one program and the RTL counters it implies."""

    instructions: list
    counters: dict = field(default_factory=dict)


class _Busy:
    """The array unit's busy cycles as merged, sorted, closed intervals."""

    def __init__(self):
        self.lo, self.hi = [], []

    def add(self, lo: int, hi: int):
        if self.hi and lo <= self.hi[-1] + 1:
            self.hi[-1] = max(self.hi[-1], hi)
        else:
            self.lo.append(lo)
            self.hi.append(hi)

    def count_idle(self, cycles: np.ndarray) -> int:
        """How many of the sorted *cycles* fall outside every interval."""
        if not len(cycles):
            return 0
        if not self.lo or cycles[0] > self.hi[-1]:
            return len(cycles)
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        k = np.searchsorted(lo, cycles, side="right") - 1
        inside = (k >= 0) & (cycles <= hi[np.maximum(k, 0)])
        return int(len(cycles) - inside.sum())

    def cover(self, lo: int, hi: int) -> str:
        """``"all"``, ``"none"`` or ``"some"``: how much of cycles ``[lo, hi]`` the intervals cover."""
        k = bisect.bisect_right(self.lo, hi) - 1      # the last interval starting at or before hi
        if k < 0 or self.hi[k] < lo:
            return "none"                             # (earlier intervals end before this one starts)
        return "all" if self.lo[k] <= lo and self.hi[k] >= hi else "some"

    def total(self, end: int) -> int:
        return sum(min(h, end) - lo + 1 for lo, h in zip(self.lo, self.hi) if lo <= end)


def _gather(start, n, d, lat, busy: _Busy):
    """(last response cycle, stall cycles, stall cycles while the array unit is idle) of a gather."""
    q = 1 + d
    if MAX_READS * q >= lat + q:
        # Never throttled: accepts every q cycles; an answer lands on an accept cycle iff q divides L.
        end = start + DMA_ISSUE + d + (n - 1) * q + lat
        k, r = divmod(lat, q)
        # Cycles with work: every word's accept cycle and its answer's, but for the answers that land on
        # an accept cycle (all but the last k when q divides L).
        work = n + n - (max(0, n - k) if r == 0 else 0)
        stall = end - start - work
        cover = busy.cover(start + 1, end)
        if stall == 0 or cover == "all":
            return end, stall, 0
        if cover == "none":
            return end, stall, stall
    acc = gather_accepts(start, n, d, lat)
    end = int(acc[-1]) + lat
    work = np.union1d(acc, acc + lat)
    span = end - start
    stall = span - len(work)
    idle = 0
    if stall:
        cyc = np.setdiff1d(np.arange(start + 1, end + 1, dtype=np.int64), work, assume_unique=True)
        idle = busy.count_idle(cyc)
    return end, stall, idle


class ArrayUnitTiming:
    """When the array unit takes, runs and finishes each MATMUL: one subclass per dataflow, as in ``hw``.

    :attr:`free` is the first cycle the unit can take the next MATMUL from
    the queue slot; :meth:`issue` books one taken in cycle *t* and returns
    ``(last, reader_end)``: its last busy cycle (the last accumulator write
    or check) and the last cycle it may read scratchpad lines (the LOAD
    interlock's bound); :meth:`serial` bounds one MATMUL's cycles when
    nothing overlaps (for :func:`cycle_bound`).
    """

    def __init__(self, lat):
        self.lat = lat
        self.free = 0

    def issue(self, t: int, m: int) -> tuple[int, int]:
        raise NotImplementedError

    def serial(self, m: int) -> int:
        raise NotImplementedError


class WSTiming(ArrayUnitTiming):
    """Weight-stationary (``hw.array_unit_ws``): weight loader, feeder and write-back stream MATMULs."""

    def __init__(self, lat):
        super().__init__(lat)
        self.last_st = None     # cycle the previous computing MATMUL started feeding
        self.fd_free = 0        # first cycle the feeder can start the next one

    def issue(self, t, m):
        lat = self.lat
        if m == 0:
            last = t + lat.weight_tile_read         # reads the tile, computes nothing
            self.free = last + 1
            return last, last
        p0 = t + lat.weight_tile_read + 1           # first push cycle
        if self.last_st is not None:                # shadow guard after the previous swap
            p0 = max(p0, self.last_st + lat.ws_matmul_period - lat.weight_push)
        st = max(p0 + lat.weight_push, self.fd_free)  # feeder takes it (first A read)
        self.free = st + 1
        self.fd_free = st + m
        self.last_st = st
        # The feeder lets go of it the cycle after its last read; the last accumulator write follows.
        return st + m - 1 + lat.ws_writeback, st + m

    def serial(self, m):
        lat = self.lat
        return m + lat.weight_tile_read + lat.ws_matmul_period + lat.ws_writeback


class OSTiming(ArrayUnitTiming):
    """Output-stationary (``hw.array_unit_os``): one MATMUL at a time."""

    def issue(self, t, m):
        last = t + self.lat.os_matmul(m)
        self.free = last + 1
        return last, last

    def serial(self, m):
        return self.lat.os_matmul(m)


#: Dataflow -> the timing of its array unit (mirrors ``systolic.hw.array_units.ARRAY_UNITS``).
ARRAY_UNIT_TIMING = {"ws": WSTiming, "os": OSTiming}


def program_timeline(cfg, program, prog_addr: int, d: int = 0, latency: int = 1) -> Timeline:
    """The cycle-exact :class:`Timeline` of *program* (Instrs, ending with HALT) on *cfg*.

    One pass over the program that follows the controller (fetch, decode,
    interlock, execute) and the array unit (queue slot, then per dataflow)
    at once; it is one piece because each instruction's start depends on the
    array unit's state left by the MATMULs before it, and vice versa.
    """
    R, bb = cfg.rows, cfg.bus_bytes
    unit = ARRAY_UNIT_TIMING[cfg.dataflow](cfg.latencies)
    lat = latency
    busy = _Busy()
    idle_mem = 0
    out = []
    q_free = 0              # first cycle the queue slot is free again
    unit_end = -1           # last busy cycle of the array unit so far
    readers = []            # (a, m, w, last cycle it may read scratchpads)
    f = 0
    total = None
    for j, ins in enumerate(program):
        a = ins.args
        op = ins.op
        pa = prog_addr + INSTR_BYTES * j
        wf = words(pa, INSTR_BYTES, bb)
        e, st_f, idle_f = _gather(f, wf, d, lat, busy)
        idle_mem += idle_f
        c = e + DECODE_CYCLES                       # CHECK
        b = {"ctrl": c - f + 1}
        s = {"ctrl": st_f}
        reads, writes = wf, 0
        # Interlocks.
        x = c
        if op == Opcode.MATMUL:
            x = max(c, q_free)
        elif op == Opcode.LOAD:
            lines, spad = a["lines"], a["spad"]
            for ra, rm, rw, rend in readers:
                if rend < c or lines == 0:
                    continue
                lo, n = (rw, R) if a["target"] == 1 else (ra, rm)
                if n and spad < lo + n and lo < spad + lines:
                    x = max(x, rend + 1)
        elif op in (Opcode.STORE, Opcode.FENCE, Opcode.HALT):
            x = max(c, unit_end + 1)
        if x > c:
            b["wait"] = x - c
        arr = None
        end = x
        if op == Opcode.HALT:
            total = x + 1
        elif op == Opcode.MATMUL:
            m = a["m"]
            t = max(x + QUEUE_SLOT, unit.free)      # queue slot -> the array unit
            q_free = t + 1
            last, reader_end = unit.issue(t, m)
            busy.add(x + 1, last)
            unit_end = max(unit_end, last)
            readers.append((a["a"], m, a["w"], reader_end))
            arr = (x + 1, last)
        elif op == Opcode.LOAD:
            s0 = x + 1
            lines, elems = a["lines"], a["elems"]
            if lines == 0:
                end = s0
            elif elems == 0:
                end = s0 + lines
            else:
                nw = sum(words(a["dram"] + i * a["stride"], elems, bb) for i in range(lines))
                end, st_l, idle_l = _gather(s0, nw, d, lat, busy)
                s["load"] = st_l
                idle_mem += idle_l
                reads += nw
            b["load"] = end - x
        elif op == Opcode.LOADQ:
            nw = words(a["dram"], cfg.loadq_bytes, bb)
            end, st_q, idle_q = _gather(x, nw, d, lat, busy)
            s["loadq"] = st_q
            idle_mem += idle_q
            reads += nw
            b["loadq"] = end - x
        elif op == Opcode.STORE:
            s0 = x + 1
            end = s0
            if a["lines"]:
                ws_ = [words(a["dram"] + i * a["stride"], a["elems"], bb) for i in range(a["lines"])]
                end = s0 + cfg.latencies.store_pipeline + sum(max(1, w * (1 + d)) for w in ws_)
                writes = sum(ws_)
                s["store"] = writes * d
                idle_mem += writes * d                # the array unit is idle during a STORE
            b["store"] = end - x
        out.append(InstrTiming(j, op.name, f, x, end, b, s, reads, writes, arr))
        if total is not None:
            break
        f = end + 1
        readers = [(ra, rm, rw, rend) for ra, rm, rw, rend in readers if rend >= f]
    if total is None:
        total = f
    cnt = {"cycles": total, "bus_reads": 0, "bus_writes": 0, "idle_mem_stall": idle_mem}
    for u in CONTROLLER_UNITS + ("matmul",):
        cnt[f"{u}_busy"] = cnt[f"{u}_stall"] = 0
    for it in out:
        for u, v in it.busy.items():
            cnt[f"{u}_busy"] += v
        for u, v in it.stall.items():
            cnt[f"{u}_stall"] += v
        cnt["bus_reads"] += it.reads
        cnt["bus_writes"] += it.writes
    cnt["matmul_busy"] = busy.total(total - 1)
    return Timeline(out, cnt)


def program_cycles(cfg, program, prog_addr: int, d: int = 0, latency: int = 1) -> dict:
    """The RTL counters of *program* that depend on timing: ``cycles``, ``<unit>_busy``, ``<unit>_stall``,
    ``bus_reads``, ``bus_writes``, ``idle_mem_stall``."""
    return program_timeline(cfg, program, prog_addr, d, latency).counters


def cycle_bound(cfg, program, d: int = 0, latency: int = 1) -> int:
    """A cheap upper bound of :func:`program_cycles`'s ``cycles`` (a few operations per instruction).

    Every instruction as if nothing overlapped and every bus word were its
    own round trip (``1 + d + latency`` cycles per read, ``1 + d`` per write,
    at most ``ceil(n / bus_bytes) + 1`` words per run), plus the array unit's
    whole work per MATMUL, its interlock wait included: the real run overlaps
    some of it, so it is never longer. The simulators use it for their hang
    bounds.
    """
    bb = cfg.bus_bytes
    lat = cfg.latencies
    unit = ARRAY_UNIT_TIMING[cfg.dataflow](lat)
    rd, wr = 1 + d + latency, 1 + d
    # FETCH, its words (one more for an unaligned start) each a round trip, decode and check, then the
    # first cycle of the executing state; an executing state's first request.
    fetch = 1 + DMA_ISSUE + (-(-INSTR_BYTES // bb) + 1) * rd + DECODE_CYCLES + 1
    start = 1 + DMA_ISSUE
    total = 0
    for ins in program:
        a, op = ins.args, ins.op
        total += fetch
        if op == Opcode.LOAD:
            total += start + a["lines"] * (1 + (-(-a["elems"] // bb) + 1) * rd)
        elif op == Opcode.LOADQ:
            total += start + (-(-cfg.loadq_bytes // bb) + 1) * rd
        elif op == Opcode.STORE:
            total += start + lat.store_pipeline + a["lines"] * (1 + (-(-a["elems"] // bb) + 1) * wr)
        elif op == Opcode.MATMUL:
            total += start + QUEUE_SLOT + unit.serial(a["m"])
        elif op == Opcode.HALT:
            break
    return total + 1
