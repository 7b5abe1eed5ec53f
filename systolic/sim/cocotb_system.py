"""cocotb testbench of the ``Accelerator``: a program server for :class:`systolic.sim.cocotb_backend.CocotbBackend`.

Loaded by the simulator (``$SYSTOLIC_SYSTEM_JOB`` names the job: config,
memory model, the host's port); not a module to import elsewhere. The test
connects to the host process over a local socket, says which process it
runs in (``{"pid": ...}``, so the host can stop it on Ctrl-C) and serves
its commands, one JSON line each, until ``quit`` (or the host goes away): ``memory``
opens the memory image the host shares as a file (``np.memmap``), ``run``
starts the program the host placed in it and answers with the run's status
and counters. The simulation stands still while the testbench waits for a
command; the memory model (and its random stalls) goes on from run to run.

Speed: the clock is a GPI clock and Python wakes only
when the accelerator has a memory request pending or a read answer is due:
the memory model sleeps on ``RisingEdge(req_valid)`` (and on an event while
no answer is queued) and then moves by whole-cycle ``Timer`` steps at
mid-cycle (the falling clock edge), where it writes ``req_ready`` /
``resp_*`` and reads the request, so no write races a rising edge.
"""

from __future__ import annotations

import json
import os
import socket
from collections import deque

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.handle import Immediate
from cocotb.simtime import get_sim_time
from cocotb.triggers import Event, FallingEdge, RisingEdge, SimTimeoutError, Timer, with_timeout

from systolic.arch.config import AcceleratorConfig
from systolic.arch.memory import MemoryModel
from systolic.arch.sysmap import unpack_counters

PERIOD = 10  # ns


class MemoryServer:
    """The memory model behind the port (timing: :class:`systolic.arch.memory.MemoryModel`).

    Two coroutines: :meth:`serve` accepts requests one at a time and serves
    them on the image; an accepted read goes into a queue of answers, which
    :meth:`answer` (started by :meth:`serve`) puts on ``resp_*`` ``latency``
    cycles after the accepting cycle, so requests go on while reads wait.
    """

    def __init__(self, dut, image: np.ndarray, bus_bytes: int, model: MemoryModel):
        self.dut, self.image, self.bb, self.model = dut, image, bus_bytes, model
        self.delays = model.delays(bus_bytes)
        self.error = None
        self.pending = deque()   # (cycle due, data) of accepted reads, in order
        self.new_read = Event()

    @staticmethod
    def _waiter():
        """``wait(cycles)``: a Timer of that many cycles, reused; one per coroutine, since a
        Timer awaited by two coroutines at once wakes both when the first await ends."""
        waits = {}

        def wait(cycles):
            t = waits.get(cycles)
            if t is None:
                t = waits[cycles] = Timer(cycles * PERIOD, unit="ns")
            return t

        return wait

    @staticmethod
    def _cycle() -> int:
        return int(get_sim_time("ns")) // PERIOD

    async def serve(self):
        dut, bb = self.dut, self.bb
        valid, ready = dut.bus__req_valid, dut.bus__req_ready
        req_addr, req_write = dut.bus__req_addr, dut.bus__req_write
        latency, pending, new_read, wait = self.model.latency, self.pending, self.new_read, self._waiter()
        # Writes happen at mid-cycle, half a period from any clock edge, so they
        # may be applied at once (Immediate): no ReadWrite phase per write.
        one, zero = Immediate(1), Immediate(0)
        period = Timer(PERIOD, unit="ns")

        await FallingEdge(dut.clk)
        cocotb.start_soon(self.answer())
        while True:
            if not valid.value:
                await RisingEdge(valid)
                await FallingEdge(dut.clk)
            d = next(self.delays)
            if d:
                await wait(d)
            ready.value = one
            due = self._cycle() + latency
            addr = int(req_addr.value)
            write = int(req_write.value)
            if write:
                data = int(dut.bus__req_wdata.value)
                strb = int(dut.bus__req_wstrb.value)
            await period   # the rising edge in between took the request
            ready.value = zero
            img = self.image
            if addr + bb > img.size:
                self.error = f"memory access at byte {addr} past the end of the {img.size}-byte memory"
                return
            if write:
                if strb == (1 << bb) - 1:
                    img[addr:addr + bb] = np.frombuffer(data.to_bytes(bb, "little"), dtype=np.uint8)
                else:
                    raw = data.to_bytes(bb, "little")
                    for j in range(bb):
                        if strb >> j & 1:
                            img[addr + j] = raw[j]
            else:
                pending.append((due, int.from_bytes(img[addr:addr + bb].tobytes(), "little")))
                new_read.set()

    async def answer(self):
        """Put each queued read on ``resp_*`` (for one cycle) in the cycle it is due."""
        resp_valid, resp_data = self.dut.bus__resp_valid, self.dut.bus__resp_data
        pending, new_read, wait = self.pending, self.new_read, self._waiter()
        one, zero = Immediate(1), Immediate(0)
        period = Timer(PERIOD, unit="ns")
        while True:
            if not pending:
                new_read.clear()
                await new_read.wait()
            due, data = pending[0]
            now = self._cycle()
            if due > now:
                await wait(due - now)
            pending.popleft()
            resp_data.value = Immediate(data)
            resp_valid.value = one
            await period
            # A read accepted in the cycle before may be due now (it is queued at
            # this same falling edge, before or after this point: both work).
            if not pending or pending[0][0] != self._cycle():
                resp_valid.value = zero


