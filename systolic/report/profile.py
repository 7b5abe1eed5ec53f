"""Profile a network on an accelerator: outputs, event counters and cycles per layer.

Two sources of the same numbers:

* ``"rtl"``: every accelerator program runs on the Verilated RTL; counters are
  the hardware's performance counters;
* ``"model"``: the NumPy executor counts events (same definitions as the RTL
  counters) and the analytic cycle model (:mod:`systolic.arch.timing`) gives the
  cycles, which equal the RTL's for a memory without random stalls.

The batch is run in chunks (one simulator process each) with a progress bar.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Profile", "profile_network", "SOURCES"]

SOURCES = ("rtl", "model")


@dataclass
class Profile:
    source: str
    outputs: dict                  #: every tensor of the batch, by name
    counters: dict                 #: per accelerated layer, summed over chunks
    cycles: dict                   #: per accelerated layer: total, compute, stall, other, predicted
    compiled: object               #: the CompiledNetwork of the first chunk (placement, GEMM shapes)
    images: int
    seconds: float
    sim_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def total_cycles(self) -> int:
        return sum(c["total"] for c in self.cycles.values())

    @property
    def predicted_cycles(self) -> int:
        return sum(c["predicted"] for c in self.cycles.values())

    def records(self):
        """Per-layer :class:`~systolic.report.report.LayerRecord` of the whole batch."""
        from .report import records_from_run

        recs = records_from_run(self.compiled, self.counters, self.cycles)
        scale = self.images / self.compiled.batch
        for r in recs:
            if r.gemm:
                r.gemm = (int(round(r.gemm[0] * scale)), *r.gemm[1:])
                r.useful_macs = int(round(r.useful_macs * scale))
        return recs


def _split(busy: dict, total: int) -> dict:
    """Cycles split into compute (array unit busy), memory stall (array idle while the controller waits
    on the memory port) and other (array idle otherwise: DMA transfers, fetch/decode, STORE, start-up)."""
    compute = busy.get("matmul_busy", 0)
    stall = busy.get("idle_mem_stall", 0)
    return {"total": total, "compute": compute, "stall": stall, "other": total - compute - stall}


def profile_network(net, config, x_int, *, source: str = "rtl", memory=None, chunk: int = 32,
                    progress: bool = True, dram_bytes: int = 1 << 18, backend: str | None = None) -> Profile:
    """Run *net* on inputs *x_int* on accelerator *config*; see the module docstring."""
    from tqdm import tqdm

    from ..compiler import MachineSpec, compile_network, run_compiled
    from ..compiler.executor import Executor
    from ..arch.memory import MemoryModel
    from .cycles import predict_network

    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    memory = memory or MemoryModel()
    if source == "model" and memory.stall:
        raise ValueError("the cycle model is exact only without random stalls; use source='rtl' for stall > 0")
    x = net.check_input(x_int)
    n = x.shape[0]
    spec = MachineSpec.from_config(config, dram_bytes=dram_bytes)
    t0 = time.perf_counter()
    outs, counters, cycles, first = {}, {}, {}, None
    sim_s = 0.0
    chunks = [(i, min(n, i + chunk)) for i in range(0, n, chunk)]
    desc = "RTL simulation" if source == "rtl" else "executor + cycle model"
    for lo, hi in tqdm(chunks, desc=desc, unit="chunk", disable=not progress):
        cn = compile_network(net, spec, batch=hi - lo)
        first = first or cn
        predicted = {k: p.counters for k, p in predict_network(cn, config, memory).items()}
        if source == "rtl":
            from ..sim.system import run_network_rtl

            run = run_network_rtl(cn, x[lo:hi], config, memory, backend=backend)
            sim_s += run.seconds
            chunk_outs, chunk_counters = run.outputs, run.counters
            busy = {k: c.rtl for k, c in chunk_counters.items()}
        else:
            chunk_outs, chunk_counters = run_compiled(
                cn, x[lo:hi], accel=lambda spec_, dram, prog: Executor(spec_, dram).run(prog))
            busy = predicted
        for name, v in chunk_outs.items():
            outs.setdefault(name, []).append(v)
        for name, c in chunk_counters.items():
            if name in counters:
                counters[name] += c
            else:
                counters[name] = c
            split = _split(busy[name], busy[name]["cycles"])
            split["predicted"] = predicted[name]["cycles"]
            if name in cycles:
                for k in split:
                    cycles[name][k] += split[k]
            else:
                cycles[name] = split
    outs = {k: np.concatenate(v) for k, v in outs.items()}
    return Profile(source, outs, counters, cycles, first, n, time.perf_counter() - t0, sim_s)
