"""`QuantizedNetwork`: an ordered graph of integer layers, and its file format."""

from __future__ import annotations

import io
import json
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .layers import LAYER_KINDS, Conv2D, Dense, Layer
from .ops import check_acc_range
from .qtypes import QType, check_rounding
from .primitives import quantize

__all__ = ["QuantizedNetwork", "ModelFormatError", "FORMAT_NAME", "FORMAT_VERSION", "load", "save"]

FORMAT_NAME = "systolic-qnet"
FORMAT_VERSION = 1
MANIFEST_KEY = "__manifest__"
#: Refuse files whose arrays hold more elements than this (sanity bound, 256 Mi elements).
MAX_ELEMENTS = 1 << 28


class ModelFormatError(ValueError):
    """A model file is malformed, truncated, of another format or version."""


@dataclass(frozen=True, eq=False)
class QuantizedNetwork:
    """An integer network: ``layers`` in execution order, each reading earlier outputs by name.

    Parameters
    ----------
    input_type : QType
        Type of the network input (``"input"`` in layer input lists).
    input_shape : tuple of int
        Shape of one sample: ``(H, W, C)`` or ``(features,)``.
    layers : sequence of Layer
        In execution order; names unique; the last layer is the output.
    rounding : {"half_even", "half_up"}
        Rounding mode of every requantization (the one used in training).
    meta : dict
        Free-form JSON-able metadata (model name, method, accuracy, ...).
    """

    input_type: QType
    input_shape: tuple
    layers: tuple
    rounding: str = "half_even"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.input_type, QType):
            raise TypeError(f"input_type must be a QType, not {self.input_type!r}")
        shape = tuple(int(s) for s in self.input_shape)
        if not shape or min(shape) < 1:
            raise ValueError(f"input_shape must be a non-empty tuple of positive ints, not {self.input_shape!r}")
        object.__setattr__(self, "input_shape", shape)
        check_rounding(self.rounding)
        layers = tuple(self.layers)
        if not layers:
            raise ValueError("a network needs at least one layer")
        seen = {"input"}
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"layers must be Layer objects, not {layer!r}")
            if layer.name in seen:
                raise ValueError(f"layer name {layer.name!r} is used twice")
            for src in layer.inputs:
                if src not in seen:
                    raise ValueError(f"layer {layer.name!r} reads {src!r}, which is not an earlier layer or 'input'")
            seen.add(layer.name)
        object.__setattr__(self, "layers", layers)
        # Propagate types and shapes once: every structural error surfaces here.
        types = {"input": self.input_type}
        shapes = {"input": shape}
        for layer in layers:
            ins_t = [types[i] for i in layer.inputs]
            ins_s = [shapes[i] for i in layer.inputs]
            shapes[layer.name] = tuple(layer.out_shape(ins_s))
            types[layer.name] = layer.out_qtype(ins_t)
        object.__setattr__(self, "_types", types)
        object.__setattr__(self, "_shapes", shapes)

    # ------------------------------------------------------------------ queries
    @property
    def output_name(self) -> str:
        return self.layers[-1].name

    def qtype(self, name: str) -> QType:
        """Type of the tensor produced by layer *name* (or ``"input"``)."""
        return self._types[name]

    def shape(self, name: str) -> tuple:
        """Per-sample shape of the tensor produced by layer *name*."""
        return self._shapes[name]

    def in_types(self, layer: Layer) -> list[QType]:
        return [self._types[i] for i in layer.inputs]

    @property
    def output_type(self) -> QType:
        return self._types[self.output_name]

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers are {', '.join(l.name for l in self.layers)}")

    # ---------------------------------------------------------------- execution
    def check_input(self, x) -> np.ndarray:
        x = self.input_type.check(x, "network input")
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"network input must have shape (batch, {', '.join(map(str, self.input_shape))}), not {x.shape}"
            )
        return x

    def run(self, x_int) -> "OrderedDict[str, np.ndarray]":
        """Run the integer network; return every layer's output (int64) by name, in order.

        The first entry is ``"input"``; the last is the network output.
        """
        x = self.check_input(x_int)
        outs: OrderedDict[str, np.ndarray] = OrderedDict(input=x)
        for layer in self.layers:
            outs[layer.name] = layer.forward([outs[i] for i in layer.inputs], self.in_types(layer), self.rounding)
        return outs

    def __call__(self, x_int) -> np.ndarray:
        return self.run(x_int)[self.output_name]

    def quantize_input(self, x_float) -> np.ndarray:
        return quantize(x_float, self.input_type, self.rounding)

    def run_float(self, x_float) -> "OrderedDict[str, np.ndarray]":
        """Quantize a float input, run the integer network, dequantize every output.

        Values are ``q * 2**-frac_bits`` of each layer's type: the real numbers
        the integer network represents, for comparison with a float model.
        """
        outs = self.run(self.quantize_input(x_float))
        return OrderedDict(
            (name, np.ldexp(q.astype(np.float64), -self._types[name].frac_bits)) for name, q in outs.items()
        )

    def predict(self, x_int) -> np.ndarray:
        """Arg-max class of the (flattened) output, for classifiers."""
        y = self(x_int)
        return y.reshape(y.shape[0], -1).argmax(axis=1)

    # ---------------------------------------------------------- overflow proof
    def accumulator_bounds(self) -> "OrderedDict[str, tuple[int, int]]":
        """Exact worst-case accumulator range of every accumulating layer, over all inputs in range."""
        out = OrderedDict()
        for layer in self.layers:
            b = layer.acc_bounds(self.in_types(layer))
            if b is not None:
                out[layer.name] = b
        return out

    def check_accumulators(self, acc_bits: int = 32) -> "OrderedDict[str, tuple[int, int]]":
        """Prove every layer's worst case fits a signed ``acc_bits`` accumulator.

        Raises
        ------
        AccumulatorOverflowError
            Naming the first layer that may overflow, its bound and the width.
        """
        if not isinstance(acc_bits, int) or not 2 <= acc_bits <= 62:
            raise ValueError(f"acc_bits must be between 2 and 62, not {acc_bits!r}")
        bounds = self.accumulator_bounds()
        for name, (lo, hi) in bounds.items():
            check_acc_range(lo, hi, acc_bits, f"layer {name!r}")
        return bounds

    # ------------------------------------------------------------------ summary
    def summary(self) -> str:
        lines = [f"input  {self.input_type}  {self.input_shape}"]
        for layer in self.layers:
            extra = ""
            if isinstance(layer, (Dense, Conv2D)):
                k = layer.shift(self.in_types(layer)[0])
                extra = f" w={layer.w_type} shift={int(k[0]) if np.all(k == k[0]) else list(map(int, k))}"
                extra += " relu" if layer.relu else ""
            lines.append(
                f"{layer.name:<10} {layer.kind:<10} <- {','.join(layer.inputs):<12} "
                f"{str(self.qtype(layer.name)):<14} {self.shape(layer.name)}{extra}"
            )
        return "\n".join(lines)

    # ---------------------------------------------------------------- file I/O
    def save(self, path) -> None:
        save(self, path)

    @staticmethod
    def load(path) -> "QuantizedNetwork":
        return load(path)


