"""DSConv, INQ, per-channel adaptive multipoint, per-layer precision and the two method fixes.

Each quantizer is checked against an independent reference (Python ints / fractions, NumPy written
here), and each method's golden network against its own definition (representable weights, shifts,
points per channel).
"""

from fractions import Fraction

import numpy as np
import pytest

from tests.requirements import require

torch = require("torch", "quantize")

from systolic.quantize import METHODS  # noqa: E402
from systolic.quantize import methods as qm  # noqa: E402
from systolic.quantize.dsconv import (DSConvWeightQuantizer, bfp_quantize, dsconv_fit,  # noqa: E402
                                      gemm_order)
from systolic.quantize.inq import INQWeightQuantizer, inq_frac_bits, inq_levels  # noqa: E402
from systolic.quantize.methods import layer_bits, point_cost, quantize_model  # noqa: E402
from systolic.quantize.quantizers import multipoint_points  # noqa: E402


def test_methods_listed():
    assert "dsconv" in METHODS and "inq" in METHODS


# ----------------------------------------------------------------------------------------------- INQ
def _inq_ref(x: Fraction, emax: int) -> int:
    """The paper's rule on |x| in integer units: level b for x in [(a + b)/2, 3b/2), a the next lower level."""
    levels = [0] + [2 ** e for e in range(emax + 1)]
    m = abs(x)
    best = 0
    for i in range(1, len(levels)):
        lo = Fraction(levels[i - 1] + levels[i], 2) if i == 1 else Fraction(3 * levels[i - 1], 2)
        if m >= lo:
            best = levels[i]
    return best if x >= 0 else -best


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_inq_levels_match_the_paper_rule(bits):
    grid = [Fraction(k, 8) for k in range(-8 * 80, 8 * 80 + 1)]      # every boundary is a multiple of 1/4
    x = np.array([float(v) for v in grid])
    got = inq_levels(x, 0, bits)
    want = np.array([_inq_ref(v, bits - 2) for v in grid])
    np.testing.assert_array_equal(got, want)
    mags = np.unique(np.abs(got))
    assert set(mags.tolist()) <= {0} | {2 ** e for e in range(bits - 1)}


def test_inq_frac_bits_follows_n1():
    w = np.array([0.3, -0.9, 0.05])             # 4 * 0.9 / 3 = 1.2 -> n1 = 0
    assert inq_frac_bits(w, 5) == 3             # largest level 2**0 is the integer 2**(5 - 2)
    w = np.array([0.7])                         # 4 * 0.7 / 3 = 0.93 -> n1 = -1
    assert inq_frac_bits(w, 4) == 3


def test_inq_partitions_freeze_the_largest_and_keep_them():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6, 10))
    q = INQWeightQuantizer(4, w)
    assert q.quantize_fraction(w, 0.5) == 30
    frozen = q.frozen.clone()
    mags = w.detach().abs()
    assert mags[frozen].min() >= mags[~frozen].max()           # by magnitude, largest first
    before = q(w).detach()[frozen].clone()
    with torch.no_grad():
        w.add_(torch.randn(6, 10))                             # retraining moves the float weights
    assert torch.equal(q(w).detach()[frozen], before)          # frozen entries keep their levels
    out = q(w)
    out.sum().backward()
    assert torch.all(w.grad[frozen] == 0) and torch.all(w.grad[~frozen] == 1)
    assert q.quantize_fraction(w, 0.75) == 45 and q.quantize_fraction(w, 1.0) == 60
    (points, frac) = q.export(w)
    (ints, shift), = points
    assert shift == 0 and frac == q.frac_bits()
    mags = np.unique(np.abs(ints))
    assert set(mags.tolist()) <= {0, 1, 2, 4}


def test_inq_export_refuses_a_partial_tensor():
    w = torch.nn.Parameter(torch.randn(3, 3))
    q = INQWeightQuantizer(4, w)
    q.quantize_fraction(w, 0.5)
    with pytest.raises(ValueError, match="not yet quantized"):
        q.export(w)


