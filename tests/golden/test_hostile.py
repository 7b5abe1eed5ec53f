"""Hostile inputs, at random: mutated model files and config files (issue 20, item 2).

Hypothesis (derandomized by tests/conftest.py) takes a valid model file and changes manifest fields,
array dtypes, values and shapes, members and bytes; or a valid accelerator config's fields. Every
outcome must be one of:

* a clear error of an expected type (``ModelFormatError`` for a model file, ``TypeError`` /
  ``ValueError`` for a config) whose message names the file and is not empty; never ``IndexError``,
  ``KeyError``, ``RecursionError``, ``MemoryError``, a bare ``OverflowError``, ...;
* a network whose every layer output, on inputs spanning the input type's range, equals an independent
  reference that reads the same manifest and arrays (through ``np.load``, not the golden loader) and
  computes with Python ints (``tests/golden/reference.py``); or a config equal, value and type, to the JSON.

Memory is bounded: tracemalloc's peak (which counts NumPy arrays) over load and run stays below 64 MiB.
"""

import copy
import json
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from systolic.arch.config import AcceleratorConfig, load_config
from systolic.golden import (Add, AvgPool2D, Concat, Conv2D, Dense, Flatten, MaxPool2D, ModelFormatError, QType,
                             QuantizedNetwork, load)
from systolic.golden.network import MANIFEST_KEY
from systolic.golden.random import random_network

from .reference import avg_ref, grouped_conv2d_ref, pool_windows_ref, round_shift_ref, saturate_ref

PEAK_LIMIT = 64 << 20


def _multipoint():
    rng = np.random.default_rng(9)
    return QuantizedNetwork(QType(8, False, 4), (6,), [Dense(
        name="mp", inputs=("input",), weight=rng.integers(-8, 8, (6, 4)), w_type=QType(4, True, 2),
        out_type=QType(8, True, 0), bias=rng.integers(-50, 50, 4), extra_weights=rng.integers(-8, 8, (2, 6, 4)),
        extra_shifts=[4, 8], relu=True)])


def _wide_add():
    """A residual add whose operands are 50 bits apart (f = -2 and 48): one edge away from leaving int64."""
    b = Dense(name="b", inputs=("input",), weight=np.array([[3, -1], [1, 2]]), w_type=QType(8, True, 48),
              out_type=QType(8, True, 48), bias=np.array([-7, 9]))
    return QuantizedNetwork(QType(8, True, -2), (2,), [b, Add(name="s", inputs=("input", "b"), out_type=QType(8, True, 0),
                                                             relu=True)])


def _import_features():
    """Grouped and depthwise convolutions, upper clamps, padded pools, a 3x3 average pool, a concat."""
    rng = np.random.default_rng(10)
    w = QType(8, True, 5)
    return QuantizedNetwork(QType(8, False, 6), (5, 5, 4), [
        Conv2D(name="dw", inputs=("input",), weight=rng.integers(-60, 60, (3, 3, 1, 4)), w_type=w,
               out_type=QType(8, False, 4), bias=rng.integers(-99, 99, 4), relu=True, out_max=96, padding=1, groups=4),
        Conv2D(name="g", inputs=("dw",), weight=rng.integers(-60, 60, (1, 1, 2, 4)), w_type=w,
               out_type=QType(4, True, 2), groups=2),
        MaxPool2D(name="mp", inputs=("g",), pool=3, stride=2, padding=1),
        AvgPool2D(name="ap", inputs=("dw",), pool=3, stride=2, padding=(1, 1, 0, 2), out_type=QType(8, True, 5)),
        Concat(name="cat", inputs=("mp", "ap", "mp"), out_type=QType(8, True, 3)),
        AvgPool2D(name="gap", inputs=("cat",), pool=3),
        Flatten(name="f", inputs=("gap",)),
        Dense(name="fc", inputs=("f",), weight=rng.integers(-60, 60, (12, 3)), w_type=w, out_type=QType(8, False, 4),
              relu=True, out_max=20),
        Add(name="s", inputs=("fc", "fc"), out_type=QType(8, False, 4), relu=True, out_max=15)], rounding="half_up")


