"""SystolicArray and GemmCore in amaranth.sim against NumPy / the golden model."""

import random

from fractions import Fraction

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from systolic.hw.array import SystolicArray
from systolic.arch.config import AcceleratorConfig
from systolic.arch.latency import PRODUCT_STAGES, REQUANT_STAGES
from systolic.hw.core import GemmCore
from systolic.arch.ports import pack, unpack
from systolic.sim.core.amaranth_sim import apply_drive
from systolic.sim.core.amaranth_sim import run_gemm_amaranth
from systolic.sim.core.driver import GemmStats, Pass, PassDriver, golden_gemm


def _drive(dut, cfg, p, *, idle=0.0, stall=0.0, seed=0):
    """Run one pass on *dut* (array or core); returns (output words, cycles, first-output cycle)."""
    drv = PassDriver(p, random.Random(seed), idle, stall)
    ws = cfg.dataflow == "ws"
    info = {}

    async def bench(ctx):
        first = None
        while not drv.done:
            apply_drive(ctx, dut, drv.drive(), ws)
            o_valid = ctx.get(dut.o.valid)
            if o_valid and first is None:
                first = drv.cycles
            drv.observe(ctx.get(dut.i.ready), ctx.get(dut.w.ready) if ws else 0, o_valid,
                        ctx.get(dut.o.payload.as_value()))
            await ctx.tick()
        # A few more cycles: nothing else may come out.
        ctx.set(dut.i.valid, 0)
        for _ in range(cfg.rows + cfg.cols + 4):
            assert not ctx.get(dut.o.valid)
            await ctx.tick()
        info["first"] = first

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return drv.outputs, drv.cycles, info["first"]


def _acc(cfg, words):
    return np.array([unpack(cfg, "o", w)["acc"] for w in words], np.int64)


@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 3), (4, 2), (3, 3)])
@pytest.mark.parametrize("idle, stall", [(0.0, 0.0), (0.4, 0.4)])
def test_ws_array_double_buffered_tiles(rows, cols, idle, stall):
    """Two weight tiles in one stream: the second loads while the first computes."""
    cfg = AcceleratorConfig(rows=rows, cols=cols, dataflow="ws")
    rng = np.random.default_rng(rows * 10 + cols)
    tiles = [rng.integers(-128, 128, (rows, cols)) for _ in range(3)]
    ms = [5, 1, 7]
    a = [rng.integers(-128, 128, (m, rows)) for m in ms]
    psum = [rng.integers(-(1 << 20), 1 << 20, (m, cols)) for m in ms]
    w_words = [pack(cfg, "w", w=t[r]) for t in tiles for r in range(rows)]
    i_words = [pack(cfg, "i", a=a[t][mm], psum=psum[t][mm], swap=int(mm == 0))
               for t in range(3) for mm in range(ms[t])]
    p = Pass(w_words, i_words, sum(ms), None, None, False)
    out, cycles, _ = _drive(SystolicArray(config=cfg), cfg, p, idle=idle, stall=stall, seed=rows)
    want = np.concatenate([psum[t] + a[t] @ tiles[t] for t in range(3)])
    assert np.array_equal(_acc(cfg, out), want)


@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 3), (3, 2), (4, 4)])
@pytest.mark.parametrize("idle, stall", [(0.0, 0.0), (0.4, 0.4)])
def test_os_array_back_to_back_tiles(rows, cols, idle, stall):
    """Several tiles streamed without gaps, including K < rows (spacing) and K = 1."""
    cfg = AcceleratorConfig(rows=rows, cols=cols, dataflow="os")
    rng = np.random.default_rng(rows * 10 + cols)
    ks = [rows + 2, 1, max(rows - 1, 1), rows, 3]
    a = [rng.integers(-128, 128, (rows, k)) for k in ks]
    w = [rng.integers(-128, 128, (k, cols)) for k in ks]
    i_words = [pack(cfg, "i", a=a[t][:, k], w=w[t][k], last=int(k == ks[t] - 1))
               for t in range(len(ks)) for k in range(ks[t])]
    p = Pass([], i_words, rows * len(ks), None, None, False)
    out, cycles, _ = _drive(SystolicArray(config=cfg), cfg, p, idle=idle, stall=stall, seed=cols)
    got = _acc(cfg, out).reshape(len(ks), rows, cols)[:, ::-1]  # bottom row first
    for t in range(len(ks)):
        assert np.array_equal(got[t], a[t] @ w[t]), t


