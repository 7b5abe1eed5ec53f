"""Run programs and whole networks on the accelerator RTL, on any backend.

- :func:`run_program_rtl` executes one program on a DRAM image in place and
  returns its counters; it has the signature of the ``accel`` callback of
  :func:`systolic.compiler.run_compiled`.
- :func:`run_network_rtl` runs a whole compiled network for a batch on one
  simulated accelerator (one simulator process), host layers on the golden
  model in between: :func:`systolic.compiler.run.run_network` on a backend.

Both take a :class:`~systolic.arch.memory.MemoryModel` (latency, bytes per
cycle, random stalls with a seed) and a *backend* from :data:`BACKENDS`:
``"direct"`` (the default, or ``$SYSTOLIC_SIM_BACKEND``): the Verilated model
driven from C++, no Python per cycle; ``"cocotb"``: the cocotb testbench;
``"amaranth"``: amaranth.sim, no build, slow. All serve memory with the same
cycle timing and return the same results (docs/simulation.md). A program
the hardware refuses raises :class:`~systolic.sim.backend.RTLProgramError`
(a :class:`~systolic.compiler.executor.ProgramError`) whose message names the
layer, the instruction and the reason in the executor's words.
"""

from __future__ import annotations

import importlib
import os

import numpy as np

from ..arch.config import load_config
from ..arch.isa import encode_program
from ..arch.machine import MachineSpec
from ..arch.memory import MemoryModel
from ..compiler.run import NetworkRun, run_network
from .backend import Backend, SystemCounters

__all__ = ["BACKENDS", "backend_name", "open_backend", "build_backend", "run_program_rtl", "run_network_rtl"]

#: Backend name -> "module:class" (imported on use: cocotb loads only when asked for).
BACKENDS = {
    "direct": "systolic.sim.direct:DirectBackend",
    "cocotb": "systolic.sim.cocotb_backend:CocotbBackend",
    "amaranth": "systolic.sim.amaranth_backend:AmaranthBackend",
}


def backend_name(backend=None) -> str:
    """*backend*, or ``$SYSTOLIC_SIM_BACKEND``, or ``"direct"``; checked against :data:`BACKENDS`."""
    backend = backend or os.environ.get("SYSTOLIC_SIM_BACKEND") or "direct"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    return backend


def _backend_class(backend) -> type[Backend]:
    module, cls = BACKENDS[backend_name(backend)].split(":")
    return getattr(importlib.import_module(module), cls)


def open_backend(backend, config, memory: MemoryModel = MemoryModel(), cache_dir=None) -> Backend:
    """A started :class:`~systolic.sim.backend.Backend` (use it as a context manager)."""
    return _backend_class(backend)(config, memory, cache_dir)


def build_backend(backend, config, cache_dir=None) -> None:
    """Build what *backend* needs for *config* (cached): the Verilator model, the shim."""
    _backend_class(backend).build(load_config(config), cache_dir)


def run_program_rtl(config, dram: np.ndarray, program, memory: MemoryModel = MemoryModel(),
                    cache_dir=None, backend=None) -> SystemCounters:
    """Execute *program* (list of Instr, or encoded bytes) on the RTL; *dram* is updated in place.

    The program is placed after the data window ``[0, dram.size)``; LOAD /
    LOADQ / STORE may touch only that window. Raises
    :class:`~systolic.sim.backend.RTLProgramError` when the hardware reports
    an error. Usable as ``accel`` of :func:`~systolic.compiler.run_compiled`
    via ``lambda spec, dram, prog: run_program_rtl(cfg, dram, prog)``.
    """
    if not isinstance(dram, np.ndarray) or dram.dtype != np.uint8 or dram.ndim != 1:
        raise TypeError("dram must be a 1-D uint8 array")
    if isinstance(program, (bytes, bytearray)):
        blob, program = bytes(program), None
    else:
        blob = encode_program(program)
    with open_backend(backend, config, memory, cache_dir) as be:
        data = be.memory(dram.size, len(blob))
        data[:] = dram
        try:
            return be.run(program, blob)
        finally:
            dram[:] = data


def run_network_rtl(cn, x_int, config, memory: MemoryModel = MemoryModel(), cache_dir=None,
                    backend=None, progress=None) -> NetworkRun:
    """Run compiled network *cn* on input *x_int* with every accelerator program on the RTL.

    One simulated accelerator runs the whole batch; host layers run on the
    golden model between programs. *cn* must have been compiled for
    ``MachineSpec.from_config(config, ...)``. *progress*: called as
    ``progress(layer, counters)`` after each program.
    """
    config = load_config(config)
    spec = MachineSpec.from_config(config, dram_bytes=cn.spec.dram_bytes)
    if spec != cn.spec:
        raise ValueError(f"the network was compiled for {cn.spec}, not for this config ({spec})")
    cn.check_input(x_int)
    with open_backend(backend, config, memory, cache_dir) as be:
        return run_network(cn, x_int, be, progress)
