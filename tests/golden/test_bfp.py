"""The block floating-point activation layer (``BlockFloat``, kind "bfp") against a plain-Python reference.

The reference (:func:`bfp_ref`) works per block on Python ints with the Fraction-based rounding of
tests/golden/reference.py: the exponent is found by trying e = 0, 1, 2, ... until the block's largest
magnitude divided by 2**e (floored) fits the mantissa, never with NumPy or the golden primitives.
"""

import json

import numpy as np
import pytest

from systolic.golden import BlockFloat, Dense, ModelFormatError, QType, QuantizedNetwork, load
from systolic.golden.network import MANIFEST_KEY
from systolic.golden.onnx_export import check_exportable

from .reference import round_shift_ref, saturate_ref

MODES = ["half_even", "half_up"]


def bfp_ref(values: list, block: int, m: int, bits: int, signed: bool, rounding: str) -> list:
    """One vector of channels (Python ints) through block floating point."""
    mmax = 2 ** (m - 1) - 1 if signed else 2 ** m - 1
    out = []
    for b0 in range(0, len(values), block):
        blk = values[b0:b0 + block]
        amax = max(abs(v) for v in blk)
        e = 0
        while amax // 2 ** e > mmax:
            e += 1
        for v in blk:
            mant = saturate_ref(round_shift_ref(v, e, rounding), m, signed)
            out.append(saturate_ref(mant * 2 ** e, bits, signed))
    return out


def _net(t: QType, shape, block, m, rounding="half_even"):
    return QuantizedNetwork(t, shape, [BlockFloat(name="bfp", inputs=("input",), block=block, mantissa_bits=m)],
                            rounding=rounding)


def _check_against_ref(net, x):
    (layer,) = net.layers
    t = net.input_type
    got = net(x)
    assert got.shape == x.shape and net.output_type == t
    vecs = x.reshape(-1, x.shape[-1]).tolist()
    want = [bfp_ref(v, layer.block, layer.mantissa_bits, t.bits, t.signed, net.rounding) for v in vecs]
    assert got.reshape(-1, x.shape[-1]).tolist() == want


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("t", [QType(8, True, 4), QType(8, False, 0), QType(16, True, 10), QType(4, True, 0),
                               QType(3, False, 2), QType(32, True, 0)], ids=str)
@pytest.mark.parametrize("block,m", [(1, 2), (3, 3), (4, 5), (16, 8), (5, 16)])
def test_random_tensors_equal_reference(mode, t, block, m):
    rng = np.random.default_rng(block * 100 + m + t.bits)
    shape = (2, 3, 10)                  # 10 channels: a short last block unless block divides 10
    x = rng.integers(t.lo, t.hi + 1, size=(3, *shape), dtype=np.int64)
    # Small magnitudes too (small exponents), and whole-range extremes.
    x[0] >>= rng.integers(0, max(1, t.bits - 1), size=shape)
    x[1, 0, 0, :] = t.lo
    x[1, 0, 1, :] = t.hi
    _check_against_ref(_net(t, shape, block, m, mode), x)


@pytest.mark.parametrize("mode", MODES)
def test_ties_by_hand(mode):
    """int8, 3-bit mantissas (mmax 3): with 12 in the block e = 2, so 2, -2, 6, -6 are ties of x / 4."""
    x = np.array([[2, 12, -2, 12, 6, 12, -6, 12]])
    got = _net(QType(8, True, 0), (8,), 2, 3, mode)(x)[0].tolist()
    # half_even: 0.5 -> 0, -0.5 -> 0, 1.5 -> 2, -1.5 -> -2; half_up: 0.5 -> 1, -0.5 -> 0, 1.5 -> 2, -1.5 -> -1.
    mant = [0, 0, 2, -2] if mode == "half_even" else [1, 0, 2, -1]
    assert got == [mant[0] * 4, 12, mant[1] * 4, 12, mant[2] * 4, 12, mant[3] * 4, 12]


def test_negative_extremes_and_saturation_by_hand():
    t = QType(8, True, 0)
    # -128 has magnitude 128 > 127: e = 1 with 8-bit mantissas; -128 -> -64 << 1; 127 -> round(63.5) = 64 ->
    # 128, saturated to 127 in int8; -1 -> round(-0.5) = 0.
    assert _net(t, (3,), 3, 8)(np.array([[-128, 127, -1]]))[0].tolist() == [-128, 127, 0]
    # 2-bit mantissas (mmax 1): 127 alone needs e = 6 (127 >> 6 = 1); round(127 / 64) = 2 saturates to 1 -> 64.
    assert _net(t, (2,), 1, 2)(np.array([[127, -128]]))[0].tolist() == [64, -128]
    # Unsigned 8-bit, 4-bit mantissas (mmax 15): 255 -> e = 4, round(255 / 16) = 16 -> 15 -> 240.
    assert _net(QType(8, False, 0), (2,), 2, 4)(np.array([[255, 7]]))[0].tolist() == [240, 0]