@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_latency_and_throughput(dataflow):
    """No idle, no back-pressure: latency rows + cols - 1 + the PE's product stage (+ the requantizer's stages
    in the core), 1 vector/cycle."""
    R, C, M = 3, 4, 20
    cfg = AcceleratorConfig(rows=R, cols=C, dataflow=dataflow)
    core = GemmCore(config=cfg)
    assert core.latency == R + C - 1 + PRODUCT_STAGES + REQUANT_STAGES
    rng = np.random.default_rng(0)
    if dataflow == "ws":
        wt = rng.integers(-8, 8, (R, C))
        w_words = [pack(cfg, "w", w=wt[r]) for r in range(R)]
        i_words = [pack(cfg, "i", a=rng.integers(-8, 8, R), swap=int(mm == 0)) for mm in range(M)]
        p = Pass(w_words, i_words, M, np.zeros(C), np.zeros(C), False)
        out, cycles, first = _drive(core, cfg, p)
        # R cycles of weight load, then the first vector enters; one result per cycle after.
        assert first == R + core.latency
        assert cycles == R + core.latency + M
    else:
        K = 6
        i_words = [pack(cfg, "i", a=rng.integers(-8, 8, R), w=rng.integers(-8, 8, C),
                        last=int(k == K - 1)) for k in range(K)]
        p = Pass([], i_words, R, np.zeros(C), np.zeros(C), False)
        out, cycles, first = _drive(core, cfg, p)
        assert first == K - 1 + core.latency
        assert cycles == K - 1 + core.latency + R


CORE_CONFIGS = [
    AcceleratorConfig(rows=1, cols=1, dataflow="ws"),
    AcceleratorConfig(rows=1, cols=1, dataflow="os", rounding="half_up"),
    AcceleratorConfig(rows=2, cols=3, dataflow="ws", in_bits=4, w_bits=4, acc_bits=16, out_bits=4,
                      rounding="half_up"),
    AcceleratorConfig(rows=3, cols=2, dataflow="os", in_bits=4, in_signed=False, w_bits=4,
                      acc_bits=16, out_bits=4, out_signed=False),
    AcceleratorConfig(rows=4, cols=4, dataflow="ws", per_channel_shift=False),
    AcceleratorConfig(rows=4, cols=4, dataflow="os", w_signed=False, out_bits=16),
]


@pytest.mark.parametrize("cfg", CORE_CONFIGS, ids=lambda c: c.name)
def test_core_requantized_gemm_matches_golden(cfg):
    rng = np.random.default_rng(7)
    (alo, ahi), (wlo, whi) = cfg.in_range, cfg.w_range
    olo, ohi = cfg.out_range
    cases = []
    for M, K, N in [(1, 1, 1), (cfg.rows, cfg.rows, cfg.cols), (5, 2 * cfg.rows + 1, cfg.cols + 2), (3, 9, 2)]:
        a = rng.integers(alo, ahi + 1, (M, K))
        w = rng.integers(wlo, whi + 1, (K, N))
        span = max(int(np.abs(a @ w).max()), 1)
        # Shifts chosen so results land around the output range.
        k = max(span.bit_length() - cfg.out_bits + 1, 1)
        shift = rng.integers(k - 1, k + 2, N) if cfg.per_channel_shift else k
        cases.append((a, w, rng.integers(-span, span + 1, N), np.clip(shift, -2, None)))
    # A case built to hold both: row 0 is zero, so acc + bias = 1 and 1 / 2**1 is a tie; rows 1 and 2 at the
    # input range's ends against the largest weights (9 * ahi * whi / 2 exceeds every output range here).
    a = rng.integers(alo, ahi + 1, (4, 9))
    a[0], a[1], a[2] = 0, ahi, alo
    w = np.full((9, cfg.cols + 1), whi)
    cases.append((a, w, np.ones(cfg.cols + 1, int), np.ones(cfg.cols + 1, int) if cfg.per_channel_shift else 1))
    ties = saturated = 0
    for n, (a, w, bias, shift) in enumerate(cases):
        M, N = a.shape[0], w.shape[1]
        acc = a @ w
        # Count, from the exact rational value (acc + bias) / 2**shift, the ties and the saturations.
        exact = [Fraction(int(acc[i, j] + bias[j])) / Fraction(2) ** int(np.broadcast_to(shift, (N,))[j])
                 for i in range(M) for j in range(N)]
        ties += sum(v.denominator == 2 for v in exact)
        saturated += sum(v > ohi + Fraction(1, 2) or v < olo - Fraction(1, 2) for v in exact)
        for relu in (False, True):
            st = GemmStats()
            got = run_gemm_amaranth(cfg, a, w, bias, shift, relu, seed=n, idle=0.3, stall=0.3, stats=st)
            want = golden_gemm(cfg, a, w, bias, shift, relu)
            assert np.array_equal(got, want), (a.shape, N, relu)
            assert st.outputs > 0
    assert ties > 0 and saturated > 0, (ties, saturated)     # both were exercised


