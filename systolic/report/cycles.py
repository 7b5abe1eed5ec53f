"""Analytic cycle model: cycles and stall cycles per instruction, per program and per layer.

The :class:`~systolic.hw.system.Accelerator` runs one instruction at a time
with one memory request in flight, so every number here follows from the
per-instruction formulas of docs/isa.md ("Timing"), implemented once in
:mod:`systolic.hw.timing` (busy cycles), and from the memory requests each
instruction makes (:func:`instruction_requests`), which give the stall
counters:

* ``<unit>_stall`` = ``d`` per request of that unit (a request waits ``d``
  cycles to be accepted) + ``L - 1`` per read (the cycles a read waits for its
  answer after the accepting one); ``matmul_stall`` is 0 (the controller never
  offers the array an operand it cannot take).
* ``cycles`` = the sum of the ``<unit>_busy``.

With :class:`~systolic.sim.memory.MemoryModel` ``stall == 0`` (``d =
ceil(bus_bytes / bytes_per_cycle) - 1``, ``L = latency``) the prediction
equals the RTL's ``cycles``, ``<unit>_busy``, ``<unit>_stall``, ``bus_reads``
and ``bus_writes`` counters with 0 cycles of error (tests/sim/test_cycle_model.py).

**Random stalls** (``stall = p > 0``): each request waits a random number
``X`` of extra accept cycles (``P(X >= j) = p**j``, geometric). Every such
cycle adds exactly one cycle to ``cycles``, to the busy counter and to the
stall counter of the unit that made the request, and nothing else changes.
So ``RTL = prediction(stall=0) + extra`` exactly, where ``extra`` is the sum
of ``X`` over the program's requests: the error of the deterministic
prediction is ``extra >= 0``, with mean ``n * p / (1 - p)`` and standard
deviation ``sqrt(n * p) / (1 - p)`` for ``n`` requests
(:attr:`ProgramCycles.expected_extra`, :attr:`ProgramCycles.extra_std`).
``ProgramCycles.expected()`` adds the mean; the RTL's stall counters reveal
``extra`` exactly (:func:`extra_stall_cycles`).

Plain Python, no amaranth, no simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..compiler.isa import INSTR_BYTES, Opcode
from ..hw.sysmap import UNITS
from ..hw.timing import instruction_cycles, words

__all__ = ["UNITS", "InstrCycles", "ProgramCycles", "instruction_requests", "predict_instruction",
           "predict_program", "predict_network", "extra_stall_cycles", "memory_delays"]

_UNIT_OF = {Opcode.LOAD: "load", Opcode.LOADQ: "loadq", Opcode.MATMUL: "matmul", Opcode.STORE: "store"}


def memory_delays(config, memory=None) -> tuple[int, int]:
    """``(d, L)`` of *memory* (a MemoryModel, default ``MemoryModel()``) on *config*'s bus."""
    from ..sim.memory import MemoryModel

    memory = memory or MemoryModel()
    return memory.base_delay(config.bus_bytes), memory.latency


def instruction_requests(cfg, instr, addr: int) -> dict:
    """Memory-port requests of one instruction fetched at *addr*: ``{unit: (reads, writes)}``."""
    bb = cfg.bus_bytes
    out = {"ctrl": (words(addr, INSTR_BYTES, bb), 0)}
    a = instr.args
    if instr.op == Opcode.LOAD:
        out["load"] = (sum(words(a["dram"] + i * a["stride"], a["elems"], bb) for i in range(a["lines"])), 0)
    elif instr.op == Opcode.LOADQ:
        out["loadq"] = (words(a["dram"], 5 * cfg.cols, bb), 0)
    elif instr.op == Opcode.STORE:
        out["store"] = (0, sum(words(a["dram"] + i * a["stride"], a["elems"], bb) for i in range(a["lines"])))
    return out


@dataclass
class InstrCycles:
    """Predicted cost of one instruction."""

    index: int
    op: str
    unit: str                       #: the executing unit (``ctrl`` for HALT / FENCE)
    busy: dict                      #: per unit busy cycles (ctrl = fetch + decode)
    stall: dict                     #: per unit memory-wait cycles (included in busy)
    reads: int                      #: memory read requests (fetch included)
    writes: int

    @property
    def cycles(self) -> int:
        return sum(self.busy.values())

    @property
    def stall_cycles(self) -> int:
        return sum(self.stall.values())


