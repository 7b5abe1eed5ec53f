"""Behaviour of the simulated external memory behind the accelerator's port.

Shared by the cocotb memory model (:mod:`systolic.sim.cocotb_system`), the
C++ one of the direct driver (:mod:`systolic.sim.direct_cxx`) and the
amaranth.sim one (:mod:`systolic.sim.amaranth_backend`), so all time requests
the same way:

- requests are accepted in order, one at a time; a request is accepted
  ``d`` cycles after it first shows ``req_valid`` (``req_ready`` is low for
  ``d`` cycles, then high for one; a request presented the cycle after the
  previous accept counts from that cycle), with
  ``d = ceil(bus_bytes / bytes_per_cycle) - 1`` plus, when ``stall > 0``,
  random extra cycles (each further cycle with probability ``stall``: one
  more cycle while ``random() < stall``, from one ``random.Random(seed)``
  stream; one draw per request, in order);
- a read is answered ``latency`` cycles after the cycle it was accepted in
  (``resp_valid`` high for one cycle, ``resp_data`` the memory content at
  the accept), whatever else is in flight: the memory accepts further
  requests while reads wait for their answer (pipelined reads), and since
  accepts fall in distinct cycles the answers come in order, never two in
  one cycle; a write takes effect when accepted and has no response.

No cocotb or amaranth import here.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["MemoryModel", "MAX_STALL", "place_program", "program_address"]


#: Largest stall probability: 99 extra cycles per request on average, so every simulation's hang bound
#: (proportional to ``1 / (1 - stall)``) stays finite and a run ends in a bounded time.
MAX_STALL = 0.99


@dataclass(frozen=True)
class MemoryModel:
    """Timing of the simulated memory: ``latency`` 1..1000 cycles, ``bytes_per_cycle`` >= 1, ``stall`` in
    [0, :data:`MAX_STALL`]."""

    latency: int = 2
    bytes_per_cycle: int = 64
    stall: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.latency, int) or not 1 <= self.latency <= 1000:
            raise ValueError(f"latency must be an int between 1 and 1000, not {self.latency!r}")
        if not isinstance(self.bytes_per_cycle, int) or self.bytes_per_cycle < 1:
            raise ValueError(f"bytes_per_cycle must be a positive int, not {self.bytes_per_cycle!r}")
        if not isinstance(self.stall, (int, float)) or isinstance(self.stall, bool) \
                or not 0 <= self.stall <= MAX_STALL:
            raise ValueError(f"stall must be a probability between 0 and {MAX_STALL} (each request waits "
                             f"stall / (1 - stall) extra cycles on average), not {self.stall!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, not {self.seed!r}")

    def base_delay(self, bus_bytes: int) -> int:
        """Cycles ``req_ready`` stays low before a request is accepted, without random stalls."""
        return math.ceil(bus_bytes / self.bytes_per_cycle) - 1

    def delays(self, bus_bytes: int):
        """An endless iterator of accept delays ``d`` (base delay plus random stalls)."""
        base = self.base_delay(bus_bytes)
        rng = random.Random(self.seed)
        while True:
            d = base
            if self.stall:
                while rng.random() < self.stall:
                    d += 1
            yield d

    def to_dict(self) -> dict:
        return asdict(self)


def program_address(data_bytes: int) -> int:
    """Where the host puts a program: the first 16-byte boundary at or after the data window."""
    return -(-data_bytes // 16) * 16


def place_program(dram: np.ndarray, blob: bytes) -> tuple[np.ndarray, int]:
    """Memory image with *blob* (an encoded program) right after the data window; returns (image, address).

    The program lies outside ``[0, dram.size)``, the window LOAD / LOADQ /
    STORE may touch, so a program cannot overwrite itself and the DRAM range
    checks are those of the executor.
    """
    addr = program_address(dram.size)
    image = np.zeros(addr + len(blob), dtype=np.uint8)
    image[:dram.size] = dram
    image[addr:] = np.frombuffer(blob, dtype=np.uint8)
    return image, addr
