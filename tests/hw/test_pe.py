"""Processing elements, cycle by cycle, in amaranth.sim."""

import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from systolic.arch.config import AcceleratorConfig
from systolic.arch.latency import PRODUCT_STAGES
from systolic.hw.pe import OPERAND_REGISTER, OSProcessingElement, ProcessingElement, WSProcessingElement


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_factory_and_type_check():
    for dataflow, cls in [("ws", WSProcessingElement), ("os", OSProcessingElement)]:
        pe = ProcessingElement(config=AcceleratorConfig(dataflow=dataflow))
        assert isinstance(pe, cls)
        Fragment.get(pe, None)
    with pytest.raises(TypeError, match="^config must be an AcceleratorConfig, not 3$"):
        WSProcessingElement(config=3)


def test_product_stages_are_operand_and_product_registers():
    """These tests are written for two registers: the PE's operand register, then the product's (the PE's
    timing below); a change of the named latency must come with new tests."""
    assert PRODUCT_STAGES == 2 and OPERAND_REGISTER == 1


def test_ws_pe_mac_double_buffer_and_stall():
    """An activation's product is formed from the operand registers and registered: the partial sum it joins
    enters two cycles after the activation."""
    cfg = AcceleratorConfig(dataflow="ws", in_bits=8, w_bits=8, acc_bits=20)
    dut = WSProcessingElement(config=cfg)

    async def bench(ctx):
        ctx.set(dut.en, 1)
        # Load the shadow: the active weight (0) stays in use.
        ctx.set(dut.load, 1)
        ctx.set(dut.load_data, -7)
        ctx.set(dut.a_in, 3)
        await ctx.tick()
        ctx.set(dut.load, 0)
        assert ctx.get(dut.a_out) == 3
        # The flagged activation uses the shadow weight (3's product, formed now, still the old one).
        ctx.set(dut.swap_in, 1)
        ctx.set(dut.a_in, -128)
        await ctx.tick()
        assert ctx.get(dut.swap_out) == 1
        # 3's partial sum comes in; the shadow is reloaded while computing, the active weight unchanged.
        ctx.set(dut.swap_in, 0)
        ctx.set(dut.psum_in, 100)
        ctx.set(dut.load, 1)
        ctx.set(dut.load_data, 127)
        ctx.set(dut.a_in, 5)
        await ctx.tick()
        ctx.set(dut.load, 0)
        assert ctx.get(dut.psum_out) == 100 + 3 * 0
        assert ctx.get(dut.swap_out) == 0
        # en low: nothing moves, the registered product (-128 * -7) and the operand register (5) included.
        ctx.set(dut.en, 0)
        ctx.set(dut.a_in, 9)
        await ctx.tick()
        assert ctx.get(dut.psum_out) == 100 + 3 * 0
        assert ctx.get(dut.a_out) == 5
        ctx.set(dut.en, 1)
        ctx.set(dut.swap_in, 1)
        await ctx.tick()
        assert ctx.get(dut.psum_out) == 100 + (-128) * (-7)
        ctx.set(dut.swap_in, 0)
        ctx.set(dut.a_in, 1)
        await ctx.tick()
        assert ctx.get(dut.psum_out) == 100 + 5 * (-7)
        ctx.set(dut.psum_in, 0)
        await ctx.tick()
        assert ctx.get(dut.psum_out) == 9 * 127
        # The partial sum wraps at acc_bits (two's complement).
        ctx.set(dut.psum_in, 2**19 - 1)
        await ctx.tick()
        assert ctx.get(dut.psum_out) == 2**19 - 1 + 127 - 2**20

    _run(dut, bench)


