"""QuantizedNetwork + accelerator -> programs in the ISA of docs/isa.md."""

from ..arch.isa import Instr, Opcode, Target, encode, decode, encode_program, decode_program, IsaError
from ..arch.machine import MachineSpec
from .lower import compile_network, CompiledNetwork, CompileError
from .executor import Executor, ProgramError
from .run import run_compiled

__all__ = ["Instr", "Opcode", "Target", "encode", "decode", "encode_program", "decode_program", "IsaError",
           "MachineSpec", "compile_network", "CompiledNetwork", "CompileError", "Executor", "ProgramError",
           "run_compiled"]
