"""The sweep specification: read strictly, expanded into points.

A spec is a JSON (or, with PyYAML installed, YAML) object::

    {"base": "tiny",                                  # preset the grid starts from (default "default")
     "grid": {"rows": [2, 4], "dataflow": ["ws", "os"]},   # config field -> list of values
     "configs": [{"rows": 8, "cols": 8}],             # linked values: each object a set of fields, x grid
     "models": ["digits-mlp", "random:cnn"],          # shipped names, .npz files, random:mlp|cnn|resnet
     "methods": ["golden", "tqt"],                    # "golden": the model as given; else quantize it
     "quantize": {"epochs": 3, "float_epochs": 40},   # options of the quantizing methods
     "metrics": ["cycles", "energy"],                 # of METRICS
     "images": 2, "seed": 0, "sample": null,          # images per point, seed, random subset of K points
     "synth": {"target": "ecp5", "pnr": false}}       # options of the "synth" metric

Every key and every value's JSON type is checked here, with a message naming
it; a grid value of the right type but out of range (``rows: 100``) or an
invalid combination of values is not a spec error: that point becomes an
error row of the results (:func:`systolic.sweep.tasks.run_point`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
from pathlib import Path

from ..arch.config import PRESETS, AcceleratorConfig
from ..golden.limits import loads_json, short_repr
from ..quantize import METHODS as QUANT_METHODS
from ..quantize import MODELS as ZOO_MODELS

__all__ = ["METRICS", "METHODS", "SPEC_KEYS", "MAX_SPEC_BYTES", "MAX_POINTS", "MAX_IMAGES", "SYNTH_KEYS",
           "QUANTIZE_KEYS", "MODEL_METRICS", "load_spec", "parse_spec", "expand", "canonical_json",
           "model_fingerprint", "quant_recipe"]

#: Metrics a spec may ask for.
METRICS = ("cycles", "energy", "accuracy", "rtl", "synth")
#: Methods: ``golden`` (the model as given) and the quantization methods, which train the zoo model in float
#: and quantize it at the point's config widths (``w_bits``, ``in_bits``) and rounding.
METHODS = ("golden", *QUANT_METHODS)
#: Keys of a spec and their defaults (``None``: required, except for a synthesis-only sweep).
SPEC_KEYS = {"base": "default", "grid": {}, "configs": [{}], "models": None, "methods": ["golden"],
             "quantize": {}, "metrics": ["cycles"], "images": 2, "seed": 0, "sample": None, "synth": {}}
#: Keys of the ``synth`` object and their defaults (``seed``: nextpnr's placement seed).
SYNTH_KEYS = {"target": "ecp5", "device": None, "pnr": False, "freq_mhz": 100.0, "seed": 1}
#: Keys of the ``quantize`` object and their defaults (``epochs``: retraining epochs per method, ``null``: the
#: method's default; ``float_epochs``: training of the float model the method starts from; ``data``: the
#: built-in data set the zoo model is built for, trained, calibrated and measured on; ``null``: the model's
#: own, mnist for the mnist-* models, else digits).
QUANTIZE_KEYS = {"epochs": None, "float_epochs": 40, "data": None}
#: Data sets a sweep can quantize on.
SWEEP_DATA = ("digits", "mnist")
#: Most training epochs a spec may ask for.
MAX_EPOCHS = 1000
#: Metrics that need a model (a synthesis-only sweep needs none).
MODEL_METRICS = ("cycles", "energy", "accuracy", "rtl")
#: Largest spec file.
MAX_SPEC_BYTES = 1 << 20
#: Most points one spec expands to (before sampling).
MAX_POINTS = 100_000
#: Most images per point.
MAX_IMAGES = 4096

_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(AcceleratorConfig)}


def canonical_json(obj) -> str:
    """The one JSON text of *obj* that hashes are taken of: sorted keys, no spaces."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def load_spec(path, *, sample: int | None = None, seed: int | None = None) -> dict:
    """Read and check the spec file *path* (``.json``, ``.yaml`` / ``.yml``); *sample* / *seed* override
    the spec's. Model file paths are taken relative to the spec's folder. ``ValueError`` / ``TypeError``
    name the file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SPEC_BYTES + 1)
        obj = _parse_text(data, path.suffix.lower())
        if isinstance(obj, dict) and sample is not None:
            obj = {**obj, "sample": sample}
        if isinstance(obj, dict) and seed is not None:
            obj = {**obj, "seed": seed}
        return parse_spec(obj, base_dir=path.resolve().parent)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{path}: {exc}") from None


def _parse_text(data: bytes, suffix: str):
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError("a YAML spec needs PyYAML (pip install pyyaml); or write the spec as JSON") from None
        if len(data) > MAX_SPEC_BYTES:
            raise ValueError(f"sweep spec is {len(data)} bytes, above the limit of {MAX_SPEC_BYTES} bytes")
        try:
            text = data.decode("utf-8")
            if any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, Loader=yaml.SafeLoader)):
                raise ValueError("sweep spec uses YAML aliases (*name); write the values out")
            obj = yaml.safe_load(text)
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValueError(f"sweep spec is not valid YAML: {str(exc).splitlines()[0]}") from None
        return loads_json(canonical_json(obj), "sweep spec", MAX_SPEC_BYTES)   # the same limits as JSON
    if suffix != ".json":
        raise ValueError(f"a sweep spec must be a .json, .yaml or .yml file, not {suffix or 'no suffix'!r}")
    return loads_json(data, "sweep spec", MAX_SPEC_BYTES)


def _int(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {short_repr(value)}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def _str_list(name, value, choices=None):
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a non-empty list of strings, not {short_repr(value)}")
    if len(set(value)) != len(value):
        raise ValueError(f"{name} lists a value twice: {short_repr(value)}")
    for v in value:
        if choices is not None and v not in choices:
            raise ValueError(f"{name}: unknown value {v!r} (known: {', '.join(choices)})")
    return list(value)


def _check_keys(what, obj, known):
    if not isinstance(obj, dict):
        raise TypeError(f"{what} must be an object, not {short_repr(obj)}")
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} key(s): {', '.join(unknown)} (known keys: {', '.join(known)})")


def _field_kind(name):
    """The JSON kind of config field *name*, from the default config's value (bool, int or str)."""
    return type(getattr(AcceleratorConfig(), name))