def _bases():
    return [random_network(1, "mlp", 8), random_network(2, "cnn", 8, input_hw=5, channels=2),
            random_network(3, "resnet", 4, rounding="half_up", per_channel=True, input_hw=5, channels=2),
            random_network(4, "cnn", 4, per_channel=True, input_hw=5, channels=2),
            random_network(5, "cnn", 8, rounding="half_up", input_hw=5, channels=2), _multipoint(), _wide_add(),
            _import_features()]


BASES = _bases()

#: Replacement values: wrong JSON types, strings that look like values, edges of every range, huge numbers.
VALUES = ["false", "true", "881", "", "input", "conv2d", "half_up", True, False, None, 0, 1, -1, 2, 3, 7, 8, 16,
          31, 32, 33, 48, 49, 62, 63, 2 ** 31, -2 ** 31, 2 ** 63, -2 ** 63, 2 ** 64, 10 ** 30, 1.0, 0.5, -2.5,
          [], {}, [1], [1, 1], [2, 2], [1, 1, 1, 1], [0, 1, 0, 1], ["1", 1], [[1, 1]],
          {"bits": 8, "signed": True, "frac_bits": 0}, {"bits": 4, "signed": False, "frac_bits": 48},
          {"bits": 32, "signed": True, "frac_bits": -48}, json.loads("[" * 40 + "]" * 40)]
#: Values of the right JSON type for a field, at and just beyond the edges of its range.
EDGES = {"frac_bits": [-49, -48, -47, -10, 0, 10, 30, 47, 48, 49], "bits": [1, 2, 7, 8, 16, 31, 32, 33],
         "signed": [True, False], "relu": [True, False], "rounding": ["half_even", "half_up"],
         "padding": [[0, 0], [1, 1], [2, 2], [0, 1, 2, 3], [1, 1, 1, 1], [3, 3], [255, 255], [256, 0]],
         "groups": [0, 1, 2, 4, 8, -1], "out_max": [0, 1, 15, 96, 255, 256, -1, 2 ** 63 - 1, 2 ** 63],
         "stride": [[1, 1], [2, 2], [1, 3], [0, 1], [16777217, 1]], "pool": [[1, 1], [2, 2], [1, 2], [4, 4], [3, 3]],
         "shape": [[1], [2], [5, 5, 2], [4, 4, 2], [6, 6, 2], [32], [6], [5, 5, 3]]}
ARRAY_VALUES = [-2 ** 63, 2 ** 63 - 1, -2 ** 63, 2 ** 63 - 1, 2 ** 31, -2 ** 31 - 1, -2 ** 31, 2 ** 31 - 1, 127, 128, -128, -129, 0, 1,
                -1, 7, -8, 16, 17, 48, 49, 62, 63, -63]
DTYPES = ["int8", "uint8", "int16", "int32", "uint32", "int64", "uint64", "uint64", "uint64", ">i8", ">u8",
          "float32", "float64", "bool", "complex64", "object"]


# -------------------------------------------------------------------------- the reference
def _sat(v, qt):
    return saturate_ref(v, qt["bits"], qt["signed"])


def _check_types(m):
    """The JSON types docs/numerics.md gives the manifest's fields: a file the golden model loaded must have them
    (a loader that coerced "false" to a bool or "881" to a shape fails here)."""
    def is_int(v):
        return type(v) is int

    def qtype(t):
        assert type(t) is dict and set(t) == {"bits", "signed", "frac_bits"}, t
        assert is_int(t["bits"]) and type(t["signed"]) is bool and is_int(t["frac_bits"]), t

    assert is_int(m["version"]) and m["version"] == 1 and m["format"] == "systolic-qnet"
    assert m.get("rounding", "half_even") in ("half_even", "half_up")
    qtype(m["input"]["qtype"])
    assert type(m["input"]["shape"]) is list and all(is_int(v) and v > 0 for v in m["input"]["shape"])
    for layer in m["layers"]:
        assert type(layer["name"]) is str and type(layer["inputs"]) is list
        for key, v in layer.get("params", {}).items():
            if key in ("w_type", "out_type"):
                qtype(v)
            elif key == "relu":
                assert type(v) is bool, (layer["name"], v)
            elif key in ("groups", "out_max"):
                assert is_int(v), (layer["name"], key, v)
            else:
                assert key in ("stride", "padding", "pool") and type(v) is list and all(map(is_int, v)), (key, v)