# -------------------------------------------------------------------------------------------- DSConv
def test_dsconv_fit_shifts_and_points_reconstruct_the_fake_quant():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(16, 5, 3, 3)) * np.exp(rng.normal(size=(1, 5, 1, 1)) * 2)   # channel scales differ
    wt = torch.nn.Parameter(torch.from_numpy(w).float())
    q = DSConvWeightQuantizer(4, wt, block=8, block_n=8)
    assert q.block_shift.min() == 0 and q.block_shift.max() <= 16
    assert len(np.unique(q.block_shift)) > 1                  # the blocks' magnitudes differ: shifts do too
    points, frac = q.export(wt)
    assert points[0][1] == 0 and [s for _, s in points] == sorted(s for _, s in points)
    # Each weight lives in exactly one point; the points rebuild the fake-quant weight exactly.
    nz = sum((p != 0).astype(int) for p, _ in points)
    assert nz.max() <= 1
    rebuilt = sum(p.astype(np.float64) * 2.0 ** s for p, s in points) * np.ldexp(1.0, -frac)[:, None, None, None]
    np.testing.assert_array_equal(rebuilt, q(wt.double()).detach().numpy())
    for p, _ in points:
        assert p.min() >= -8 and p.max() <= 7
    # A block's shift is one per (K block, N block) tile of the GEMM matrix.
    g = gemm_order(q.shift_elem)
    for i in range(0, g.shape[0], 8):
        for j in range(0, g.shape[1], 8):
            assert len(np.unique(g[i:i + 8, j:j + 8])) == 1


def test_dsconv_fit_finds_finer_blocks_for_small_weights():
    w = np.ones((16, 8)) * 0.5
    w[8:] *= 1 / 64                                            # second block 64x smaller
    f, s = dsconv_fit(w, 4, 8, 8)
    assert s.tolist() == [[6], [0]]                            # 2**6 coarser first block
    np.testing.assert_array_equal(f, f[0])


# ----------------------------------------------------------------------------------------------- BFP
def _bfp_ref(i: np.ndarray, bits: int, signed: bool, block: int, m: int, rounding: str) -> np.ndarray:
    mhi = (1 << (m - 1)) - 1 if signed else (1 << m) - 1
    mlo = -(1 << (m - 1)) if signed else 0
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    out = np.zeros_like(i)
    for idx in np.ndindex(i.shape[:-1]):
        row = [int(v) for v in i[idx]]
        for b0 in range(0, len(row), block):
            blk = row[b0:b0 + block]
            amax = max(abs(v) for v in blk)
            e = 0
            while (amax >> e) > mhi:
                e += 1
            for j, v in enumerate(blk):
                fr = Fraction(v, 2 ** e)
                r = round(fr) if rounding == "half_even" else int(np.floor(fr + Fraction(1, 2)))
                out[idx + (b0 + j,)] = min(max(min(max(r, mlo), mhi) * 2 ** e, lo), hi)
    return out


@pytest.mark.parametrize("signed,rounding", [(True, "half_even"), (False, "half_up"), (True, "half_up")])
def test_bfp_quantize_matches_reference(signed, rounding):
    rng = np.random.default_rng(2)
    bits, lo, hi = 12, (-2048 if signed else 0), (2047 if signed else 4095)
    i = rng.integers(lo, hi + 1, size=(3, 2, 11)).astype(np.float64)
    i[0, 0, :4] = 0                                            # an all-zero block
    i[0, 1, :4] = [lo, hi, 24, -24 if signed else 8]           # extremes and ties
    scale = 2.0 ** -5
    x = torch.from_numpy(i * scale)
    got = bfp_quantize(x, scale, bits, signed, 4, 4, rounding).numpy() / scale
    np.testing.assert_array_equal(got, _bfp_ref(i.astype(np.int64), bits, signed, 4, 4, rounding))


def test_dsconv_bfp_fakequant_equals_golden_and_compiler_refuses(float_nets):
    from systolic.arch.config import PRESETS
    from systolic.compiler import CompileError, MachineSpec, compile_network
    from tests.quantize.test_golden_equal import assert_identical

    res = quantize_model("digits-cnn", "dsconv", 4, 4, float_net=float_nets("digits-cnn"), bfp=True)
    bfp = [l for l in res.network.layers if l.kind == "bfp"]
    assert bfp and all(l.block == 8 and l.mantissa_bits == 4 for l in bfp)
    assert res.network.layers[-1].kind != "bfp"                 # the logits stay fixed point
    assert_identical(res)                                       # golden bfp layer == torch bfp_quantize
    with pytest.raises(CompileError, match=bfp[0].name):
        compile_network(res.network, MachineSpec.from_config(PRESETS["default"], dram_bytes=1 << 18))
    with pytest.raises(ValueError, match="dsconv"):
        quantize_model("digits-cnn", "tqt", 4, 4, float_net=float_nets("digits-cnn"), bfp=True)


