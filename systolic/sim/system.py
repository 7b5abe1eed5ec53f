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
layer, the instruction and the reason in the executor's words. *waves*: a
:class:`~systolic.sim.backend.Waves` (a waveform file; :func:`check_waves`
says whether the backend can write it).
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
from .backend import Backend, SystemCounters, Waves

__all__ = ["BACKENDS", "backend_name", "open_backend", "build_backend", "check_waves", "run_program_rtl",
           "run_network_rtl"]

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


def check_waves(waves: Waves | None, backend=None, net=None, config=None, dram_bytes: int = 1 << 18) -> None:
    """Raise ``ValueError`` (one line, before any build) if *backend* cannot write *waves* as asked.

    The amaranth backend writes no waveforms; cocotb traces whole runs only.
    With *net* and *config*, a traced layer must be one of *net*'s layers that
    runs on the accelerator (compiled for a batch of one to see the placement).
    """
    if waves is None:
        return
    if not isinstance(waves, Waves):
        raise TypeError(f"waves must be a Waves, not {waves!r}")
    name = backend_name(backend)
    support = _backend_class(name).waves_support
    if not support:
        raise ValueError(f"the {name} backend writes no waveforms; use --backend direct or cocotb")
    if support == "run" and waves.windowed:
        raise ValueError(f"the {name} backend traces whole runs; --waves-from, --waves-to and --waves-layer "
                         f"need the direct backend")
    if waves.format == "fst":
        from .verilator import check_fst

        check_fst()
    if waves.layer is not None and net is not None:
        names = [l.name for l in net.layers]
        if waves.layer not in names:
            raise ValueError(f"--waves-layer {waves.layer!r} is not a layer of the model; its layers: "
                             f"{', '.join(names)}")
        if config is not None:
            from ..compiler import compile_network

            spec = MachineSpec.from_config(load_config(config), dram_bytes=dram_bytes)
            placement = compile_network(net, spec, batch=1).placement
            if placement[waves.layer] != "accelerator":
                accel = [k for k, v in placement.items() if v == "accelerator"]
                raise ValueError(f"--waves-layer {waves.layer!r} runs on the {placement[waves.layer]}, not on the "
                                 f"accelerator; layers on the accelerator: {', '.join(accel)}")


def open_backend(backend, config, memory: MemoryModel = MemoryModel(), cache_dir=None,
                 waves: Waves | None = None) -> Backend:
    """A started :class:`~systolic.sim.backend.Backend` (use it as a context manager)."""
    check_waves(waves, backend)
    if waves is None:
        return _backend_class(backend)(config, memory, cache_dir)
    return _backend_class(backend)(config, memory, cache_dir, waves=waves)


def build_backend(backend, config, cache_dir=None, waves: Waves | None = None) -> None:
    """Build what *backend* needs for *config* (cached): the Verilator model, the shim (their tracing
    variant for *waves*)."""
    check_waves(waves, backend)
    if waves is None:
        _backend_class(backend).build(load_config(config), cache_dir)
    else:
        _backend_class(backend).build(load_config(config), cache_dir, waves=waves)


def run_program_rtl(config, dram: np.ndarray, program, memory: MemoryModel = MemoryModel(),
                    cache_dir=None, backend=None, waves: Waves | None = None) -> SystemCounters:
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
    with open_backend(backend, config, memory, cache_dir, waves) as be:
        data = be.memory(dram.size, len(blob))
        data[:] = dram
        try:
            return be.run(program, blob)
        finally:
            dram[:] = data


def run_network_rtl(cn, x_int, config, memory: MemoryModel = MemoryModel(), cache_dir=None,
                    backend=None, progress=None, waves: Waves | None = None) -> NetworkRun:
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
    check_waves(waves, backend, cn.net, config, cn.spec.dram_bytes)
    with open_backend(backend, config, memory, cache_dir, waves) as be:
        return run_network(cn, x_int, be, progress)
