"""The shift PE (config pe="shift") in amaranth.sim: a * w for every representable w, no multiplier, same timing."""

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from systolic.arch.config import AcceleratorConfig
from systolic.arch.latency import PRODUCT_STAGES
from systolic.golden.pe_weights import decode_shift_words, encode_shift_weights, shift_weight_values
from systolic.hw.pe import OSProcessingElement, ProcessingElement, WSProcessingElement
from systolic.sim.core.amaranth_sim import run_gemm_amaranth
from systolic.sim.core.driver import golden_gemm

#: (dataflow, config): the GEMM core's operands and the system's array operands (9-bit activations, 8-bit word).
CONFIGS = {
    "ws-i8-w8": AcceleratorConfig(dataflow="ws", pe="shift"),
    "os-i8-w8": AcceleratorConfig(dataflow="os", pe="shift"),
    "ws-system": AcceleratorConfig(dataflow="ws", pe="shift").array_config,
    "os-system": AcceleratorConfig(dataflow="os", pe="shift").array_config,
    "ws-i4u-w4": AcceleratorConfig(dataflow="ws", pe="shift", in_bits=4, in_signed=False, w_bits=4, acc_bits=16),
    "os-i6-w2": AcceleratorConfig(dataflow="os", pe="shift", in_bits=6, w_bits=2, acc_bits=12),
}


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def _activations(cfg):
    """The edges of the activation range and a few values between."""
    lo, hi = cfg.in_range
    mid = np.random.default_rng(cfg.in_bits).integers(lo, hi + 1, size=4).tolist()
    return sorted({lo, lo + 1, -1 if lo < 0 else 0, 0, 1, hi - 1, hi, *mid})


def _product_ws(cfg, cases):
    """``psum_out - psum_in`` of a WS PE for each ``(a, word)``: load the word, swap it in with ``a``, give
    the partial sum ``PRODUCT_STAGES`` cycles later (the operands and the product are registered)."""
    dut, got = WSProcessingElement(config=cfg), []

    async def bench(ctx):
        ctx.set(dut.en, 1)
        for a, word in cases:
            ctx.set(dut.load, 1)
            ctx.set(dut.load_data, word)
            ctx.set(dut.swap_in, 0)
            await ctx.tick()
            ctx.set(dut.load, 0)
            ctx.set(dut.swap_in, 1)
            ctx.set(dut.a_in, a)
            await ctx.tick()
            ctx.set(dut.swap_in, 0)
            for _ in range(PRODUCT_STAGES - 1):
                await ctx.tick()
            ctx.set(dut.psum_in, 5)
            await ctx.tick()
            got.append(ctx.get(dut.psum_out) - 5)

    _run(dut, bench)
    return got


def _product_os(cfg, cases):
    """The drain register of an OS PE after a one-step tile ``(a, word)`` (``last``), one tile per cycle:
    captured ``PRODUCT_STAGES`` cycles after the pair arrives (the operands and the product are registered),
    while later pairs arrive."""
    dut, got = OSProcessingElement(config=cfg), []

    async def bench(ctx):
        ctx.set(dut.en, 1)
        ctx.set(dut.last_in, 1)
        for t in range(len(cases) + PRODUCT_STAGES):
            if t < len(cases):
                ctx.set(dut.a_in, cases[t][0])
                ctx.set(dut.w_in, cases[t][1])
            await ctx.tick()
            if t < len(cases):
                assert ctx.get(dut.w_out) == cases[t][1]     # the word moves down unchanged
            if t >= PRODUCT_STAGES:
                got.append(ctx.get(dut.d_out))

    _run(dut, bench)
    return got


PRODUCT = {"ws": _product_ws, "os": _product_os}


@pytest.mark.parametrize("name", CONFIGS)
def test_product_is_a_times_w_for_every_representable_weight(name):
    cfg = CONFIGS[name]
    weights = shift_weight_values(cfg.w_bits)
    words = encode_shift_weights(weights, cfg.w_bits)
    cases = [(a, int(word)) for a in _activations(cfg) for word in words]
    want = [a * int(w) for a in _activations(cfg) for w in weights]
    assert PRODUCT[cfg.dataflow](cfg, cases) == want


