"""cocotb testbench: runs the GEMM job named by ``$SYSTOLIC_GEMM_JOB`` on ``GemmCore``.

Loaded by the simulator through :func:`systolic.sim.core.rtl.run_gemm_batch`; not a
module to import elsewhere. The job is JSON (config, cases, seed, idle/stall
probabilities, result path); the testbench drives the streams with
:class:`~systolic.sim.core.driver.PassDriver` (random idle input cycles, random
output back-pressure) and writes the results as JSON.

Speed: the clock is a GPI clock, each stream payload
is one packed integer written only when it changes, and the handshake is
sampled once per cycle in the ReadOnly phase.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from systolic.arch.config import AcceleratorConfig
from systolic.arch.ports import streams
from systolic.sim.core.driver import GemmStats, PassDriver, gemm_schedule


class _Port:
    """A write-through cache of one input signal (skip writes of unchanged values)."""

    def __init__(self, handle):
        self.handle = handle
        self.last = None

    def set(self, value):
        if value is not None and value != self.last:
            self.handle.value = value
            self.last = value


@cocotb.test()
async def gemm_job(dut):
    job = json.loads(open(os.environ["SYSTOLIC_GEMM_JOB"]).read())
    cfg = AcceleratorConfig.from_dict(job["config"])
    ws = "w" in streams(cfg)          # a weight stream (weight-stationary)
    rng = random.Random(job["seed"])
    Clock(dut.clk, 10, unit="ns").start()

    i_valid, i_payload = _Port(dut.i__valid), _Port(dut.i__payload)
    o_ready = _Port(dut.o__ready)
    bias, shift, relu = _Port(dut.bias), _Port(dut.shift), _Port(dut.relu)
    w_valid = _Port(dut.w__valid) if ws else None
    w_payload = _Port(dut.w__payload) if ws else None
    for p in (i_valid, i_payload, o_ready, bias, shift, relu) + ((w_valid, w_payload) if ws else ()):
        p.set(0)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    results, stats = [], []
    for case in job["cases"]:
        st = GemmStats()
        sched = gemm_schedule(cfg, case["a"], case["w"], case["bias"], case["shift"], case["relu"])
        try:
            p = next(sched)
            while True:
                bias.set(p.bias_word(cfg))
                shift.set(p.shift_word(cfg))
                relu.set(int(p.relu))
                drv = PassDriver(p, rng, job["idle"], job["stall"])
                while not drv.done:
                    d = drv.drive()
                    i_valid.set(d["i_valid"])
                    i_payload.set(d["i_payload"])
                    if ws:
                        w_valid.set(d["w_valid"])
                        w_payload.set(d["w_payload"])
                    o_ready.set(d["o_ready"])
                    await ReadOnly()
                    o_v = int(dut.o__valid.value)
                    drv.observe(int(dut.i__ready.value), int(dut.w__ready.value) if ws else 0,
                                o_v, dut.o__payload.value.to_unsigned() if o_v else 0)
                    await RisingEdge(dut.clk)
                i_valid.set(0)
                if ws:
                    w_valid.set(0)
                st.cycles += drv.cycles
                st.passes += 1
                st.outputs += len(drv.outputs)
                p = sched.send(drv.outputs)
        except StopIteration as stop:
            results.append(stop.value.tolist())
            stats.append(asdict(st))
    with open(job["result"], "w") as f:
        json.dump({"y": results, "stats": stats}, f)