# ====================================================================== format
#
# A model file is one NumPy .npz archive (a zip of .npy files, no pickles):
#   __manifest__      uint8 array holding UTF-8 JSON:
#       {"format": "systolic-qnet", "version": 1, "rounding": ..., "meta": {...},
#        "input": {"qtype": {...}, "shape": [...]},
#        "layers": [{"kind": ..., "name": ..., "inputs": [...], "params": {...},
#                    "arrays": {"weight": "layers/conv1/weight", ...}}, ...]}
#   layers/<name>/<array>   int64 (or smaller int) arrays named in the manifest.
# docs/numerics.md describes it for users.


def save(net: QuantizedNetwork, path) -> None:
    """Write *net* to *path* (``.npz``)."""
    arrays: dict[str, np.ndarray] = {}
    layers = []
    for layer in net.layers:
        refs = {}
        for key, arr in layer.arrays().items():
            ref = f"layers/{layer.name}/{key}"
            arrays[ref] = np.ascontiguousarray(arr, dtype=np.int64)
            refs[key] = ref
        layers.append({
            "kind": layer.kind, "name": layer.name, "inputs": list(layer.inputs),
            "params": layer.params(), "arrays": refs,
        })
    manifest = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "rounding": net.rounding,
        "meta": net.meta,
        "input": {"qtype": net.input_type.to_json(), "shape": list(net.input_shape)},
        "layers": layers,
    }
    arrays[MANIFEST_KEY] = np.frombuffer(json.dumps(manifest, sort_keys=True).encode(), dtype=np.uint8)
    path = Path(path)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.write_bytes(buf.getvalue())


def _expect(cond, msg, path):
    if not cond:
        raise ModelFormatError(f"{path}: {msg}")


