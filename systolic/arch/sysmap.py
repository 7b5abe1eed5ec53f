"""Host-visible map of the accelerator: counters, error codes, the FPGA top's CSR registers.

Plain Python (no amaranth): the hardware, the simulation hosts, the
reports and the host documentation all read the counter order, the error
codes and the register map from here.
"""

from __future__ import annotations

from ..golden.primitives import MAX_SHIFT

__all__ = ["COUNTERS", "EXECUTOR_COUNTERS", "UNITS", "CONTROLLER_UNITS", "ERRORS", "error_reason", "COUNTER_BITS",
           "CYCLE_COUNTER_BITS", "counter_width", "ERROR_CODE_BITS", "ERROR_ARG_BITS", "PC_BITS", "unpack_counters",
           "csr_map", "CSR_ADDR_BITS", "CSR_READ_LATENCY"]

#: Width of a counter's slot in the ``counters`` port and in the CSR map (8 bytes). The counters themselves
#: are narrower (:func:`counter_width`); the bits above read 0.
COUNTER_BITS = 64
#: Width of the ``cycles`` counter. Every counter stops when ``cycles`` reaches ``2**CYCLE_COUNTER_BITS - 1``
#: (32.6 days of running at 100 MHz), so a counter that reads that many cycles is saturated, and no counter
#: ever wraps around.
CYCLE_COUNTER_BITS = 48


def counter_width(event_max: int) -> int:
    """Bits of a counter whose event adds at most *event_max* per cycle: enough for ``2**CYCLE_COUNTER_BITS - 1``
    cycles of the largest event, so that it cannot wrap before ``cycles`` saturates."""
    if not isinstance(event_max, int) or event_max < 1:
        raise ValueError(f"event_max must be a positive integer, not {event_max!r}")
    width = (((1 << CYCLE_COUNTER_BITS) - 1) * event_max).bit_length()
    if width > COUNTER_BITS:
        raise ValueError(f"a counter of events up to {event_max} per cycle needs {width} bits, more than its "
                         f"{COUNTER_BITS}-bit slot")
    return width


#: Units whose busy / stall cycles are counted. The controller is in exactly
#: one of ``ctrl`` (fetch, decode, check), ``load``, ``loadq``, ``store``,
#: ``vec`` (the vector unit) and ``wait`` (held by an interlock until the array unit is done with what the
#: instruction touches) every cycle of a run, so ``cycles`` is the sum of
#: their ``_busy``; ``matmul_busy`` counts the cycles the array unit is busy,
#: which overlap them.
UNITS = ("ctrl", "load", "loadq", "matmul", "store", "vec", "wait")
#: Units of the controller (every cycle of a run is in exactly one of them).
CONTROLLER_UNITS = ("ctrl", "load", "loadq", "store", "vec", "wait")

#: Counters shared with :class:`systolic.compiler.executor.Counters` (same events).
EXECUTOR_COUNTERS = (
    "instructions", "macs", "dram_bytes_read", "dram_bytes_written",
    "spad_a_reads", "spad_a_writes", "spad_w_reads", "spad_w_writes",
    "acc_reads", "acc_writes", "requant_ops", "vec_ops", "div_ops",
)

#: Every counter, in the order of the ``counters`` port (counter ``i`` is bits
#: ``[64*i, 64*i+64)``). The first, ``cycles``, counts the cycles of a run.
COUNTERS = ("cycles",) + EXECUTOR_COUNTERS + (
    "fetch_bytes",        # instruction bytes fetched (not in dram_bytes_read)
    "bus_reads",          # read requests (bus words) on the memory port
    "bus_writes",         # write requests (bus words) on the memory port
) + tuple(f"{u}_{k}" for u in UNITS for k in ("busy", "stall")) + (
    "idle_mem_stall",     # array unit idle while the controller waits on the memory port
)

#: Width of the ``error`` status port.
ERROR_CODE_BITS = 4
#: Width of the ``err_arg`` status port.
ERROR_ARG_BITS = 64
#: Width of the program counter (``prog_len``, ``err_index``).
PC_BITS = 32

