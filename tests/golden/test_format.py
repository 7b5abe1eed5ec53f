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


# ------------------------------------------------ import features: groups, out_max, pool padding, concat
def _features_net():
    from .test_import_ops import _import_features_net

    return _import_features_net()


def test_import_features_round_trip_exactly(tmp_path):
    net = _features_net()
    path = tmp_path / "f.npz"
    net.save(path)
    back = load(path)
    x = random_input(net, 4, 3)
    a, b = net.run(x), back.run(x)
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert back.summary() == net.summary() and "groups=8" in net.summary() and "out_max=96" in net.summary()
    with np.load(path) as z:
        layers = {entry["name"]: entry for entry in json.loads(z[MANIFEST_KEY].tobytes())["layers"]}
    assert layers["dw"]["params"]["groups"] == 8 and layers["dw"]["params"]["out_max"] == 96
    assert layers["mp"]["params"]["padding"] == [1, 1, 1, 1]
    assert layers["ap3"]["params"]["padding"] == [1, 0, 1, 0] and layers["ap3"]["params"]["pool"] == [3, 3]
    assert layers["cat"]["kind"] == "concat" and layers["cat"]["inputs"] == ["pw", "pw_sat", "grp"]
    assert layers["cat"]["params"] == {"out_type": {"bits": 8, "signed": True, "frac_bits": 3}}
    assert layers["fc"]["params"]["out_max"] == 24
    # Defaults are not written: the files of networks without these features are what earlier versions wrote.
    assert "groups" not in layers["stem"]["params"] and "out_max" not in layers["stem"]["params"]
    assert "padding" not in layers["gap"]["params"]


def test_files_without_the_new_fields_load_with_the_defaults(model, tmp_path):
    with np.load(model) as z:
        m = json.loads(z[MANIFEST_KEY].tobytes())
    names = [f for entry in m["layers"] for f in entry.get("params", {})]
    assert not {"groups", "out_max"} & set(names)
    assert all("padding" not in e["params"] for e in m["layers"] if e["kind"] in ("maxpool2d", "avgpool2d"))
    net = load(model)
    assert net.layer("conv1").groups == 1 and net.layer("conv1").out_max is None
    assert all(layer.padding == (0, 0, 0, 0) for layer in net.layers if layer.kind in ("maxpool2d", "avgpool2d"))


def _features_file(tmp_path, edit):
    src, bad = tmp_path / "f.npz", tmp_path / "bad.npz"
    _features_net().save(src)

    def edit_layer(m):
        edit({e["name"]: e for e in m["layers"]})
    _rewrite(src, bad, edit_manifest=edit_layer)
    with pytest.raises(ModelFormatError) as info:
        load(bad)
    return str(bad), str(info.value)


@pytest.mark.parametrize("edit,msg", [
    (lambda ls: ls["dw"]["params"].update(groups="8"), "layer 'dw': groups must be an int, not '8'"),
    (lambda ls: ls["dw"]["params"].update(groups=True), "layer 'dw': groups must be an int, not True"),
    (lambda ls: ls["dw"]["params"].update(groups=8.0), "layer 'dw': groups must be an int, not 8.0"),
    (lambda ls: ls["dw"]["params"].update(groups=3),
     "invalid model: layer 'dw': groups=3 must be a positive divisor of the 8 output channels"),
    (lambda ls: ls["dw"]["params"].pop("groups"), "invalid model: layer 'dw': conv2d expects (H, W, 1) per sample, "
                                                  "got (8, 8, 8)"),
    (lambda ls: ls["pw"]["params"].update(out_max=96.0), "layer 'pw': out_max must be an int, not 96.0"),
    (lambda ls: ls["pw"]["params"].update(out_max=-1), "invalid model: layer 'pw': out_max must be between 0 and"),
    (lambda ls: ls["pw"]["params"].update(relu=False), "invalid model: layer 'pw': out_max=96 needs relu=True"),
    (lambda ls: ls["mp"]["params"].update(padding=[1, 1, 1]), "layer 'mp': padding must be a list of 2 or 4 ints, "
                                                              "not [1, 1, 1]"),
    (lambda ls: ls["mp"]["params"].update(padding=[3, 3]), "invalid model: layer 'mp': pooling padding (3, 3, 3, 3)"),
    (lambda ls: ls["mp"]["params"].update(groups=2), "layer 'mp': unknown fields ['groups'] for a maxpool2d layer"),
    (lambda ls: ls["cat"]["params"].update(axis=1), "layer 'cat': unknown fields ['axis'] for a concat layer"),
    (lambda ls: ls["cat"]["params"].pop("out_type"), "layer 'cat': a concat layer needs the parameter(s) ['out_type']"),
    (lambda ls: ls["cat"].update(inputs=["pw"]), "invalid model: layer 'cat': a concat layer takes at least 2 input "
                                                 "name(s), not ('pw',)"),
    (lambda ls: ls["grp"]["params"].update(stride=[2, 2]), "invalid model: layer 'cat': concat needs inputs that are all "
                                                       "(features,) or all (H, W, C) with equal H and W"),
    (lambda ls: ls["cat"].update(arrays={"weight": "layers/stem/weight"}),
     "layer 'cat': unknown fields ['weight'] for a concat layer (it has no arrays)"),
])
def test_import_feature_fields_are_checked_strictly(tmp_path, edit, msg):
    path, got = _features_file(tmp_path, edit)
    assert got.startswith(f"{path}: {msg}"), got
