"""GemmCore RTL under cocotb (Verilator, and Icarus for one config per dataflow).

Each test builds one config (cached by systolic.sim.core.rtl, one build folder per
config, so pytest-xdist workers do not collide), runs a batch of random
requantized GEMMs with random idle input cycles and output back-pressure in
one simulation, and compares with the golden model by exact equality. Bias
and shift are chosen so that rounding ties and saturation both occur; the
test asserts they did.
"""


import numpy as np
import pytest

from systolic.arch.config import AcceleratorConfig
from tests.requirements import require_program
from systolic.sim import run_gemm, run_gemm_batch
from systolic.sim.core.cases import random_gemm_cases, tie_and_saturation_counts
from systolic.sim.core.driver import golden_gemm


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
# The default run keeps one build per dataflow (2x3, both roundings, 4- and 8-bit); the rest of the
# covering set (a build each, about a minute) is the long set (scripts/test_long.sh).
_DEFAULT_RUN = {2, 3}
VERILATOR_PARAMS = [pytest.param(c, id=c.name, marks=() if i in _DEFAULT_RUN else pytest.mark.long)
                    for i, c in enumerate(VERILATOR_CONFIGS)]
ICARUS_CONFIGS = [
    _cfg((2, 3), "ws", 8, "half_up"),
    _cfg((3, 2), "os", 4, "half_even"),
]


def make_cases(cfg, rng, n_cases=4):
    return random_gemm_cases(cfg, rng, n_cases)


def check_cases(cfg, cases, results):
    ties = saturated = 0
    for case, got in zip(cases, results):
        want = golden_gemm(cfg, case["a"], case["w"], case["bias"], case["shift"], case["relu"])
        assert got.dtype == np.int64 and got.shape == want.shape
        assert np.array_equal(got, want), f"mismatch:\n{got}\n!=\n{want}"
        t, s = tie_and_saturation_counts(cfg, case)
        ties += t
        saturated += s
    assert ties > 0, "no rounding tie occurred"
    assert saturated > 0, "no saturation occurred"


@pytest.mark.slow
@pytest.mark.parametrize("cfg", VERILATOR_PARAMS)
def test_verilator_gemm(cfg):
    rng = np.random.default_rng(sum(map(ord, cfg.name)))
    cases = make_cases(cfg, rng)
    results = run_gemm_batch(cfg, cases, "verilator", seed=5, idle=0.3, stall=0.3)
    check_cases(cfg, cases, results)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", ICARUS_CONFIGS, ids=lambda c: c.name)
def test_icarus_gemm(cfg):
    require_program("iverilog", "the Debian package iverilog; scripts/setup.sh installs it as root")
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
    with pytest.raises(ValueError, match=r"^simulator must be one of verilator, icarus, not 'vcs'$"):
        run_gemm(cfg, a, w, simulator="vcs")
    assert (a * 2).min() < -128          # the check names the lowest value when one is below the range
    with pytest.raises(ValueError) as info:
        run_gemm(cfg, a * 2, w)
    assert str(info.value) == f"a holds {(a * 2).min()}, outside the range [-128, 127] of int8(f=0)"


@pytest.mark.slow
def test_interrupted_run_leaves_no_run_folder(monkeypatch):
    """Ctrl-C during a GEMM-core run: its run-* folder is removed (a failed run keeps it for inspection)."""
    import cocotb_tools.runner

    from systolic.sim.core.rtl import build_rtl

    cfg = VERILATOR_CONFIGS[3]                    # shares the build of the parametrized test
    build = build_rtl(cfg, "verilator")
    before = set(build.build_dir.glob("run-*"))

    class Interrupted:
        def test(self, **kwargs):
            assert set(build.build_dir.glob("run-*")) - before      # the run folder exists during the run
            raise KeyboardInterrupt

    monkeypatch.setattr(cocotb_tools.runner, "get_runner", lambda simulator: Interrupted())
    with pytest.raises(KeyboardInterrupt):
        run_gemm(cfg, np.ones((2, 3), int), np.ones((3, 3), int))
    assert set(build.build_dir.glob("run-*")) == before
