"""The accelerator under amaranth.sim: a :class:`~systolic.sim.backend.Backend` that needs no build.

Slow (a few thousand cycles per second) but needs no C++ build: the unit
tests use it for short programs; whole networks run on Verilator. Each
program runs in a fresh simulation of the ``Accelerator`` (its hardware
state starts from reset, as it may: a program's results never depend on
what an earlier program left in the scratchpads or the accumulator); the
memory's random-stall stream goes on from program to program, as in the
other backends.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..arch.isa import INSTR_BYTES, encode_program
from ..arch.memory import MemoryModel
from ..arch.sysmap import unpack_counters
from .backend import Backend, RunResult

__all__ = ["SimMemory", "AmaranthBackend", "run_program_amaranth"]


class SimMemory:
    """The memory behind a :func:`~systolic.hw.dma.MemPortSignature` port in an amaranth.sim testbench.

    Timing of :class:`~systolic.arch.memory.MemoryModel`, pipelined reads
    included: call :meth:`cycle` once per clock cycle, before
    ``await ctx.tick()``; it drives ``req_ready`` and ``resp_*`` for that
    cycle and serves an accepted request on *image* (a uint8 array, used in
    place). A read accepted in cycle ``t`` is answered in cycle
    ``t + latency`` through a queue, so requests go on while reads wait.
    """

    def __init__(self, bus, image: np.ndarray, bus_bytes: int, memory: MemoryModel = MemoryModel(), delays=None):
        self.bus, self.image, self.bb, self.memory = bus, image, bus_bytes, memory
        self.delays = memory.delays(bus_bytes) if delays is None else delays
        self.d, self.waited = None, 0    # the current request's accept delay, drawn when it first shows
        self.pending = deque()   # (cycle due, data) of accepted reads, in order
        self.now = 0             # cycles served so far

    def cycle(self, ctx):
        bus, bb, image = self.bus, self.bb, self.image
        now, self.now = self.now, self.now + 1
        # Response of an accepted read.
        if self.pending and self.pending[0][0] == now:
            ctx.set(bus.resp_valid, 1)
            ctx.set(bus.resp_data, self.pending.popleft()[1])
        else:
            ctx.set(bus.resp_valid, 0)
        accept = False
        if ctx.get(bus.req_valid):
            if self.d is None:
                self.d = next(self.delays)
            if self.waited >= self.d:
                accept = True
            else:
                self.waited += 1
        ctx.set(bus.req_ready, int(accept))
        if accept:
            addr = ctx.get(bus.req_addr)
            if addr + bb > image.size:
                raise RuntimeError(f"memory access at {addr} past the end of the {image.size}-byte memory")
            if ctx.get(bus.req_write):
                data, strb = ctx.get(bus.req_wdata), ctx.get(bus.req_wstrb)
                for j in range(bb):
                    if strb >> j & 1:
                        image[addr + j] = (data >> (8 * j)) & 0xFF
            else:
                self.pending.append((now + self.memory.latency,
                                     int.from_bytes(image[addr:addr + bb].tobytes(), "little")))
            self.waited, self.d = 0, None

    def idle(self, ctx):
        """Drive the port's inputs low (between runs)."""
        ctx.set(self.bus.req_ready, 0)
        ctx.set(self.bus.resp_valid, 0)


class AmaranthBackend(Backend):
    """The ``Accelerator`` under amaranth.sim (see the module docstring)."""

    name = "amaranth"

    def __init__(self, config, memory: MemoryModel = MemoryModel(), cache_dir=None):
        super().__init__(config, memory, cache_dir)
        self.delays = memory.delays(self.config.bus_bytes)

    def execute(self, blob: bytes, program) -> RunResult:
        from amaranth.sim import Simulator

        from ..hw.system import Accelerator

        dut = Accelerator(config=self.config)
        mem = SimMemory(dut.bus, self.image, self.config.bus_bytes, self.model, self.delays)
        limit = self.limit(blob, program)
        result = {}

        async def bench(ctx):
            ctx.set(dut.prog_addr, self.prog_addr)
            ctx.set(dut.prog_len, len(blob) // INSTR_BYTES)
            ctx.set(dut.dram_bytes, self.data_bytes)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 0
            while ctx.get(dut.busy):
                cycles += 1
                if cycles > limit:
                    result["hang"] = True
                    return
                mem.cycle(ctx)
                await ctx.tick()
            mem.idle(ctx)
            result.update(done=bool(ctx.get(dut.done)), error=ctx.get(dut.error), err_index=ctx.get(dut.err_index),
                          err_arg=ctx.get(dut.err_arg), counters=unpack_counters(ctx.get(dut.counters.as_value())))

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.run()
        return RunResult(**result)


def run_program_amaranth(config, dram: np.ndarray, program, memory: MemoryModel = MemoryModel()) -> RunResult:
    """Execute *program* (Instrs or encoded bytes) on *dram* in place under amaranth.sim; its :class:`RunResult`
    (status and counters, no exception for an error status: the unit tests look at the status itself)."""
    blob = bytes(program) if isinstance(program, (bytes, bytearray)) else encode_program(program)
    with AmaranthBackend(config, memory) as be:
        data = be.memory(dram.size, len(blob))
        data[:] = dram
        be.image[be.prog_addr:be.prog_addr + len(blob)] = np.frombuffer(blob, dtype=np.uint8)
        res = be.execute(blob, None if isinstance(program, (bytes, bytearray)) else program)
        dram[:] = data
    return res