def _check_value(what, name, value):
    kind = _field_kind(name)
    if type(value) is not kind:
        raise TypeError(f"{what} values must be of type {kind.__name__}, not {short_repr(value)}")


def _check_configs(configs, grid) -> list:
    """The ``configs`` list: objects of config fields whose values go together (crossed with the grid)."""
    if not isinstance(configs, list) or not configs:
        raise TypeError(f"configs must be a non-empty list of objects, not {short_repr(configs)}")
    out = []
    for i, obj in enumerate(configs):
        _check_keys(f"configs[{i}]", obj, sorted(_CONFIG_FIELDS))
        for name, value in obj.items():
            _check_value(f"configs[{i}].{name}", name, value)
            if name in grid:
                raise ValueError(f"configs[{i}].{name}: the field is also a grid key; give it in one place")
        out.append(dict(obj))
    if len({canonical_json(c) for c in out}) != len(out):
        raise ValueError(f"configs lists an object twice: {short_repr(configs)}")
    return out


def _check_quantize(obj) -> dict:
    _check_keys("quantize", obj, list(QUANTIZE_KEYS))
    out = {**QUANTIZE_KEYS, **obj}
    if out["epochs"] is not None:
        _int("quantize.epochs", out["epochs"], 1, MAX_EPOCHS)
    _int("quantize.float_epochs", out["float_epochs"], 1, MAX_EPOCHS)
    if out["data"] is not None and out["data"] not in SWEEP_DATA:
        raise ValueError(f"quantize.data must be one of {', '.join(SWEEP_DATA)}, not {short_repr(out['data'])}")
    return out


def _check_grid(grid) -> dict:
    _check_keys("grid", grid, sorted(_CONFIG_FIELDS))
    out = {}
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise TypeError(f"grid.{name} must be a non-empty list, not {short_repr(values)}")
        for v in values:
            _check_value(f"grid.{name}", name, v)
        if len(set(values)) != len(values):
            raise ValueError(f"grid.{name} lists a value twice: {short_repr(values)}")
        out[name] = list(values)
    return out


def _check_models(models, base_dir, metrics) -> list:
    if models is None:
        if set(metrics) & set(MODEL_METRICS):
            raise ValueError(f"sweep spec: 'models' is required for the metrics "
                             f"{', '.join(m for m in metrics if m in MODEL_METRICS)} (a list of model names or files)")
        return [None]       # synthesis only: no model
    models = _str_list("models", models)
    out = []
    for m in models:
        if m.startswith("random:"):
            if m.split(":", 1)[1] not in ("mlp", "cnn", "resnet"):
                raise ValueError(f"models: unknown random model {m!r} (random:mlp, random:cnn or random:resnet)")
            out.append(m)
        elif m.endswith(".npz"):
            p = Path(m) if base_dir is None else Path(base_dir) / m
            if not p.is_file():
                raise ValueError(f"models: no such model file {str(p)!r}")
            out.append(str(p.resolve()))
        else:
            from ..models import SHIPPED

            if m not in SHIPPED:
                raise ValueError(f"models: unknown model {m!r}: give a .npz file, random:<mlp|cnn|resnet> or one "
                                 f"of {', '.join(SHIPPED)}")
            out.append(m)
    return out


