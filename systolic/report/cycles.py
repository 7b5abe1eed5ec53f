"""Analytic cycle model: cycles and stall cycles per instruction, per program and per layer.

The :class:`~systolic.hw.system.Accelerator` overlaps MATMULs on the array
unit with the controller's fetches, LOADs and LOADQs (docs/isa.md,
"Timing"). :func:`systolic.arch.timing.program_timeline` follows both cycle by
cycle: when each instruction is fetched, how long an interlock holds it,
when its DMA requests are accepted and answered (up to
:data:`~systolic.arch.timing.MAX_READS` reads in flight), and when the array
unit takes, feeds and drains each MATMUL. This module turns that timeline
into the report's numbers:

* per instruction (:class:`~systolic.arch.timing.InstrTiming`): controller
  cycles per unit (``ctrl`` fetch/decode/check, ``wait`` interlock, and
  ``load`` / ``loadq`` / ``store``), memory-wait cycles, requests, and for a
  MATMUL the cycles the array unit is busy with it;
* per program / layer (:class:`ProgramCycles`): the RTL's ``cycles``,
  ``<unit>_busy``, ``<unit>_stall``, ``bus_reads``, ``bus_writes`` and
  ``idle_mem_stall`` counters.

With :class:`~systolic.arch.memory.MemoryModel` ``stall == 0`` (``d =
ceil(bus_bytes / bytes_per_cycle) - 1``, ``L = latency``) the prediction
equals every one of those RTL counters with 0 cycles of error
(tests/sim/test_cycle_model.py, tests/hw/test_system.py).

**Random stalls** (``stall = p > 0``): request ``k`` waits ``X_k`` extra
accept cycles (``P(X >= j) = p**j``). The accelerator is a max-plus system
(in-order controller and array unit, interlocks, a bounded read pipeline),
so delays can only postpone events, and each request delay lies on any
chain of dependent events at most once: ``0 <= RTL - prediction <= sum X_k``.
The bound has mean ``n p / (1 - p)`` and standard deviation
``sqrt(n p) / (1 - p)`` for ``n`` requests (:attr:`ProgramCycles.expected_extra`,
:attr:`ProgramCycles.extra_std`); part of it is hidden when the delayed
request overlaps array work. :func:`extra_accept_cycles` gives ``sum X_k``
of a run exactly (the memory model's delays are seeded).

Plain Python, no amaranth, no simulator.
"""

from __future__ import annotations

import math

from ..arch.sysmap import CONTROLLER_UNITS, UNITS
from ..arch.timing import InstrTiming, program_cycles, program_timeline

__all__ = ["UNITS", "CONTROLLER_UNITS", "InstrCycles", "ProgramCycles", "predict_program", "predict_network",
           "extra_accept_cycles", "memory_delays"]

#: Predicted cost of one instruction (see :class:`systolic.arch.timing.InstrTiming`).
InstrCycles = InstrTiming


def memory_delays(config, memory=None) -> tuple[int, int]:
    """``(d, L)`` of *memory* (a MemoryModel, default ``MemoryModel()``) on *config*'s bus."""
    from ..arch.memory import MemoryModel

    memory = memory or MemoryModel()
    return memory.base_delay(config.bus_bytes), memory.latency


class ProgramCycles:
    """Predicted counters of one program (up to its HALT).

    :attr:`instructions`, the :class:`InstrCycles` per executed instruction, is either given or, with
    *timeline* (a function returning the program's :class:`~systolic.arch.timing.Timeline`), built the first
    time it is read: the counters of a program of millions of instructions come without a record each."""

    def __init__(self, instructions: list | None = None, stall_probability: float = 0.0,
                 counters: dict | None = None, timeline=None):
        if instructions is None and timeline is None:
            raise ValueError("ProgramCycles needs its instructions or a timeline to build them from")
        self._instructions = instructions
        self._timeline = timeline
        self.stall_probability = stall_probability
        self.counters = {} if counters is None else counters

    @property
    def instructions(self) -> list:
        """:class:`InstrCycles` per executed instruction (built on first use when not given)."""
        if self._instructions is None:
            self._instructions = self._timeline().instructions
        return self._instructions

    def __repr__(self) -> str:
        return f"ProgramCycles(cycles={self.counters.get('cycles')}, stall_probability={self.stall_probability})"

    @property
    def cycles(self) -> int:
        return self.counters["cycles"]

    @property
    def stall_cycles(self) -> int:
        """Cycles the controller waited on the memory port."""
        return sum(self.counters[f"{u}_stall"] for u in CONTROLLER_UNITS)

    @property
    def compute_cycles(self) -> int:
        """Cycles the array unit was busy (``matmul_busy``)."""
        return self.counters["matmul_busy"]

    @property
    def requests(self) -> int:
        return self.counters["bus_reads"] + self.counters["bus_writes"]

    @property
    def expected_extra(self) -> float:
        """Mean of the random extra accept cycles: the mean bound on the error (0 without random stalls)."""
        p = self.stall_probability
        return self.requests * p / (1 - p)

    @property
    def extra_std(self) -> float:
        """Standard deviation of the random extra accept cycles."""
        p = self.stall_probability
        return math.sqrt(self.requests * p) / (1 - p)

    def split(self) -> dict:
        """``cycles`` split into ``compute`` (array busy), ``memory_stall`` (array idle while the controller
        waits on memory) and ``other`` (array idle otherwise: DMA transfers, fetch/decode, STORE)."""
        c = self.counters
        return {"compute": c["matmul_busy"], "memory_stall": c["idle_mem_stall"],
                "other": c["cycles"] - c["matmul_busy"] - c["idle_mem_stall"]}

    def per_opcode(self) -> dict:
        """``{opcode: {"count", "cycles", "stall", "array"}}`` (controller cycles; array-unit cycles)."""
        out = {}
        for ic in self.instructions:
            e = out.setdefault(ic.op, {"count": 0, "cycles": 0, "stall": 0, "array": 0})
            e["count"] += 1
            e["cycles"] += ic.cycles
            e["stall"] += ic.stall_cycles
            e["array"] += ic.array_cycles
        return out


def predict_program(cfg, program, prog_addr: int, memory=None) -> ProgramCycles:
    """:class:`ProgramCycles` of *program* (Instrs ending with HALT) placed at *prog_addr*.

    *memory* is a :class:`~systolic.arch.memory.MemoryModel` (default ``MemoryModel()``).
    """
    from ..arch.memory import MemoryModel

    memory = memory or MemoryModel()
    d, lat = memory_delays(cfg, memory)
    return ProgramCycles(None, memory.stall, program_cycles(cfg, program, prog_addr, d, lat),
                         timeline=lambda: program_timeline(cfg, program, prog_addr, d, lat))


def predict_network(cn, config, memory=None) -> dict:
    """``{layer: ProgramCycles}`` for every accelerated layer of compiled network *cn* (placed as systolic.sim does)."""
    from ..arch.memory import program_address

    prog_addr = program_address(cn.spec.dram_bytes)
    return {s.layer: predict_program(config, s.program, prog_addr, memory)
            for s in cn.steps if hasattr(s, "program")}


def extra_accept_cycles(requests: int, config, memory) -> int:
    """``sum X_k``: the random extra accept cycles of the first *requests* requests of a run on *memory*.

    The simulated memories draw one delay per request from ``memory.delays``
    in request order, so a run with ``n`` requests (``bus_reads +
    bus_writes``) waited exactly this many extra cycles in all.
    """
    base = memory.base_delay(config.bus_bytes)
    it = memory.delays(config.bus_bytes)
    return sum(next(it) - base for _ in range(requests))