def reference(m, arrays, x):
    """Every layer's output (nested lists of Python ints) of manifest *m* with *arrays* on input *x*.

    Written from docs/numerics.md, independent of systolic.golden: the defaults are those of the format
    (no relu, no clamp, no bias, one group, stride = pool, no padding; padding a pair (ph, pw) means
    (ph, ph, pw, pw)).
    """
    def clamp(y, relu, out_max, out_t):
        if relu:
            y = max(y, 0)
        if out_max is not None:
            y = min(y, out_max)
        return _sat(y, out_t)

    def padding(p):
        pad = p.get("padding", [0, 0])
        return tuple(pad if len(pad) == 4 else [pad[0], pad[0], pad[1], pad[1]])

    _check_types(m)
    rounding = m.get("rounding", "half_even")
    types = {"input": m["input"]["qtype"]}
    outs = {"input": x.tolist()}
    for layer in m["layers"]:
        kind, name, p, refs = layer["kind"], layer["name"], layer.get("params", {}), layer.get("arrays", {})
        ins = [outs[i] for i in layer["inputs"]]
        tin = [types[i] for i in layer["inputs"]]
        if kind in ("dense", "conv2d"):
            w = np.asarray(arrays[refs["weight"]]).astype(object)
            for e, s in zip(arrays.get(refs.get("extra_weights"), []), arrays.get(refs.get("extra_shifts"), [])):
                w = w + np.asarray(e).astype(object) * 2 ** int(s)
            n = w.shape[-1]
            bias = [int(b) for b in arrays[refs["bias"]]] if "bias" in refs else [0] * n
            wf = [int(f) for f in arrays[refs["w_frac"]]] if "w_frac" in refs else [p["w_type"]["frac_bits"]] * n
            out_t, relu, out_max = p["out_type"], p.get("relu", False), p.get("out_max")
            ks = [tin[0]["frac_bits"] + f - out_t["frac_bits"] for f in wf]

            def rq(acc, j):
                return clamp(round_shift_ref(acc + bias[j], ks[j], rounding), relu, out_max, out_t)
            if kind == "dense":
                wl = w.tolist()
                y = [[rq(sum(a * wl[i][j] for i, a in enumerate(row)), j) for j in range(n)] for row in ins[0]]
            else:
                acc = grouped_conv2d_ref(ins[0], w.tolist(), tuple(p.get("stride", [1, 1])), padding(p),
                                         p.get("groups", 1))
                y = [[[[rq(v, j) for j, v in enumerate(px)] for px in row] for row in img] for img in acc]
            types[name] = out_t
        elif kind in ("maxpool2d", "avgpool2d"):
            (ph, pw), stride = p["pool"], p.get("stride", p["pool"])
            out_t = p.get("out_type", tin[0]) if kind == "avgpool2d" else tin[0]
            wins = pool_windows_ref(ins[0], (ph, pw), stride, padding(p))     # each window's input elements

            def pool(v):
                if kind == "maxpool2d":
                    return max(v)
                return avg_ref(sum(v), ph * pw, tin[0]["frac_bits"], out_t["frac_bits"], out_t["bits"],
                               out_t["signed"], rounding)
            y = [[[[pool(v) for v in px] for px in row] for row in img] for img in wins]
            types[name] = out_t
        elif kind == "add":
            out_t, relu = p["out_type"], p.get("relu", False)
            fa, fb = tin[0]["frac_bits"], tin[1]["frac_bits"]
            f = max(fa, fb)
            a, b = np.asarray(ins[0], dtype=object), np.asarray(ins[1], dtype=object)
            s = a * 2 ** (f - fa) + b * 2 ** (f - fb)
            y = np.vectorize(lambda v: clamp(round_shift_ref(int(v), f - out_t["frac_bits"], rounding), relu,
                                             p.get("out_max"), out_t), otypes=[object])(s).tolist()
            types[name] = out_t
        elif kind == "concat":
            out_t = p["out_type"]
            parts = [np.vectorize(lambda v, t=t: _sat(round_shift_ref(int(v), t["frac_bits"] - out_t["frac_bits"],
                                                                      rounding), out_t), otypes=[object])(
                np.asarray(a, dtype=object)) for a, t in zip(ins, tin)]
            y = np.concatenate(parts, axis=-1).tolist()
            types[name] = out_t
        elif kind == "flatten":
            y = [np.asarray(img, dtype=object).reshape(-1).tolist() for img in ins[0]]
            types[name] = tin[0]
        else:
            raise AssertionError(f"the golden model accepted an unknown layer kind {kind!r}")
        outs[name] = y
    return outs


