"""One interface to the accelerator RTL: a memory image and a program in, a typed result out.

A :class:`Backend` is a :class:`~systolic.compiler.run.ProgramRunner` over
one simulated ``Accelerator`` (the ``system`` top) and its memory: the
direct Verilator driver (:mod:`systolic.sim.direct`), the cocotb testbench
(:mod:`systolic.sim.cocotb_backend`) and amaranth.sim
(:mod:`systolic.sim.amaranth_backend`) implement :meth:`Backend.execute`,
which runs the program already placed in the image and returns a
:class:`RunResult`; everything else (placing the program, the hang bound,
turning the status into counters or a :class:`RTLProgramError`) is here,
once. The table of backends and the public functions are in
:mod:`systolic.sim.system`.

Every backend serves the memory port with the timing of
:class:`~systolic.arch.memory.MemoryModel` and draws its random stalls from
one stream per backend instance, so the same programs on the same model
give the same cycles on every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..arch.config import load_config
from ..arch.isa import INSTR_BYTES, IsaError, Opcode, decode, decode_program
from ..arch.machine import MachineSpec
from ..arch.memory import MemoryModel, program_address
from ..arch.sysmap import ERR_BAD_OPCODE, EXECUTOR_COUNTERS, PC_BITS, error_reason
from ..arch.timing import cycle_bound
from ..compiler.executor import Counters, ProgramError
from ..compiler.run import ProgramRunner
from .build import SimulationError

__all__ = ["RunResult", "SystemCounters", "RTLProgramError", "Backend", "cycle_limit", "counters_from"]


@dataclass(frozen=True)
class RunResult:
    """What one program run on the RTL gives back (its status ports and counters)."""

    done: bool = False              #: finished at HALT without error
    error: int = 0                  #: 0 or an error code of :data:`systolic.arch.sysmap.ERRORS`
    err_index: int = 0              #: the failing instruction (``err_index`` port, unsigned)
    err_arg: int = 0                #: the offending value
    counters: dict = field(default_factory=dict)   #: every counter of :data:`~systolic.arch.sysmap.COUNTERS`
    hang: bool = False              #: no HALT and no error within the cycle limit

    @property
    def cycles(self) -> int:
        return self.counters.get("cycles", 0)


@dataclass
class SystemCounters(Counters):
    """The executor's :class:`Counters` (same events) plus the RTL-only counters.

    ``cycles`` from start to HALT; per unit (``ctrl``, ``load``, ``loadq``,
    ``matmul``, ``store``) busy and stall cycles (``cycles`` is the sum of the
    busy ones); ``fetch_bytes`` (instruction bytes, not in
    ``dram_bytes_read``); ``bus_reads`` / ``bus_writes`` (memory port requests).
    ``by_opcode`` counts the executed instructions of the program.
    """

    rtl: dict = field(default_factory=dict)

    @property
    def cycles(self) -> int:
        return self.rtl.get("cycles", 0)

    def __iadd__(self, other):
        super().__iadd__(other)
        for k, v in getattr(other, "rtl", {}).items():
            self.rtl[k] = self.rtl.get(k, 0) + v
        return self

    def executor_view(self) -> dict:
        return {k: getattr(self, k) for k in EXECUTOR_COUNTERS}


class RTLProgramError(ProgramError):
    """The accelerator RTL stopped with an error status; the message names the instruction and why."""

    def __init__(self, index, instr, reason, code=0, layer=None):
        where = f"layer {layer!r}: " if layer else ""
        if instr is None:
            RuntimeError.__init__(self, f"{where}instruction {index}: {reason}")
        else:
            RuntimeError.__init__(self, f"{where}instruction {index} ({instr.op.name}): {reason}")
        self.index, self.instr, self.reason, self.code, self.layer = index, instr, reason, code, layer


def counters_from(rtl: dict, blob: bytes) -> SystemCounters:
    """The :class:`SystemCounters` of a run of program *blob* that ended with counters *rtl*."""
    c = SystemCounters(**{k: rtl[k] for k in EXECUTOR_COUNTERS}, rtl=dict(rtl))
    # The opcode is the low 4 bits of an instruction's first byte (isa.decode);
    # counted with NumPy, in order of first appearance, unknown opcodes skipped.
    n = min(rtl["instructions"], len(blob) // INSTR_BYTES)
    ops = np.frombuffer(blob, dtype=np.uint8)[:n * INSTR_BYTES:INSTR_BYTES] & 0xF
    values, first, counts = np.unique(ops, return_index=True, return_counts=True)
    for i in np.argsort(first, kind="stable"):
        if int(values[i]) in Opcode._value2member_map_:
            c.by_opcode[Opcode(int(values[i])).name] = int(counts[i])
    return c


def cycle_limit(config, program, memory: MemoryModel, blob: bytes = b"") -> int:
    """A bound no correct run reaches: 4x :func:`~systolic.arch.timing.cycle_bound`, scaled for random stalls.

    *program*: the decoded instructions, or None to decode *blob* (a program
    that does not decode stops at its bad opcode: a bound by its length).
    """
    if program is None:
        try:
            program = decode_program(blob)
        except IsaError:
            return 1_000_000 + 1000 * (len(blob) // INSTR_BYTES)
    base = cycle_bound(config, program, memory.base_delay(config.bus_bytes), memory.latency)
    return int(4 * base / (1 - memory.stall)) + 100_000


class Backend(ProgramRunner):
    """One simulated accelerator and its memory; subclasses implement :meth:`execute` (and may :meth:`build`).

    Use as a context manager (or call :meth:`close`). :meth:`memory` sizes
    the memory image: the data window, then the program area at
    :func:`~systolic.arch.memory.program_address`; :meth:`run` places a
    program there and executes it.
    """

    #: Name in :data:`systolic.sim.system.BACKENDS`.
    name = ""

    def __init__(self, config, memory: MemoryModel = MemoryModel(), cache_dir=None):
        if not isinstance(memory, MemoryModel):
            raise TypeError(f"memory must be a MemoryModel, not {memory!r}")
        self.config = load_config(config)
        self.config.check_system()
        self.model = memory
        self.cache_dir = cache_dir
        self.image = np.zeros(0, dtype=np.uint8)
        self.data_bytes = 0
        self.prog_addr = 0

    @classmethod
    def build(cls, config, cache_dir=None) -> None:
        """Prepare what the backend needs for *config* (cached); nothing by default."""

    # ------------------------------------------------------------------ ProgramRunner
    def memory(self, data_bytes: int, program_bytes: int) -> np.ndarray:
        if not isinstance(data_bytes, int) or data_bytes < 0 or data_bytes >= 1 << 32:
            raise ValueError(f"data_bytes must be an int in [0, 2**32), not {data_bytes!r}")
        self.data_bytes = data_bytes
        self.prog_addr = program_address(data_bytes)
        size = self.prog_addr + max(program_bytes, INSTR_BYTES)
        self.image = self._allocate(size)
        return self.image[:data_bytes]

    def run(self, program, blob: bytes, layer: str | None = None) -> SystemCounters:
        """Execute *blob* (the encoding of *program*, a list of Instr or None) on the memory image."""
        if len(blob) % INSTR_BYTES:
            raise ValueError(f"a program is a whole number of {INSTR_BYTES}-byte instructions, not {len(blob)} bytes")
        if self.prog_addr + len(blob) > self.image.size:
            raise ValueError(f"a {len(blob)}-byte program does not fit the memory image; call memory() with "
                             f"program_bytes >= {len(blob)}")
        self.image[self.prog_addr:self.prog_addr + len(blob)] = np.frombuffer(blob, dtype=np.uint8)
        res = self.execute(blob, program)
        self.check(res, blob, layer)
        return counters_from(res.counters, blob)

    # ------------------------------------------------------------------ for subclasses
    def _allocate(self, size: int) -> np.ndarray:
        """The memory image of *size* bytes (shared with the simulator where it runs elsewhere)."""
        return np.zeros(size, dtype=np.uint8)

    def execute(self, blob: bytes, program) -> RunResult:
        """Run the program placed at :attr:`prog_addr` (``len(blob) // 16`` instructions) on the image."""
        raise NotImplementedError

    def limit(self, blob: bytes, program) -> int:
        return cycle_limit(self.config, program, self.model, blob)

    def check(self, res: RunResult, blob: bytes, layer=None) -> None:
        """Raise for a hang or an error status (:class:`RTLProgramError` in the executor's words)."""
        where = f"layer {layer!r}: " if layer else ""
        if res.hang:
            raise SimulationError(f"{where}the accelerator did not finish (no HALT, no error) within the cycle limit")
        if res.error:
            idx = res.err_index
            if idx >= 1 << (PC_BITS - 1):   # "program ends without HALT" on an empty program
                idx -= 1 << PC_BITS
            instr = None
            if 0 <= idx < len(blob) // INSTR_BYTES and res.error != ERR_BAD_OPCODE:
                instr = decode(int.from_bytes(blob[idx * INSTR_BYTES:(idx + 1) * INSTR_BYTES], "little"))
            spec = MachineSpec.from_config(self.config, dram_bytes=max(1, self.data_bytes))
            reason = error_reason(res.error, res.err_arg, spec, self.data_bytes, instr)
            raise RTLProgramError(idx, instr, reason, res.error, layer)
        if not res.done:
            raise SimulationError(f"{where}the accelerator stopped without HALT or error")

    def close(self) -> None:
        """Release the simulator."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
