"""Run ``GemmCore`` under ``amaranth.sim`` (fast unit tests, no Verilog)."""

from __future__ import annotations

import random

import numpy as np

from ...arch.config import AcceleratorConfig
from ...arch.ports import streams
from .driver import GemmStats, PassDriver, gemm_schedule

__all__ = ["run_gemm_amaranth"]


def apply_drive(ctx, dut, d: dict, ws: bool) -> None:
    """Put one cycle of :meth:`PassDriver.drive` outputs on *dut*'s streams (amaranth.sim testbench)."""
    ctx.set(dut.i.valid, d["i_valid"])
    if d["i_payload"] is not None:
        ctx.set(dut.i.payload.as_value(), d["i_payload"])
    if ws:
        ctx.set(dut.w.valid, d["w_valid"])
        if d["w_payload"] is not None:
            ctx.set(dut.w.payload.as_value(), d["w_payload"])
    ctx.set(dut.o.ready, d["o_ready"])


def run_gemm_amaranth(config: AcceleratorConfig, a, w, bias=None, shift=0, relu=False, *,
                      seed: int = 0, idle: float = 0.0, stall: float = 0.0,
                      stats: GemmStats | None = None) -> np.ndarray:
    """``requantize(a @ w)`` computed by the ``GemmCore`` of *config* in ``amaranth.sim``.

    *idle* / *stall* are the probabilities of an idle input cycle and of a
    not-ready output cycle (random, from *seed*).
    """
    from amaranth.sim import Simulator

    from ...hw.core import GemmCore

    sched = gemm_schedule(config, a, w, bias, shift, relu)
    dut = GemmCore(config=config)
    rng = random.Random(seed)
    result = {}
    stats = stats if stats is not None else GemmStats()
    ws = "w" in streams(config)       # a weight stream (weight-stationary)

    async def testbench(ctx):
        try:
            p = next(sched)
            while True:
                ctx.set(dut.bias.as_value(), p.bias_word(config))
                ctx.set(dut.shift.as_value(), p.shift_word(config))
                ctx.set(dut.relu, int(p.relu))
                drv = PassDriver(p, rng, idle, stall)
                while not drv.done:
                    apply_drive(ctx, dut, drv.drive(), ws)
                    drv.observe(ctx.get(dut.i.ready), ctx.get(dut.w.ready) if ws else 0,
                                ctx.get(dut.o.valid), ctx.get(dut.o.payload.as_value()))
                    await ctx.tick()
                ctx.set(dut.i.valid, 0)
                if ws:
                    ctx.set(dut.w.valid, 0)
                stats.cycles += drv.cycles
                stats.passes += 1
                stats.outputs += len(drv.outputs)
                p = sched.send(drv.outputs)
        except StopIteration as stop:
            result["y"] = stop.value

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return result["y"]