# ------------------------------------------------------------------------------------------ multipoint
def test_multipoint_points_per_channel_scale_and_budget():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(40, 10)) * np.exp(rng.normal(size=(1, 10)))
    x = rng.normal(size=(300, 40))
    pts, base, shifts = multipoint_points(w, x, 4, max_points=2, budget=0.5)
    assert shifts[0] == 0 and len(pts) == 2 and shifts[1] > 0
    assert len(np.unique(base)) > 1                            # channel scales differ: per channel
    carried = np.any(pts[1] != 0, axis=0)
    assert carried.sum() == 5                                  # half the channels, not every one
    one = np.ldexp(pts[0].astype(float), -base[None, :])
    two = one + np.ldexp(pts[1].astype(float), -(base + shifts[1])[None, :])
    e1 = np.linalg.norm(x @ (w - one), axis=0)
    e2 = np.linalg.norm(x @ (w - two), axis=0)
    assert np.all(e2[carried] < e1[carried]) and np.array_equal(e2[~carried], e1[~carried])
    # The chosen channels are the ones whose squared output error falls most.
    gain = np.zeros(10)
    for c in range(10):
        col = pts[0][:, c]
        r = w[:, c] - np.ldexp(col.astype(float), -base[c])
        f = base[c] + shifts[1]
        q2 = np.clip(np.rint(np.ldexp(r, f)), -8, 7)
        gain[c] = np.linalg.norm(x @ r) ** 2 - np.linalg.norm(x @ (r - np.ldexp(q2, -f))) ** 2
    assert set(np.flatnonzero(carried)) == set(np.argsort(-gain)[:5])


def test_multipoint_tolerance_gives_no_point_where_one_is_enough():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(30, 6))
    pts, base, shifts = multipoint_points(w, None, 8, tol=0.05)
    assert len(pts) == 1 and shifts == [0]                     # 8 bits: every channel within 5 %


def test_multipoint_model_varies_points_per_channel(float_nets):
    res = quantize_model("digits-cnn", "multipoint", 4, 8, float_net=float_nets("digits-cnn"))
    cost = res.extra["point_cost"]
    varied = [v for v in cost["layers"].values() if 0 < v["channels_with_extra"]]
    assert varied and any(v["channels_with_extra"] < n.out_channels for v, n in
                          zip(cost["layers"].values(), [l for l in res.network.layers if hasattr(l, "points")]))
    assert 1.0 < cost["macs_ratio"] <= 1.5                      # the default budget: at most 50 % more MACs
    assert any(l.per_channel for l in res.network.layers if hasattr(l, "points"))


def test_point_cost_counts_channel_depth():
    from systolic.golden import QType, QuantizedNetwork
    from systolic.golden.layers import Dense

    w = np.zeros((4, 3), dtype=np.int64)
    w[:, 0] = 1
    e = np.zeros((1, 4, 3), dtype=np.int64)
    e[0, :, 0] = 2                     # channel 0 carries two points at every weight: depth 2
    e[0, 0, 1] = 1                     # channel 1: point 2 only where point 1 is zero: depth 1
    layer = Dense(name="d", inputs=("input",), weight=w, w_type=QType(4, True, 0), out_type=QType(8, True, 0),
                  extra_weights=e, extra_shifts=np.array([2]))
    net = QuantizedNetwork(QType(8, True, 0), (4,), [layer], "half_even")
    cost = point_cost(net)
    assert cost["layers"]["d"]["channels_with_extra"] == 1
    assert cost["macs_ratio"] == round(4 / 3, 4)


