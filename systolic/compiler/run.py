"""The network loop: a compiled network's steps, accelerator programs on a runner, host layers in between.

One loop serves every way of running a program: the NumPy executor
(:class:`ExecutorRunner`) and the RTL backends of :mod:`systolic.sim` all
implement :class:`ProgramRunner`: they hand the loop the data window of
their memory (which the host layers and the RTL share, no copies) and run
one encoded program on it. :func:`run_network` writes the input, runs each
step in order, stops at the first program error, and reads every tensor
back.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..arch.isa import encode_program
from .executor import Executor
from .lower import AccelStep, CompiledNetwork, Region

__all__ = ["ProgramRunner", "ExecutorRunner", "NetworkRun", "run_network", "run_compiled", "run_host_step",
           "read_outputs", "read_region", "write_region"]


def write_region(dram: np.ndarray, r: Region, values: np.ndarray) -> None:
    v = np.asarray(values, dtype=np.int64)
    if v.shape != r.shape:
        raise ValueError(f"tensor {r.name!r} must have shape {r.shape}, not {v.shape}")
    dram[r.addr:r.addr + r.nbytes] = (v.ravel() & 0xFF).astype(np.uint8)


def read_region(dram: np.ndarray, r: Region) -> np.ndarray:
    raw = dram[r.addr:r.addr + r.nbytes].astype(np.int64)
    if r.qtype is not None and r.qtype.signed:
        raw = np.where(raw >= 128, raw - 256, raw)
    return raw.reshape(r.shape)


def run_host_step(cn: CompiledNetwork, dram: np.ndarray, layer_name: str) -> None:
    """Run host layer *layer_name* on the golden model, reading and writing its tensors in *dram*."""
    layer = cn.net.layer(layer_name)
    ins = [read_region(dram, cn.regions[i]) for i in layer.inputs]
    y = layer.forward(ins, cn.net.in_types(layer), cn.net.rounding)
    # A flatten aliases its input's bytes: nothing to write.
    if cn.regions[layer.name].addr != cn.regions[layer.inputs[0]].addr or len(layer.inputs) > 1:
        write_region(dram, cn.regions[layer.name], y)


def read_outputs(cn: CompiledNetwork, dram: np.ndarray, only=None) -> "OrderedDict[str, np.ndarray]":
    """Every tensor of the network (``input`` and each layer; with *only*, ``input`` and those layers), as
    :meth:`QuantizedNetwork.run` returns them."""
    return OrderedDict((name, read_region(dram, cn.regions[name]))
                       for name in ["input"] + [l.name for l in cn.net.layers]
                       if only is None or name == "input" or name in only)


class ProgramRunner:
    """Runs one accelerator program at a time on its own memory (an executor or an RTL backend).

    :meth:`memory` gives the data window ``[0, data_bytes)`` of that memory (a
    uint8 view the caller fills and reads back in place), with room for a
    program of up to *program_bytes* after it; :meth:`run` executes one
    program on it and returns its counters, or raises a
    :class:`~systolic.compiler.executor.ProgramError` naming the instruction
    (and *layer*, if given) when the accelerator refuses the program.
    """

    def memory(self, data_bytes: int, program_bytes: int) -> np.ndarray:
        raise NotImplementedError

    def run(self, program: list, blob: bytes, layer: str | None = None):
        raise NotImplementedError


class ExecutorRunner(ProgramRunner):
    """The NumPy executor as a :class:`ProgramRunner` (a fresh :class:`Executor` per program)."""

    def __init__(self, spec):
        self.spec = spec
        self.data = None

    def memory(self, data_bytes: int, program_bytes: int) -> np.ndarray:
        self.data = np.zeros(data_bytes, dtype=np.uint8)
        return self.data

    def run(self, program: list, blob: bytes, layer: str | None = None):
        return Executor(self.spec, self.data).run(program)


class _Callback(ProgramRunner):
    """``accel(spec, dram, program) -> counters`` as a :class:`ProgramRunner` (see :func:`run_compiled`)."""

    def __init__(self, spec, accel):
        self.spec, self.accel, self.data = spec, accel, None

    def memory(self, data_bytes: int, program_bytes: int) -> np.ndarray:
        self.data = np.zeros(data_bytes, dtype=np.uint8)
        return self.data

    def run(self, program: list, blob: bytes, layer: str | None = None):
        return self.accel(self.spec, self.data, program)


@dataclass
class NetworkRun:
    """Result of :func:`run_network`."""

    outputs: "OrderedDict[str, np.ndarray]"   #: every tensor (input and each layer), as the golden model's run
    counters: "OrderedDict[str]"              #: per accelerated layer, the runner's counters
    seconds: float                            #: wall time of the whole loop
    sim_seconds: dict                         #: per accelerated layer, wall time inside the runner

    @property
    def cycles(self) -> int:
        """Total ``cycles`` (RTL runners; 0 for the executor, whose counters have no cycles)."""
        return sum(getattr(c, "cycles", 0) for c in self.counters.values())


def run_network(cn: CompiledNetwork, x_int, runner: ProgramRunner, progress=None, only=None,
                golden=None) -> NetworkRun:
    """Run compiled network *cn* on input *x_int* (its batch) with every program on *runner*.

    Host layers run on the golden model on the runner's own memory between
    programs. A program error stops the loop: the runner's ``ProgramError``
    (naming the layer) propagates. *progress*, if given, is called as
    ``progress(layer, counters)`` after each program.

    *only*: run just the layers of this collection of names, each on its inputs as the golden model
    computes them (*golden*: the golden model's tensors of this batch, ``cn.net.run(x_int)``), written into
    memory just before the layer runs; every other layer is skipped, and the outputs are ``input`` and
    these layers.
    """
    x = cn.check_input(x_int)
    if only is not None:
        only = set(only)
        unknown = sorted(only - set(cn.regions) - {"input"})
        if unknown:
            raise ValueError(f"no layer named {', '.join(map(repr, unknown))} in the network")
        if golden is None:
            raise ValueError("running only some layers needs the golden tensors of the batch (golden=...)")
    t0 = time.perf_counter()
    steps = [s for s in cn.steps if only is None or s.layer in only]
    blobs = {s.layer: encode_program(s.program) for s in steps if isinstance(s, AccelStep)}
    data = runner.memory(cn.image.size, max([len(b) for b in blobs.values()] + [0]))
    data[:] = cn.image
    write_region(data, cn.regions["input"], x)
    counters, sim_seconds = OrderedDict(), {}
    for step in steps:
        if only is not None:
            for name in cn.net.layer(step.layer).inputs:
                write_region(data, cn.regions[name], golden[name])
        if isinstance(step, AccelStep):
            t1 = time.perf_counter()
            counters[step.layer] = runner.run(step.program, blobs[step.layer], layer=step.layer)
            sim_seconds[step.layer] = time.perf_counter() - t1
            if progress is not None:
                progress(step.layer, counters[step.layer])
        else:
            run_host_step(cn, data, step.layer)
    return NetworkRun(read_outputs(cn, data, only), counters, time.perf_counter() - t0, sim_seconds)


def run_compiled(cn: CompiledNetwork, x_int, accel=None):
    """Run *cn* on input *x_int*; return (outputs by layer name, per-layer counters).

    ``accel(spec, dram, program) -> counters`` executes one accelerator
    program on the DRAM image in place; the default is the NumPy executor.
    """
    runner = ExecutorRunner(cn.spec) if accel is None else _Callback(cn.spec, accel)
    run = run_network(cn, x_int, runner)
    return run.outputs, run.counters