def _check_synth(obj) -> dict:
    _check_keys("synth", obj, list(SYNTH_KEYS))
    out = {**SYNTH_KEYS, **obj}
    if out["target"] not in ("ecp5", "ice40"):
        raise ValueError(f"synth.target must be ecp5 or ice40, not {short_repr(out['target'])}")
    if out["device"] is not None and not isinstance(out["device"], str):
        raise TypeError(f"synth.device must be a string or null, not {short_repr(out['device'])}")
    if not isinstance(out["pnr"], bool):
        raise TypeError(f"synth.pnr must be a bool, not {short_repr(out['pnr'])}")
    _int("synth.seed", out["seed"], 1, 2 ** 31 - 1)
    f = out["freq_mhz"]
    if not isinstance(f, (int, float)) or isinstance(f, bool) or not f > 0:
        raise ValueError(f"synth.freq_mhz must be a positive number, not {short_repr(f)}")
    return out


def parse_spec(obj, base_dir=None) -> dict:
    """The checked spec with every default filled in; model files made absolute against *base_dir*."""
    _check_keys("sweep spec", obj, list(SPEC_KEYS))
    spec = {**SPEC_KEYS, **obj}
    if not isinstance(spec["base"], str) or spec["base"] not in PRESETS:
        raise ValueError(f"base must be one of {', '.join(PRESETS)}, not {short_repr(spec['base'])}")
    spec["grid"] = _check_grid(spec["grid"])
    spec["configs"] = _check_configs(spec["configs"], spec["grid"])
    spec["metrics"] = _str_list("metrics", spec["metrics"], METRICS)
    spec["models"] = _check_models(spec["models"], base_dir, spec["metrics"])
    spec["methods"] = _str_list("methods", spec["methods"], METHODS)
    quantizing = [m for m in spec["methods"] if m != "golden"]
    if quantizing:
        if spec["models"] == [None]:
            raise ValueError(f"methods {', '.join(quantizing)} quantize a model: list 'models'")
        for m in spec["models"]:
            if m not in ZOO_MODELS:
                raise ValueError(f"methods {', '.join(quantizing)} quantize a zoo model (train it in float, then "
                                 f"quantize): {m!r} is not one of {', '.join(ZOO_MODELS)}; list quantized .npz "
                                 "files under method 'golden' instead")
    spec["quantize"] = _check_quantize(spec["quantize"])
    _int("images", spec["images"], 1, MAX_IMAGES)
    _int("seed", spec["seed"], 0, 2 ** 31 - 1)
    if spec["sample"] is not None:
        _int("sample", spec["sample"], 1, MAX_POINTS)
    spec["synth"] = _check_synth(spec["synth"])
    n = _count(spec)
    if n > MAX_POINTS:
        raise ValueError(f"the grid has {n} points, above the limit of {MAX_POINTS} (MAX_POINTS); use 'sample'")
    return spec


def _count(spec) -> int:
    n = len(spec["models"]) * len(spec["methods"]) * len(spec["configs"])
    for values in spec["grid"].values():
        n *= len(values)
    return n


def expand(spec: dict) -> list[dict]:
    """The spec's points, in grid order (models outermost, then methods, then ``configs``, then the grid),
    or a seeded random sample of them (in grid order). A point: the whole config as a dict (the base preset
    with the ``configs`` object's and the grid's values), the model, the method and what to measure;
    everything a task needs."""
    base = PRESETS[spec["base"]].to_dict()
    names = list(spec["grid"])
    rows = list(itertools.product(spec["models"], spec["methods"], range(len(spec["configs"])),
                                  *(spec["grid"][n] for n in names)))
    if spec["sample"] is not None and spec["sample"] < len(rows):
        keep = sorted(random.Random(spec["seed"]).sample(range(len(rows)), spec["sample"]))
        rows = [rows[i] for i in keep]
    measure = {"metrics": sorted(spec["metrics"]), "images": spec["images"], "seed": spec["seed"]}
    if "synth" in spec["metrics"]:
        measure["synth"] = spec["synth"]
    points = []
    for model, method, c, *values in rows:
        point = {"config": {**base, **spec["configs"][c], **dict(zip(names, values))}, "model": model,
                 "method": method, **measure}
        if method != "golden":
            point["quantize"] = spec["quantize"]
        points.append(point)
    return points


def quant_recipe(point: dict) -> dict | None:
    """What a quantizing point's model is made from (None for ``golden``): the zoo model, the method, the
    config's widths and rounding, the seed and the ``quantize`` options. Points with one recipe share one
    quantized model."""
    if point["method"] == "golden":
        return None
    cfg = point["config"]
    return {"model": point["model"], "method": point["method"], "w_bits": cfg["w_bits"], "a_bits": cfg["in_bits"],
            "rounding": cfg["rounding"], "seed": point["seed"], **point["quantize"]}


def model_fingerprint(model: str) -> str:
    """sha256 of the model's file (shipped or ``.npz``); of its name for ``random:`` models (the network
    follows from the name and the point's seed); ``"none"`` for a synthesis-only point."""
    if model is None:
        return "none"
    if model.startswith("random:"):
        return hashlib.sha256(model.encode()).hexdigest()
    if model.endswith(".npz"):
        path = Path(model)
    else:
        from ..models import shipped_model_path

        path = shipped_model_path(model)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
