"""Run a compiled network with the NumPy executor, host layers on the golden model."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .executor import Executor
from .lower import AccelStep, CompiledNetwork, Region

__all__ = ["run_compiled", "run_host_step", "read_outputs", "read_region", "write_region"]


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


def read_outputs(cn: CompiledNetwork, dram: np.ndarray) -> "OrderedDict[str, np.ndarray]":
    """Every tensor of the network (``input`` and each layer), as :meth:`QuantizedNetwork.run` returns them."""
    return OrderedDict((name, read_region(dram, cn.regions[name]))
                       for name in ["input"] + [l.name for l in cn.net.layers])


def run_compiled(cn: CompiledNetwork, x_int, accel=None):
    """Run *cn* on input *x_int*; return (outputs by layer name, per-layer counters).

    ``accel(spec, dram, program) -> counters`` executes one accelerator
    program on the DRAM image in place; the default is the NumPy executor.
    """
    x = cn.net.check_input(x_int)
    if x.shape[0] != cn.batch:
        raise ValueError(f"this program was compiled for batch {cn.batch}, not {x.shape[0]}")
    if accel is None:
        def accel(spec, dram, program):
            return Executor(spec, dram).run(program)
    dram = cn.image.copy()
    write_region(dram, cn.regions["input"], x)
    counters = OrderedDict()
    for step in cn.steps:
        if isinstance(step, AccelStep):
            counters[step.layer] = accel(cn.spec, dram, step.program)
        else:
            run_host_step(cn, dram, step.layer)
    return read_outputs(cn, dram), counters
