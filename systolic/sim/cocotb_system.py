"""cocotb testbench: runs the job named by ``$SYSTOLIC_SYSTEM_JOB`` on the ``Accelerator``.

Loaded by the simulator through :mod:`systolic.sim.system`; not a module to
import elsewhere. A job (JSON) is either one program on a DRAM image
(``mode: "program"``) or a whole compiled network for a batch
(``mode: "network"``), where this process loops over the steps itself:
accelerator programs on the RTL, host layers (pool, add) on the golden
model in between, all in one simulator process. Arrays travel as ``.npz``
files (read with ``allow_pickle=False``), counters as JSON.

Speed (TOOLCHAIN.md point 8): the clock is a GPI clock and Python wakes only
when the accelerator has a memory request pending or a read answer is due:
the memory model sleeps on ``RisingEdge(req_valid)`` (and on an event while
no answer is queued) and then moves by whole-cycle ``Timer`` steps at
mid-cycle (the falling clock edge), where it writes ``req_ready`` /
``resp_*`` and reads the request, so no write races a rising edge.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict, deque

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.handle import Immediate
from cocotb.simtime import get_sim_time
from cocotb.triggers import Event, FallingEdge, RisingEdge, SimTimeoutError, Timer, with_timeout

from systolic.arch.isa import INSTR_BYTES, encode_program
from systolic.arch.config import AcceleratorConfig
from systolic.arch.sysmap import COUNTER_BITS, COUNTERS
from systolic.arch.memory import MemoryModel, program_address

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


def cycle_limit(cfg, blob: bytes, prog_addr: int, model: MemoryModel) -> int:
    """A bound no correct run reaches: 4x :func:`systolic.arch.timing.cycle_bound`, scaled for random stalls."""
    from systolic.arch.isa import IsaError, decode_program
    from systolic.arch.timing import cycle_bound

    try:
        program = decode_program(blob)
    except IsaError:
        return 1_000_000 + 1000 * (len(blob) // INSTR_BYTES)   # stops at the bad opcode
    base = cycle_bound(cfg, program, model.base_delay(cfg.bus_bytes), model.latency)
    return int(4 * base / (1 - model.stall)) + 100_000


class Host:
    """Writes a program, starts the accelerator and reads its status and counters."""

    def __init__(self, dut, cfg, image: np.ndarray, data_bytes: int, prog_addr: int, server: MemoryServer):
        self.dut, self.cfg, self.image, self.data_bytes = dut, cfg, image, data_bytes
        self.prog_addr, self.server = prog_addr, server

    async def run(self, blob: bytes) -> dict:
        dut = self.dut
        n = len(blob) // INSTR_BYTES
        self.image[self.prog_addr:self.prog_addr + len(blob)] = np.frombuffer(blob, dtype=np.uint8)
        dut.prog_addr.value = self.prog_addr
        dut.prog_len.value = n
        dut.dram_bytes.value = self.data_bytes
        await FallingEdge(dut.clk)
        dut.start.value = 1
        await Timer(PERIOD, unit="ns")
        dut.start.value = 0
        if int(dut.busy.value):
            limit = PERIOD * cycle_limit(self.cfg, blob, self.prog_addr, self.server.model)
            try:
                await with_timeout(FallingEdge(dut.busy), limit, "ns")
            except SimTimeoutError:
                return {"hang": True}
        if self.server.error:
            raise RuntimeError(self.server.error)
        words = int(dut.counters.value)
        mask = (1 << COUNTER_BITS) - 1
        out = {name: (words >> (COUNTER_BITS * i)) & mask for i, name in enumerate(COUNTERS)}
        return {"counters": out, "error": int(dut.error.value), "err_index": int(dut.err_index.value),
                "err_arg": int(dut.err_arg.value), "done": int(dut.done.value)}


async def _reset(dut):
    for name in ("start", "prog_addr", "prog_len", "dram_bytes", "bus__req_ready", "bus__resp_valid",
                 "bus__resp_data"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await Timer(2 * PERIOD, unit="ns")
    await FallingEdge(dut.clk)
    dut.rst.value = 0


@cocotb.test()
async def system_job(dut):
    job_path = os.environ["SYSTOLIC_SYSTEM_JOB"]
    with open(job_path) as f:
        job = json.load(f)
    cfg = AcceleratorConfig.from_dict(job["config"])
    model = MemoryModel(**job["memory"])
    Clock(dut.clk, PERIOD, unit="ns").start()
    await _reset(dut)
    if job["mode"] == "program":
        await _program_job(dut, cfg, model, job)
    else:
        await _network_job(dut, cfg, model, job)


def _image(data_bytes: int, max_prog_bytes: int):
    prog_addr = program_address(data_bytes)
    return np.zeros(prog_addr + max_prog_bytes, dtype=np.uint8), prog_addr


async def _program_job(dut, cfg, model, job):
    with np.load(job["input"], allow_pickle=False) as z:
        dram = z["dram"]
        blob = z["program"].tobytes()
    image, prog_addr = _image(dram.size, len(blob))
    image[:dram.size] = dram
    server = MemoryServer(dut, image, cfg.bus_bytes, model)
    cocotb.start_soon(server.serve())
    res = await Host(dut, cfg, image, dram.size, prog_addr, server).run(blob)
    np.savez(job["output"], dram=image[:dram.size])
    with open(job["result"], "w") as f:
        json.dump(res, f)


async def _network_job(dut, cfg, model, job):
    import time

    from systolic.compiler.lower import AccelStep, compile_network
    from systolic.arch.machine import MachineSpec
    from systolic.compiler.run import read_outputs, run_host_step, write_region
    from systolic.golden import load

    net = load(job["net"])
    spec = MachineSpec.from_config(cfg, dram_bytes=job["dram_bytes"])
    cn = compile_network(net, spec, batch=job["batch"])
    with np.load(job["input"], allow_pickle=False) as z:
        x = net.check_input(z["x"])
    blobs = {s.layer: encode_program(s.program) for s in cn.steps if isinstance(s, AccelStep)}
    image, prog_addr = _image(cn.image.size, max([len(b) for b in blobs.values()] + [16]))
    image[:cn.image.size] = cn.image
    data = image[:cn.image.size]   # a view: host layers and the RTL share the bytes
    write_region(data, cn.regions["input"], x)
    server = MemoryServer(dut, image, cfg.bus_bytes, model)
    cocotb.start_soon(server.serve())
    host = Host(dut, cfg, image, cn.image.size, prog_addr, server)
    layers = OrderedDict()
    failure = None
    for step in cn.steps:
        if isinstance(step, AccelStep):
            t0 = time.perf_counter()
            res = await host.run(blobs[step.layer])
            res["seconds"] = time.perf_counter() - t0
            res["instructions_in_program"] = len(step.program)
            layers[step.layer] = res
            if res.get("hang") or res["error"] or not res["done"]:
                failure = step.layer
                break
        else:
            run_host_step(cn, data, step.layer)
    outs = read_outputs(cn, data) if failure is None else {}
    np.savez(job["output"], **{f"t{i}": v for i, v in enumerate(outs.values())})
    with open(job["result"], "w") as f:
        json.dump({"layers": layers, "failure": failure, "names": list(outs)}, f)
