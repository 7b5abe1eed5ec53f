"""Layer features for imported networks (ResNet, MobileNet): grouped / depthwise convolution, the upper clamp
(ReLU6), padded pooling, average pooling over any window area, channel concatenation.

Expected values come from tests/golden/reference.py (loops over Python ints, Fractions for every division),
never from the code under test; every rounding mode, the ends of the types, clear errors, and the compiler's
host fallback running bit-exactly against the golden model.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from systolic.golden import (Add, AvgPool2D, Concat, Conv2D, Dense, Flatten, MaxPool2D, QType, QuantizedNetwork,
                             round_div, round_shift)
from systolic.golden.ops import grouped_matmul

from .reference import (avg_ref, grouped_conv2d_ref, pool_windows_ref, round_div_ref, round_shift_ref,
                        saturate_ref)

MODES = ["half_even", "half_up"]
INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1


def _rng(seed):
    return np.random.default_rng(seed)


def _requant_clamp_ref(v, k, qt: QType, relu, out_max, rounding):
    """sat(min(relu?(round_shift(v, k)), out_max)): docs/numerics.md, Dense / Conv2D / Add."""
    y = round_shift_ref(v, k, rounding)
    if relu:
        y = max(y, 0)
    if out_max is not None:
        y = min(y, out_max)
    return saturate_ref(y, qt.bits, qt.signed)


# ------------------------------------------------------------------------------------------- round_div
@pytest.mark.parametrize("mode", MODES)
def test_round_div_is_the_rounded_rational(mode):
    for d in range(1, 14):
        got = round_div(np.arange(-60, 61), d, mode).tolist()
        assert got == [round_div_ref(x, d, mode) for x in range(-60, 61)], d


def test_round_div_ties_by_mode():
    # 3/6, 9/6, -3/6, -9/6 are ties: half_even goes to the even neighbour, half_up toward +infinity.
    x = np.array([3, 9, -3, -9, 15, -15])
    assert round_div(x, 6, "half_even").tolist() == [0, 2, 0, -2, 2, -2]
    assert round_div(x, 6, "half_up").tolist() == [1, 2, 0, -1, 3, -2]


@pytest.mark.parametrize("mode", MODES)
def test_round_div_at_the_int64_ends(mode):
    xs = [INT64_MIN, INT64_MIN + 1, -3, -1, 0, 1, 2, INT64_MAX - 1, INT64_MAX]
    for d in (1, 2, 3, 7, 2 ** 62, 3 * 2 ** 60 + 1, INT64_MAX):
        assert round_div(np.array(xs), d, mode).tolist() == [round_div_ref(x, d, mode) for x in xs], d


@settings(max_examples=300, deadline=None)
@given(x=st.integers(INT64_MIN, INT64_MAX), d=st.integers(1, INT64_MAX) | st.integers(1, 64),
       mode=st.sampled_from(MODES))
def test_round_div_property(x, d, mode):
    assert int(round_div(np.array([x]), d, mode)[0]) == round_div_ref(x, d, mode)


@settings(max_examples=200, deadline=None)
@given(x=st.integers(INT64_MIN, INT64_MAX), k=st.integers(0, 62), mode=st.sampled_from(MODES))
def test_round_div_by_a_power_of_two_is_round_shift(x, k, mode):
    got = int(round_div(np.array([x]), 2 ** k, mode)[0])
    assert got == round_div_ref(x, 2 ** k, mode)
    if not (mode == "half_up" and k and x > INT64_MAX - 2 ** (k - 1)):   # where round_shift refuses x + 2**(k-1)
        assert got == int(round_shift(np.array([x]), k, mode)[0])


@pytest.mark.parametrize("d", [0, -3, 2 ** 63, True, 1.5])
def test_round_div_refuses_a_bad_divisor(d):
    with pytest.raises(ValueError, match=r"d must be an int between 1 and 2\*\*63 - 1, not"):
        round_div(np.array([1]), d)


# ----------------------------------------------------------------------------- grouped convolution
GROUPED = [  # (c_in, groups, c_out, kernel, stride, padding)
    (4, 2, 6, (3, 3), (1, 1), (1, 1, 1, 1)),
    (6, 3, 3, (2, 3), (2, 1), (0, 1, 1, 0)),
    (5, 5, 5, (3, 3), (1, 2), (1, 1, 1, 1)),       # depthwise
    (4, 4, 8, (3, 2), (2, 2), (1, 0, 0, 1)),       # depthwise, channel multiplier 2
    (3, 1, 4, (1, 1), (1, 1), (0, 0, 0, 0)),       # groups = 1: the same reference
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", range(len(GROUPED)))
def test_grouped_conv_equals_loop_reference(case, mode):
    cin, groups, cout, kernel, stride, pad = GROUPED[case]
    rng = _rng(case)
    n, h, w = 2, 5, 6
    in_t, w_t = QType(8, case % 2 == 0, 5), QType(8, True, 6)
    out_t = QType(8, case % 2 == 1, 3)
    x = rng.integers(in_t.lo, in_t.hi + 1, (n, h, w, cin))
    x[0, 0] = in_t.lo                                   # ends of the input range
    x[0, 1] = in_t.hi
    wt = rng.integers(-128, 128, (*kernel, cin // groups, cout))
    bias = rng.integers(-3000, 3000, cout)
    w_frac = rng.integers(4, 9, cout) if case % 2 else None
    relu = out_t.signed is False or case == 0
    out_max = (6 << out_t.frac_bits) if relu and case != 4 else None
    extra = dict(extra_weights=rng.integers(-8, 8, (1, *wt.shape)), extra_shifts=[3]) if case == 3 else {}
    layer = Conv2D(name="g", inputs=("input",), weight=wt, w_type=w_t, out_type=out_t, bias=bias, relu=relu,
                   out_max=out_max, w_frac=w_frac, stride=stride, padding=pad, groups=groups, **extra)
    net = QuantizedNetwork(in_t, (h, w, cin), [layer], rounding=mode)
    got = net(x)
    w_eff = wt + (extra["extra_weights"][0] << 3 if extra else 0)
    acc = grouped_conv2d_ref(x.tolist(), w_eff.tolist(), stride, pad, groups)
    fw = w_frac if w_frac is not None else [6] * cout
    want = [[[[_requant_clamp_ref(acc[b][i][j][o] + int(bias[o]), 5 + int(fw[o]) - 3, out_t, relu, out_max, mode)
               for o in range(cout)] for j in range(len(acc[0][0]))] for i in range(len(acc[0]))] for b in range(n)]
    assert got.tolist() == want
    if out_max is not None:
        assert got.max() == min(out_max, out_t.hi)       # the clamp is reached


def test_grouped_conv_bounds_are_per_group_and_attained():
    rng = _rng(1)
    wt = rng.integers(-128, 128, (3, 3, 2, 6))             # 3 groups of 2 input -> 2 output channels
    bias = rng.integers(-500, 500, 6)
    in_t = QType(8, True, 0)
    layer = Conv2D(name="g", inputs=("input",), weight=wt, w_type=QType(8, True, 0), out_type=QType(32, True, 0),
                   bias=bias, groups=3)
    net = QuantizedNetwork(in_t, (3, 3, 6), [layer])
    # Independently: column o sums over its own group's 3x3x2 weights only.
    cols = [[int(v) for v in wt[:, :, :, o].ravel()] for o in range(6)]
    his = [sum(v * (127 if v > 0 else -128) for v in c) + int(bias[o]) for o, c in enumerate(cols)]
    los = [sum(v * (-128 if v > 0 else 127) for v in c) + int(bias[o]) for o, c in enumerate(cols)]
    assert net.accumulator_bounds()["g"] == (min(los), max(his))
    o = int(np.argmax(his))
    x = np.zeros((1, 3, 3, 6), np.int64)                   # the input of group o // 2 at the matching ends
    x[0, :, :, (o // 2) * 2:(o // 2) * 2 + 2] = np.where(wt[:, :, :, o] > 0, 127, -128)
    x[0, :, :, [c for c in range(6) if c // 2 != o // 2]] = 127      # other groups: no effect on channel o
    assert int(net(x)[0, 0, 0, o]) == max(his)


def test_grouped_conv_int64_proof_is_per_group():
    # |a| <= 2**31, |w| <= 2**31: one product is at most 2**62 (fits int64), two may be 2**63 (does not).
    big = QType(32, True, 0)
    w = np.full((1, 1, 1, 4), -2 ** 31)
    dw = Conv2D(name="dw", inputs=("input",), weight=w, w_type=big, out_type=QType(32, True, -31), groups=4)
    net = QuantizedNetwork(big, (1, 1, 4), [dw])          # depthwise: K = 1 per group
    x = np.array([[[[-2 ** 31, 2 ** 31 - 1, 0, 1]]]])
    want = [saturate_ref(round_shift_ref(v * -2 ** 31, 31, "half_even"), 32, True) for v in x.ravel().tolist()]
    assert net(x).ravel().tolist() == want == [2 ** 31 - 1, -2 ** 31 + 1, 0, -1]
    w2 = np.full((1, 1, 2, 4), -2 ** 31)
    with pytest.raises(OverflowError, match=r"^layer 'g2': the worst case of \|acc \+ bias\| \(output channel \d, "
                                            r"inputs in int32\(f=0\)\) is 9223372036854775808, beyond the int64 range"):
        QuantizedNetwork(big, (1, 1, 4), [Conv2D(name="g2", inputs=("input",), weight=w2, w_type=big,
                                                 out_type=QType(32, True, -31), groups=2)])


def test_grouped_matmul_is_one_exact_gemm_per_group():
    rng = _rng(2)
    a, w = rng.integers(-128, 128, (3, 5, 4)), rng.integers(-128, 128, (3, 4, 2))
    want = [[[sum(int(a[g, m, k]) * int(w[g, k, n]) for k in range(4)) for n in range(2)] for m in range(5)]
            for g in range(3)]
    assert grouped_matmul(a, w).tolist() == want
    # Each column's bound max|a| * sum_k |w| must fit int64 (2**31 * 2 * 2**31 = 2**63 does not).
    big = np.full((2, 1, 2), -2 ** 31)
    assert grouped_matmul(big, np.full((2, 2, 1), 2 ** 31 - 1)).tolist() == [[[-2 ** 63 + 2 ** 32]]] * 2
    with pytest.raises(OverflowError, match=r"^grouped_matmul operands too large for exact int64 accumulation"):
        grouped_matmul(big, np.full((2, 2, 1), -2 ** 31))
    with pytest.raises(ValueError, match=r"^grouped_matmul needs a \(G, M, K\) and w \(G, K, N\), not \(3, 5, 4\) and "
                                         r"\(2, 4, 2\)"):
        grouped_matmul(a, w[:2])


def _conv(groups, weight_shape, name="g"):
    return Conv2D(name=name, inputs=("input",), weight=np.ones(weight_shape, np.int64), w_type=QType(8, True, 0),
                  out_type=QType(8, True, 0), groups=groups)


@pytest.mark.parametrize("build,exc,msg", [
    (lambda: _conv(3, (3, 3, 1, 4)), ValueError,
     "layer 'g': groups=3 must be a positive divisor of the 4 output channels (weight (kh, kw, c_in/groups, c_out) "
     "of shape (3, 3, 1, 4))"),
    (lambda: _conv(0, (3, 3, 1, 4)), ValueError, "layer 'g': groups=0 must be a positive divisor of the 4"),
    (lambda: _conv(True, (3, 3, 1, 4)), TypeError, "layer 'g': groups must be an int, not True"),
    (lambda: _conv(2.0, (3, 3, 1, 4)), TypeError, "layer 'g': groups must be an int, not 2.0"),
    (lambda: QuantizedNetwork(QType(8, True, 0), (5, 5, 4), [_conv(8, (3, 3, 1, 8))]), ValueError,
     "layer 'g': conv2d expects (H, W, 8) per sample (groups=8 x 1 input channels per group, from the weight of "
     "shape (3, 3, 1, 8)), got (5, 5, 4)"),
    (lambda: QuantizedNetwork(QType(8, True, 0), (5, 5, 4), [_conv(4, (3, 3, 4, 4))]), ValueError,
     "layer 'g': conv2d expects (H, W, 16) per sample (groups=4 x 4 input channels per group"),
])
def test_grouped_conv_errors_name_the_layer(build, exc, msg):
    with pytest.raises(exc) as info:
        build()
    assert type(info.value) is exc and str(info.value).startswith(msg)


# ------------------------------------------------------------------------------------- upper clamp
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("out_t,out_max", [(QType(8, False, 2), 24), (QType(8, True, 2), 24), (QType(4, False, 0), 9),
                                           (QType(8, False, 6), 6 << 6), (QType(8, True, 0), 0)])
def test_dense_out_max_clamps_after_relu_before_saturation(mode, out_t, out_max):
    x = np.arange(-700, 700).reshape(-1, 1)
    layer = Dense(name="d", inputs=("input",), weight=np.array([[1]]), w_type=QType(2, True, 0), out_type=out_t,
                  bias=np.array([3]), relu=True, out_max=out_max)
    net = QuantizedNetwork(QType(16, True, 2), (1,), [layer], rounding=mode)
    got = net(x)[:, 0].tolist()
    assert got == [_requant_clamp_ref(int(v) + 3, 2 + 0 - out_t.frac_bits, out_t, True, out_max, mode) for v in x[:, 0]]
    assert min(got) == 0 and max(got) == min(out_max, out_t.hi)
    if out_max >= out_t.hi:                                   # a clamp above the type's max changes nothing
        plain = QuantizedNetwork(QType(16, True, 2), (1,), [Dense(
            name="d", inputs=("input",), weight=np.array([[1]]), w_type=QType(2, True, 0), out_type=out_t,
            bias=np.array([3]), relu=True)], rounding=mode)
        assert np.array_equal(plain(x), net(x))


@pytest.mark.parametrize("mode", MODES)
def test_add_out_max(mode):
    rng = _rng(4)
    a = rng.integers(-128, 128, (200, 3))
    ident = Dense(name="b", inputs=("input",), weight=np.eye(3, dtype=np.int64), w_type=QType(2, True, 0),
                  out_type=QType(8, False, 5), relu=True)
    add = Add(name="s", inputs=("input", "b"), out_type=QType(8, False, 2), relu=True, out_max=6 << 2)
    net = QuantizedNetwork(QType(8, True, 3), (3,), [ident, add], mode)
    outs = net.run(a)
    want = [[_requant_clamp_ref(int(a[i, j]) * 4 + int(outs["b"][i, j]), 3, add.out_type, True, 24, mode)
             for j in range(3)] for i in range(200)]
    assert outs["s"].tolist() == want and outs["s"].max() == 24


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(relu=True, out_max=-1), ValueError, "layer 'd': out_max must be between 0 and 2**63 - 1, not -1"),
    (dict(relu=True, out_max=2 ** 63), ValueError, "layer 'd': out_max must be between 0 and 2**63 - 1, not 9223372036854775808"),
    (dict(relu=False, out_max=96), ValueError, "layer 'd': out_max=96 needs relu=True: the clamp is "
                                               "y = min(max(y, 0), out_max) (ReLU6 / Clip(0, x)), applied after the ReLU"),
    (dict(relu=True, out_max=True), TypeError, "layer 'd': out_max must be an int or None, not True"),
    (dict(relu=True, out_max=6.0), TypeError, "layer 'd': out_max must be an int or None, not 6.0"),
])
def test_out_max_errors(kw, exc, msg):
    for build in (lambda: Dense(name="d", inputs=("input",), weight=np.ones((2, 2), np.int64), w_type=QType(8, True, 0),
                                out_type=QType(8, True, 0), **kw),
                  lambda: Add(name="d", inputs=("input", "input"), out_type=QType(8, True, 0), **kw)):
        with pytest.raises(exc) as info:
            build()
        assert type(info.value) is exc and str(info.value) == msg


# ---------------------------------------------------------------------------------- padded pooling
POOLS = [  # (pool, stride, padding)
    ((3, 3), (2, 2), (1, 1, 1, 1)),
    ((2, 2), (2, 2), (1, 0, 0, 1)),
    ((3, 2), (1, 2), (2, 1, 0, 1)),
    ((2, 4), (2, 1), (0, 1, 3, 2)),
    ((7, 7), (1, 1), (0, 0, 0, 0)),       # global average pool of a 7x7 map (ImageNet ResNets)
]
TYPES = [QType(8, True, 3), QType(8, False, 4), QType(3, True, 0)]


def _pool_input(t, case, shape):
    rng = _rng(10 + case)
    x = rng.integers(t.lo, t.hi + 1, shape)
    x[0] = t.lo                           # all at the minimum: the max-pool padding must not win over it
    x[1] = t.hi
    return x


@pytest.mark.parametrize("t", TYPES, ids=str)
@pytest.mark.parametrize("case", range(len(POOLS)))
def test_padded_maxpool_is_the_max_of_the_window_inputs(case, t):
    pool, stride, pad = POOLS[case]
    x = _pool_input(t, case, (4, 7, 7, 2))
    net = QuantizedNetwork(t, (7, 7, 2), [MaxPool2D(name="m", inputs=("input",), pool=pool, stride=stride, padding=pad)])
    wins = pool_windows_ref(x.tolist(), pool, stride, pad)
    assert net(x).tolist() == [[[[max(v) for v in px] for px in row] for row in img] for img in wins]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("t", TYPES, ids=str)
@pytest.mark.parametrize("case", range(len(POOLS)))
def test_padded_avgpool_divides_by_the_whole_window(case, t, mode):
    pool, stride, pad = POOLS[case]
    area = pool[0] * pool[1]
    x = _pool_input(t, case, (4, 7, 7, 2))
    for out_t in (t, QType(8, True, t.frac_bits + 2), QType(4, False, t.frac_bits - 1)):
        layer = AvgPool2D(name="a", inputs=("input",), pool=pool, stride=stride, padding=pad, out_type=out_t)
        got = QuantizedNetwork(t, (7, 7, 2), [layer], mode)(x)
        wins = pool_windows_ref(x.tolist(), pool, stride, pad)
        want = [[[[avg_ref(sum(v), area, t.frac_bits, out_t.frac_bits, out_t.bits, out_t.signed, mode) for v in px]
                  for px in row] for row in img] for img in wins]
        assert got.tolist() == want, out_t


def test_global_average_pool_7x7():
    rng = _rng(3)
    x = rng.integers(0, 256, (3, 7, 7, 4))
    x[0, :, :, 0] = 255
    gap = AvgPool2D(name="gap", inputs=("input",), pool=(7, 7), out_type=QType(8, False, 4))
    net = QuantizedNetwork(QType(8, False, 4), (7, 7, 4), [gap, Flatten(name="f", inputs=("gap",))])
    got = net(x)
    assert got.shape == (3, 4) and got[0, 0] == 255
    assert got.tolist() == [[avg_ref(int(x[b, :, :, c].sum()), 49, 4, 4, 8, False, "half_even") for c in range(4)]
                            for b in range(3)]


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("kw,exc,msg", [
    (dict(pool=2, padding=2), ValueError, "layer 'p': pooling padding (2, 2, 2, 2) (top, bottom, left, right) must be "
                                          "smaller than the window 2x2 on each side, so that every window holds an input element"),
    (dict(pool=(3, 1), padding=(0, 0, 1, 0)), ValueError, "layer 'p': pooling padding (0, 0, 1, 0)"),
    (dict(pool=3, padding=-1), ValueError, "layer 'p': padding must be between 0 and 255, not (-1, -1, -1, -1)"),
    (dict(pool=3, padding=(1, 1, 1)), TypeError, "layer 'p' padding must be an int or a pair of ints, not (1, 1, 1)"),
    (dict(pool=3, padding=(1.0, 1, 1, 1)), TypeError, "layer 'p' padding must be an int, a pair or four ints"),
])
def test_pool_padding_errors(cls, kw, exc, msg):
    with pytest.raises(exc) as info:
        cls(name="p", inputs=("input",), **kw)
    assert type(info.value) is exc and str(info.value).startswith(msg)


def test_padded_pool_that_does_not_fit_names_its_padding():
    with pytest.raises(ValueError, match=r"^layer 'p': pool \(3, 3\) does not fit input 1x1 with padding \(1, 0, 0, 0\)$"):
        QuantizedNetwork(QType(8, True, 0), (1, 1, 2), [MaxPool2D(name="p", inputs=("input",), pool=3, padding=(1, 0, 0, 0))])


# ------------------------------------------------------------------------- average pool of any area
AREAS = [(1, 3), (3, 3), (2, 3), (1, 6), (5, 5), (7, 7), (3, 4)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("t", [QType(8, True, 4), QType(8, False, 4)], ids=str)
def test_avgpool_division_is_exact_over_the_whole_reachable_range(t, mode):
    """Every window sum an input of type *t* can produce, for each area and shift: the exact rational."""
    for pool in AREAS:
        area = pool[0] * pool[1]
        s = np.arange(area * t.lo, area * t.hi + 1)
        for df in (-3, -1, 0, 2, 5):                       # f_out - f_in: left and right shifts
            layer = AvgPool2D(name="a", inputs=("input",), pool=pool, out_type=QType(32, True, t.frac_bits + df))
            got = layer.divide(s, t, mode).tolist()
            want = [round_div_ref(v * 2 ** max(df, 0), area * 2 ** max(-df, 0), mode) for v in s.tolist()]
            assert got == want, (pool, df)


@settings(max_examples=200, deadline=None)
@given(ph=st.integers(1, 9), pw=st.integers(1, 9), f_in=st.integers(-10, 10), df=st.integers(-12, 12),
       frac=st.floats(0, 1), mode=st.sampled_from(MODES), bits=st.sampled_from([2, 8, 16, 32]), signed=st.booleans())
def test_avgpool_any_area_property(ph, pw, f_in, df, frac, mode, bits, signed):
    t = QType(bits, signed, f_in)
    area = ph * pw
    lo, hi = area * t.lo, area * t.hi
    s = np.array(sorted({lo, hi, 0, lo + int((hi - lo) * frac)}))
    out_t = QType(32, True, f_in + df)
    layer = AvgPool2D(name="a", inputs=("input",), pool=(ph, pw), out_type=out_t)
    QuantizedNetwork(t, (ph, pw, 1), [layer])           # the layer's arithmetic is proved exact first
    got = layer.divide(s, t, mode).tolist()
    assert got == [round_div_ref(v * 2 ** max(df, 0), area * 2 ** max(-df, 0), mode) for v in s.tolist()]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pool", [(1, 1), (1, 2), (2, 2), (4, 4), (2, 8)])
def test_power_of_two_areas_keep_their_single_rounding_shift(pool, mode):
    """The formula of earlier versions, sat(round_shift(sum, log2(area) + f_in - f_out)), bit for bit."""
    rng = _rng(5)
    t = QType(8, True, 3)
    x = rng.integers(-128, 128, (3, 8, 8, 2))
    p = int(math.log2(pool[0] * pool[1]))
    for f_out in (0, 3, 6, 9):
        layer = AvgPool2D(name="a", inputs=("input",), pool=pool, out_type=QType(8, True, f_out))
        got = QuantizedNetwork(t, (8, 8, 2), [layer], mode)(x)
        oh, ow = 8 // pool[0], 8 // pool[1]
        want = [[[[saturate_ref(round_shift_ref(int(x[b, i * pool[0]:(i + 1) * pool[0], j * pool[1]:(j + 1) * pool[1], c].sum()),
                                                p + 3 - f_out, mode), 8, True) for c in range(2)] for j in range(ow)]
                 for i in range(oh)] for b in range(3)]
        assert got.tolist() == want


def _hardware_divide(s: int, d: int, k: int, rounding: str, bound: int) -> int:
    """The hardware recipe of docs/numerics.md: a multiplier and shifts, no divider.

    n = s * 2**max(-k, 0) (|n| <= bound); Q = floor(n / d) by one multiply and shift on a non-negative operand
    (Granlund & Montgomery 1994, Thm 4.2: 0 <= u < 2**L, l = ceil(log2 d), M = ceil(2**(L+l) / d) gives
    floor(u / d) = (u * M) >> (L + l)); R = n - Q*d; then a rounding shift of Q by k' = max(k, 0) with the
    sticky bit R > 0.
    """
    n, kk = s << max(-k, 0), max(k, 0)
    c = -(-bound // (d << kk)) << kk                   # offset making u >= 0 (a multiple of 2**k': hardware may
    #                                                    also remove it after the shift, as c >> k')
    u = n + c * d
    big_l = (bound + c * d).bit_length()
    l = (d - 1).bit_length()
    m = -(-(1 << (big_l + l)) // d)
    assert 0 <= u < 1 << big_l
    q = ((u * m) >> (big_l + l)) - c
    r = n - q * d
    assert 0 <= r < d
    if kk == 0:
        return q + (2 * r > d)                         # d odd: never a tie
    q0, low, half = q >> kk, q & ((1 << kk) - 1), 1 << (kk - 1)
    up = low > half or (low == half and (r > 0 or rounding == "half_up" or q0 & 1 == 1))
    return q0 + up


@pytest.mark.parametrize("mode", MODES)
def test_hardware_multiplier_recipe_equals_the_golden_division(mode):
    t = QType(8, True, 4)
    for pool in [(3, 3), (7, 7), (1, 6), (5, 3)]:
        area = pool[0] * pool[1]
        s = np.arange(area * t.lo, area * t.hi + 1)
        for f_out in (0, 2, 4, 7):
            layer = AvgPool2D(name="a", inputs=("input",), pool=pool, out_type=QType(16, True, f_out))
            k, d = layer.shift(t), layer.odd_area
            assert d * 2 ** layer.log2_area == area and d % 2 == 1
            bound = area * 128 << max(-k, 0)
            want = layer.divide(s, t, mode).tolist()
            assert [_hardware_divide(v, d, k, mode, bound) for v in s.tolist()] == want, (pool, f_out)


def test_avgpool_divisor_beyond_int64_is_refused():
    layer = AvgPool2D(name="a", inputs=("input",), pool=(1, 3), out_type=QType(8, True, -14))
    with pytest.raises(ValueError, match=r"^layer 'a': the average-pool divisor 3 \* 2\*\*62 \(area \* 2\*\*\(f_in - "
                                         r"f_out\)\) is beyond 2\*\*63 - 1"):
        QuantizedNetwork(QType(8, True, 48), (1, 3, 1), [layer])
    ok = AvgPool2D(name="a", inputs=("input",), pool=(1, 3), out_type=QType(8, True, -13))   # 3 * 2**61 fits
    net = QuantizedNetwork(QType(8, True, 48), (1, 3, 1), [ok])
    assert net(np.array([[[[127], [127], [127]]]])).tolist() == [[[[0]]]]


# ------------------------------------------------------------------------------------------- concat
@pytest.mark.parametrize("mode", MODES)
def test_concat_aligns_every_operand_2d(mode):
    rng = _rng(6)
    in_t = QType(8, True, 4)
    d1 = Dense(name="d1", inputs=("input",), weight=rng.integers(-8, 8, (5, 3)), w_type=QType(4, True, 3),
               out_type=QType(8, False, 6), relu=True)
    d2 = Dense(name="d2", inputs=("input",), weight=rng.integers(-8, 8, (5, 2)), w_type=QType(4, True, 3),
               out_type=QType(4, True, 1))
    cat = Concat(name="c", inputs=("input", "d1", "d2", "input"), out_type=QType(8, True, 5))
    net = QuantizedNetwork(in_t, (5,), [d1, d2, cat], mode)
    x = rng.integers(-128, 128, (300, 5))
    outs = net.run(x)
    assert outs["c"].shape == (300, 15)
    fracs = [4] * 5 + [6] * 3 + [1] * 2 + [4] * 5
    src = np.concatenate([x, outs["d1"], outs["d2"], x], axis=1)
    want = [[saturate_ref(round_shift_ref(int(v), f - 5, mode), 8, True) for v, f in zip(row, fracs)] for row in src.tolist()]
    assert outs["c"].tolist() == want
    assert outs["c"][:, :5].min() == -128 and outs["c"][:, :5].max() == 127     # the input's left shift saturates


@pytest.mark.parametrize("mode", MODES)
def test_concat_on_channels_nhwc(mode):
    rng = _rng(7)
    t = QType(8, False, 5)
    c1 = Conv2D(name="c1", inputs=("input",), weight=rng.integers(-128, 128, (1, 1, 3, 2)), w_type=QType(8, True, 7),
                out_type=QType(8, True, 4))
    mp = MaxPool2D(name="mp", inputs=("input",), pool=3, stride=1, padding=1)
    cat = Concat(name="cat", inputs=("c1", "mp", "input"), out_type=QType(6, False, 3))
    net = QuantizedNetwork(t, (4, 5, 3), [c1, mp, cat], mode)
    x = rng.integers(0, 256, (3, 4, 5, 3))
    outs = net.run(x)
    assert outs["cat"].shape == (3, 4, 5, 8)
    for name, lo, f in (("c1", 0, 4), ("mp", 2, 5), ("input", 5, 5)):
        src = outs[name]
        got = outs["cat"][..., lo:lo + src.shape[-1]]
        assert got.tolist() == np.vectorize(lambda v: saturate_ref(round_shift_ref(int(v), f - 3, mode), 6, False))(src).tolist()


@pytest.mark.parametrize("build,exc,msg", [
    (lambda: Concat(name="c", inputs=("input",), out_type=QType(8, True, 0)), ValueError,
     "layer 'c': a concat layer takes at least 2 input name(s), not ('input',)"),
    (lambda: Concat(name="c", inputs=("input", "input"), out_type=None), TypeError, "layer 'c': out_type must be a QType"),
    (lambda: QuantizedNetwork(QType(8, True, 0), (4, 4, 2), [
        MaxPool2D(name="m", inputs=("input",)), Concat(name="c", inputs=("input", "m"), out_type=QType(8, True, 0))]),
     ValueError, "layer 'c': concat needs inputs that are all (features,) or all (H, W, C) with equal H and W, got "
                 "(4, 4, 2), (2, 2, 2)"),
    (lambda: QuantizedNetwork(QType(32, True, 0), (2,), [Concat(name="c", inputs=("input", "input"),
                                                                out_type=QType(32, True, 40))]),
     OverflowError, "layer 'c': the worst case of operand 0 ('input', inputs in int32(f=0)) is 2147483648; the left "
                    "shift by 40 (shift -40) takes it beyond the int64 range"),
    (lambda: QuantizedNetwork(QType(8, True, -40), (2,), [Concat(name="c", inputs=("input", "input"),
                                                                 out_type=QType(8, True, 40))]),
     ValueError, "layer 'c': alignment shift f_in - f_out of operand 0 ('input') = -80 is outside [-62, 62]"),
])
def test_concat_errors(build, exc, msg):
    with pytest.raises(exc) as info:
        build()
    assert type(info.value) is exc and str(info.value).startswith(msg)


def test_concat_left_shift_at_the_int64_edge_is_exact():
    # int8 (|x| <= 128 = 2**7) shifted left by 55: 2**62 fits; the result saturates to int32.
    net = QuantizedNetwork(QType(8, True, -27), (2,), [Concat(name="c", inputs=("input", "input"),
                                                              out_type=QType(32, True, 28))])
    assert net(np.array([[-128, 1], [0, -1]])).tolist() == [[-2 ** 31, 2 ** 31 - 1] * 2, [0, -2 ** 31] * 2]


# --------------------------------------------------------------------- compiler: host fallback, exact
def _import_features_net():
    """A small MobileNet / ResNet-like network with every new feature, 8-bit throughout."""
    rng = _rng(8)
    w8 = QType(8, True, 5)
    u = QType(8, False, 4)
    return QuantizedNetwork(QType(8, False, 7), (8, 8, 3), [
        Conv2D(name="stem", inputs=("input",), weight=rng.integers(-60, 60, (3, 3, 3, 8)), w_type=w8, out_type=u,
               bias=rng.integers(-200, 200, 8), relu=True, padding=1),                            # accelerator
        Conv2D(name="dw", inputs=("stem",), weight=rng.integers(-60, 60, (3, 3, 1, 8)), w_type=w8, out_type=u,
               relu=True, out_max=6 << 4, padding=1, groups=8),                                  # clamp: host
        Conv2D(name="pw", inputs=("dw",), weight=rng.integers(-60, 60, (1, 1, 8, 8)), w_type=w8, out_type=u,
               relu=True, out_max=6 << 4),                                                        # clamp: host
        Conv2D(name="pw_sat", inputs=("dw",), weight=rng.integers(-60, 60, (1, 1, 8, 4)), w_type=w8,
               out_type=QType(8, False, 5), relu=True, out_max=6 << 6),                           # 384 > 255: accelerator
        Conv2D(name="grp", inputs=("stem",), weight=rng.integers(-60, 60, (3, 3, 4, 4)), w_type=w8,
               out_type=QType(8, True, 3), padding=1, groups=2),                                  # accelerator
        Concat(name="cat", inputs=("pw", "pw_sat", "grp"), out_type=QType(8, True, 3)),          # host
        MaxPool2D(name="mp", inputs=("cat",), pool=3, stride=2, padding=1),                       # host
        AvgPool2D(name="gap", inputs=("mp",), pool=(4, 4)),
        AvgPool2D(name="ap3", inputs=("cat",), pool=3, stride=3, padding=(1, 0, 1, 0), out_type=QType(8, True, 4)),
        Flatten(name="flat", inputs=("ap3",)),
        Dense(name="fc", inputs=("flat",), weight=rng.integers(-30, 30, (144, 10)), w_type=w8,
              out_type=QType(8, False, 2), relu=True, out_max=6 << 2),                            # clamp: host
        Dense(name="fc2", inputs=("fc",), weight=rng.integers(-30, 30, (10, 5)), w_type=w8,
              out_type=QType(8, True, 2)),                                                        # accelerator
    ])


def test_a_batch_of_zero_samples():
    net = _import_features_net()
    outs = net.run(np.zeros((0, 8, 8, 3), np.int64))
    assert {k: v.shape for k, v in outs.items()} == {k: (0, *net.shape(k)) for k in outs}


def test_compiled_network_with_every_new_feature_runs_bit_exactly():
    from systolic.compiler import MachineSpec, compile_network, run_compiled
    from systolic.golden.random import random_input

    net = _import_features_net()
    cn = compile_network(net, MachineSpec(rows=4, cols=4, a_lines=256, w_lines=256, acc_lines=64), batch=3)
    # Every layer on the accelerator (the vector unit runs the pools, the concat and the clamps' STOREs).
    assert cn.placement == {name: "host: flatten is a no-op on NHWC memory" if name == "flat" else "accelerator"
                            for name in ("stem", "dw", "pw", "pw_sat", "grp", "cat", "mp", "gap", "ap3", "flat",
                                         "fc", "fc2")}
    assert cn.host_layers == []
    x = random_input(net, 3, 1)
    x[0] = 255
    outs, _ = run_compiled(cn, x)
    gold = net.run(x)
    assert list(outs) == list(gold)
    for name in gold:
        assert np.array_equal(outs[name], gold[name]), name
    assert gold["pw"].max() == 96 and gold["fc"].max() == 24        # the clamps are active


def test_flows_run_images_on_the_model_is_bit_exact():
    from systolic.arch.config import PRESETS
    from systolic.flows import run_images
    from systolic.golden.random import random_input

    net = _import_features_net()
    x = random_input(net, 5, 2)
    run = run_images(net, PRESETS["small"], x, source="model", progress=False, batch=3)
    assert run.bit_exact and run.compared == sum(v.size for v in net.run(x).values())
    assert {k for k, p in run.compiled.placement.items() if p != "accelerator"} == {"flat"}
