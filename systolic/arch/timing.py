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
import gc
from dataclasses import dataclass, field

import numpy as np

from .isa import INSTR_BYTES, Opcode
from .latency import (ACC_UPDATE, DECODE_CYCLES, DMA_ISSUE, INTERLOCK_REGISTER, LOADQ_CHECK, MAX_READS, QUEUE_SLOT,
                      STORE_START, VEC_INPUT, VEC_LINE, div_line)

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
    fetch: int                      #: cycle its fetch starts (FETCH; the last cycle of the instruction before)
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
        return _UNIT_OF.get(self.op, "ctrl")

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

    def last_before(self, c: int) -> int:
        """Index of the last interval starting at or before cycle *c* (-1: none). The timeline asks about
        recent cycles, so the search starts from the end."""
        los = self.lo
        k = len(los) - 1
        if k >= 0 and los[k] > c:
            k = bisect.bisect_right(los, c) - 1
        return k

    def cover(self, lo: int, hi: int) -> str:
        """``"all"``, ``"none"`` or ``"some"``: how much of cycles ``[lo, hi]`` the intervals cover."""
        k = self.last_before(hi)                      # the last interval starting at or before hi
        if k < 0 or self.hi[k] < lo:
            return "none"                             # (earlier intervals end before this one starts)
        return "all" if self.lo[k] <= lo and self.hi[k] >= hi else "some"

    def count_idle_span(self, cycles) -> int:
        """:meth:`count_idle` of a short list of sorted *cycles* (plain Python: the intervals are sorted and
        disjoint, so the ones that can hold them are the few from :meth:`last_before` of the last one back)."""
        if not cycles:
            return 0
        k = self.last_before(cycles[-1])
        first = cycles[0]
        inside = 0
        while k >= 0 and self.hi[k] >= first:
            lo, hi = self.lo[k], self.hi[k]
            inside += sum(1 for c in cycles if lo <= c <= hi)
            k -= 1
        return len(cycles) - inside

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
    if n <= MAX_READS:
        # A short gather (a fetch, a line of a load): the same sets in plain Python.
        period = max(MAX_READS * q, lat + q)
        acc = [start + DMA_ISSUE + d + (j % MAX_READS) * q + (j // MAX_READS) * period for j in range(n)]
        end = acc[-1] + lat
        work = set(acc)
        work.update(a + lat for a in acc)
        stall = end - start - len(work)
        if not stall:
            return end, stall, 0
        return end, stall, busy.count_idle_span([c for c in range(start + 1, end + 1) if c not in work])
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
    ``(last, a_end, w_end)``: its last busy cycle (the last accumulator
    write or check), the last cycle it may read scratchpad A lines and the
    last cycle it may read its W lines (the LOAD interlock's bounds: the
    weight tile is read into registers right after the MATMUL is taken, so
    its W lines are free long before its A lines); :meth:`serial` bounds one MATMUL's cycles when
    nothing overlaps (for :func:`cycle_bound`).
    """

    def __init__(self, lat):
        self.lat = lat
        self.free = 0

    def issue(self, t: int, m: int) -> tuple[int, int, int]:
        raise NotImplementedError

    def serial(self, m: int) -> int:
        raise NotImplementedError


class WSTiming(ArrayUnitTiming):
    """Weight-stationary (``hw.array_unit_ws``): weight loader, feeder and write-back stream MATMULs."""

    def __init__(self, lat):
        super().__init__(lat)
        self.last_st = None     # cycle the previous computing MATMUL started feeding
        self.fd_free = 0        # first cycle the feeder can start the next one
        # The latencies issue() adds, read once (it runs once per MATMUL).
        self._tile_read, self._push = lat.weight_tile_read, lat.weight_push
        self._guard, self._writeback = lat.ws_matmul_period - lat.weight_push, lat.ws_writeback

    def issue(self, t, m):
        if m == 0:                                  # taken and dropped: no reads, no writes
            self.free = t + 1
            return t, t, t
        p0 = t + self._tile_read + 1                # first push cycle
        if self.last_st is not None:                # shadow guard after the previous swap
            p0 = max(p0, self.last_st + self._guard)   # (ws_matmul_period - weight_push)
        st = p0 + self._push                        # feeder takes it (first A read)
        if self.fd_free > st:
            st = self.fd_free
        self.free = st + 1
        self.fd_free = st + m
        self.last_st = st
        # The feeder lets go of it the cycle after its last read; the last accumulator write follows.
        return st + m - 1 + self._writeback, st + m, t + self._tile_read

    def serial(self, m):
        lat = self.lat
        return m + lat.weight_tile_read + lat.ws_matmul_period + lat.ws_writeback


class OSTiming(ArrayUnitTiming):
    """Output-stationary (``hw.array_unit_os``): a fetcher and a stepper stream chunks of ``rows`` output rows
    through two transpose banks.

    Chunk ``c`` of a MATMUL is read in cycles ``f .. f + R - 1`` into the next transpose bank (its weight tile
    beside chunk 0), stepped in ``s .. s + R - 1`` with ``s >= f + os_fill`` and ``s`` at least ``R`` after
    the previous chunk's first step; a bank can be read into again from the last step of the chunk in it.
    Once two chunks step ``R`` apart, every later one does (each is read just in time, ``f = s - os_fill``),
    so :meth:`issue` jumps to the end of a long MATMUL.
    """

    def __init__(self, lat):
        super().__init__(lat)
        self._R, self._fill, self._writeback = lat.rows, lat.os_fill, lat.os_writeback
        self.bank_free = [0, 0]     # first cycle each transpose bank can be read into
        self.bank = 0               # the bank the next chunk goes to
        self.step_free = 0          # first cycle the stepper can start a chunk

    def issue(self, t, m):
        if m == 0:                  # taken and dropped: no reads, no writes
            self.free = t + 1
            return t, t, t
        R, fill = self._R, self._fill
        bank_free, b = self.bank_free, self.bank
        n = -(-m // R)
        f = t + 1                   # the fetcher's first read
        s = None
        for c in range(n):
            if bank_free[b] > f:
                f = bank_free[b]
            if c == 0:
                w_end = f + R - 1
            s_prev, s = s, max(f + fill, self.step_free)
            self.step_free = s + R
            bank_free[b] = s + R - 1
            if s_prev is not None and s == s_prev + R and c + 1 < n:     # steady: jump to the last chunk
                rest = n - 1 - c
                s += rest * R
                b ^= rest & 1                       # the last chunk's bank
                bank_free[b] = s + R - 1
                bank_free[b ^ 1] = s - 1            # the one before it stepped R earlier
                self.step_free = s + R
                f = s - fill
                b ^= 1
                break
            b ^= 1
            if c + 1 < n:
                f += R
        self.bank = b
        a_end = f + R - 1            # the last read; the fetcher takes the next MATMUL in that cycle
        self.free = a_end
        return s + R - 1 + self._writeback, a_end, w_end

    def serial(self, m):
        return self.lat.os_matmul(m)


#: Dataflow -> the timing of its array unit (mirrors ``systolic.hw.array_units.ARRAY_UNITS``).
ARRAY_UNIT_TIMING = {"ws": WSTiming, "os": OSTiming}


def program_timeline(cfg, program, prog_addr: int, d: int = 0, latency: int = 1) -> Timeline:
    """The cycle-exact :class:`Timeline` of *program* (Instrs, ending with HALT) on *cfg*: the counters of
    :func:`program_cycles` and an :class:`InstrTiming` per instruction run."""
    was = gc.isenabled()
    gc.disable()            # millions of records without cycles: a collection would walk them all again
    try:
        return Timeline(*_run(cfg, program, prog_addr, d, latency, True))
    finally:
        if was:
            gc.enable()


def program_cycles(cfg, program, prog_addr: int, d: int = 0, latency: int = 1) -> dict:
    """The RTL counters of *program* that depend on timing: ``cycles``, ``<unit>_busy``, ``<unit>_stall``,
    ``bus_reads``, ``bus_writes``, ``idle_mem_stall`` (the counters of :func:`program_timeline`, without
    building its per-instruction records)."""
    return _run(cfg, program, prog_addr, d, latency, False)[1]


class _Words:
    """Bus words of the lines of a LOAD / STORE, ``[words(dram + i*stride, elems) for i < lines]`` summed,
    cached: they depend on ``dram`` and ``stride`` only modulo the bus width, and programs repeat shapes."""

    def __init__(self, bus_bytes: int):
        self.bb = bus_bytes
        self.cache = {}

    def lines(self, dram: int, stride: int, elems: int, lines: int) -> int:
        bb = self.bb
        key = (dram % bb, stride % bb, elems, lines)
        n = self.cache.get(key)
        if n is None:
            n = self.cache[key] = sum(words(key[0] + i * key[1], elems, bb) for i in range(lines))
        return n


def _run(cfg, program, prog_addr: int, d: int, latency: int, record: bool) -> tuple:
    """``(records, counters)`` of *program*: one pass that follows the controller (fetch, decode, interlock,
    execute) and the array unit (queue slot, then per dataflow) at once; *records* is the list of
    :class:`InstrTiming` when *record*, else None (the counters alone, for programs of millions of
    instructions). It is one piece because each instruction's start depends on the array unit's state left by
    the MATMULs before it, and vice versa; the counters are summed as it goes, in the same integers as the
    records."""
    R, bb = cfg.rows, cfg.bus_bytes
    unit = ARRAY_UNIT_TIMING[cfg.dataflow](cfg.latencies)
    issue = unit.issue
    lat = latency
    q = 1 + d
    store_pipeline = cfg.latencies.store_pipeline
    loadq_bytes = cfg.loadq_bytes
    nwords = _Words(bb).lines
    busy = _Busy()
    b_lo, b_hi = busy.lo, busy.hi
    idle_mem = 0
    out = [] if record else None
    q_free = 0              # first cycle the queue slot is free again
    unit_end = -1           # last busy cycle of the array unit so far
    readers = []            # (a, m, w, last cycle it may read W, ... A: the later); ends before f are stale
    writers = []            # (acc, m, its last accumulator write): the STORE interlock; ends before f are stale
    f = 0                   # the cycle the instruction's fetch starts: FETCH, then the last of the one before
    first = 0               # its first controller cycle: FETCH, then the one after that last cycle
    total = None
    # The counters, summed per instruction.
    ctrl_b = ctrl_s = wait_b = load_b = load_s = loadq_b = loadq_s = store_b = store_s = vec_b = vec_s = 0
    n_reads = n_writes = 0
    fetches = {}            # fetch words -> (last answer - start, stall cycles) of a fetch gather
    steady = MAX_READS * q >= lat + q               # gathers are never throttled (see _gather)
    gather_end = DMA_ISSUE + d + lat                # steady: last answer - start of a one-word gather
    lat_k, lat_r = divmod(lat, q)
    for j, ins in enumerate(program):
        a = ins.args
        op = ins.op
        pa = prog_addr + INSTR_BYTES * j
        wf = (pa % bb + INSTR_BYTES - 1) // bb + 1           # words(pa, INSTR_BYTES, bb)
        fe = fetches.get(wf)
        if fe is None:
            e, st_f, _ = _gather(0, wf, d, lat, _Busy())
            fe = fetches[wf] = (e, st_f)
        e, st_f = fe
        e += f
        if st_f:                                    # _gather(f, wf, d, lat, busy)'s idle cycles
            k = len(b_lo) - 1
            if k >= 0 and b_lo[k] > e:
                k = busy.last_before(e)
            if not steady:
                idle_mem += _gather(f, wf, d, lat, busy)[-1]
            elif k < 0 or b_hi[k] < f + 1:
                idle_mem += st_f                    # the array unit is idle throughout
            elif b_lo[k] > f + 1 or b_hi[k] < e:
                idle_mem += _gather(f, wf, d, lat, busy)[-1]
        c = e + DECODE_CYCLES                       # CHECK
        ctrl_b += c - first + 1
        ctrl_s += st_f
        reads, writes = wf, 0
        # Interlocks. LOAD's and STORE's tests are registered: they go 1 + INTERLOCK_REGISTER after the last
        # cycle of a conflict.
        x = c
        if op == _MATMUL:
            if q_free > c:
                x = q_free
        elif op == _LOAD:
            lines, spad = a["lines"], a["spad"]
            if lines:
                is_w = a["target"] == 1
                for ra, rm, rw, w_end, a_end in readers:
                    rend = w_end if is_w else a_end
                    rx = rend + 1 + INTERLOCK_REGISTER
                    if rx <= x:
                        continue
                    lo, n = (rw, R) if is_w else (ra, rm)
                    if n and spad < lo + n and lo < spad + lines:
                        x = rx
        elif op == _STORE:
            lines, acc = a["lines"], a["acc"]
            if lines:
                for wa, wm, wend in writers:
                    wx = wend + 1 + INTERLOCK_REGISTER
                    if wx > x and wm and acc < wa + wm and wa < acc + lines:
                        x = wx
        elif op in (Opcode.FENCE, Opcode.HALT, _VEC, _DIV):
            if unit_end + 1 > c:
                x = unit_end + 1
        wait = x - c
        wait_b += wait
        arr = None
        end = x
        st_u = None                                 # the unit's stall, when it has a memory transfer
        if op == _MATMUL:
            m = a["m"]
            t = x + QUEUE_SLOT
            if unit.free > t:
                t = unit.free
            q_free = t + 1
            last, a_end, w_end = issue(t, m)
            if b_hi and x + 1 <= b_hi[-1] + 1:          # busy.add(x + 1, last)
                if last > b_hi[-1]:
                    b_hi[-1] = last
            else:
                b_lo.append(x + 1)
                b_hi.append(last)
            if last > unit_end:
                unit_end = last
            readers.append((a["a"], m, a["w"], w_end, a_end))
            writers.append((a["acc"], m, last))
            arr = (x + 1, last)
        elif op == _LOAD or op == _VEC:
            s0 = x + 1
            lines, elems = a["lines"], a["elems"]
            if lines == 0 or (elems == 0 and op == _VEC):
                end = s0
            elif elems == 0:
                end = s0 + lines
            else:
                nw = nwords(a["dram"], a["stride"], elems, lines)
                if steady:                          # _gather's closed form, inline
                    end = s0 + gather_end + (nw - 1) * q
                    st_u = end - s0 - (nw + nw - ((nw - lat_k if nw > lat_k else 0) if lat_r == 0 else 0))
                    idle_l = 0
                    if st_u:
                        k = len(b_lo) - 1
                        if k >= 0 and b_lo[k] > end:
                            k = busy.last_before(end)
                        if k < 0 or b_hi[k] < s0 + 1:
                            idle_l = st_u
                        elif b_lo[k] > s0 + 1 or b_hi[k] < end:
                            idle_l = _gather(s0, nw, d, lat, busy)[-1]
                else:
                    end, st_u, idle_l = _gather(s0, nw, d, lat, busy)
                idle_mem += idle_l
                reads += nw
                if op == _VEC:          # the last line's accumulator update is written (and checked) after it
                    end += VEC_LINE + VEC_INPUT + ACC_UPDATE
            if op == _LOAD:
                load_s += st_u or 0
                load_b += end - x
            else:
                vec_s += st_u or 0
                vec_b += end - x
        elif op == _HALT:
            total = x + 1
        elif op == _DIV:
            end = x + 1
            if a["lines"] and a["elems"]:
                end += a["lines"] * div_line(cfg.acc_bits) + VEC_INPUT + ACC_UPDATE
            vec_b += end - x
        elif op == _LOADQ:
            # LOADQ starts its gather in x + 1 and checks the block LOADQ_CHECK after the last answer.
            nw = words(a["dram"], loadq_bytes, bb)
            end, st_u, idle_q = _gather(x + 1, nw, d, lat, busy)
            end += LOADQ_CHECK
            loadq_s += st_u
            loadq_b += end - x
            idle_mem += idle_q
            reads += nw
        elif op == _STORE:
            s0 = x + STORE_START + 1                    # the pipeline starts STORE_START after x
            end = s0
            lines = a["lines"]
            if lines:
                elems = a["elems"]
                writes = nwords(a["dram"], a["stride"], elems, lines)
                # max(1, w * (1 + d)) per line: w * (1 + d) when elems > 0 (w >= 1), else 1.
                c0 = x + STORE_START + store_pipeline    # line 0 is read in the start cycle
                end = c0 + (writes * q if elems > 0 else lines)
                st_u = writes * d
                store_s += st_u
                if st_u:                              # word g is requested in c0 + 1 + g q, accepted d later
                    cover = busy.cover(c0 + 1, end)
                    if cover == "none":
                        idle_mem += st_u
                    elif cover == "some":
                        g = c0 + 1 + q * np.arange(writes, dtype=np.int64)
                        idle_mem += busy.count_idle((g[:, None] + np.arange(d)).ravel())
            store_b += end - x
        n_reads += reads
        n_writes += writes
        if record:
            b = {"ctrl": c - first + 1}
            s = {"ctrl": st_f}
            if wait:
                b["wait"] = wait
            name = op.name
            unit_name = _UNIT_OF.get(name)
            if unit_name is not None and name != "MATMUL":
                b[unit_name] = end - x
                if st_u is not None:
                    s[unit_name] = st_u
            out.append(InstrTiming(j, name, f, x, end, b, s, reads, writes, arr))
        if total is not None:
            break
        f, first = end, end + 1
        while readers and readers[0][-1] < f:       # (a stale reader further on is skipped by its end)
            del readers[0]
        while writers and writers[0][-1] < f:
            del writers[0]
    if total is None:
        total = first
    cnt = {"cycles": total, "bus_reads": n_reads, "bus_writes": n_writes, "idle_mem_stall": idle_mem,
           "ctrl_busy": ctrl_b, "ctrl_stall": ctrl_s, "load_busy": load_b, "load_stall": load_s,
           "loadq_busy": loadq_b, "loadq_stall": loadq_s, "store_busy": store_b, "store_stall": store_s,
           "vec_busy": vec_b, "vec_stall": vec_s,
           "wait_busy": wait_b, "wait_stall": 0, "matmul_busy": busy.total(total - 1), "matmul_stall": 0}
    return out, cnt


_LOAD, _LOADQ, _MATMUL, _STORE, _HALT, _VEC, _DIV = (Opcode.LOAD, Opcode.LOADQ, Opcode.MATMUL, Opcode.STORE,
                                                      Opcode.HALT, Opcode.VEC, Opcode.DIV)
#: Opcode name -> the controller unit that executes it (MATMUL: the array unit).
_UNIT_OF = {"LOAD": "load", "LOADQ": "loadq", "MATMUL": "matmul", "STORE": "store", "VEC": "vec", "DIV": "vec"}


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
        if op == Opcode.LOAD or op == Opcode.VEC:
            total += start + INTERLOCK_REGISTER + a["lines"] * (1 + (-(-a["elems"] // bb) + 1) * rd)
            if op == Opcode.VEC:
                total += VEC_LINE + VEC_INPUT + ACC_UPDATE      # the last line's accumulator write
        elif op == Opcode.LOADQ:
            total += start + 1 + LOADQ_CHECK + (-(-cfg.loadq_bytes // bb) + 1) * rd     # LOADQ's own state
        elif op == Opcode.STORE:
            total += (start + STORE_START + INTERLOCK_REGISTER + lat.store_pipeline
                      + a["lines"] * (1 + (-(-a["elems"] // bb) + 1) * wr))
        elif op == Opcode.MATMUL:
            total += start + QUEUE_SLOT + unit.serial(a["m"])
        elif op == Opcode.DIV:
            total += start + a["lines"] * div_line(cfg.acc_bits) + VEC_INPUT + ACC_UPDATE
        elif op == Opcode.HALT:
            break
    return total + 1