#: Error codes of the ``error`` status port -> reason template. ``{arg}`` is
#: the ``err_arg`` port; the other names come from the instruction and the
#: machine (see :func:`error_reason`).
ERRORS = {
    1: "bad opcode {arg}",
    2: "program ends without HALT",
    3: "DRAM address {arg} is past the end of memory ({dram_bytes} bytes)",
    4: "scratchpad A line {arg} is past the end ({a_lines} lines)",
    5: "scratchpad W line {arg} is past the end ({w_lines} lines)",
    6: "accumulator line {arg} is past the end ({acc_lines} lines)",
    7: "offset {offset} + elems {elems} exceeds the {width}-element line",
    8: "output bits must be between 1 and {out_bits}, not {bits}",
    9: "elems {elems} exceeds the {cols} requantizer lanes",
    10: "value out of the {vbits}-bit {un}signed range",
    11: "accumulator overflow: a value leaves the {acc_bits}-bit range",
    12: "requantizer lane {arg}: shift outside [-{max_shift}, {max_shift}]",
    13: "bad vector op {arg}",
    14: "divisor {arg} is not odd",
}

assert max(ERRORS) < 1 << ERROR_CODE_BITS

ERR_BAD_OPCODE, ERR_NO_HALT, ERR_DRAM, ERR_SPAD_A, ERR_SPAD_W, ERR_ACC, ERR_LINE, ERR_BITS, ERR_ELEMS, \
    ERR_VALUE, ERR_OVERFLOW, ERR_SHIFT, ERR_VEC_OP, ERR_DIVISOR = range(1, 15)


def error_reason(code: int, arg: int, spec, dram_bytes: int, instr=None) -> str:
    """The executor-style reason text of error *code* (``instr`` is the decoded Instr, if any)."""
    if code not in ERRORS:
        return f"unknown error code {code} (argument {arg})"
    a = dict(instr.args) if instr is not None else {}
    target_w = a.get("target", 0) == 1
    fmt = dict(arg=arg, dram_bytes=dram_bytes, a_lines=spec.a_lines, w_lines=spec.w_lines,
               acc_lines=spec.acc_lines, offset=a.get("offset", 0), elems=a.get("elems", 0),
               width=spec.cols if target_w else spec.rows, out_bits=spec.out_bits, bits=a.get("bits", 0),
               cols=spec.cols, vbits=spec.w_bits if target_w else spec.in_bits,
               un="un" if a.get("unsigned") else "", acc_bits=spec.acc_bits, max_shift=MAX_SHIFT)
    return ERRORS[code].format(**fmt)


def unpack_counters(word: int) -> dict:
    """The ``counters`` port read as one integer -> ``{name: value}`` in :data:`COUNTERS` order."""
    mask = (1 << COUNTER_BITS) - 1
    return {name: (int(word) >> (COUNTER_BITS * i)) & mask for i, name in enumerate(COUNTERS)}


#: Byte address width of the FPGA top's CSR port.
CSR_ADDR_BITS = 9
#: Cycles from ``csr_addr`` to its byte on ``csr_rdata`` on the FPGA top's CSR port: the 8-byte word, then the
#: byte, each registered (one wide multiplexer into a single byte register does not route well).
CSR_READ_LATENCY = 2
#: First CSR byte address of the performance counters (8 bytes each, :data:`COUNTERS` order).
CSR_COUNTERS = 0x20
assert CSR_COUNTERS + COUNTER_BITS // 8 * len(COUNTERS) <= 1 << CSR_ADDR_BITS


def csr_map() -> dict[str, tuple[int, int, str]]:
    """The CSR map of the FPGA top (``hw.fpga_top.FpgaTop``): name -> (byte address, bytes, access).

    Multi-byte registers are little-endian. ``counter_<name>`` follow
    :data:`COUNTERS`, 8 bytes each from 0x20.
    """
    regs = {
        "ctrl": (0x00, 1, "W: bit 0 = start (a pulse); R: bit 0 busy, bit 1 done, bits 7:4 error"),
        "prog_addr": (0x04, 4, "RW: byte address of instruction 0"),
        "prog_len": (0x08, 4, "RW: number of instructions"),
        "dram_bytes": (0x0C, 4, "RW: size of the data window [0, dram_bytes)"),
        "err_index": (0x10, 4, "R: index of the failing instruction"),
        "bus_status": (0x14, 4, "R: bit 0 a read, bit 1 a write answered with an AXI error (AXI top; cleared by "
                                "start; 0 on the native-port top)"),
        "err_arg": (0x18, 8, "R: offending value of the error"),
    }
    for i, name in enumerate(COUNTERS):
        regs[f"counter_{name}"] = (CSR_COUNTERS + COUNTER_BITS // 8 * i, COUNTER_BITS // 8, "R: performance counter")
    return regs
