"""The host side of the board's serial line (:mod:`systolic.fpga.board`): registers and memory for
:class:`~systolic.fpga.driver.AcceleratorDriver`.

:class:`UartLink` speaks the bridge's byte protocol over a *transport*: any object with ``async send(data:
bytes)`` and ``async recv(n) -> bytes``. :class:`SerialTransport` is one over a serial port (pyserial, the
``board`` extra); the tests use one that drives the simulated pins. With a board programmed with the
bitstream of ``systolic board``::

    link = UartLink(SerialTransport("/dev/ttyUSB0"))
    drv = AcceleratorDriver(link, link)
    status = asyncio.run(drv.run(asyncio.run(drv.load(image, blob)), len(program), image.size))
"""

from __future__ import annotations

from ..arch.sysmap import CSR_ADDR_BITS
from .boards import CMD_CSR_READ, CMD_CSR_WRITE, CMD_MEM_READ, CMD_MEM_WRITE

__all__ = ["UartLink", "SerialTransport", "LinkError"]

#: Longest run of bytes one memory command moves (its length field is 16 bits).
MAX_RUN = 0xFFFF


class LinkError(RuntimeError):
    """The board answered something other than the protocol's answer (or nothing)."""


class UartLink:
    """Registers (``read32`` / ``write32``, 32-bit words as four CSR bytes) and memory (``write`` / ``read``)
    of the accelerator on a board, over *transport*."""

    def __init__(self, transport):
        self.transport = transport

    async def _ack(self, cmd: int) -> None:
        got = await self.transport.recv(1)
        if got != bytes([cmd]):
            raise LinkError(f"the board answered {got!r} to command {cmd:#04x}, not its acknowledgement")

    def _csr_addr(self, addr: int) -> bytes:
        if not 0 <= addr < 1 << CSR_ADDR_BITS:
            raise ValueError(f"CSR address {addr:#x} is outside the {CSR_ADDR_BITS}-bit CSR space")
        return addr.to_bytes(2, "little")

    async def csr_write(self, addr: int, value: int) -> None:
        await self.transport.send(bytes([CMD_CSR_WRITE]) + self._csr_addr(addr) + bytes([value & 0xFF]))
        await self._ack(CMD_CSR_WRITE)

    async def csr_read(self, addr: int) -> int:
        await self.transport.send(bytes([CMD_CSR_READ]) + self._csr_addr(addr))
        got = await self.transport.recv(1)
        if len(got) != 1:
            raise LinkError(f"no answer to a read of CSR {addr:#x}")
        return got[0]

    async def read32(self, addr: int) -> int:
        value = 0
        for b in range(4):
            value |= await self.csr_read(addr + b) << (8 * b)
        return value

    async def write32(self, addr: int, value: int) -> None:
        for b in range(4):
            await self.csr_write(addr + b, value >> (8 * b))

    async def write(self, addr: int, data: bytes) -> None:
        """Write *data* to the board's memory at *addr* (in runs of at most 65535 bytes)."""
        data = bytes(data)
        for lo in range(0, len(data), MAX_RUN):
            run = data[lo:lo + MAX_RUN]
            await self.transport.send(bytes([CMD_MEM_WRITE]) + (addr + lo).to_bytes(4, "little")
                                      + len(run).to_bytes(2, "little") + run)
            await self._ack(CMD_MEM_WRITE)

    async def read(self, addr: int, n: int) -> bytes:
        out = bytearray()
        for lo in range(0, n, MAX_RUN):
            k = min(MAX_RUN, n - lo)
            await self.transport.send(bytes([CMD_MEM_READ]) + (addr + lo).to_bytes(4, "little")
                                      + k.to_bytes(2, "little"))
            got = await self.transport.recv(k)
            if len(got) != k:
                raise LinkError(f"asked for {k} bytes at {addr + lo:#x}, got {len(got)}")
            out += got
        return bytes(out)


class SerialTransport:
    """A serial port (pyserial) as a transport: ``SerialTransport("/dev/ttyUSB0", baud=115200)``."""

    def __init__(self, port: str, baud: int = 115_200, timeout: float = 2.0):
        try:
            import serial
        except ImportError:
            raise RuntimeError("the serial link needs pyserial: pip install 'systolic[board]'") from None
        self.port = serial.Serial(port, baud, timeout=timeout)

    async def send(self, data: bytes) -> None:
        self.port.write(data)

    async def recv(self, n: int) -> bytes:
        return self.port.read(n)
