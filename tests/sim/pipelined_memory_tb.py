"""cocotb testbench of tests/sim/test_pipelined_memory.py: the cocotb MemoryServer serving a PipelinedReader.

Runs the job named by ``$SYSTOLIC_READER_JOB`` (memory model, image); writes
the port, sampled at three quarters of every cycle (after the server's
mid-cycle writes, before the next rising edge), and the final image.
Not collected by pytest (no ``test_`` prefix).
"""

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, Timer

from systolic.sim.cocotb_system import PERIOD, MemoryServer, reset
from systolic.arch.memory import MemoryModel


@cocotb.test()
async def pipelined_reads(dut):
    with open(os.environ["SYSTOLIC_READER_JOB"]) as f:
        job = json.load(f)
    model = MemoryModel(**job["memory"])
    image = np.array(job["image"], dtype=np.uint8)
    Clock(dut.clk, PERIOD, unit="ns").start()
    await reset(dut)
    server = MemoryServer(dut, image, job["bus_bytes"], model)
    cocotb.start_soon(server.serve())
    await FallingEdge(dut.clk)
    dut.start.value = 1
    await Timer(PERIOD, unit="ns")
    dut.start.value = 0
    await Timer(PERIOD // 4 * 1000, unit="ps")
    ports = [getattr(dut, f"bus__{p}") for p in ("req_valid", "req_ready", "req_addr", "req_write",
                                                  "resp_valid", "resp_data")]
    trace, tail = [], model.latency + 4
    while tail:
        trace.append([int(p.value) for p in ports])
        if not int(dut.busy.value):
            tail -= 1
        await Timer(PERIOD, unit="ns")
    assert server.error is None, server.error
    with open(job["result"], "w") as f:
        json.dump({"trace": trace, "image": image.tolist()}, f)