# ------------------------------------------------------------------------------------ per-layer bits
def test_first_last_bits_layers(float_nets):
    net = float_nets("digits-resnet")
    res = quantize_model("digits-resnet", "max", 4, 4, float_net=net, first_last_bits=8)
    g = res.network
    comp = [l for l in g.layers if hasattr(l, "w_type")]
    first, last, middle = comp[0], comp[-1], comp[1:-1]
    assert first.w_type.bits == 8 and last.w_type.bits == 8
    assert last.out_type.bits == 8 and g.in_types(last)[0].bits == 8
    assert all(l.w_type.bits == 4 for l in middle) and first.out_type.bits == 4
    assert g.meta["first_last_bits"] == 8
    g.check_accumulators(32)


def test_layer_bits_default_is_uniform(float_nets):
    wb, ab = layer_bits(float_nets("digits-cnn"), 4, 2)
    assert set(wb.values()) == {4} and set(ab.values()) == {2}


# ---------------------------------------------------------------------------------------------- fixes
def test_activation_calibration_uses_the_rounding(monkeypatch, float_nets):
    seen = []
    real = qm.calibrate

    def spy(x, method, bits=8, signed=True, **kw):
        seen.append(kw.get("rounding"))
        return real(x, method, bits, signed, **kw)

    monkeypatch.setattr(qm, "calibrate", spy)
    for method in ("max", "mse", "klj", "percentile", "tqt"):
        seen.clear()
        quantize_model("digits-cnn", method, 8, 8, float_net=float_nets("digits-cnn"), rounding="half_up", epochs=0)
        assert seen and all(r == "half_up" for r in seen), method


def test_sq_keeps_a_state_of_the_final_stage(monkeypatch, float_nets):
    """With validation accuracy falling every epoch, the kept state must still be one of the last, fully
    quantized stage: not the state after the 50 %, 75 % or 87.5 % stage."""
    from systolic.quantize import train as qt

    calls = iter(range(1000))
    monkeypatch.setattr(qt, "accuracy", lambda *a, **k: 1.0 - next(calls) / 1000)
    ratios, early, kept = [], [], []
    real = qt.train_quant

    def spy(net, *a, before_epoch=None, **kw):
        def stage(m, e):
            if e > 0:                                   # the state at the end of epoch e - 1
                early.append({k: v.clone() for k, v in m.state_dict().items()})
            before_epoch(m, e)
            ratios.append(next(iter(m.wq.values())).ratio)
        out = real(net, *a, before_epoch=stage, **kw)
        kept.append({k: v.clone() for k, v in out.state_dict().items()})
        return out

    monkeypatch.setattr(qm, "train_quant", spy)
    quantize_model("digits-cnn", "sq", 4, 8, float_net=float_nets("digits-cnn"), epochs=1)
    assert ratios == [0.5, 0.75, 0.875, 1.0] and len(early) == 3
    for state in early:
        assert not all(torch.equal(kept[0][k], state[k]) for k in state)


def test_train_quant_select_from_excludes_early_epochs(monkeypatch, float_nets):
    import copy

    from systolic.quantize import train as qt
    from systolic.quantize.graph import fold_batchnorm
    from systolic.quantize.quantizers import FixedQuantizer

    net = fold_batchnorm(copy.deepcopy(float_nets("digits-mlp")))
    qin = FixedQuantizer(8, False, 8)
    wq = {n.name: FixedQuantizer(8, True, 6) for n in net.compute_nodes()}
    aq = {n.name: FixedQuantizer(8, not n.relu, 4) for n in net.act_nodes()}
    net.attach(qin, wq, aq)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    calls = iter(range(1000))
    monkeypatch.setattr(qt, "accuracy", lambda *a, **k: 1.0 - next(calls) / 1000)   # worse every epoch
    qt.train_quant(copy.deepcopy(net), epochs=2, w_lr=1e-2, q_lr=0.0)
    kept = copy.deepcopy(net)
    qt.train_quant(kept, epochs=2, w_lr=1e-2, q_lr=0.0, select_from=0)
    assert all(torch.equal(kept.state_dict()[k], start[k]) for k in start)      # epoch 0 state kept
    late = copy.deepcopy(net)
    qt.train_quant(late, epochs=2, w_lr=1e-2, q_lr=0.0, select_from=1)
    assert not all(torch.equal(late.state_dict()[k], start[k]) for k in start)  # a trained state
