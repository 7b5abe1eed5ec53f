"""Issue 20, items 1-4: resource limits before allocation, no silent wrap, a strict schema, ONNX refusals.

One test per finding of the hostile tester. Errors are checked by exact type and whole message; memory
findings also check that the refusal is fast and small (tracemalloc's peak, which counts NumPy's arrays).
Expected values come from Python ints and hand arithmetic, never from the code under test.
"""

import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

from systolic.arch.config import load_config
from systolic.cli import main
from systolic.golden import (Add, Conv2D, Dense, Flatten, ModelFormatError, QType, QuantizedNetwork, load,
                             requantize, round_shift)
from systolic.golden.limits import (MAX_CONFIG_BYTES, MAX_MODEL_ELEMENTS, MAX_RUN_ELEMENTS,
                                    MAX_TENSOR_ELEMENTS)
from systolic.golden.network import MANIFEST_KEY
from systolic.golden.primitives import add_exact
from systolic.golden.random import random_input, random_network

from .reference import requant_ref, round_shift_ref, saturate_ref

INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1
SMALL = 2 << 20          # 2 MiB: what a refusal may allocate at most (the refused objects are GB-sized)


def test_limits_are_the_documented_numbers():
    # docs/numerics.md, section "Limits" (independent statement of the same numbers).
    assert (MAX_TENSOR_ELEMENTS, MAX_RUN_ELEMENTS, MAX_MODEL_ELEMENTS, MAX_CONFIG_BYTES) == (
        16_777_216, 67_108_864, 67_108_864, 65_536)


def _peak(fn):
    """Run *fn*; return ``(its exception, peak traced bytes)``."""
    tracemalloc.start()
    try:
        fn()
        exc = None
    except Exception as e:       # noqa: BLE001 - the caller asserts the exact type
        exc = e
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return exc, peak


def _fails_fast(fn, exc_type, message):
    exc, peak = _peak(fn)
    assert type(exc) is exc_type, repr(exc)
    assert str(exc) == message
    assert peak < SMALL, peak


# --------------------------------------------------------------------------- model files
def _dense_net(bias=(5, -6), relu=False):
    return QuantizedNetwork(QType(8, True, 0), (2,), [Dense(
        name="d", inputs=("input",), weight=np.array([[1, -2], [3, 4]]), w_type=QType(8, True, 0),
        bias=np.array(bias), out_type=QType(8, True, 0), relu=relu)])


def _conv_net():
    return QuantizedNetwork(QType(8, False, 8), (8, 8, 1), [
        Conv2D(name="c1", inputs=("input",), weight=np.ones((3, 3, 1, 2), np.int64), w_type=QType(8, True, 6),
               out_type=QType(8, True, 6), bias=np.array([1, -1]), relu=True, padding=1),
        Flatten(name="f", inputs=("c1",)),
        Dense(name="fc", inputs=("f",), weight=np.ones((128, 3), np.int64), w_type=QType(8, True, 6),
              out_type=QType(8, True, 2))])


def _arrays_and_manifest(net, tmp_path):
    src = tmp_path / "src.npz"
    net.save(src)
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(arrays.pop(MANIFEST_KEY).tobytes())


def _write_npz(path, manifest, arrays, raw=None, compress=False):
    """A .npz written member by member; *manifest* is a dict or JSON text; *raw* maps names to .npy bytes."""
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", mode) as zf:
        members = {MANIFEST_KEY: np.frombuffer(text.encode(), np.uint8), **arrays}
        for name, arr in members.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)
        for name, blob in (raw or {}).items():
            zf.writestr(name + ".npy", blob)
    return path