class Host:
    """Starts a program placed in the image and reads the accelerator's status and counters."""

    def __init__(self, dut, server: MemoryServer):
        self.dut, self.server = dut, server

    async def run(self, prog_addr: int, n: int, data_bytes: int, limit: int) -> dict:
        dut = self.dut
        dut.prog_addr.value = prog_addr
        dut.prog_len.value = n
        dut.dram_bytes.value = data_bytes
        await FallingEdge(dut.clk)
        dut.start.value = 1
        await Timer(PERIOD, unit="ns")
        dut.start.value = 0
        if int(dut.busy.value):
            try:
                await with_timeout(FallingEdge(dut.busy), PERIOD * limit, "ns")
            except SimTimeoutError:
                return {"hang": True}
        if self.server.error:
            return {"memory_error": self.server.error}
        return {"counters": unpack_counters(int(dut.counters.value)), "error": int(dut.error.value),
                "err_index": int(dut.err_index.value), "err_arg": int(dut.err_arg.value),
                "done": bool(int(dut.done.value))}


async def reset(dut):
    """Hold ``rst`` for two cycles with every input of the accelerator low."""
    for name in ("start", "prog_addr", "prog_len", "dram_bytes", "bus__req_ready", "bus__resp_valid",
                 "bus__resp_data"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await Timer(2 * PERIOD, unit="ns")
    await FallingEdge(dut.clk)
    dut.rst.value = 0


@cocotb.test()
async def system_job(dut):
    with open(os.environ["SYSTOLIC_SYSTEM_JOB"]) as f:
        job = json.load(f)
    cfg = AcceleratorConfig.from_dict(job["config"])
    model = MemoryModel(**job["memory"])
    Clock(dut.clk, PERIOD, unit="ns").start()
    await reset(dut)
    server = MemoryServer(dut, np.zeros(0, dtype=np.uint8), cfg.bus_bytes, model)
    cocotb.start_soon(server.serve())
    host = Host(dut, server)
    with socket.create_connection(("127.0.0.1", job["port"]), timeout=60) as conn:
        conn.settimeout(None)       # between programs the host may take its time (host layers)
        stream = conn.makefile("rw")
        stream.write(json.dumps({"pid": os.getpid()}) + "\n")     # the simulator's process (stopped on Ctrl-C)
        stream.flush()
        for line in stream:
            cmd = json.loads(line)
            if cmd["cmd"] == "memory":
                server.image = np.memmap(cmd["path"], dtype=np.uint8, mode="r+", shape=(cmd["size"],))
                reply = {"ok": True}
            elif cmd["cmd"] == "run":
                reply = await host.run(cmd["prog_addr"], cmd["n"], cmd["data_bytes"], cmd["limit"])
            else:
                break
            stream.write(json.dumps(reply) + "\n")
            stream.flush()
