"""A host driver for the accelerator's CSR map: load a program and its data, start, wait, read the counters.

The driver speaks to two things the host provides:

- *registers*: an object with ``async read32(addr) -> int`` and ``async write32(addr, value)`` on the CSR
  map's byte addresses (:func:`systolic.arch.sysmap.csr_map`), 32-bit words as the AXI4-Lite slave of the
  ``axi`` top serves them; 64-bit registers are read as two words, low first;
- *memory*: an object with ``write(addr, data: bytes)`` and ``read(addr, n) -> bytes`` on the memory the
  accelerator reaches, plain or ``async`` methods (a cocotbext-axi ``AxiRam`` has plain ones, the serial
  link to a board, :class:`systolic.fpga.uart_link.UartLink`, async ones).

Every method that touches a register is a coroutine, so the same driver runs inside a cocotb testbench
(:class:`systolic.fpga.axi_tb.AxiAcceleratorTB` uses it) and on a real host: wrap a memory-mapped register
window in ``async`` methods and call ``asyncio.run(driver.run_program(...))``. No cocotb import here.

    drv = AcceleratorDriver(regs, mem)
    prog_addr = await drv.load(image, encode_program(program))    # data at 0, the program after it
    status = await drv.run(prog_addr, len(program), image.size, wait=lambda: RisingEdge(dut.irq))
    counters = await drv.counters()
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from ..arch.memory import place_program
from ..arch.sysmap import COUNTERS, ERRORS, csr_map

__all__ = ["AcceleratorDriver", "RunStatus", "AcceleratorError", "CTRL_BITS"]

#: Bits of the ``ctrl`` register: write ``start``; read ``busy``, ``done`` and the 4-bit error code at 4.
CTRL_BITS = {"start": 0, "busy": 0, "done": 1, "error": 4}


@dataclass(frozen=True)
class RunStatus:
    """What the CSRs say after a run."""

    busy: bool
    done: bool
    error: int              #: error code (:data:`systolic.arch.sysmap.ERRORS`), 0 for none
    err_index: int          #: the failing instruction
    err_arg: int            #: the offending value
    bus_status: int         #: bit 0: a read, bit 1: a write answered with an AXI error

    @property
    def ok(self) -> bool:
        return self.done and not self.error and not self.bus_status

    def describe(self) -> str:
        if self.error:
            return (f"error {self.error} at instruction {self.err_index} ({ERRORS.get(self.error, 'unknown')}, "
                    f"argument {self.err_arg})")
        if self.bus_status:
            what = [w for b, w in ((1, "a read"), (2, "a write")) if self.bus_status & b]
            return f"the memory bus answered {' and '.join(what)} with an AXI error"
        return "done" if self.done else ("busy" if self.busy else "idle")


async def _maybe(result):
    """*result*, awaited if it is awaitable (memory methods may be plain or async)."""
    return await result if inspect.isawaitable(result) else result


class AcceleratorError(RuntimeError):
    """The accelerator stopped with an error (or the bus answered with one); :attr:`status` has the CSRs."""

    def __init__(self, status: RunStatus):
        super().__init__(status.describe())
        self.status = status


class AcceleratorDriver:
    """The accelerator through its CSRs (*registers*) and its memory (*memory*); see the module docstring."""

    def __init__(self, registers, memory=None):
        for name in ("read32", "write32"):
            if not callable(getattr(registers, name, None)):
                raise TypeError(f"registers must have async read32(addr) and write32(addr, value); "
                                f"{type(registers).__name__} has no {name}")
        self.registers, self.memory = registers, memory
        self.map = csr_map()

    # ---------------------------------------------------------------- registers by name
    async def read(self, name: str) -> int:
        """Register *name* of the CSR map (up to 8 bytes, read as 32-bit words, low first)."""
        base, nbytes, _ = self._reg(name)
        value = 0
        for w in range((nbytes + 3) // 4):
            value |= (await self.registers.read32(base + 4 * w) & 0xFFFF_FFFF) << (32 * w)
        return value & ((1 << (8 * nbytes)) - 1)

    async def write(self, name: str, value: int) -> None:
        """Write *value* to register *name* (``prog_addr``, ``prog_len``, ``dram_bytes`` or ``ctrl``)."""
        base, nbytes, access = self._reg(name)
        if "W" not in access.split(":")[0]:
            raise ValueError(f"register {name} is read-only")
        if not isinstance(value, int) or not 0 <= value < 1 << (8 * nbytes):
            raise ValueError(f"{name} takes {8 * nbytes} bits, not {value!r}")
        await self.registers.write32(base, value)

    def _reg(self, name: str):
        if name not in self.map:
            raise ValueError(f"no register {name!r}; the registers are {', '.join(self.map)}")
        return self.map[name]

    # ---------------------------------------------------------------- a run
    async def load(self, image: np.ndarray, blob: bytes) -> int:
        """Write the data *image* at address 0 and the encoded program *blob* after it; its address."""
        if self.memory is None:
            raise ValueError("this driver has no memory to load into")
        full, prog_addr = place_program(image, blob)
        await _maybe(self.memory.write(0, full.tobytes()))
        return prog_addr

    async def read_memory(self, n: int, addr: int = 0) -> np.ndarray:
        """*n* bytes of the memory at *addr* as uint8."""
        return np.frombuffer(await _maybe(self.memory.read(addr, n)), dtype=np.uint8).copy()

    async def start(self, prog_addr: int, prog_len: int, dram_bytes: int) -> None:
        """Set the program and the data window, then start."""
        await self.write("prog_addr", prog_addr)
        await self.write("prog_len", prog_len)
        await self.write("dram_bytes", dram_bytes)
        await self.write("ctrl", 1 << CTRL_BITS["start"])

    async def status(self) -> RunStatus:
        ctrl = await self.read("ctrl")
        return RunStatus(busy=bool(ctrl >> CTRL_BITS["busy"] & 1), done=bool(ctrl >> CTRL_BITS["done"] & 1),
                         error=ctrl >> CTRL_BITS["error"] & 0xF, err_index=await self.read("err_index"),
                         err_arg=await self.read("err_arg"), bus_status=await self.read("bus_status"))

    async def wait(self, wait=None, max_polls: int = 10_000_000) -> RunStatus:
        """Until the run ends: ``await wait()`` (e.g. the interrupt's rising edge) if given, then poll ``ctrl``
        until it is no longer busy (at most *max_polls* reads, then a ``TimeoutError``)."""
        if wait is not None:
            await wait()
        for _ in range(max_polls):
            ctrl = await self.read("ctrl")
            if not ctrl >> CTRL_BITS["busy"] & 1 and (ctrl >> CTRL_BITS["done"] & 1 or ctrl >> CTRL_BITS["error"]):
                return await self.status()
        raise TimeoutError(f"the accelerator is still busy after {max_polls} polls of ctrl")

    async def run(self, prog_addr: int, prog_len: int, dram_bytes: int, wait=None) -> RunStatus:
        """Start a program, wait for its end (:meth:`wait`); raise :class:`AcceleratorError` unless it ended
        with HALT and no bus error."""
        await self.start(prog_addr, prog_len, dram_bytes)
        status = await self.wait(wait)
        if not status.ok:
            raise AcceleratorError(status)
        return status

    async def counters(self) -> dict[str, int]:
        """Every performance counter by name (:data:`systolic.arch.sysmap.COUNTERS`)."""
        return {name: await self.read(f"counter_{name}") for name in COUNTERS}