def predict_instruction(cfg, instr, addr: int, d: int, latency: int, index: int = 0) -> InstrCycles:
    """:class:`InstrCycles` of *instr* fetched at *addr* with accept delay *d* and read latency *latency*."""
    busy = instruction_cycles(cfg, instr, addr, d, latency)
    reqs = instruction_requests(cfg, instr, addr)
    stall = {u: (r + w) * d + r * (latency - 1) for u, (r, w) in reqs.items()}
    return InstrCycles(index, instr.op.name, _UNIT_OF.get(instr.op, "ctrl"), busy, stall,
                       sum(r for r, _ in reqs.values()), sum(w for _, w in reqs.values()))


@dataclass
class ProgramCycles:
    """Predicted counters of one program (up to its HALT)."""

    instructions: list                      #: :class:`InstrCycles` per executed instruction
    stall_probability: float = 0.0
    counters: dict = field(default_factory=dict)

    def __post_init__(self):
        c = {"cycles": 0, "bus_reads": 0, "bus_writes": 0}
        c.update({f"{u}_{k}": 0 for u in UNITS for k in ("busy", "stall")})
        for ic in self.instructions:
            for u, v in ic.busy.items():
                c[f"{u}_busy"] += v
                c["cycles"] += v
            for u, v in ic.stall.items():
                c[f"{u}_stall"] += v
            c["bus_reads"] += ic.reads
            c["bus_writes"] += ic.writes
        self.counters = c

    @property
    def cycles(self) -> int:
        return self.counters["cycles"]

    @property
    def stall_cycles(self) -> int:
        return sum(self.counters[f"{u}_stall"] for u in UNITS)

    @property
    def requests(self) -> int:
        return self.counters["bus_reads"] + self.counters["bus_writes"]

    @property
    def expected_extra(self) -> float:
        """Mean of the random extra accept cycles (0 without random stalls)."""
        p = self.stall_probability
        return self.requests * p / (1 - p)

    @property
    def extra_std(self) -> float:
        """Standard deviation of the random extra accept cycles."""
        p = self.stall_probability
        return math.sqrt(self.requests * p) / (1 - p)

    def expected(self) -> dict:
        """The counters with the mean random extra cycles added to ``cycles`` (exact when ``stall == 0``)."""
        out = dict(self.counters)
        out["cycles"] = self.cycles + self.expected_extra
        return out

    def per_opcode(self) -> dict:
        """``{opcode: {"count", "cycles", "stall"}}``."""
        out = {}
        for ic in self.instructions:
            e = out.setdefault(ic.op, {"count": 0, "cycles": 0, "stall": 0})
            e["count"] += 1
            e["cycles"] += ic.cycles
            e["stall"] += ic.stall_cycles
        return out


def predict_program(cfg, program, prog_addr: int, memory=None) -> ProgramCycles:
    """:class:`ProgramCycles` of *program* (Instrs ending with HALT) placed at *prog_addr*.

    *memory* is a :class:`~systolic.sim.memory.MemoryModel` (default ``MemoryModel()``).
    """
    from ..sim.memory import MemoryModel

    memory = memory or MemoryModel()
    d, lat = memory_delays(cfg, memory)
    instrs = []
    for j, ins in enumerate(program):
        instrs.append(predict_instruction(cfg, ins, prog_addr + INSTR_BYTES * j, d, lat, j))
        if ins.op == Opcode.HALT:
            break
    return ProgramCycles(instrs, memory.stall)


def predict_network(cn, config, memory=None) -> dict:
    """``{layer: ProgramCycles}`` for every accelerated layer of compiled network *cn* (placed as systolic.sim does)."""
    from ..sim.memory import program_address

    prog_addr = program_address(cn.spec.dram_bytes)
    return {s.layer: predict_program(config, s.program, prog_addr, memory)
            for s in cn.steps if hasattr(s, "program")}


def extra_stall_cycles(rtl: dict, config, memory) -> int:
    """The random extra accept cycles of a run, from the RTL counters (``cycles - prediction``)."""
    d, lat = memory_delays(config, memory)
    stalls = sum(rtl[f"{u}_stall"] for u in UNITS)
    return stalls - (rtl["bus_reads"] + rtl["bus_writes"]) * d - rtl["bus_reads"] * (lat - 1)