def test_all_zero_blocks_short_last_block_and_identity():
    t = QType(8, True, 0)
    # Blocks [0, 0], [0, 100], [-3]: the zero block stays zero, 100 sets e = 4 (100 >> 4 = 6 <= 7) for its
    # block only; the short last block -3 fits 4-bit mantissas exactly.
    assert _net(t, (5,), 2, 4)(np.array([[0, 0, 0, 100, -3]]))[0].tolist() == [0, 0, 0, 96, -3]
    x = np.arange(-128, 128).reshape(4, 64)
    assert np.array_equal(_net(t, (64,), 7, 9)(x), x)          # 9-bit mantissas: every magnitude fits, e = 0
    # 8-bit mantissas (mmax 127): only a block holding -128 (magnitude 128) gets e = 1, and its odd values
    # round to even ones (half_even: -127 / 2 = -63.5 -> -64 and -125 / 2 -> -62, -123 / 2 -> -62).
    y = _net(t, (64,), 7, 8)(x)
    assert y[0, :7].tolist() == [-128, -128, -126, -124, -124, -124, -122]
    assert np.array_equal(y[:, 7:], x[:, 7:]) and np.array_equal(y[1:], x[1:])
    assert np.array_equal(_net(t, (64,), 64, 16)(x), x)
    assert _net(t, (4,), 1, 2)(np.array([[5, -7, 1, 0]]))[0].tolist() == [4, -8, 1, 0]   # block 1: per element


def test_any_rank_and_empty_batch():
    t = QType(8, True, 0)
    net = _net(t, (2, 3, 4, 5), 3, 3)
    x = np.random.default_rng(0).integers(-128, 128, size=(2, 2, 3, 4, 5))
    _check_against_ref(net, x)
    assert net(np.zeros((0, 2, 3, 4, 5), dtype=np.int64)).shape == (0, 2, 3, 4, 5)


@pytest.mark.parametrize("kwargs,exc,msg", [
    (dict(block=0, mantissa_bits=4), ValueError, "block must be between 1 and 65536, not 0"),
    (dict(block=65537, mantissa_bits=4), ValueError, "block must be between 1 and 65536, not 65537"),
    (dict(block=4, mantissa_bits=1), ValueError, "mantissa_bits must be between 2 and 16, not 1"),
    (dict(block=4, mantissa_bits=17), ValueError, "mantissa_bits must be between 2 and 16, not 17"),
    (dict(block=True, mantissa_bits=4), TypeError, "block must be an int, not True"),
    (dict(block=4.0, mantissa_bits=4), TypeError, "block must be an int, not 4.0"),
    (dict(block=4, mantissa_bits="8"), TypeError, "mantissa_bits must be an int, not '8'"),
    (dict(block=4), TypeError, "mantissa_bits must be an int, not None"),
])
def test_bad_parameters_are_clear_errors(kwargs, exc, msg):
    with pytest.raises(exc) as info:
        BlockFloat(name="b1", inputs=("input",), **kwargs)
    assert "layer 'b1'" in str(info.value) and msg in str(info.value)


def test_limits_are_accepted():
    for block, m in ((1, 2), (65536, 16)):
        layer = BlockFloat(name="b", inputs=("input",), block=block, mantissa_bits=m)
        assert (layer.block, layer.mantissa_bits) == (block, m)


def _mlp_with_bfp():
    rng = np.random.default_rng(3)
    fc = Dense(name="fc", inputs=("input",), weight=rng.integers(-8, 8, (12, 10)), w_type=QType(8, True, 5),
               out_type=QType(8, True, 2), bias=rng.integers(-50, 50, 10))
    bfp = BlockFloat(name="bfp", inputs=("fc",), block=4, mantissa_bits=3)
    out = Dense(name="out", inputs=("bfp",), weight=rng.integers(-8, 8, (10, 3)), w_type=QType(8, True, 5),
                out_type=QType(8, True, 0))
    return QuantizedNetwork(QType(8, True, 4), (12,), [fc, bfp, out])


def test_round_trip_through_the_file_format(tmp_path):
    net = _mlp_with_bfp()
    path = tmp_path / "m.npz"
    net.save(path)
    back = load(path)
    layer = back.layer("bfp")
    assert isinstance(layer, BlockFloat) and (layer.block, layer.mantissa_bits) == (4, 3)
    x = np.random.default_rng(1).integers(-128, 128, size=(7, 12))
    a, b = net.run(x), back.run(x)
    for name in a:
        assert np.array_equal(a[name], b[name])
    assert back.qtype("bfp") == net.qtype("fc")
    # The block floating-point layer changed something (its test is not vacuous).
    assert not np.array_equal(a["bfp"], a["fc"])


@pytest.mark.parametrize("edit,msg", [
    (lambda p: p.pop("block"), "a bfp layer needs the parameter(s) ['block']"),
    (lambda p: p.update(block="4"), "layer 'bfp': block must be an int, not '4'"),
    (lambda p: p.update(mantissa_bits=40), "layer 'bfp': mantissa_bits must be between 2 and 16, not 40"),
    (lambda p: p.update(exponent_bits=5), "unknown fields ['exponent_bits'] for a bfp layer"),
])
def test_malformed_bfp_entry_is_a_clear_error(tmp_path, edit, msg):
    path = tmp_path / "m.npz"
    _mlp_with_bfp().save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    m = json.loads(arrays[MANIFEST_KEY].tobytes())
    (entry,) = [e for e in m["layers"] if e["kind"] == "bfp"]
    edit(entry["params"])
    arrays[MANIFEST_KEY] = np.frombuffer(json.dumps(m).encode(), dtype=np.uint8)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ModelFormatError) as info:
        load(bad)
    assert msg in str(info.value) and str(bad) in str(info.value)


def test_onnx_export_refuses_bfp_naming_the_layer():
    with pytest.raises(ValueError) as info:
        check_exportable(_mlp_with_bfp())
    assert "layer 'bfp' is a block floating-point ('bfp') layer, which has no ONNX equivalent" in str(info.value)
