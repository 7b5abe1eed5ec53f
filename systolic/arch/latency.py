"""Named latencies of the accelerator's units: the one place their numbers are written.

The Amaranth units (``systolic.hw``) are built from these names where a
number is a parameter of the design (the requantizer's stages, the STORE
pipeline's depth, the DMA's reads in flight, the array's weight-refill
guard), and state in their docstrings, and measure in their unit tests,
the ones that are a consequence of their structure (a memory's read port, a
state of the controller). The cycle model (:mod:`systolic.arch.timing`), the
compiler's schedule choices (:mod:`systolic.compiler.lower`) and the
simulators' hang bounds are written in these names and contain no bare
latency of their own.

Fixed latencies are module constants; those that depend on the array size
are properties of :class:`Latencies` (``config.latencies``).

Plain Python: no amaranth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PRODUCT_STAGES", "SCRATCHPAD_READ", "SCRATCHPAD_WRITE", "ACC_READ", "ACC_UPDATE", "VEC_INPUT", "VEC_LINE",
           "REQUANT_STAGES", "MAX_READS", "DMA_ISSUE", "DECODE_CYCLES", "INTERLOCK_REGISTER", "QUEUE_SLOT",
           "STORE_START", "LOADQ_CHECK", "EVENT_REGISTER", "ERROR_COMMIT", "Latencies", "div_line"]

#: Registers between a PE's operands and its product's add (``hw.pe``): the product of an operand pair
#: arriving in cycle t is added to the partial sum in cycle t + PRODUCT_STAGES. The first is the PE's operand
#: register (the activation's, and the active weight, which takes the shadow with the swap flag), so the
#: multiplier reads flip-flops and no select; the second holds the product, so the route into and out of
#: the multiplier and the add are in different cycles. Every PE of a column lags alike, so the array's
#: latency grows by this much, once.
PRODUCT_STAGES = 2
#: A scratchpad (and the accumulator buffer's STORE port) is an ``amaranth.lib.memory`` with a synchronous
#: read port: the line addressed in cycle t is on the port in cycle t + 1.
SCRATCHPAD_READ = 1
#: A LOAD line is in a scratchpad's memory this many cycles after its write cycle (``load.en``): its bytes,
#: converted and masked, are registered with their enables and address beside the scratchpad
#: (``hw.scratchpad.Scratchpad``), so no cycle runs from the DMA's response across the chip into the block
#: RAM. No cycle can see the difference: the interlock keeps a LOAD from starting until 1 + INTERLOCK_REGISTER
#: cycles after the last read of its lines, and the MATMUL after a LOAD is fetched, decoded and queued (at
#: least DECODE_CYCLES + QUEUE_SLOT + 1 cycles) before it reads a line.
SCRATCHPAD_WRITE = 1
#: The accumulator buffer's STORE / DIV read port: the line addressed in cycle t (as the memory holds it then)
#: is on the port in cycle t + ACC_READ: the memory's synchronous read, then a register after it
#: (``hw.accumulator.AccumulatorBuffer``), so the block RAM's slow clock-to-output drives only wires into a
#: register, not the requantizer's add or the divider's. (The STORE pipeline reads its first line in its
#: start cycle, so a STORE takes no longer for it.)
ACC_READ = 2
#: The accumulator buffer writes an update, and flags its overflow, this many cycles after it is presented:
#: the update is registered (with a copy of its shift per lane), the old line is read, registered, combined
#: with the update, and the result written from a register (``hw.accumulator.AccumulatorBuffer``; no cycle
#: runs from a memory read through an adder into the write, nor from the source select through the shifter).
ACC_UPDATE = 4
#: The accumulator buffer registers a VEC / DIV line before its update pipeline: the line is written, and its
#: overflow flagged, VEC_INPUT + ACC_UPDATE cycles after it is presented (``hw.accumulator.AccVecSignature``).
VEC_INPUT = 1
#: A VEC line goes to the accumulator buffer from the DMA's registered buffer, the cycle after it arrives
#: (``hw.controller.Controller``), so no cycle runs from a memory answer into the accumulator's input register.
VEC_LINE = 1
#: Pipeline stages of one requantizer lane: bias add; rounding shift or saturating left shift; ReLU and
#: saturation (``hw.requantizer.RequantLane``).
REQUANT_STAGES = 3
#: Reads the DMA keeps in flight at most (``hw.dma.Dma``); the memory answers them in order.
MAX_READS = 8
#: The DMA presents a command's first request the cycle after it takes the command (``hw.dma.Dma``).
DMA_ISSUE = 1
#: The controller checks an instruction this many cycles after its last byte arrives: one cycle to load it
#: from the DMA's registered buffer (and multiply its DRAM span's halves), one to decode it (and sum and test
#: the span), one to check it (``hw.controller.Controller``: FETCH_BUF, DECODE, CHECK).
DECODE_CYCLES = 3
#: The LOAD and STORE interlocks' overlap tests (an instruction's line range against every MATMUL queued or in
#: the array unit) are registered (``hw.controller.Controller``): CHECK and HOLD read the test of the cycle
#: before, so such an instruction goes at the earliest 1 + INTERLOCK_REGISTER cycles after the last cycle of
#: its conflict (a MATMUL's last read or write of its lines), and no cycle runs from the compares into the
#: DMA's, the scratchpads' and the STORE pipeline's commands. It is 1 by structure: CHECK reads the test
#: formed in DECODE, the first cycle the instruction register holds the instruction.
INTERLOCK_REGISTER = 1
#: A MATMUL waits this many cycles in the controller's queue slot before an array unit can take it.
QUEUE_SLOT = 1

#: A STORE starts its pipeline this many cycles after it executes (``hw.controller.Controller``: the state
#: STORE_START), so the check and the interlock decide a state, not the pipeline's start.
STORE_START = 1
#: A LOADQ checks its block's shifts this many cycles after the block arrives, from the DMA's registered buffer
#: (``hw.controller.Controller``: LOADQ_CHECK), so no cycle runs from a memory response into the check.
LOADQ_CHECK = 1
#: The performance counters register their events (``hw.counters.PerfCounters``): an event of cycle t is in its
#: counter in cycle t + 1 + EVENT_REGISTER, so no cycle runs from an event's logic (a gathered line's byte count,
#: say) into a 48-bit counter's add. The accelerator's status ports (busy, done, error and its index and
#: argument) lag the controller by as much (``hw.system.Accelerator``), so when the status shows that a run
#: ended, the counters hold every event of it.
EVENT_REGISTER = 1
#: A run that stops on an error writes its error status (code, index, argument) this many cycles after it
#: stops, from registers that hold still then (``hw.controller.Controller``: the error's source is registered,
#: not the 100 bits of status), and ``busy`` covers those cycles; the ``cycles`` counter does not. Runs without
#: an error are not affected.
ERROR_COMMIT = 1


def div_line(acc_bits: int) -> int:
    """DIV: cycles per accumulator line in the controller's divider: the line's read (its data
    :data:`ACC_READ` later), ``acc_bits`` quotient steps, the write into the update pipeline
    (``hw.controller.Controller``: DIV / DIV_STEP / DIV_WRITE)."""
    return ACC_READ + acc_bits + 1


@dataclass(frozen=True)
class Latencies:
    """Latencies of a ``rows x cols`` accelerator that follow from its size (cycles).

    Build it with ``config.latencies`` (or ``MachineSpec.latencies``).
    """

    rows: int
    cols: int

    def __post_init__(self):
        for name in ("rows", "cols"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, not {v!r}")

    # -- the systolic array -----------------------------------------------------------------------
    @property
    def array(self) -> int:
        """From an operand transfer (WS) / the ``last`` transfer of a tile (OS) to its first output vector:
        ``rows`` hops down a column, ``cols - 1`` of de-skew, the PEs' :data:`PRODUCT_STAGES`
        (``hw.array.SystolicArray.latency``)."""
        return self.rows + self.cols - 1 + PRODUCT_STAGES

    @property
    def weight_refill(self) -> int:
        """Weight-stationary: from the cycle a ``swap`` transfer is taken to the first cycle the shadow weights
        accept a row of the next tile: the swap flag must have passed every PE (``rows + cols - 1`` hops), and
        the array's guard counts it down one cycle later."""
        return self.rows + self.cols

    @property
    def weight_push(self) -> int:
        """Cycles to push one weight tile into the shadow registers: one row per cycle."""
        return self.rows

    # -- the array units --------------------------------------------------------------------------
    @property
    def weight_tile_read(self) -> int:
        """Cycles to read a weight tile (``rows`` lines of scratchpad W) into registers: one read per cycle,
        the last one captured :data:`SCRATCHPAD_READ` later."""
        return self.rows + SCRATCHPAD_READ

    @property
    def ws_matmul_period(self) -> int:
        """Weight-stationary: the fewest cycles between the first operand reads of two streamed MATMULs,
        whatever their ``m``: the next tile can be pushed only after the swap (:attr:`weight_refill`, the swap
        transfer itself :data:`SCRATCHPAD_READ` after the feeder's read) and takes :attr:`weight_push`
        cycles. A MATMUL of ``m`` rows streams at full rate when ``m >= ws_matmul_period`` (``2R + C + 1``)."""
        return SCRATCHPAD_READ + self.weight_refill + self.weight_push

    @property
    def ws_writeback(self) -> int:
        """Weight-stationary: from a MATMUL's last operand read to its last accumulator write."""
        return SCRATCHPAD_READ + self.array + ACC_UPDATE

    @property
    def os_fill(self) -> int:
        """Output-stationary: from the first read of a chunk's ``rows`` operand lines (one per cycle into a
        transpose bank, the last captured :data:`SCRATCHPAD_READ` later) to the first cycle it can be stepped."""
        return self.rows + SCRATCHPAD_READ

    @property
    def os_writeback(self) -> int:
        """Output-stationary: from a chunk's last reduction step to its last accumulator write: the array's
        latency, ``rows`` result vectors (bottom row first), the accumulator update."""
        return self.array + self.rows - 1 + ACC_UPDATE

    def os_matmul(self, m: int) -> int:
        """Cycles from taking an output-stationary MATMUL of *m* rows to its last accumulator write when nothing
        else is in the unit: the first chunk's fill, ``ceil(m / rows)`` chunks of ``rows`` steps each (the next
        chunk is read while one is stepped), the write-back (``m == 0``: taken and dropped, 0 cycles)."""
        if m == 0:
            return 0
        return 1 + self.os_fill + math.ceil(m / self.rows) * self.rows - 1 + self.os_writeback

    # -- the STORE pipeline ------------------------------------------------------------------------
    @property
    def store_pipeline(self) -> int:
        """STORE: cycles from reading an accumulator line to handing its bytes to the scatter engine: the
        read port, then the requantizer lanes (``hw.store.StorePipeline``)."""
        return ACC_READ + REQUANT_STAGES
