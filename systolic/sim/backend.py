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

:class:`Waves` says where a backend writes a waveform file and what it
traces (a cycle window, one layer's program); :attr:`Backend.waves_support`
says what a backend can do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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

__all__ = ["RunResult", "SystemCounters", "RTLProgramError", "Backend", "Waves", "WAVE_FORMATS", "cycle_limit",
           "counters_from"]

#: Waveform formats: FST (compact; GTKWave, Surfer) unless the file name ends in ``.vcd``.
WAVE_FORMATS = ("fst", "vcd")


def _int_or_none(value, what: str):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a cycle number >= 0, not {value!r}")
    return value


@dataclass(frozen=True)
class Waves:
    """A waveform file to write during a run, and which part of the run to trace.

    *path*: the file, FST unless its name ends in ``.vcd``; its folder must
    exist. *start*, *stop*: trace only the cycles ``start <= c < stop``
    (``stop=None``: to the end); cycle 0 is the first rising clock edge after
    reset, counted over the whole run (every program and batch). *layer*:
    trace only while that layer's program runs (every time it runs); then
    *start* / *stop* count from the rising edge that takes the program's
    ``start`` (cycle 0 of the program).
    """

    path: Path
    start: int = 0
    stop: int | None = None
    layer: str | None = None

    def __post_init__(self):
        if not isinstance(self.path, (str, os.PathLike)) or not str(self.path):
            raise TypeError(f"the waveform file must be a path, not {self.path!r}")
        path = Path(self.path)
        object.__setattr__(self, "path", path)
        if path.is_dir():
            raise ValueError(f"cannot write waveforms to {path}: it is a folder, give a file name (.fst or .vcd)")
        folder = path.parent
        if not folder.is_dir():
            raise ValueError(f"cannot write waveforms to {path}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise ValueError(f"cannot write waveforms to {path}: the folder {folder} is not writable")
        start = _int_or_none(self.start, "the first traced cycle (--waves-from)")
        if start is None:
            object.__setattr__(self, "start", 0)
        stop = _int_or_none(self.stop, "the end of the traced cycles (--waves-to)")
        if stop is not None and stop <= self.start:
            raise ValueError(f"the traced cycles from {self.start} to {stop} are none: --waves-to must be greater "
                             f"than --waves-from")
        if self.layer is not None and (not isinstance(self.layer, str) or not self.layer):
            raise ValueError(f"the traced layer must be a layer name, not {self.layer!r}")

    @property
    def format(self) -> str:
        """``"vcd"`` for a name ending in ``.vcd``, else ``"fst"``."""
        return "vcd" if self.path.suffix.lower() == ".vcd" else "fst"

    @property
    def windowed(self) -> bool:
        """Whether only part of the run is traced (a cycle window or a layer)."""
        return self.start != 0 or self.stop is not None or self.layer is not None


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
    #: Waveforms: ``""`` none, ``"run"`` whole runs only, ``"window"`` also cycle windows and layers.
    waves_support = ""

    def __init__(self, config, memory: MemoryModel = MemoryModel(), cache_dir=None, waves: Waves | None = None):
        if not isinstance(memory, MemoryModel):
            raise TypeError(f"memory must be a MemoryModel, not {memory!r}")
        if waves is not None and not isinstance(waves, Waves):
            raise TypeError(f"waves must be a Waves, not {waves!r}")
        self.config = load_config(config)
        self.config.check_system()
        self.model = memory
        self.cache_dir = cache_dir
        self.waves = waves
        self.image = np.zeros(0, dtype=np.uint8)
        self.data_bytes = 0
        self.prog_addr = 0
        self.layer = None               #: the layer of the program :meth:`execute` runs, if the caller named it
        self.failure = None             #: why the run failed (:meth:`fail`, or an exception leaving ``with``)
        self.interrupted = False        #: left by KeyboardInterrupt (or another non-Exception)

    @classmethod
    def build(cls, config, cache_dir=None, waves: Waves | None = None) -> None:
        """Prepare what the backend needs for *config* (cached); nothing by default."""

    def fail(self, reason: str) -> None:
        """Mark the run as failed (a mismatch found by the caller): a backend keeps what helps to inspect it."""
        if self.failure is None:
            self.failure = reason

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
        self.layer = layer
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

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            if issubclass(exc_type, Exception):
                self.fail(f"{exc_type.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "))
            else:
                self.interrupted = True
        self.close()
