"""Model file format: round trip, and clear errors on bad files."""

import json

import numpy as np
import pytest

from systolic.golden import ModelFormatError, load
from systolic.golden.network import MANIFEST_KEY
from systolic.golden.random import NETWORK_KINDS, random_input, random_network


@pytest.mark.parametrize("kind", NETWORK_KINDS)
@pytest.mark.parametrize("per_channel", [False, True])
def test_round_trip_is_exact(tmp_path, kind, per_channel):
    net = random_network(7, kind, 8, per_channel=per_channel)
    path = tmp_path / "m.npz"
    net.save(path)
    back = load(path)
    x = random_input(net, 5, 1)
    a, b = net.run(x), back.run(x)
    assert list(a) == list(b)
    for name in a:
        assert np.array_equal(a[name], b[name])
    assert back.summary() == net.summary() and back.meta == net.meta


def _rewrite(src, dst, edit_manifest=None, drop=None, extra=None):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if edit_manifest:
        m = json.loads(arrays[MANIFEST_KEY].tobytes())
        edit_manifest(m)
        arrays[MANIFEST_KEY] = np.frombuffer(json.dumps(m).encode(), dtype=np.uint8)
    for k in drop or ():
        arrays.pop(k)
    arrays.update(extra or {})
    np.savez(dst, **arrays)


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "good.npz"
    random_network(1, "cnn", 8).save(path)
    return path


def _set(key, value):
    def edit(m):
        m[key] = value
    return edit


@pytest.mark.parametrize("edit,msg", [
    (_set("version", 99), "format version 99 is not supported (this systolic reads version 1)"),
    (_set("format", "other"), "format is 'other', expected 'systolic-qnet'"),
    (_set("layers", []), "manifest has no layers"),
    (lambda m: m["layers"][0].update(kind="lstm"), "unknown layer kind 'lstm'; supported: dense, conv2d"),
    (lambda m: m["layers"][0]["params"].update(w_type={"bits": 99, "signed": True, "frac_bits": 0}),
     "bits must be between 2 and 32, not 99"),
    (lambda m: m["layers"][0]["params"].update(colour="red"), "unknown fields ['colour']"),
    (lambda m: m["layers"][0]["arrays"].update(weight="nope"), "array 'nope' is missing"),
    (lambda m: m["input"].update(shape=[9, 9, 9]), "conv2d expects (H, W, 3) per sample"),
])
def test_malformed_manifest_is_a_clear_error(model, tmp_path, edit, msg):
    bad = tmp_path / "bad.npz"
    _rewrite(model, bad, edit_manifest=edit)
    with pytest.raises(ModelFormatError) as info:
        load(bad)
    assert msg in str(info.value) and str(bad) in str(info.value)


def test_missing_manifest_and_wrong_array_dtype(model, tmp_path):
    bad = tmp_path / "bad.npz"
    _rewrite(model, bad, drop=[MANIFEST_KEY])
    with pytest.raises(ModelFormatError, match="no manifest"):
        load(bad)
    with np.load(model) as z:
        m = json.loads(z[MANIFEST_KEY].tobytes())
    ref = m["layers"][0]["arrays"]["weight"]
    _rewrite(model, bad, extra={ref: np.zeros((3, 3, 3, 2), dtype=np.float32)})
    with pytest.raises(ModelFormatError, match="must be integer, not float32"):
        load(bad)


def test_truncated_garbage_and_pickles_are_refused(model, tmp_path):
    data = model.read_bytes()
    for i, blob in enumerate([data[: len(data) // 2], b"not a zip at all", b""]):
        p = tmp_path / f"t{i}.npz"
        p.write_bytes(blob)
        with pytest.raises(ModelFormatError) as info:
            load(p)
        assert str(info.value) == (f"{p}: not a systolic model file (not a complete .npz archive: "
                                   "truncated, or another format)")
    # An object array (would need pickle) is refused without unpickling.
    p = tmp_path / "obj.npz"
    with np.load(model) as z:
        arrays = {k: z[k] for k in z.files}
    m = json.loads(arrays[MANIFEST_KEY].tobytes())
    arrays[m["layers"][0]["arrays"]["weight"]] = np.array([{"evil": 1}], dtype=object)
    np.savez(p, **arrays)
    with pytest.raises(ModelFormatError) as info:
        load(p)
    assert str(info.value) == (f"{p}: layer 'conv1': array 'layers/conv1/weight' holds Python objects "
                               "(dtype object), which would need unpickling: refused")
    with pytest.raises(ModelFormatError) as info:
        load(tmp_path / "missing.npz")
    assert str(info.value) == f"{tmp_path / 'missing.npz'}: no such model file"


def test_manifest_not_json(model, tmp_path):
    bad = tmp_path / "bad.npz"
    _rewrite(model, bad, extra={MANIFEST_KEY: np.frombuffer(b"{nope", dtype=np.uint8)})
    with pytest.raises(ModelFormatError, match="manifest is not valid JSON"):
        load(bad)
