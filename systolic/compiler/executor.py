"""NumPy executor: runs a Program instruction by instruction.

It implements docs/isa.md with the golden model's arithmetic, so a compiled
network that disagrees with the golden model here is a compiler bug, and one
that agrees here but not on RTL is a hardware bug. Every address and value is
checked: a bad program raises :class:`ProgramError` naming the instruction,
never wraps or truncates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..golden.ops import requantize
from ..golden.pe_weights import word_weights
from ..golden.primitives import MAX_SHIFT
from ..golden.qtypes import QType
from ..arch.isa import BIAS_BYTES, Instr, Opcode, Target, VecOp
from ..arch.machine import MachineSpec

__all__ = ["Executor", "ProgramError", "Counters"]


class ProgramError(RuntimeError):
    """A program did something the accelerator refuses (the hardware's error status)."""

    def __init__(self, index: int, instr: Instr, reason: str):
        super().__init__(f"instruction {index} ({instr.op.name}): {reason}")
        self.index, self.instr, self.reason = index, instr, reason


@dataclass
class Counters:
    """Event counts of one program run: the contract shared with the RTL's performance counters.

    Scratchpad and accumulator counts are in lines (one access of a whole
    ``rows`` / ``cols`` wide line); ``macs`` counts the array's
    multiply-accumulates including zero padding of partial tiles;
    ``requant_ops`` counts elements through the requantizer lanes, ``vec_ops`` elements combined by the
    vector unit (VEC), ``div_ops`` elements divided (DIV).
    """

    instructions: int = 0
    macs: int = 0
    dram_bytes_read: int = 0
    dram_bytes_written: int = 0
    spad_a_reads: int = 0
    spad_a_writes: int = 0
    spad_w_reads: int = 0
    spad_w_writes: int = 0
    acc_reads: int = 0
    acc_writes: int = 0
    requant_ops: int = 0
    vec_ops: int = 0
    div_ops: int = 0
    by_opcode: dict = field(default_factory=dict)

    def __iadd__(self, other: "Counters") -> "Counters":
        # Only this class's event fields: subclasses add their own (e.g. the RTL-only counters).
        for name in Counters.__dataclass_fields__:
            if name == "by_opcode":
                for k, v in other.by_opcode.items():
                    self.by_opcode[k] = self.by_opcode.get(k, 0) + v
            else:
                setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def to_dict(self) -> dict:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


def _to_signed_bytes(raw: np.ndarray, unsigned: bool) -> np.ndarray:
    v = raw.astype(np.int64)
    return v if unsigned else np.where(v >= 128, v - 256, v)


def _dram_index(a: dict) -> np.ndarray:
    """``(lines, elems)`` DRAM addresses of a 2-D transfer's fields: ``dram + i*stride + c``."""
    return a["dram"] + a["stride"] * np.arange(a["lines"])[:, None] + np.arange(a["elems"])[None, :]


class Executor:
    """The architectural state of one accelerator and a NumPy interpreter of its ISA."""

    def __init__(self, spec: MachineSpec, dram: np.ndarray):
        if not isinstance(dram, np.ndarray) or dram.dtype != np.uint8 or dram.ndim != 1:
            raise TypeError("dram must be a 1-D uint8 array")
        self.spec = spec
        self.dram = dram
        self.spad_a = np.zeros((spec.a_lines, spec.rows), dtype=np.int64)
        self.spad_w = np.zeros((spec.w_lines, spec.cols), dtype=np.int64)
        self.acc = np.zeros((spec.acc_lines, spec.cols), dtype=np.int64)
        self.bias = np.zeros(spec.cols, dtype=np.int64)
        self.shift = np.zeros(spec.cols, dtype=np.int64)
        self.out_max = None         # the LOADQ's upper clamp of the STOREs (None: no clamp)
        self.counters = Counters()

    # ------------------------------------------------------------------ checks
    def _dram_range(self, i, ins, start, lines, stride, elems):
        if lines == 0 or elems == 0:
            return
        end = start + (lines - 1) * stride + elems
        if end > self.dram.size:
            raise ProgramError(i, ins, f"DRAM address {end - 1} is past the end of memory ({self.dram.size} bytes)")

    def _lanes(self, i, ins, elems):
        if elems > self.spec.cols:
            raise ProgramError(i, ins, f"elems {elems} exceeds the {self.spec.cols} requantizer lanes")

    def _lines(self, i, ins, what, start, count, cap):
        if start + count > cap:
            raise ProgramError(i, ins, f"{what} line {start + count - 1} is past the end ({cap} lines)")

    # ----------------------------------------------------------------- execute
    def run(self, program) -> Counters:
        """Execute *program* (a list of :class:`Instr`) until HALT."""
        for i, ins in enumerate(program):
            self.counters.instructions += 1
            self.counters.by_opcode[ins.op.name] = self.counters.by_opcode.get(ins.op.name, 0) + 1
            if ins.op == Opcode.HALT:
                return self.counters
            getattr(self, f"_op_{ins.op.name.lower()}")(i, ins)
        raise ProgramError(len(program) - 1, program[-1] if program else Instr(Opcode.HALT),
                           "program ends without HALT")

    def _op_fence(self, i, ins):
        pass  # the executor is sequential

    def _op_load(self, i, ins):
        a = ins.args
        tgt = Target(a["target"])
        spad, width, bits = (self.spad_a, self.spec.rows, self.spec.in_bits) if tgt == Target.A else \
            (self.spad_w, self.spec.cols, self.spec.w_bits)
        name = "scratchpad A" if tgt == Target.A else "scratchpad W"
        self._lines(i, ins, name, a["spad"], a["lines"], spad.shape[0])
        if a["offset"] + a["elems"] > width:
            raise ProgramError(i, ins, f"offset {a['offset']} + elems {a['elems']} exceeds the {width}-element line")
        self._dram_range(i, ins, a["dram"], a["lines"], a["stride"], a["elems"])
        rows = slice(a["spad"], a["spad"] + a["lines"])
        if a["zero"]:
            spad[rows] = 0
        if a["elems"]:
            idx = _dram_index(a)
            vals = _to_signed_bytes(self.dram[idx], bool(a["unsigned"]))
            lo, hi = QType.range_of(bits, not a["unsigned"])
            if vals.size and (vals.min() < lo or vals.max() > hi):
                raise ProgramError(i, ins, f"value out of the {bits}-bit {'un' if a['unsigned'] else ''}signed range")
            spad[rows, a["offset"]:a["offset"] + a["elems"]] = vals
            self.counters.dram_bytes_read += vals.size
        if tgt == Target.A:
            self.counters.spad_a_writes += a["lines"]
        else:
            self.counters.spad_w_writes += a["lines"]

    def _op_loadq(self, i, ins):
        c, n = self.spec.cols, self.spec.loadq_bytes
        start = ins.args["dram"]
        self._dram_range(i, ins, start, 1, 0, n)
        raw = self.dram[start:start + n]
        shift = raw[BIAS_BYTES * c:].view(np.int8).astype(np.int64)
        bad = np.flatnonzero(np.abs(shift) > MAX_SHIFT)
        if bad.size:      # the golden requantizer's range: refused here, before any STORE uses it
            raise ProgramError(i, ins, f"requantizer lane {bad[0]}: shift outside [-{MAX_SHIFT}, {MAX_SHIFT}]")
        self.bias = raw[:BIAS_BYTES * c].view("<i4").astype(np.int64)
        self.shift = shift
        self.out_max = ins.args["out_max"] if ins.args["clamp"] else None
        self.counters.dram_bytes_read += n

    def _check_acc(self, i, ins, new):
        lo, hi = QType.range_of(self.spec.acc_bits, True)
        if new.size and (new.min() < lo or new.max() > hi):
            raise ProgramError(i, ins, f"accumulator overflow: a value leaves the {self.spec.acc_bits}-bit range")

    def _op_vec(self, i, ins):
        a = ins.args
        if a["op"] not in VecOp._value2member_map_:
            raise ProgramError(i, ins, f"bad vector op {a['op']}")
        self._lines(i, ins, "accumulator", a["acc"], a["lines"], self.spec.acc_lines)
        self._lanes(i, ins, a["elems"])
        self._dram_range(i, ins, a["dram"], a["lines"], a["stride"], a["elems"])
        if not (a["lines"] and a["elems"]):
            return
        e = a["elems"]
        idx = _dram_index(a)
        v = np.left_shift(_to_signed_bytes(self.dram[idx], bool(a["unsigned"])), a["shift"])
        dst = (slice(a["acc"], a["acc"] + a["lines"]), slice(0, e))
        old = self.acc[dst]
        new = {VecOp.SET: v, VecOp.ADD: old + v, VecOp.MAX: np.maximum(old, v)}[VecOp(a["op"])]
        self._check_acc(i, ins, new)
        self.acc[dst] = new
        self.counters.dram_bytes_read += new.size
        # (a SET of whole lines does not read them)
        self.counters.acc_reads += a["lines"] if (a["op"] != VecOp.SET or e < self.spec.cols) else 0
        self.counters.acc_writes += a["lines"]
        self.counters.vec_ops += new.size

    def _op_div(self, i, ins):
        a = ins.args
        d = a["divisor"]
        if d % 2 == 0:
            raise ProgramError(i, ins, f"divisor {d} is not odd")
        self._lines(i, ins, "accumulator", a["acc"], a["lines"], self.spec.acc_lines)
        self._lanes(i, ins, a["elems"])
        if not (a["lines"] and a["elems"]):
            return
        dst = (slice(a["acc"], a["acc"] + a["lines"]), slice(0, a["elems"]))
        q, r = np.divmod(self.acc[dst], d)            # floor division: 0 <= r < d
        new = 4 * q + 2 * (2 * r >= d) + (r != 0)
        self._check_acc(i, ins, new)
        self.acc[dst] = new
        # The divider reads each line; the update pipeline reads it again when it keeps lanes (elems < cols).
        self.counters.acc_reads += a["lines"] * (2 if a["elems"] < self.spec.cols else 1)
        self.counters.acc_writes += a["lines"]
        self.counters.div_ops += new.size

    def _op_matmul(self, i, ins):
        a = ins.args
        m, r = a["m"], self.spec.rows
        self._lines(i, ins, "scratchpad A", a["a"], m, self.spec.a_lines)
        self._lines(i, ins, "scratchpad W", a["w"], r, self.spec.w_lines)
        self._lines(i, ins, "accumulator", a["acc"], m, self.spec.acc_lines)
        # The PE's weight: the scratchpad element itself, or (shift PE) the weight its low w_bits bits encode.
        w = word_weights(self.spad_w[a["w"]:a["w"] + r], self.spec.w_bits, self.spec.pe)
        psum = self.spad_a[a["a"]:a["a"] + m] @ w
        val = np.left_shift(psum, a["shift"])
        dst = slice(a["acc"], a["acc"] + m)
        new = self.acc[dst] + val if a["accumulate"] else val
        self._check_acc(i, ins, new)
        self.acc[dst] = new
        self.counters.macs += m * r * self.spec.cols
        self.counters.spad_a_reads += m
        self.counters.spad_w_reads += r if m else 0      # (m == 0: the array unit drops it unread)
        self.counters.acc_writes += m
        self.counters.acc_reads += m if a["accumulate"] else 0

    def _op_store(self, i, ins):
        a = ins.args
        self._lines(i, ins, "accumulator", a["acc"], a["lines"], self.spec.acc_lines)
        if not 1 <= a["bits"] <= self.spec.out_bits:
            raise ProgramError(i, ins, f"output bits must be between 1 and {self.spec.out_bits}, not {a['bits']}")
        self._lanes(i, ins, a["elems"])
        self._dram_range(i, ins, a["dram"], a["lines"], a["stride"], a["elems"])
        e = a["elems"]
        acc = self.acc[a["acc"]:a["acc"] + a["lines"], :e]
        out_t = QType(a["bits"], not a["unsigned"], 0)
        y = requantize(acc, self.bias[:e], self.shift[:e], out_t, bool(a["relu"]), self.spec.rounding,
                       self.out_max)
        idx = _dram_index(a)
        self.dram[idx] = (y & 0xFF).astype(np.uint8)
        self.counters.dram_bytes_written += y.size
        self.counters.acc_reads += a["lines"]
        self.counters.requant_ops += y.size