def test_core_negative_shift_saturates():
    cfg = AcceleratorConfig(rows=2, cols=2, dataflow="os")
    a = np.array([[1, -1], [2, 0], [0, 0]])
    w = np.array([[3, 1], [0, 1]])
    got = run_gemm_amaranth(cfg, a, w, bias=np.array([0, 0]), shift=np.array([-5, -1]))
    assert np.array_equal(got, golden_gemm(cfg, a, w, np.array([0, 0]), np.array([-5, -1])))
    assert got[0, 0] == 96 and got[1, 0] == 127 and got[0, 1] == 0


def test_gemm_argument_checks():
    cfg = AcceleratorConfig(rows=2, cols=2, in_bits=4, w_bits=4, acc_bits=12, per_channel_shift=False)
    ok_a, ok_w = np.ones((2, 2), int), np.ones((2, 2), int)
    with pytest.raises(ValueError, match=r"a holds 8, outside the range \[-8, 7\]"):
        golden_gemm(cfg, ok_a * 8, ok_w)
    with pytest.raises(ValueError, match="a and w must be non-empty"):
        golden_gemm(cfg, np.ones((2, 3), int), ok_w)
    with pytest.raises(ValueError, match="per-tensor config"):
        golden_gemm(cfg, ok_a, ok_w, shift=[1, 2])
    with pytest.raises(ValueError, match=r"shift must be between -32 and 31 \(shift_bits=6\), not 40"):
        golden_gemm(cfg, ok_a, ok_w, shift=40)
    with pytest.raises(OverflowError, match="does not fit a 12-bit accumulator"):
        golden_gemm(cfg, np.full((1, 64), -8), np.full((64, 1), -8))
    with pytest.raises(TypeError, match="a must be an integer array"):
        golden_gemm(cfg, ok_a * 1.0, ok_w)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_core_random_shapes_property(data):
    """Random config, shapes, bias, shift and stream timing: the core equals the golden model."""
    cfg = AcceleratorConfig(
        rows=data.draw(st.integers(1, 4), "rows"), cols=data.draw(st.integers(1, 4), "cols"),
        dataflow=data.draw(st.sampled_from(["ws", "os"]), "dataflow"),
        in_signed=data.draw(st.booleans(), "in_signed"), w_signed=data.draw(st.booleans(), "w_signed"),
        out_signed=data.draw(st.booleans(), "out_signed"),
        rounding=data.draw(st.sampled_from(["half_even", "half_up"]), "rounding"),
        per_channel_shift=data.draw(st.booleans(), "per_channel_shift"))
    M, K, N = (data.draw(st.integers(1, 6), n) for n in "MKN")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), "seed"))
    a = rng.integers(cfg.in_range[0], cfg.in_range[1] + 1, (M, K))
    w = rng.integers(cfg.w_range[0], cfg.w_range[1] + 1, (K, N))
    bias = rng.integers(-(1 << 16), 1 << 16, N)
    shift = rng.integers(-3, 16, N) if cfg.per_channel_shift else int(rng.integers(-3, 16))
    relu = data.draw(st.booleans(), "relu")
    idle, stall = data.draw(st.sampled_from([(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.3, 0.3)]), "timing")
    got = run_gemm_amaranth(cfg, a, w, bias, shift, relu, seed=M, idle=idle, stall=stall)
    assert np.array_equal(got, golden_gemm(cfg, a, w, bias, shift, relu))
