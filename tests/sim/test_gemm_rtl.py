"""GemmCore RTL under cocotb (Verilator, and Icarus for one config per dataflow).

Each test builds one config (cached by systolic.sim.rtl, one build folder per
config, so pytest-xdist workers do not collide), runs a batch of random
requantized GEMMs with random idle input cycles and output back-pressure in
one simulation, and compares with the golden model by exact equality. Bias
and shift are chosen so that rounding ties and saturation both occur; the
test asserts they did.
"""

import shutil

import numpy as np
import pytest

from systolic.hw.config import AcceleratorConfig
from systolic.sim import run_gemm, run_gemm_batch
from systolic.sim.driver import golden_gemm


def _cfg(size, dataflow, bits, rounding, **kw):
    r, c = size
    base = dict(rows=r, cols=c, dataflow=dataflow, in_bits=bits, w_bits=bits, out_bits=bits,
                rounding=rounding)
    if bits == 4:
        base["acc_bits"] = 16
    base.update(kw)
    return AcceleratorConfig(**base)


# A covering set: every array size, both dataflows, 4- and 8-bit operands, both
# rounding modes, signed and unsigned types, per-channel and per-tensor shift.
VERILATOR_CONFIGS = [
    _cfg((1, 1), "ws", 8, "half_even"),
    _cfg((1, 1), "os", 4, "half_up"),
    _cfg((2, 3), "ws", 4, "half_up"),
    _cfg((2, 3), "os", 8, "half_even"),
    _cfg((4, 4), "ws", 8, "half_up", per_channel_shift=False),
    _cfg((4, 4), "os", 4, "half_even", in_signed=False, out_signed=False),
    _cfg((8, 8), "ws", 4, "half_even", w_signed=False),
    _cfg((8, 8), "os", 8, "half_up"),
    _cfg((16, 16), "ws", 8, "half_even"),
    _cfg((16, 16), "os", 4, "half_up", out_signed=False),
]
ICARUS_CONFIGS = [
    _cfg((2, 3), "ws", 8, "half_up"),
    _cfg((3, 2), "os", 4, "half_even"),
]


def make_cases(cfg, rng, n_cases=4):
    """Random GEMMs whose bias/shift force rounding ties and saturation."""
    (alo, ahi), (wlo, whi) = cfg.in_range, cfg.w_range
    R, C = cfg.rows, cfg.cols
    shapes = [(R + 1, 2 * R + 1, max(C + 1, 3)), (3, R, max(C, 3)), (1, 1, 3),
              (2 * R, 3, max(C - 1, 3))][:n_cases]
    cases = []
    for n, (M, K, N) in enumerate(shapes):
        a = rng.integers(alo, ahi + 1, (M, K))
        w = rng.integers(wlo, whi + 1, (K, N))
        acc = a @ w
        span = max(int(np.abs(acc).max()), 4)
        k = max(span.bit_length() - cfg.out_bits + 1, 2)
        if cfg.per_channel_shift:
            shift = rng.integers(k - 2, k + 2, N)
            shift[0], shift[1] = k, k
            shift[-1] = -1  # left shift: saturates or stays exact
        else:
            shift = np.full(N, k)
        bias = rng.integers(-span // 2, span // 2 + 1, N)
        # Exact ties in channels 0 and 1 of row 0: acc + bias = (2q+1) * 2**(k-1), q even / odd.
        for ch, q in ((0, 2), (1, -3)):
            bias[ch] = (2 * q + 1) * (1 << (k - 1)) - acc[0, ch]
        # Saturation in channel 2 of row 0.
        bias[2] = ((cfg.out_range[1] + 3) << max(int(shift[2]), 0)) - acc[0, 2]
        cases.append({"a": a, "w": w, "bias": bias, "shift": shift, "relu": n % 2 == 1})
    return cases


def check_cases(cfg, cases, results):
    ties = saturated = 0
    olo, ohi = cfg.out_range
    for case, got in zip(cases, results):
        want = golden_gemm(cfg, case["a"], case["w"], case["bias"], case["shift"], case["relu"])
        assert got.dtype == np.int64 and got.shape == want.shape
        assert np.array_equal(got, want), f"mismatch:\n{got}\n!=\n{want}"
        x = case["a"] @ case["w"] + case["bias"]
        k = np.broadcast_to(case["shift"], x.shape)
        pos = k > 0
        ties += int(np.sum(pos & ((x & ((1 << np.maximum(k, 1)) - 1)) == (1 << np.maximum(k - 1, 0)))))
        unsat = np.where(k >= 0, x >> np.maximum(k, 0), x << np.maximum(-k, 0))
        saturated += int(np.sum((unsat > ohi + 1) | (unsat < olo - 1)))
    assert ties > 0, "no rounding tie occurred"
    assert saturated > 0, "no saturation occurred"


@pytest.mark.slow
@pytest.mark.parametrize("cfg", VERILATOR_CONFIGS, ids=lambda c: c.name)
def test_verilator_gemm(cfg):
    rng = np.random.default_rng(sum(map(ord, cfg.name)))
    cases = make_cases(cfg, rng)
    results = run_gemm_batch(cfg, cases, "verilator", seed=5, idle=0.3, stall=0.3)
    check_cases(cfg, cases, results)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("iverilog") is None,
                    reason="iverilog not installed (apt-get install iverilog)")
@pytest.mark.parametrize("cfg", ICARUS_CONFIGS, ids=lambda c: c.name)
def test_icarus_gemm(cfg):
    rng = np.random.default_rng(sum(map(ord, cfg.name)))
    cases = make_cases(cfg, rng, n_cases=3)
    results = run_gemm_batch(cfg, cases, "icarus", seed=6, idle=0.3, stall=0.3)
    check_cases(cfg, cases, results)


@pytest.mark.slow
def test_run_gemm_public_api_and_errors():
    cfg = VERILATOR_CONFIGS[3]  # shares the build of the parametrized test
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (5, 7))
    w = rng.integers(-128, 128, (7, 4))
    got = run_gemm(cfg, a, w, bias=np.arange(4) * 100, shift=7, relu=True)
    assert np.array_equal(got, golden_gemm(cfg, a, w, np.arange(4) * 100, 7, True))
    # Defaults: no bias, shift 0 (saturating the raw accumulators).
    assert np.array_equal(run_gemm(cfg, a, w), golden_gemm(cfg, a, w))
    with pytest.raises(ValueError, match="simulator must be one of verilator, icarus, not 'vcs'"):
        run_gemm(cfg, a, w, simulator="vcs")
    with pytest.raises(ValueError, match="outside the range"):
        run_gemm(cfg, a * 2, w)