def test_ws_pe_unsigned_operands():
    cfg = AcceleratorConfig(dataflow="ws", in_bits=4, in_signed=False, w_bits=4, w_signed=True, acc_bits=16)
    dut = WSProcessingElement(config=cfg)

    async def bench(ctx):
        ctx.set(dut.en, 1)
        ctx.set(dut.load, 1)
        ctx.set(dut.load_data, -8)
        await ctx.tick()
        ctx.set(dut.load, 0)
        ctx.set(dut.swap_in, 1)
        ctx.set(dut.a_in, 15)
        await ctx.tick()
        ctx.set(dut.swap_in, 0)
        await ctx.tick()
        ctx.set(dut.psum_in, -3)
        await ctx.tick()
        assert ctx.get(dut.psum_out) == -3 + 15 * -8

    _run(dut, bench)


def test_os_pe_accumulate_capture_and_drain():
    cfg = AcceleratorConfig(dataflow="os", in_bits=8, w_bits=8)
    dut = OSProcessingElement(config=cfg)
    pairs = [(3, 4), (-5, 6), (127, -128)]

    async def bench(ctx):
        ctx.set(dut.en, 1)
        for k, (a, w) in enumerate(pairs):
            ctx.set(dut.a_in, a)
            ctx.set(dut.w_in, w)
            ctx.set(dut.last_in, k == len(pairs) - 1)
            await ctx.tick()
            assert ctx.get(dut.a_out) == a and ctx.get(dut.w_out) == w
        assert ctx.get(dut.last_out) == 1
        assert ctx.get(dut.d_out) == 0          # the last pair is still in the operand registers
        # Captured beside the next tile's second step (last zeroed the accumulator); d holds until shifted.
        expect = sum(a * w for a, w in pairs)
        ctx.set(dut.last_in, 0)
        ctx.set(dut.a_in, 2)
        ctx.set(dut.w_in, 2)
        ctx.set(dut.d_in, 77)
        await ctx.tick()
        assert ctx.get(dut.d_out) == 0          # ... and now its product in the product register
        ctx.set(dut.last_in, 1)
        await ctx.tick()
        assert ctx.get(dut.d_out) == expect
        ctx.set(dut.last_in, 0)
        ctx.set(dut.a_in, 0)
        await ctx.tick()
        assert ctx.get(dut.d_out) == expect
        ctx.set(dut.shift, 1)
        await ctx.tick()
        assert ctx.get(dut.d_out) == 2 * 2 + 2 * 2   # capture wins over shift
        ctx.set(dut.en, 0)
        await ctx.tick()
        assert ctx.get(dut.d_out) == 8  # stalled: no shift
        ctx.set(dut.en, 1)
        await ctx.tick()
        assert ctx.get(dut.d_out) == 77

    _run(dut, bench)


def test_os_pe_stalled_last_neither_zeroes_nor_captures():
    """``last`` during a stall (``en`` low) must not zero the accumulator (its reset is ``en & last``)."""
    cfg = AcceleratorConfig(dataflow="os", in_bits=8, w_bits=8)
    dut = OSProcessingElement(config=cfg)
    seen = []

    async def bench(ctx):
        ctx.set(dut.en, 1)
        ctx.set(dut.a_in, 3)
        ctx.set(dut.w_in, 3)
        await ctx.tick()                      # operands 3, 3
        ctx.set(dut.a_in, 1)
        ctx.set(dut.w_in, 1)
        ctx.set(dut.last_in, 1)
        await ctx.tick()                      # product 9; operands 1, 1 with last
        await ctx.tick()                      # acc = 9, product 1, last registered; last again
        ctx.set(dut.en, 0)
        await ctx.tick()                      # stalled with the registered last: nothing changes
        seen.append(ctx.get(dut.d_out))
        ctx.set(dut.en, 1)
        await ctx.tick()                      # d = 9 + 1, acc zeroed; last again: a one-step tile
        seen.append(ctx.get(dut.d_out))
        ctx.set(dut.last_in, 0)
        await ctx.tick()                      # d = 0 + 1
        seen.append(ctx.get(dut.d_out))

    _run(dut, bench)
    assert seen == [0, 10, 1]