def _npy_header(shape, descr="<i8"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


# ------------------------------------------------------------------ item 1: resource limits
def test_npy_header_declaring_9e11_elements_is_refused_before_reading(tmp_path):
    arrays, m = _arrays_and_manifest(_dense_net(), tmp_path)
    del arrays["layers/d/weight"]
    # A header declaring 30000 x 30000 x 1000 int64 (7.2 TB) followed by 1000 bytes.
    p = _write_npz(tmp_path / "hdr.npz", m, arrays,
                   raw={"layers/d/weight": _npy_header((30000, 30000, 1000)) + bytes(1000)})
    _fails_fast(lambda: load(p), ModelFormatError,
                f"{p}: layer 'd': array 'layers/d/weight' declares shape (30000, 30000, 1000): 900000000000 "
                "elements, above the limit of 16777216 per array (MAX_TENSOR_ELEMENTS)")


def test_npz_member_is_sized_from_the_zip_directory_and_header_before_its_data(tmp_path):
    arrays, m = _arrays_and_manifest(_dense_net(), tmp_path)
    # (a) 2**24 + 1 int8 zeros, deflated to a few KB: refused from the header, the 16 MB never inflated.
    big = dict(arrays, **{"layers/d/weight": np.zeros(2 ** 24 + 1, np.int8)})
    p = _write_npz(tmp_path / "big.npz", m, big, compress=True)
    assert p.stat().st_size < 100_000
    _fails_fast(lambda: load(p), ModelFormatError,
                f"{p}: layer 'd': array 'layers/d/weight' declares shape (16777217,): 16777217 elements, "
                "above the limit of 16777216 per array (MAX_TENSOR_ELEMENTS)")
    # (b) a header that disagrees with the member's size in the zip directory (80 + 8 bytes of data).
    p = _write_npz(tmp_path / "short.npz", m, {"layers/d/bias": arrays["layers/d/bias"]},
                   raw={"layers/d/weight": _npy_header((10,)) + bytes(88)})
    _fails_fast(lambda: load(p), ModelFormatError,
                f"{p}: layer 'd': array 'layers/d/weight': its .npy header declares shape (10,) of int64 "
                "(80 bytes of data) but the archive member holds 88 bytes of data")
    # (c) five layers naming one 2**24-element member: 5 * 2**24 = 83886080 > 2**26 elements in the file,
    # refused from the headers before any array's data is read.
    layer = m["layers"][0]
    m5 = dict(m, layers=[dict(layer, name=f"d{i}", inputs=["input" if i == 0 else f"d{i - 1}"],
                              arrays={"weight": "w"}) for i in range(5)])
    p = _write_npz(tmp_path / "total.npz", m5, {"w": np.zeros(2 ** 24, np.int8)}, compress=True)
    _fails_fast(lambda: load(p), ModelFormatError,
                f"{p}: the arrays up to layer 'd4': array 'w' hold 83886080 elements, above the limit of "
                "67108864 per model file (MAX_MODEL_ELEMENTS)")
    # (d) an archive whose end record lists 8193 members: refused before zipfile parses its directory.
    p = tmp_path / "many.npz"
    with zipfile.ZipFile(p, "w") as zf:
        for i in range(8193):
            zf.writestr(f"m{i}.npy", b"")
    _fails_fast(lambda: load(p), ModelFormatError,
                f"{p}: the archive lists 8193 members, above the limit of 8192 (MAX_ARCHIVE_MEMBERS)")
    # (e) a manifest whose header declares 2**30 bytes.
    p = _write_npz(tmp_path / "man.npz", "{}", {}, raw={})
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr(MANIFEST_KEY + ".npy", _npy_header((2 ** 30,), "|u1") + bytes(10))
    _fails_fast(lambda: load(p), ModelFormatError,
                f"{p}: the manifest is 1073741824 bytes, above the limit of 4194304 bytes (MAX_MANIFEST_BYTES)")


def test_input_shape_of_1e9_elements_and_batch_times_images_are_refused(tmp_path):
    arrays, m = _arrays_and_manifest(_dense_net(), tmp_path)
    m["input"]["shape"] = [1000, 1000, 1000]
    p = _write_npz(tmp_path / "in.npz", m, arrays)
    _fails_fast(lambda: load(p), ModelFormatError,
                f"{p}: invalid model: the network input of one sample would hold 1000 x 1000 x 1000 = "
                "1000000000 elements, above the limit of 16777216 (MAX_TENSOR_ELEMENTS)")
    _fails_fast(lambda: QuantizedNetwork(QType(8, True, 0), (10 ** 9,), [Flatten(name="f", inputs=("input",))]),
                ValueError, "the network input of one sample would hold 1000000000 = 1000000000 elements, above "
                "the limit of 16777216 (MAX_TENSOR_ELEMENTS)")
    # batch x images: 10**9 random images of 8 x 8 x 3 (192e9 elements) are refused before drawing any.
    net = random_network(0, "cnn", 8)
    _fails_fast(lambda: random_input(net, 10 ** 9), ValueError,
                "a random input of 1000000000 samples would hold 1000000000 x 8 x 8 x 3 = 192000000000 elements, "
                "above the limit of 16777216 (MAX_TENSOR_ELEMENTS)")
    # The limit counts elements: 16777216 // 192 = 87381 samples fit, one more does not.
    _fails_fast(lambda: random_input(net, 87382), ValueError,
                "a random input of 87382 samples would hold 87382 x 8 x 8 x 3 = 16777344 elements, "
                "above the limit of 16777216 (MAX_TENSOR_ELEMENTS)")


def test_convolution_padding_2000_is_refused_at_load_and_in_eval(tmp_path, capsys):
    arrays, m = _arrays_and_manifest(_conv_net(), tmp_path)
    m["layers"][0]["params"]["padding"] = [2000, 2000, 2000, 2000]
    p = _write_npz(tmp_path / "pad.npz", m, arrays)
    assert p.stat().st_size < 20_000                     # the hostile tester's 17 KB model took 20.9 GB in eval
    msg = (f"{p}: invalid model: layer 'c1': padding must be between 0 and 255, "
           "not (2000, 2000, 2000, 2000)")
    _fails_fast(lambda: load(p), ModelFormatError, msg)
    exc, peak = _peak(lambda: main(["eval", str(p)]))
    assert exc is None and peak < 4 * SMALL
    assert capsys.readouterr().err == f"systolic: error: {msg}\n"


def test_padded_activation_per_batch_is_bounded():
    # Padding 255 (the largest allowed) on 8 x 8 x 1: a padded sample is 518 x 518; eval's batches of 128
    # would need 128 * 518 * 518 = 34345472 elements > 2**24, refused before anything is allocated.
    conv = Conv2D(name="c1", inputs=("input",), weight=np.ones((1, 1, 1, 1), np.int64), w_type=QType(8, True, 0),
                  out_type=QType(8, False, 8), padding=255)
    net = QuantizedNetwork(QType(8, False, 8), (8, 8, 1), [conv])
    x = np.full((128, 8, 8, 1), 255)
    _fails_fast(lambda: net(x), ValueError,
                "layer 'c1': the padded input of a batch of 128 would hold 128 x 518 x 518 x 1 = 34345472 elements, "
                "above the limit of 16777216 (MAX_TENSOR_ELEMENTS)")
    y = net(x[:2])                                      # 2 samples fit: the padding is zeros, the centre is x
    assert y.shape == (2, 518, 518, 1) and int(y.sum()) == 2 * 64 * 255 and y[0, 255, 255, 0] == 255


def test_tensors_kept_by_run_are_bounded_in_total():
    # Input 2**20 features and five flattens: six kept tensors of 16 * 2**20 = 2**24 elements each (each at
    # the per-tensor limit), 6 * 2**24 = 100663296 in all > 2**26. The input is a zero-copy broadcast view.
    layers = [Flatten(name=f"f{i}", inputs=("input" if i == 0 else f"f{i - 1}",)) for i in range(5)]
    net = QuantizedNetwork(QType(8, False, 0), (2 ** 20,), layers)
    _fails_fast(lambda: net(np.broadcast_to(np.uint8(7), (16, 2 ** 20))), ValueError,
                "the tensors run() returns for a batch of 16 (the input and every layer output) would hold "
                "100663296 elements in all, above the limit of 67108864 (MAX_RUN_ELEMENTS)")


# --------------------------------------------------------------------- item 2: no silent wrap
def test_bias_of_int64_min_is_refused_and_int32_min_is_exact(tmp_path):
    with pytest.raises(ValueError) as info:
        _dense_net(bias=(INT64_MIN, 0))
    assert type(info.value) is ValueError
    assert str(info.value) == ("layer 'd': bias must fit int32 [-2147483648, 2147483647], "
                               "holds -9223372036854775808")
    arrays, m = _arrays_and_manifest(_dense_net(), tmp_path)
    arrays["layers/d/bias"] = np.array([INT64_MIN, 0])
    p = _write_npz(tmp_path / "b.npz", m, arrays)
    with pytest.raises(ModelFormatError) as info:
        load(p)
    assert str(info.value) == (f"{p}: invalid model: layer 'd': bias must fit int32 [-2147483648, 2147483647], "
                               "holds -9223372036854775808")
    # -2**31 fits int32 and is exact: y = sat(x @ W + b), shift 0.
    net = _dense_net(bias=(-2 ** 31, 2 ** 31 - 1))
    x = np.array([[127, -128], [-128, 127], [0, 0]])
    want = [[saturate_ref(int(x[i, 0]) * w0 + int(x[i, 1]) * w1 + b, 8, True)
             for (w0, w1), b in zip([(1, 3), (-2, 4)], (-2 ** 31, 2 ** 31 - 1))] for i in range(3)]
    assert net(x).tolist() == want == [[-128, 127], [-128, 127], [-128, 127]]


LEFT = ("left shift (k < 0) leaves the int64 range [-2**63, 2**63 - 1]; saturate first or use a smaller shift")


@pytest.mark.parametrize("mode", ["half_even", "half_up"])
def test_round_shift_at_int64_min(mode):
    for k in range(-62, 0):                          # was 0 for every k < 0
        with pytest.raises(OverflowError) as info:
            round_shift(INT64_MIN, k, mode)
        assert str(info.value) == LEFT
    for k in range(1, 63):                           # right shifts of -2**63 are exact
        assert int(round_shift(INT64_MIN, k, mode)) == round_shift_ref(INT64_MIN, k, mode)
    for s in range(1, 63):                           # the boundaries of a left shift by s, both included
        lo, hi = -(2 ** (63 - s)), (2 ** 63 - 1) // 2 ** s
        assert round_shift(np.array([lo, hi]), -s, mode).tolist() == [lo * 2 ** s, hi * 2 ** s]
        assert lo * 2 ** s >= INT64_MIN and (hi + 1) * 2 ** s > INT64_MAX
        for bad in (lo - 1, hi + 1):
            with pytest.raises(OverflowError):
                round_shift(bad, -s, mode)
    assert int(round_shift(-2 ** 62, -1, mode)) == INT64_MIN    # a result of -2**63 is representable


def test_half_up_next_to_int64_max_is_exact_or_refused():
    for k in (1, 30, 62):
        top = INT64_MAX - 2 ** (k - 1)               # x + 2**(k-1) = 2**63 - 1: still exact
        assert int(round_shift(top, k, "half_up")) == round_shift_ref(top, k, "half_up")
        with pytest.raises(OverflowError) as info:
            round_shift(top + 1, k, "half_up")
        assert str(info.value) == "x + 2**(k-1) of a half_up shift leaves the int64 range [-2**63, 2**63 - 1]"


def test_add_alignment_shift_58_is_refused_and_55_is_exact():
    def net(f_a):
        # 'b' is the input at f = 48: shift k = f_a + 48 - 48 = f_a <= 0, a left shift, then saturation.
        b = Dense(name="b", inputs=("input",), weight=np.eye(2, dtype=np.int64), w_type=QType(8, True, 48),
                  out_type=QType(8, True, 48))
        return QuantizedNetwork(QType(8, True, f_a), (2,), [b, Add(name="s", inputs=("input", "b"),
                                                                  out_type=QType(8, True, 0))])
    with pytest.raises(OverflowError) as info:                 # was: 127 << 58 wrapped, 127 became -1
        net(-10)
    assert type(info.value) is OverflowError
    assert str(info.value) == (
        f"layer 's': the worst case of the first operand aligned by a left shift of 58 (inputs in int8(f=-10)) "
        f"is {128 * 2 ** 58}, beyond the int64 range [-2**63, 2**63 - 1] the golden model computes in")
    # f_a = -7: the input is aligned by 55 bits (128 * 2**55 = 2**62 fits), 'b' (f = 48) by 0.
    n = net(-7)
    x = np.array([[127, -128], [-1, 1], [0, 0], [1, -1]] + [[v, -v] for v in range(-64, 64, 7)])
    outs = n.run(x)
    seen = set()
    for i in range(len(x)):
        for j in range(2):
            bq = int(outs["b"][i, j])
            assert bq == saturate_ref(int(x[i, j]) * 2 ** 7, 8, True)     # eye, left shift by 7, saturated
            s = int(x[i, j]) * 2 ** 55 + bq                              # both at F = 48, exact
            want = saturate_ref(round_shift_ref(s, 48, "half_even"), 8, True)
            assert int(outs["s"][i, j]) == want
            seen.add(want)
    assert {-128, 127, 0}.issubset(seen)


def test_requantize_checks_acc_plus_bias():
    with pytest.raises(OverflowError) as info:
        requantize(np.array([INT64_MAX]), np.array([1]), 0, QType(8, True, 0))
    assert str(info.value) == "acc + bias leaves the int64 range [-2**63, 2**63 - 1]"
    with pytest.raises(OverflowError):
        requantize(np.array([INT64_MIN]), np.array([-1]), 3, QType(8, True, 0))
    # acc + bias = -2**63 exactly is representable and requantized exactly.
    for k, mode in [(62, "half_even"), (62, "half_up"), (1, "half_even")]:
        got = requantize(np.array([INT64_MIN + 1]), np.array([-1]), k, QType(32, True, 0), rounding=mode)
        assert got.tolist() == [requant_ref(INT64_MIN + 1, -1, k, 32, True, False, mode)]
    assert add_exact(np.array([-2 ** 62]), np.array([-2 ** 62])).tolist() == [INT64_MIN]
    with pytest.raises(OverflowError) as info:
        add_exact(np.array([2 ** 62]), np.array([2 ** 62]))
    assert str(info.value) == "x + y leaves the int64 range [-2**63, 2**63 - 1]"


def test_uint64_arrays_never_load_as_negative_numbers(tmp_path):
    arrays, m = _arrays_and_manifest(_dense_net(), tmp_path)
    arrays["layers/d/bias"] = np.array([2 ** 64 - 1, 0], np.uint64)      # was: loaded as -1
    p = _write_npz(tmp_path / "u.npz", m, arrays)
    with pytest.raises(ModelFormatError) as info:
        load(p)
    assert str(info.value) == (f"{p}: layer 'd': array 'layers/d/bias' holds 18446744073709551615, above the "
                               "int64 range the golden model computes in")
    arrays["layers/d/bias"] = np.array([5, 6], np.uint64)                 # small uint64 values are exact
    arrays["layers/d/weight"] = np.array([[1, -2], [3, 4]], np.int8)
    back = load(_write_npz(tmp_path / "ok.npz", m, arrays))
    x = np.array([[10, 20], [-5, 7]])
    want = [[saturate_ref(int(r[0]) * 1 + int(r[1]) * 3 + 5, 8, True),
             saturate_ref(int(r[0]) * -2 + int(r[1]) * 4 + 6, 8, True)] for r in x]
    assert back(x).tolist() == want == [[75, 66], [21, 44]]


def test_worst_case_beyond_int64_is_refused_when_the_network_is_built():
    # uint32 inputs (up to 2**32 - 1) times two int32 weights of -2**31: 2 * (2**32 - 1) * 2**31.
    with pytest.raises(OverflowError) as info:
        QuantizedNetwork(QType(32, False, 0), (2,), [Dense(
            name="fc", inputs=("input",), weight=np.full((2, 1), -2 ** 31), w_type=QType(32, True, 0),
            out_type=QType(8, True, -40))])
    assert str(info.value) == (
        f"layer 'fc': the worst case of |acc + bias| (output channel 0, inputs in uint32(f=0)) is "
        f"{2 * (2 ** 32 - 1) * 2 ** 31}, beyond the int64 range [-2**63, 2**63 - 1] the golden model computes in")
    # A left shift is part of the proof: |acc| <= 2 * 128 * 127 = 32512 (inputs down to -128); shifted left
    # by 49 it leaves int64 (32512 > (2**63 - 1) >> 49 = 16383); by 48 it fits (<= 32767) and runs exactly.
    def net(f_w):                                  # shift k = 0 + f_w - 48
        return QuantizedNetwork(QType(8, True, 0), (2,), [Dense(
            name="fc", inputs=("input",), weight=np.full((2, 1), 127), w_type=QType(8, True, f_w),
            out_type=QType(32, True, 48))])
    with pytest.raises(OverflowError) as info:
        net(-1)
    assert str(info.value) == ("layer 'fc': the worst case of |acc + bias| (output channel 0, inputs in int8(f=0)) "
                               "is 32512; the left shift by 49 (shift -49) takes it beyond the int64 range "
                               "[-2**63, 2**63 - 1]")
    assert net(0)(np.array([[1, 0], [0, 0]])).tolist() == [[saturate_ref(127 * 2 ** 48, 32, True)], [0]]


# -------------------------------------------------------------------- item 3: a strict schema
class _Text(str):
    """An edit's result that replaces the manifest's JSON text."""


def _load_error(tmp_path, edit, name="bad.npz"):
    arrays, m = _arrays_and_manifest(_conv_net(), tmp_path)
    text = edit(m)
    p = _write_npz(tmp_path / name, text if isinstance(text, _Text) else m, arrays)
    with pytest.raises(ModelFormatError) as info:
        load(p)
    return p, str(info.value)


def test_relu_string_false_is_not_true(tmp_path):
    p, msg = _load_error(tmp_path, lambda m: m["layers"][0]["params"].update(relu="false"))
    assert msg == f"{p}: layer 'c1': relu must be a bool, not 'false'"
    with pytest.raises(TypeError) as info:
        Dense(name="c1", inputs=("input",), weight=np.ones((2, 2), np.int64), w_type=QType(8, True, 0),
              out_type=QType(8, True, 0), relu="false")
    assert str(info.value) == "layer 'c1': relu must be a bool, not 'false'"


def test_shape_string_881_is_not_a_shape(tmp_path):
    p, msg = _load_error(tmp_path, lambda m: m["input"].update(shape="881"))
    assert msg == f"{p}: input shape must be a non-empty list of positive ints, not '881'"
    with pytest.raises(TypeError) as info:
        QuantizedNetwork(QType(8, True, 0), "881", [Flatten(name="f", inputs=("input",))])
    assert str(info.value) == "input_shape must be a tuple of ints, not '881'"


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_json_is_refused(tmp_path, depth):
    nested = "[" * depth + "]" * depth
    p, msg = _load_error(tmp_path, lambda m: _Text(json.dumps(dict(m, meta="X")).replace('"X"', nested)))
    assert msg == f"{p}: manifest nests arrays/objects deeper than 32 levels"
    cfg = tmp_path / "c.json"
    cfg.write_text('{"rows": ' + "[" * min(depth, 30000) + "]" * min(depth, 30000) + "}")
    with pytest.raises(ValueError) as info:
        load_config(cfg)
    assert type(info.value) is ValueError
    assert str(info.value) == f"{cfg}: accelerator config nests arrays/objects deeper than 32 levels"


@pytest.mark.parametrize("edit,msg", [
    (lambda m: m.update(version=True), "format version True is not supported (this systolic reads version 1)"),
    (lambda m: m["layers"][0]["params"].update(padding=["1", 1, 1, 1]),
     "layer 'c1': padding must be a list of 2 or 4 ints, not ['1', 1, 1, 1]"),
    (lambda m: m["layers"][0]["params"].update(stride=[1.0, 1]), "layer 'c1': stride must be a list of 2 ints, not [1.0, 1]"),
    (lambda m: m["layers"][0]["params"]["w_type"].update(bits="8"), "layer 'c1': w_type: bits must be an int, not '8'"),
    (lambda m: m["layers"][0].update(inputs="input"), "layer 'c1': inputs must be a list of layer names, not 'input'"),
    (lambda m: m["layers"][0]["arrays"].update(weight=7), "layer 'c1': array weight must name an archive member, not 7"),
    (lambda m: m["layers"][0]["arrays"].update(scale="x"),
     "layer 'c1': unknown fields ['scale'] for a conv2d layer (arrays: weight, bias, w_frac, extra_weights, extra_shifts)"),
    (lambda m: m.update(extra=1), "manifest: unknown fields ['extra']"),
    (lambda m: m["input"]["qtype"].update(signed=1), "input qtype: signed must be a bool, not 1"),
    (lambda m: m.update(rounding=None), "rounding must be one of half_even, half_up, not None"),
    (lambda m: _Text(json.dumps(m)[:-1] + ', "version": 1}'), "manifest is not valid JSON: duplicate key 'version'"),
    (lambda m: m["layers"][2].pop("name"), "layer 2: name must be a string, not None"),
])
def test_manifest_fields_are_typed_exactly(tmp_path, edit, msg):
    p, got = _load_error(tmp_path, edit)
    assert got == f"{p}: {msg}"


def test_config_fields_are_typed_exactly(tmp_path):
    cfg = tmp_path / "c.json"
    for text, exc, msg in [
        ('{"per_channel_shift": "false"}', TypeError, "per_channel_shift must be a bool, not 'false'"),
        ('{"rows": "8"}', TypeError, "rows must be an int, not '8'"),
        ('{"rows": 8, "rows": 9}', ValueError, "accelerator config is not valid JSON: duplicate key 'rows'"),
        (" " * (MAX_CONFIG_BYTES + 1), ValueError,
         f"accelerator config is {MAX_CONFIG_BYTES + 1} bytes, above the limit of 65536 bytes (MAX_CONFIG_BYTES)"),
    ]:
        cfg.write_text(text)
        with pytest.raises(exc) as info:
            load_config(cfg)
        assert type(info.value) is exc and str(info.value) == f"{cfg}: {msg}"
    cfg.write_text('{"rows": 4, "per_channel_shift": false}')
    c = load_config(cfg)
    assert (c.rows, c.per_channel_shift, c.cols) == (4, False, 8)


# ---------------------------------------------------------- item 4: export-onnx refuses first
def test_export_onnx_refuses_before_writing(tmp_path, capsys):
    from tests.requirements import require

    require("onnx", "onnx")
    from systolic.golden.onnx_export import check_exportable, export_onnx

    # w_frac 2**62 (zero scales in ONNX) and a shift of 104 (the golden model stops at 62): both model files
    # are refused when loaded, so export-onnx writes nothing.
    net = QuantizedNetwork(QType(8, True, 7), (2,), [Dense(
        name="fc", inputs=("input",), weight=np.array([[1, -2], [3, 4]]), w_type=QType(8, True, 6),
        out_type=QType(8, True, 5), w_frac=np.array([6, 5]))])
    arrays, m = _arrays_and_manifest(net, tmp_path)
    arrays["layers/fc/w_frac"] = np.array([2 ** 62, 5])
    p = _write_npz(tmp_path / "wf.npz", m, dict(arrays))
    out = tmp_path / "wf.onnx"
    assert main(["export-onnx", str(p), str(out)]) == 1
    assert capsys.readouterr().err == (f"systolic: error: {p}: invalid model: layer 'fc': w_frac must be between "
                                       "-48 and 48, holds 4611686018427387904\n")
    assert not out.exists()
    arrays["layers/fc/w_frac"] = np.array([48, 48])
    m["input"]["qtype"]["frac_bits"] = 48
    m["layers"][0]["params"]["out_type"]["frac_bits"] = -8                 # k = 48 + 48 - (-8) = 104
    p = _write_npz(tmp_path / "k.npz", m, arrays)
    out = tmp_path / "k.onnx"
    assert main(["export-onnx", str(p), str(out)]) == 1
    assert capsys.readouterr().err == (
        f"systolic: error: {p}: invalid model: layer 'fc': requantization shift k = f_in + f_w - f_out of output "
        "channel 0 = 104 is outside [-62, 62] (the golden model's shifts, in int64)\n")
    assert not out.exists()
    # The exporter checks scales and shifts itself too (a network changed behind the constructors' back).
    object.__setattr__(net.layers[0], "w_frac", np.array([2 ** 62, 5]))
    for call in (lambda: check_exportable(net), lambda: export_onnx(net, tmp_path / "x.onnx")):
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == ("cannot export to ONNX: layer 'fc': weight fractional bits 4611686018427387904 "
                                   "are outside [-48, 48]: the weight scale 2**-f would not be a normal float32")
    assert list(tmp_path.glob("*.onnx*")) == []
