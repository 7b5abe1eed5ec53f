"""The contract between the hardware, the compiler, the simulators and the reports.

Plain Python (no amaranth, no cocotb), imported by ``systolic.hw``,
``systolic.compiler``, ``systolic.sim`` and ``systolic.report`` alike, so
that every fact they share is written once:

- :mod:`~systolic.arch.config`: :class:`AcceleratorConfig`, the presets, and
  every derived width and line count (scratchpad and accumulator lines, the
  array's and the requantizer lanes' configs inside the system);
- :mod:`~systolic.arch.isa`: the instruction set (opcodes, field layout,
  encoding, the LOADQ parameter block);
- :mod:`~systolic.arch.sysmap`: the host interface: performance counters,
  error codes and their texts, the CSR register map of the FPGA top;
- :mod:`~systolic.arch.latency`: the units' latencies, by name;
- :mod:`~systolic.arch.timing`: the exact cycle model, written in them;
- :mod:`~systolic.arch.memory`: the simulated memory's timing and where a
  program is placed;
- :mod:`~systolic.arch.machine`: :class:`MachineSpec`, what the compiler and
  the executor need to know of one accelerator;
- :mod:`~systolic.arch.ports`: the bit layout of the GEMM core's stream payloads.
"""

from .config import DATAFLOWS, PRESETS, AcceleratorConfig, load_config
from .isa import INSTR_BYTES, Instr, IsaError, Opcode, Target, decode, decode_program, encode, encode_program
from .latency import Latencies
from .machine import MachineSpec
from .memory import MemoryModel, place_program, program_address

__all__ = ["AcceleratorConfig", "PRESETS", "DATAFLOWS", "load_config", "Instr", "Opcode", "Target", "IsaError",
           "INSTR_BYTES", "encode", "decode", "encode_program", "decode_program", "Latencies", "MachineSpec",
           "MemoryModel", "place_program", "program_address"]