def _inputs(qt, shape):
    """Three samples: all lo, all hi, and a seeded spread over the range."""
    lo, hi = (-(2 ** (qt.bits - 1)), 2 ** (qt.bits - 1) - 1) if qt.signed else (0, 2 ** qt.bits - 1)
    rng = np.random.default_rng(1)
    return np.stack([np.full(shape, lo), np.full(shape, hi), rng.integers(lo, hi, size=shape, endpoint=True)])


# ---------------------------------------------------------------------------- mutations
def _paths(obj, prefix=()):
    """Every path (tuple of keys / indices) to a value inside *obj*, in a fixed order."""
    out = [prefix]
    if isinstance(obj, dict):
        for k in sorted(obj):
            out += _paths(obj[k], prefix + (k,))
    elif isinstance(obj, list) and len(obj) <= 8:
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _mutate_manifest(m, data):
    path = data.draw(st.sampled_from(_paths(m)[1:]), label="manifest path")
    *parent_path, key = path
    parent = m
    for k in parent_path:
        parent = parent[k]
    action = data.draw(st.sampled_from(["edge", "edge", "replace", "replace", "delete", "add_key"]), label="action")
    if action == "edge" and key in EDGES:       # a value of the right type at the edge of (or just beyond) its range
        parent[key] = copy.deepcopy(data.draw(st.sampled_from(EDGES[key]), label="edge value"))
    elif action in ("edge", "replace"):
        parent[key] = copy.deepcopy(data.draw(st.sampled_from(VALUES), label="value"))
    elif action == "delete":
        del parent[key]
    elif isinstance(parent, dict):
        parent[data.draw(st.sampled_from(["colour", "relu", "pool", "bias", "meta", "kind", "groups", "out_max",
                                          "padding"]))] = copy.deepcopy(
            data.draw(st.sampled_from(VALUES), label="added value"))


def _mutate_array(arrays, data):
    name = data.draw(st.sampled_from(sorted(arrays)), label="array")
    a = arrays[name]
    if a.dtype == object:                      # already an object array: nothing more to break
        return
    action = data.draw(st.sampled_from(["dtype", "value", "value", "shape", "delete", "extra"]), label="array action")
    if action == "dtype":
        dt = data.draw(st.sampled_from(DTYPES), label="dtype")
        with warnings.catch_warnings():       # complex -> real and float -> int casts warn
            warnings.simplefilter("ignore")
            arrays[name] = np.array([{"evil": 1}] * a.size, dtype=object) if dt == "object" else a.astype(dt)
    elif action == "value" and a.size:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            b = a.astype(np.int64).reshape(-1)
        for _ in range(data.draw(st.integers(1, 3), label="elements")):
            b[data.draw(st.integers(0, a.size - 1), label="index")] = data.draw(st.sampled_from(ARRAY_VALUES))
        arrays[name] = b.reshape(a.shape)
    elif action == "shape":
        how = data.draw(st.sampled_from(["flat", "lead", "drop", "transpose", "empty", "scalar", "double"]))
        arrays[name] = {"flat": lambda: a.reshape(-1), "lead": lambda: a[None], "drop": lambda: a.reshape(-1)[:-1],
                        "transpose": lambda: a.T, "empty": lambda: a.reshape(-1)[:0],
                        "scalar": lambda: a.reshape(-1)[0] if a.size else np.int64(0),
                        "double": lambda: np.concatenate([a, a], axis=-1) if a.ndim else a}[how]()
    elif action == "delete":
        del arrays[name]
    elif action == "extra":
        arrays["layers/unused/weight"] = np.arange(5)


