"""The board design (accelerator + block RAM + UART bridge) in amaranth.sim, driven over its serial pins by
the host side a user runs (UartLink + AcceleratorDriver): a compiled layer loaded, run and read back."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from systolic.arch.config import AcceleratorConfig
from systolic.compiler import Executor, Instr, MachineSpec, Opcode, Target, compile_network
from systolic.compiler.run import read_region, write_region
from systolic.fpga.board import BoardTop
from systolic.fpga.driver import AcceleratorDriver, AcceleratorError
from systolic.fpga.uart_link import UartLink
from tests.fpga.test_fpga_top_sim import _dense_network

TINY = AcceleratorConfig.preset("tiny")
DIV = 4                 # clock cycles per bit


class PinTransport:
    """The serial line as the board's pins in amaranth.sim, 8N1 at DIV cycles per bit."""

    def __init__(self, ctx, dut):
        self.ctx, self.dut = ctx, dut

    async def send(self, data: bytes) -> None:
        for byte in data:
            for bit in [0] + [byte >> i & 1 for i in range(8)] + [1]:
                self.ctx.set(self.dut.rx, bit)
                await self.ctx.tick().repeat(DIV)

    async def recv(self, n: int) -> bytes:
        out = bytearray()
        for _ in range(n):
            waited = 0
            while self.ctx.get(self.dut.tx):              # idle high until the start bit
                await self.ctx.tick()
                waited += 1
                if waited > 200 * DIV:
                    return bytes(out)                     # nothing more: the link reports it
            await self.ctx.tick().repeat(DIV + DIV // 2)  # the middle of data bit 0
            value = 0
            for i in range(8):
                value |= self.ctx.get(self.dut.tx) << i
                await self.ctx.tick().repeat(DIV)
            out.append(value)                             # now in the stop bit
        return bytes(out)


def _run(bench_body, mem_bytes=1024):
    dut = BoardTop(TINY, clk_hz=DIV * 1_000_000, baud=1_000_000, mem_bytes=mem_bytes)
    result = {}

    async def bench(ctx):
        link = UartLink(PinTransport(ctx, dut))
        await bench_body(ctx, dut, link, result)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return result


@pytest.mark.slow
def test_a_layer_over_the_serial_line():
    net, x = _dense_network()
    spec = MachineSpec.from_config(TINY, dram_bytes=256)
    cn = compile_network(net, spec, batch=3)
    (step,) = cn.steps
    dram = cn.image.copy()
    write_region(dram, cn.regions["input"], x)
    ref = dram.copy()
    want = Executor(spec, ref).run(step.program)
    from systolic.arch.isa import encode_program

    async def body(ctx, dut, link, out):
        drv = AcceleratorDriver(link, link)
        out["idle"] = (await drv.status()).describe()
        prog_addr = await drv.load(dram, encode_program(step.program))
        out["status"] = await drv.run(prog_addr, len(step.program), dram.size)
        out["image"] = await drv.read_memory(dram.size)
        out["macs"] = await drv.read("counter_macs")
        out["instructions"] = await drv.read("counter_instructions")
        out["irq_led"] = ctx.get(dut.leds) >> 1 & 1
        out["program"] = await link.read(prog_addr, 16 * len(step.program))
        # A bad program: the driver raises with the accelerator's error.
        bad = [Instr(Opcode.LOAD, dict(target=Target.A, lines=1, elems=1, dram=0, stride=0)),
               Instr(Opcode.STORE, dict(lines=3, elems=1, bits=8, dram=250, stride=9)),    # 250, 259, 268: past 256
               Instr(Opcode.HALT)]
        try:
            await drv.run(await drv.load(dram, encode_program(bad)), len(bad), dram.size)
        except AcceleratorError as e:
            out["error"] = e.status

    out = _run(body)
    assert out["idle"] == "idle"
    assert out["status"].ok and out["status"].describe() == "done"
    assert np.array_equal(out["image"], ref)                                   # every byte as the executor's
    assert np.array_equal(read_region(out["image"], cn.regions["fc"]), net(x))
    assert out["macs"] == want.macs > 0 and out["instructions"] == len(step.program)
    assert out["irq_led"] == 1
    assert out["program"] == encode_program(step.program)
    # Error 3 at the STORE; its argument is the last byte it would write.
    assert out["error"].error == 3 and out["error"].err_index == 1 and out["error"].err_arg == 250 + 2 * 9


def test_bridge_ignores_unknown_commands_and_link_reports_silence():
    async def body(ctx, dut, link, out):
        await link.transport.send(bytes([0x7F, 0x00]))         # not a command: dropped, no answer
        out["silence"] = await link.transport.recv(1)
        await link.csr_write(0x04, 0x5A)                       # prog_addr byte 0
        out["read"] = await link.csr_read(0x04)
        out["word"] = await link.read32(0x04)
        try:
            await link.csr_read(1 << 9)
        except ValueError as e:
            out["range"] = str(e)

    out = _run(body)
    assert out["silence"] == b""
    assert out["read"] == 0x5A and out["word"] == 0x5A
    assert "outside the 9-bit CSR space" in out["range"]


def test_board_top_parameters_are_checked():
    with pytest.raises(ValueError, match="mem_bytes must be a positive multiple of bus_bytes"):
        BoardTop(TINY, mem_bytes=1001)
    with pytest.raises(ValueError, match="not within 2 %"):
        BoardTop(TINY, clk_hz=25e6, baud=3_000_000)
    with pytest.raises(ValueError, match="needs 3.00 clock cycles per bit; a UART here needs at least 4"):
        BoardTop(TINY, clk_hz=3e6, baud=1_000_000)


def test_the_ulx3s_build_plan():
    """The board build up to the toolchain: the design elaborated for the ULX3S, its pins constrained, the
    script that runs YoWASP Yosys, nextpnr and ecppack (the tools themselves: ``systolic board``, minutes)."""
    from tests.requirements import require

    require("amaranth_boards", "board")
    from systolic.fpga.board import prepare_board

    plan, top = prepare_board("ulx3s-85f", "tiny", baud=115_200, mem_bytes=4096)
    files = plan.files
    assert top.divisor == round(25e6 / 115_200) and top.mem_bytes == 4096
    lpf = files["top.lpf"]
    lpf = lpf if isinstance(lpf, str) else lpf.decode()
    for pin in ("uart_0__rx", "uart_0__tx", "clk25_0", "led_0", "led_1"):
        assert pin in lpf, pin
    script = files["build_top.sh"]
    script = script if isinstance(script, str) else script.decode()
    assert "--85k" in script and "--seed 1 --timing-allow-fail --report top.report.json" in script
    assert "ECPPACK" in script
    rtlil = files["top.il"] if isinstance(files["top.il"], str) else files["top.il"].decode()
    assert "module \\top.accel.accel.controller" in rtlil and "module \\top.bridge" in rtlil


def test_unknown_board():
    from systolic.fpga.board import prepare_board

    with pytest.raises(ValueError, match="unknown board 'de10'; the boards are ulx3s-85f, ulx3s-45f"):
        prepare_board("de10", "tiny")