def _layer_from_manifest(entry, npz, path) -> Layer:
    _expect(isinstance(entry, dict), f"layer entry must be an object, not {entry!r}", path)
    kind = entry.get("kind")
    _expect(kind in LAYER_KINDS, f"unknown layer kind {kind!r}; supported: {', '.join(LAYER_KINDS)}", path)
    name = entry.get("name")
    params = entry.get("params", {})
    refs = entry.get("arrays", {})
    _expect(isinstance(params, dict) and isinstance(refs, dict), f"layer {name!r}: params and arrays must be objects", path)
    kwargs = {}
    for key, ref in refs.items():
        _expect(isinstance(ref, str) and ref in npz.files, f"layer {name!r}: array {ref!r} is missing", path)
        arr = npz[ref]
        _expect(arr.dtype.kind in "iu", f"layer {name!r}: array {ref!r} must be integer, not {arr.dtype}", path)
        _expect(arr.size <= MAX_ELEMENTS, f"layer {name!r}: array {ref!r} is too large ({arr.size} elements)", path)
        kwargs[key] = arr.astype(np.int64)
    for key, val in params.items():
        if key in ("w_type", "out_type"):
            val = QType.from_json(val)
        elif key in ("stride", "padding", "pool"):
            _expect(isinstance(val, list) and all(isinstance(v, int) for v in val), f"layer {name!r}: {key} must be a list of ints", path)
            val = tuple(val)
        kwargs[key] = val
    cls = LAYER_KINDS[kind]
    allowed = set(cls.__dataclass_fields__) - {"name", "inputs"}
    unknown = set(kwargs) - allowed
    _expect(not unknown, f"layer {name!r}: unknown fields {sorted(unknown)} for a {kind} layer", path)
    return cls(name=name, inputs=tuple(entry.get("inputs", ())), **kwargs)


def load(path) -> QuantizedNetwork:
    """Read a model file written by :func:`save`; never unpickles, checks everything.

    Raises
    ------
    ModelFormatError
        On a missing, truncated or malformed file, another format, or another version.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such model file")
    # Open the file ourselves so it is closed even when NumPy gives up half way.
    with open(path, "rb") as fh:
        # A zip's end record is read first: garbage, a truncated archive and a .npy / pickle stream all
        # stop here with one message (NumPy would call non-zip bytes "pickled data").
        if not zipfile.is_zipfile(fh):
            raise ModelFormatError(f"{path}: not a systolic model file (not a complete .npz archive: "
                                   "truncated, or another format)")
        fh.seek(0)
        try:
            npz = np.load(fh, allow_pickle=False)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise ModelFormatError(f"{path}: not a systolic model file (.npz archive): {exc}") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ModelFormatError(f"{path}: not a systolic model file (expected an .npz archive)")
        with npz:
            return _load_npz(npz, path)


def _load_npz(npz, path) -> QuantizedNetwork:
    try:
        _expect(MANIFEST_KEY in npz.files, "no manifest: not a systolic model file", path)
        raw = npz[MANIFEST_KEY]
        _expect(raw.dtype == np.uint8 and raw.ndim == 1, "manifest must be a uint8 byte array", path)
        try:
            manifest = json.loads(raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{path}: manifest is not valid JSON: {exc}") from None
        _expect(isinstance(manifest, dict), "manifest must be a JSON object", path)
        _expect(manifest.get("format") == FORMAT_NAME, f"format is {manifest.get('format')!r}, expected {FORMAT_NAME!r}", path)
        _expect(
            manifest.get("version") == FORMAT_VERSION,
            f"format version {manifest.get('version')!r} is not supported (this systolic reads version {FORMAT_VERSION})",
            path,
        )
        inp = manifest.get("input")
        _expect(isinstance(inp, dict) and "qtype" in inp and "shape" in inp, "manifest has no valid 'input' entry", path)
        layers_json = manifest.get("layers")
        _expect(isinstance(layers_json, list) and layers_json, "manifest has no layers", path)
        layers = [_layer_from_manifest(e, npz, path) for e in layers_json]
        meta = manifest.get("meta", {})
        _expect(isinstance(meta, dict), "meta must be an object", path)
        return QuantizedNetwork(
            input_type=QType.from_json(inp["qtype"]),
            input_shape=tuple(inp["shape"]),
            layers=layers,
            rounding=manifest.get("rounding", "half_even"),
            meta=meta,
        )
    except ModelFormatError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ModelFormatError(f"{path}: truncated or corrupt archive: {exc}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelFormatError(f"{path}: invalid model: {exc}") from None