@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_every_word_computes_its_golden_decode(dataflow):
    """Words the compiler never writes (exponent field above w_bits - 2, stray bits) still give exactly
    ``a * decode_shift_words(word)``: the executor's semantics, so RTL and executor agree on any program."""
    cfg = AcceleratorConfig(dataflow=dataflow, pe="shift").array_config
    lo, hi = cfg.in_range
    words = range(-(1 << (cfg.w_bits - 1)), 1 << (cfg.w_bits - 1))
    cases = [(a, w) for w in words for a in (lo, hi)]
    want = [a * int(decode_shift_words(w, cfg.w_bits)) for a, w in cases]
    assert PRODUCT[dataflow](cfg, cases) == want


@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_shift_pe_has_no_multiplier(dataflow):
    mult = rtlil.convert(ProcessingElement(config=AcceleratorConfig(dataflow=dataflow)))
    shift = rtlil.convert(ProcessingElement(config=AcceleratorConfig(dataflow=dataflow, pe="shift")))
    assert "$mul" in mult
    assert "$mul" not in shift
    assert "$shl" in shift or "$sshl" in shift


def _ws_trace(cfg, steps):
    """The WS PE's outputs cycle by cycle for a stimulus (loads, swaps, stalls, wrap)."""
    dut, out = WSProcessingElement(config=cfg), []

    async def bench(ctx):
        for s in steps:
            for port, value in s.items():
                ctx.set(getattr(dut, port), value)
            await ctx.tick()
            out.append((ctx.get(dut.psum_out), ctx.get(dut.a_out), ctx.get(dut.swap_out)))

    _run(dut, bench)
    return out


def test_same_timing_as_the_multiplier_pe():
    """Cycle by cycle, the shift PE fed words equals the multiplier PE fed the weights: same latency, stalls,
    double buffering and partial sums of the whole acc_bits range."""
    base = AcceleratorConfig(dataflow="ws", in_bits=8, w_bits=8, acc_bits=20)
    rng = np.random.default_rng(1)
    weights = rng.choice(shift_weight_values(8), size=40)
    steps = [dict(en=int(rng.random() < 0.8), load=int(rng.random() < 0.5), load_data=int(w),
                  swap_in=int(rng.random() < 0.3), a_in=int(rng.integers(-128, 128)),
                  psum_in=int(rng.integers(-2**19, 2**19))) for w in weights]
    mult = _ws_trace(base, steps)
    words = encode_shift_weights(weights, 8)
    shift = _ws_trace(base.replace(pe="shift"), [dict(s, load_data=int(w)) for s, w in zip(steps, words)])
    assert shift == mult
    assert len({p for p, _, _ in mult}) > 20        # the stimulus does compute (not a stalled PE)


@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_gemm_core_with_shift_pes_equals_golden(dataflow):
    """The GEMM core (array and requantizer) of a shift config: the driver stores the weights' words, the
    result equals the golden GEMM of the weights, with idle input cycles and output back-pressure."""
    cfg = AcceleratorConfig(rows=3, cols=2, dataflow=dataflow, pe="shift", acc_bits=24)
    rng = np.random.default_rng(7)
    a = rng.integers(-128, 128, size=(5, 7))
    w = rng.choice(shift_weight_values(8), size=(7, 3))
    bias = rng.integers(-300, 300, size=3)
    got = run_gemm_amaranth(cfg, a, w, bias, shift=4, seed=2, idle=0.3, stall=0.3)
    assert (got == golden_gemm(cfg, a, w, bias, 4)).all()
    with pytest.raises(ValueError, match=r"^weight 3 at index \(0, 0\) is not a shift PE weight: it takes 0 "):
        run_gemm_amaranth(cfg, a, np.full((7, 3), 3), bias, shift=4)
