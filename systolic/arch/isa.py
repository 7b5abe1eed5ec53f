"""The accelerator's instruction set (see docs/isa.md).

Every instruction is 128 bits: four little-endian 32-bit words, the opcode in
bits [3:0] of word 0. Fields are packed at fixed bit positions of the 128-bit
value; ``encode`` refuses a value that does not fit its field instead of
truncating it, and ``decode`` refuses an unknown opcode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

__all__ = ["Opcode", "Target", "VecOp", "Instr", "FIELDS", "encode", "decode", "encode_program", "decode_program",
           "IsaError", "INSTR_BYTES", "BIAS_BYTES", "SHIFT_BYTES", "loadq_bytes"]

#: Bytes of one instruction.
INSTR_BYTES = 16
#: A LOADQ parameter block holds, per requantizer lane, a little-endian int32 bias, then (after all the
#: biases) one int8 shift per lane.
BIAS_BYTES = 4
SHIFT_BYTES = 1


def loadq_bytes(lanes: int) -> int:
    """Bytes of the LOADQ parameter block of *lanes* requantizer lanes."""
    return (BIAS_BYTES + SHIFT_BYTES) * lanes


class IsaError(ValueError):
    """An instruction that cannot be encoded or decoded."""


class Opcode(IntEnum):
    HALT = 0
    LOAD = 1      # DRAM -> scratchpad A / W (2-D strided, optional zero fill)
    LOADQ = 2     # DRAM -> requantizer lane parameters (bias int32, shift int8 per lane)
    MATMUL = 3    # acc[acc+i] (+)= (A[a+i] @ W[w : w+rows]) << shift, i < m
    STORE = 4     # requantize acc lines -> DRAM (2-D strided)
    FENCE = 5     # wait until every earlier instruction has finished
    VEC = 6       # acc[acc+i][c] = op(acc[acc+i][c], DRAM byte << shift): the vector unit (pooling, residual add)
    DIV = 7       # acc[acc+i][c] = 4*floor(a/d) + rounding bits, a = acc[acc+i][c]: average pools of any area


class Target(IntEnum):
    A = 0
    W = 1


class VecOp(IntEnum):
    """The ``op`` of a VEC instruction: how a DRAM value ``v << shift`` combines with an accumulator element."""

    SET = 0       # acc = v << shift
    ADD = 1       # acc += v << shift
    MAX = 2       # acc = max(acc, v << shift)


#: Field layout per opcode: name -> (lsb, width) in the 128-bit word. Bits [3:0] are the opcode.
FIELDS: dict[Opcode, dict[str, tuple[int, int]]] = {
    Opcode.HALT: {},
    Opcode.FENCE: {},
    Opcode.LOAD: {
        "target": (4, 1), "zero": (5, 1), "unsigned": (6, 1),
        "lines": (8, 16), "spad": (24, 16), "elems": (40, 12), "offset": (52, 12),
        "dram": (64, 32), "stride": (96, 32),
    },
    Opcode.LOADQ: {"clamp": (4, 1), "out_max": (16, 16), "dram": (64, 32)},
    Opcode.MATMUL: {
        "accumulate": (4, 1), "shift": (5, 5),
        "m": (16, 16), "a": (32, 16), "w": (48, 16), "acc": (64, 16),
    },
    Opcode.STORE: {
        "relu": (4, 1), "unsigned": (5, 1),
        "lines": (8, 16), "acc": (24, 16), "elems": (40, 12), "bits": (52, 6),
        "dram": (64, 32), "stride": (96, 32),
    },
    Opcode.DIV: {"lines": (8, 16), "acc": (24, 16), "elems": (40, 12), "divisor": (64, 16)},
    Opcode.VEC: {
        "op": (4, 2), "unsigned": (6, 1),
        "lines": (8, 16), "acc": (24, 16), "elems": (40, 12), "shift": (52, 5),
        "dram": (64, 32), "stride": (96, 32),
    },
}


@dataclass(frozen=True)
class Instr:
    """One instruction: an opcode and its named unsigned fields (missing fields are 0)."""

    op: Opcode
    args: dict = field(default_factory=dict)

    def __post_init__(self):
        try:
            op = Opcode(self.op)
        except ValueError:
            raise IsaError(f"unknown opcode {self.op!r}; known: {', '.join(o.name for o in Opcode)}") from None
        object.__setattr__(self, "op", op)
        layout = FIELDS[op]
        unknown = set(self.args) - set(layout)
        if unknown:
            raise IsaError(f"{op.name} has no field(s) {sorted(unknown)}; fields: {', '.join(layout) or 'none'}")
        for name, val in self.args.items():
            _, width = layout[name]
            if isinstance(val, bool):
                val = int(val)
            if not isinstance(val, (int, np.integer)) or not 0 <= int(val) < (1 << width):
                raise IsaError(f"{op.name}.{name} must be between 0 and {(1 << width) - 1}, not {val!r}")
        object.__setattr__(self, "args", {k: int(self.args.get(k, 0)) for k in layout})

    @classmethod
    def trusted(cls, op: Opcode, args: dict) -> "Instr":
        """An instruction from values the caller has already proved to fit: *op* an :class:`Opcode`, *args* a
        fresh dict of every field of its layout, in layout order, as Python ints in range. The same object
        as ``Instr(op, args)``, built without checking each field (the compiler's fast path for programs of
        millions of instructions; it checks its ranges once per layer)."""
        ins = object.__new__(cls)
        d = ins.__dict__
        d["op"] = op
        d["args"] = args
        return ins

    def __getattr__(self, name):
        args = self.__dict__.get("args", {})
        if name in args:
            return args[name]
        raise AttributeError(name)

    def __str__(self) -> str:
        return self.op.name + " " + " ".join(f"{k}={v}" for k, v in self.args.items())


def encode(instr: Instr) -> int:
    """The 128-bit integer of *instr*."""
    word = int(instr.op)
    for name, (lsb, _) in FIELDS[instr.op].items():
        word |= instr.args[name] << lsb
    return word


def decode(word: int) -> Instr:
    """Inverse of :func:`encode`; an unknown opcode raises :class:`IsaError`."""
    if not 0 <= word < 1 << 128:
        raise IsaError(f"an instruction is 128 bits, not {word!r}")
    op = word & 0xF
    if op not in Opcode._value2member_map_:
        raise IsaError(f"bad opcode {op} in instruction 0x{word:032x}")
    op = Opcode(op)
    return Instr(op, {n: (word >> lsb) & ((1 << w) - 1) for n, (lsb, w) in FIELDS[op].items()})


def encode_program(instrs) -> bytes:
    return b"".join(encode(i).to_bytes(INSTR_BYTES, "little") for i in instrs)


def decode_program(blob: bytes) -> list[Instr]:
    if len(blob) % INSTR_BYTES:
        raise IsaError(f"a program is a whole number of {INSTR_BYTES}-byte instructions, not {len(blob)} bytes")
    return [decode(int.from_bytes(blob[i:i + INSTR_BYTES], "little")) for i in range(0, len(blob), INSTR_BYTES)]