def _write(path, manifest_text, arrays):
    np.savez(path, **{MANIFEST_KEY: np.frombuffer(manifest_text.encode(), np.uint8), **arrays})


def _traced(fn):
    tracemalloc.start()
    try:
        return fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < PEAK_LIMIT, f"peak {peak} bytes"


def _check_model_file(path):
    """The property: a clear ModelFormatError, or exactly the reference's integers."""
    def run():
        try:
            net = load(path)
        except ModelFormatError as exc:
            msg = str(exc)
            assert msg.startswith(f"{path}: ") and len(msg) > len(f"{path}: ") and "\n" not in msg, msg
            return None
        return net, net.run(_inputs(net.input_type, net.input_shape))
    got = _traced(run)
    if got is None:
        return "refused"
    net, outs = got
    with np.load(path, allow_pickle=False) as z:          # the reference reads the file on its own
        arrays = {k: z[k] for k in z.files}
    m = json.loads(arrays.pop(MANIFEST_KEY).tobytes())
    want = reference(m, arrays, outs["input"])
    assert list(want) == list(outs)
    for name in outs:
        assert outs[name].tolist() == want[name], name
    return "loaded"


SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(data=st.data())
def test_mutated_model_files_are_refused_clearly_or_computed_exactly(tmp_path_factory, data):
    net = data.draw(st.sampled_from(BASES), label="base")
    path = tmp_path_factory.mktemp("m") / "m.npz"
    net.save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    m = json.loads(arrays.pop(MANIFEST_KEY).tobytes())
    for _ in range(data.draw(st.integers(1, 2), label="mutations")):
        target = data.draw(st.sampled_from(["manifest", "array"]), label="target")
        if target == "manifest":
            _mutate_manifest(m, data)
        else:
            _mutate_array(arrays, data)
    _write(path, json.dumps(m), arrays)
    event(_check_model_file(path))          # --hypothesis-show-statistics: how many loaded / were refused


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_corrupted_model_bytes_are_refused_clearly_or_computed_exactly(tmp_path_factory, data):
    net = data.draw(st.sampled_from(BASES), label="base")
    path = tmp_path_factory.mktemp("b") / "m.npz"
    net.save(path)
    blob = bytearray(path.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        blob = blob[:data.draw(st.integers(0, len(blob) - 1), label="length")]
    else:
        for _ in range(data.draw(st.integers(1, 4), label="flips")):
            blob[data.draw(st.integers(0, len(blob) - 1), label="byte")] ^= data.draw(st.integers(1, 255))
    path.write_bytes(bytes(blob))
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:   # can the reference read it?
            {k: z[k] for k in z.files}
        readable = True
    except Exception:   # noqa: BLE001 - NumPy's own errors on a corrupt file vary
        readable = False
    outcome = _check_model_file(path) if readable else None
    event(str(outcome))
    if not readable:
        with pytest.raises(ModelFormatError) as info:
            _traced(lambda: load(path))
        assert str(info.value).startswith(f"{path}: ")
    assert outcome in (None, "refused", "loaded")


CONFIG_VALUES = VALUES + [4, 64, 65, "ws", "os", "half_even", 1 << 24, 512]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_mutated_configs_are_refused_clearly_or_taken_exactly(tmp_path_factory, data):
    base = AcceleratorConfig().to_dict()
    d = dict(base)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        action = data.draw(st.sampled_from(["replace", "replace", "delete", "add"]), label="action")
        if action == "replace":
            d[data.draw(st.sampled_from(sorted(base)), label="key")] = copy.deepcopy(
                data.draw(st.sampled_from(CONFIG_VALUES)))
        elif action == "delete" and d:
            del d[data.draw(st.sampled_from(sorted(d)), label="deleted")]
        else:
            d[data.draw(st.sampled_from(["colour", "Rows", ""]), label="added")] = 1
    path = tmp_path_factory.mktemp("c") / "c.json"
    path.write_text(json.dumps(d))
    try:
        cfg = _traced(lambda: load_config(path))
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        assert msg.startswith(f"{path}: ") and len(msg) > len(f"{path}: ") and "\n" not in msg, msg
        return
    got = cfg.to_dict()
    want = {**base, **d}
    assert got == want
    assert all(type(got[k]) is type(want[k]) for k in want)     # no coercion: "false" is never a bool


# ------------------------------------------------------- arithmetic at the edges of every range
FRACS = st.sampled_from([-48, -47, -20, -10, -2, 0, 2, 10, 20, 47, 48]) | st.integers(-48, 48)


@st.composite
def qtypes(draw, signed=None, max_bits=32):
    s = draw(st.booleans()) if signed is None else signed
    bits = draw(st.sampled_from([b for b in (1, 2, 4, 8, 16, 31, 32) if (2 if s else 1) <= b <= max_bits]))
    return QType(bits, s, draw(FRACS))


def _ints(draw, qt, shape):
    edges = [qt.lo, qt.hi, 0, 1, qt.lo + 1, qt.hi - 1]
    vals = [draw(st.sampled_from([v for v in edges if qt.lo <= v <= qt.hi])) for _ in range(int(np.prod(shape)))]
    return np.array(vals, dtype=np.int64).reshape(shape)


@st.composite
def edge_networks(draw):
    """One dense (maybe multipoint, per-channel, with bias) or a residual add, with types and values drawn at
    the edges of their ranges: the golden model must refuse it clearly or compute it exactly."""
    in_t = draw(qtypes())
    k, n = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    w_t = draw(qtypes(signed=True))
    kw = dict(name="d", inputs=("input",), weight=_ints(draw, w_t, (k, n)), w_type=w_t, out_type=draw(qtypes()),
              relu=draw(st.booleans()))
    if draw(st.booleans()):
        kw["bias"] = np.array([draw(st.sampled_from([-2 ** 31, 2 ** 31 - 1, 0, -1, 5, -2 ** 63, 2 ** 63 - 1, 2 ** 31]))
                               for _ in range(n)])
    if draw(st.booleans()):
        kw["w_frac"] = np.array([draw(FRACS) for _ in range(n)])
    if draw(st.booleans()):
        p = draw(st.integers(1, 2))
        kw["extra_weights"] = _ints(draw, w_t, (p, k, n))
        kw["extra_shifts"] = np.array([draw(st.sampled_from([0, 1, 8, 16])) for _ in range(p)])
    layers = [lambda: Dense(**kw)]
    shape = (k,)
    if draw(st.booleans()):             # a residual add of the input and the dense output (n = k)
        kw["weight"] = kw["weight"][:, :1].repeat(k, axis=1)
        for key in ("bias", "w_frac"):
            if key in kw:
                kw[key] = np.resize(kw[key], k)
        if "extra_weights" in kw:
            kw["extra_weights"] = kw["extra_weights"][..., :1].repeat(k, axis=2)
        add = dict(name="s", inputs=("input", "d"), out_type=draw(qtypes()), relu=draw(st.booleans()))
        layers.append(lambda: Add(**add))
    return in_t, shape, layers


@settings(max_examples=300, deadline=None)
@given(spec=edge_networks())
def test_networks_at_the_edges_are_refused_clearly_or_computed_exactly(tmp_path_factory, spec):
    in_t, shape, builders = spec
    try:
        net = QuantizedNetwork(in_t, shape, [b() for b in builders])
    except (ValueError, TypeError, OverflowError) as exc:        # the constructors' checks: a clear message
        assert str(exc) and "\n" not in str(exc)
        event("refused")
        return
    event("built")
    x = _inputs(in_t, shape)
    outs = net.run(x)                       # never raises for inputs in range: construction proved it exact
    path = tmp_path_factory.mktemp("e") / "e.npz"
    net.save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {key: z[key] for key in z.files}
    want = reference(json.loads(arrays.pop(MANIFEST_KEY).tobytes()), arrays, x)
    for name in outs:
        assert outs[name].tolist() == want[name], name
    back = load(path).run(x)                # and the file round trip is exact
    assert all(np.array_equal(back[name], outs[name]) for name in outs)
