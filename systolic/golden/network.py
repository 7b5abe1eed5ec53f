"""`QuantizedNetwork`: an ordered graph of integer layers, and its file format."""

from __future__ import annotations

import io
import json
import lzma
import math
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .layers import LAYER_KINDS, Conv2D, Dense, Layer
from .limits import (MAX_LAYERS, MAX_MANIFEST_BYTES, MAX_MODEL_ELEMENTS, MAX_RUN_ELEMENTS, MAX_TENSOR_ELEMENTS,
                     check_elements, loads_json, short_repr)
from .ops import check_acc_range
from .qtypes import QType, check_rounding
from .primitives import quantize

__all__ = ["QuantizedNetwork", "ModelFormatError", "FORMAT_NAME", "FORMAT_VERSION", "load", "save", "archive_directory", "check_archive_limits"]

FORMAT_NAME = "systolic-qnet"
FORMAT_VERSION = 1
MANIFEST_KEY = "__manifest__"


class ModelFormatError(ValueError):
    """A model file is malformed, truncated, of another format or version."""


def _check_run_total(batch: int, per_sample: int, what: str) -> None:
    n = batch * per_sample
    if n > MAX_RUN_ELEMENTS:
        raise ValueError(f"the tensors run() returns for {what} (the input and every layer output) would hold "
                         f"{n} elements in all, above the limit of {MAX_RUN_ELEMENTS} (MAX_RUN_ELEMENTS)")


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
            raise TypeError(f"input_type must be a QType, not {short_repr(self.input_type)}")
        shape = self.input_shape
        if not isinstance(shape, (tuple, list)) or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) for s in shape):
            raise TypeError(f"input_shape must be a tuple of ints, not {short_repr(shape)}")
        shape = tuple(int(s) for s in shape)
        if not shape or min(shape) < 1:
            raise ValueError("input_shape must be a non-empty tuple of positive ints, "
                             f"not {short_repr(self.input_shape)}")
        check_elements("the network input of one sample", shape)
        object.__setattr__(self, "input_shape", shape)
        check_rounding(self.rounding)
        if not isinstance(self.meta, dict):
            raise TypeError(f"meta must be a dict, not {short_repr(self.meta)}")
        if not isinstance(self.layers, (tuple, list)):
            raise TypeError(f"layers must be a sequence of Layer objects, not {short_repr(self.layers)}")
        layers = tuple(self.layers)
        if not layers:
            raise ValueError("a network needs at least one layer")
        if len(layers) > MAX_LAYERS:
            raise ValueError(f"a network has at most {MAX_LAYERS} layers (MAX_LAYERS), not {len(layers)}")
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
        # Propagate types and shapes once: every structural error surfaces here, and so does every layer
        # the golden model could not run exactly in int64 or within the size limits (docs/numerics.md).
        types = {"input": self.input_type}
        shapes = {"input": shape}
        work = [("the network input", shape)]      # (what, per-sample shape) of every tensor run() allocates
        for layer in layers:
            ins_t = [types[i] for i in layer.inputs]
            ins_s = [shapes[i] for i in layer.inputs]
            shapes[layer.name] = tuple(layer.out_shape(ins_s))
            types[layer.name] = layer.out_qtype(ins_t)
            for what, s in [*layer.work_tensors(ins_s), ("output", shapes[layer.name])]:
                work.append((f"layer {layer.name!r}: the {what}", s))
                check_elements(f"{work[-1][0]} of one sample", s)
            layer.check_arithmetic(ins_t)
        _check_run_total(1, sum(math.prod(s) for s in shapes.values()), "one sample")
        object.__setattr__(self, "_types", types)
        object.__setattr__(self, "_shapes", shapes)
        object.__setattr__(self, "_work", tuple((what, s, math.prod(s)) for what, s in work))

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
        """*x* as int64 after checking its shape, its size (:data:`~systolic.golden.limits.MAX_TENSOR_ELEMENTS`)
        and that every element lies in the input type's range."""
        x = np.asarray(x)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"network input must have shape (batch, {', '.join(map(str, self.input_shape))}), not {x.shape}"
            )
        check_elements("the network input", x.shape)
        return self.input_type.check(x, "network input")

    def check_batch(self, batch: int) -> None:
        """Raise ``ValueError`` naming the tensor and the limit if :meth:`run` on *batch* samples would
        allocate a tensor above :data:`~systolic.golden.limits.MAX_TENSOR_ELEMENTS` elements or return more
        than :data:`~systolic.golden.limits.MAX_RUN_ELEMENTS` in all; nothing is allocated."""
        if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 0:
            raise ValueError(f"batch must be a non-negative int, not {short_repr(batch)}")
        batch = int(batch)
        if batch * max(n for _, _, n in self._work) > MAX_TENSOR_ELEMENTS:
            for what, shape, n in self._work:
                check_elements(f"{what} of a batch of {batch}", (batch, *shape))
        _check_run_total(batch, sum(math.prod(s) for s in self._shapes.values()), f"a batch of {batch}")

    def run(self, x_int) -> "OrderedDict[str, np.ndarray]":
        """Run the integer network; return every layer's output (int64) by name, in order.

        The first entry is ``"input"``; the last is the network output. A batch whose tensors would exceed
        the size limits (:meth:`check_batch`) is refused before anything is computed.
        """
        xa = np.asarray(x_int)
        if xa.ndim == len(self.input_shape) + 1:
            self.check_batch(xa.shape[0])
        x = self.check_input(xa)
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
                extra += f" out_max={layer.out_max}" if layer.out_max is not None else ""
                extra += f" groups={layer.groups}" if getattr(layer, "groups", 1) != 1 else ""
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


# ---------------------------------------------------------------- manifest schema
# Every field's JSON type is checked exactly (no coercion: "false" is not a bool, "881" is not a shape);
# ranges are then checked by the layer constructors. (kind, required) per parameter; a kind is "qtype",
# "bool", "int" (a JSON integer) or a tuple of allowed list lengths of ints. The optional fields groups,
# out_max and a pool's padding are written only when they differ from the default (files that do not use
# them are byte for byte what earlier versions wrote), and a file without them loads with the default.
_GEMM_PARAMS = {"w_type": ("qtype", True), "out_type": ("qtype", True), "relu": ("bool", False),
                "out_max": ("int", False)}
_POOL_PARAMS = {"pool": ((2,), True), "stride": ((2,), False), "padding": ((2, 4), False)}
_PARAMS = {
    "dense": _GEMM_PARAMS,
    "conv2d": {**_GEMM_PARAMS, "stride": ((2,), False), "padding": ((2, 4), False), "groups": ("int", False)},
    "maxpool2d": _POOL_PARAMS,
    "avgpool2d": {**_POOL_PARAMS, "out_type": ("qtype", False)},
    "add": {"out_type": ("qtype", True), "relu": ("bool", False), "out_max": ("int", False)},
    "concat": {"out_type": ("qtype", True)},
    "flatten": {},
    "bfp": {"block": ("int", True), "mantissa_bits": ("int", True)},
}
_GEMM_ARRAYS = ("weight", "bias", "w_frac", "extra_weights", "extra_shifts")
#: Arrays each layer kind may name; the first of a non-empty tuple is required.
_ARRAYS = {"dense": _GEMM_ARRAYS, "conv2d": _GEMM_ARRAYS}
_TOP_KEYS = ("format", "version", "rounding", "meta", "input", "layers")
_LAYER_KEYS = ("kind", "name", "inputs", "params", "arrays")


def _is_json_int(v) -> bool:
    return type(v) is int       # JSON integers only: not bool, not float


def _qtype(value, what: str, path) -> QType:
    try:
        return QType.from_json(value)
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"{path}: {what}: {exc}") from None


def _check_keys(obj: dict, allowed, required, what: str, path) -> None:
    unknown = sorted(set(obj) - set(allowed))
    _expect(not unknown, f"{what}: unknown fields {unknown}", path)
    missing = [k for k in required if k not in obj]
    _expect(not missing, f"{what}: missing fields {missing}", path)


def _param(value, spec, name: str, key: str, path):
    layer = f"layer {name!r}"
    if spec == "qtype":
        return _qtype(value, f"{layer}: {key}", path)
    if spec == "bool":
        _expect(type(value) is bool, f"{layer}: {key} must be a bool, not {short_repr(value)}", path)
        return value
    if spec == "int":
        _expect(_is_json_int(value), f"{layer}: {key} must be an int, not {short_repr(value)}", path)
        return value
    lengths = " or ".join(map(str, spec))
    _expect(isinstance(value, list) and len(value) in spec and all(_is_json_int(v) for v in value),
            f"{layer}: {key} must be a list of {lengths} ints, not {short_repr(value)}", path)
    return tuple(value)


def _layer_spec(entry, index: int, path) -> tuple[type, str, tuple, dict, dict]:
    """Check one layer entry's schema: ``(class, name, inputs, params, {array key: member name})``."""
    _expect(isinstance(entry, dict), f"layer {index} must be an object, not {short_repr(entry)}", path)
    name = entry.get("name")
    _expect(isinstance(name, str), f"layer {index}: name must be a string, not {short_repr(name)}", path)
    what = f"layer {name!r}"
    _check_keys(entry, _LAYER_KEYS, ("kind", "name", "inputs"), what, path)
    kind = entry["kind"]
    _expect(isinstance(kind, str) and kind in LAYER_KINDS,
            f"{what}: unknown layer kind {short_repr(kind)}; supported: {', '.join(LAYER_KINDS)}", path)
    inputs = entry["inputs"]
    _expect(isinstance(inputs, list) and all(isinstance(i, str) for i in inputs),
            f"{what}: inputs must be a list of layer names, not {short_repr(inputs)}", path)
    params, refs = entry.get("params", {}), entry.get("arrays", {})
    _expect(isinstance(params, dict) and isinstance(refs, dict), f"{what}: params and arrays must be objects", path)
    spec = _PARAMS[kind]
    unknown = sorted(set(params) - set(spec))
    _expect(not unknown, f"{what}: unknown fields {unknown} for a {kind} layer", path)
    missing = [k for k, (_, req) in spec.items() if req and k not in params]
    _expect(not missing, f"{what}: a {kind} layer needs the parameter(s) {missing}", path)
    kwargs = {key: _param(val, spec[key][0], name, key, path) for key, val in params.items()}
    allowed = _ARRAYS.get(kind, ())
    unknown = sorted(set(refs) - set(allowed))
    _expect(not unknown, f"{what}: unknown fields {unknown} for a {kind} layer"
            + (f" (arrays: {', '.join(allowed)})" if allowed else " (it has no arrays)"), path)
    if allowed:
        _expect(allowed[0] in refs, f"{what}: a {kind} layer needs the array {allowed[0]!r}", path)
    for key, ref in refs.items():
        _expect(isinstance(ref, str), f"{what}: array {key} must name an archive member, not {short_repr(ref)}", path)
    return LAYER_KINDS[kind], name, tuple(inputs), kwargs, dict(refs)


def _check_manifest(m, path):
    """The top level of the manifest; returns ``(input qtype, input shape, rounding, meta, layer entries)``."""
    _expect(isinstance(m, dict), "manifest must be a JSON object", path)
    fmt = m.get("format")
    _expect(fmt == FORMAT_NAME and isinstance(fmt, str), f"format is {short_repr(fmt)}, expected {FORMAT_NAME!r}", path)
    version = m.get("version")
    _expect(_is_json_int(version) and version == FORMAT_VERSION,
            f"format version {short_repr(version)} is not supported (this systolic reads version {FORMAT_VERSION})",
            path)
    _check_keys(m, _TOP_KEYS, ("input", "layers"), "manifest", path)
    rounding = m.get("rounding", "half_even")
    _expect(isinstance(rounding, str) and rounding in ("half_even", "half_up"),
            f"rounding must be one of half_even, half_up, not {short_repr(rounding)}", path)
    meta = m.get("meta", {})
    _expect(isinstance(meta, dict), f"meta must be an object, not {short_repr(meta)}", path)
    inp = m["input"]
    _expect(isinstance(inp, dict), f"input must be an object, not {short_repr(inp)}", path)
    _check_keys(inp, ("qtype", "shape"), ("qtype", "shape"), "input", path)
    in_type = _qtype(inp["qtype"], "input qtype", path)
    shape = inp["shape"]
    _expect(isinstance(shape, list) and shape and all(_is_json_int(v) and v >= 1 for v in shape),
            f"input shape must be a non-empty list of positive ints, not {short_repr(shape)}", path)
    layers = m["layers"]
    _expect(isinstance(layers, list) and layers, "manifest has no layers", path)
    _expect(len(layers) <= MAX_LAYERS, f"manifest has {len(layers)} layers, above the limit of {MAX_LAYERS} "
            "(MAX_LAYERS)", path)
    return in_type, tuple(shape), rounding, meta, layers


# ---------------------------------------------------------------- archive reading
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, NotImplementedError, RuntimeError)


class _ArrayReader:
    """Reads ``.npy`` members of an open zip in two steps: :meth:`header` checks a member's size, dtype and
    shape from the zip directory and its ``.npy`` header (and adds its elements to the file's total);
    :meth:`data` then reads exactly the declared bytes. A huge declared array therefore costs nothing, and
    :func:`load` checks every array's header before it reads any array's data. Never unpickles: objects are
    refused from the header."""

    def __init__(self, zf: zipfile.ZipFile, path):
        self.zf, self.path, self.total = zf, path, 0
        self.members = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy")}

    def _open(self, ref: str, what: str):
        info = self.members.get(ref)
        _expect(info is not None, f"{what} is missing", self.path)
        return info, self.zf.open(info)

    def _header(self, f, what: str):
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                return np.lib.format.read_array_header_1_0(f)
            if version == (2, 0):
                return np.lib.format.read_array_header_2_0(f)
            raise ValueError(f".npy format version {version} (this systolic reads 1.0 and 2.0)")
        except ValueError as exc:
            raise ModelFormatError(f"{self.path}: {what} is not a valid .npy array: {exc}") from None

    def header(self, ref: str, what: str, *, manifest: bool = False):
        """Check member *ref*'s header; return ``(shape, fortran_order, dtype)``."""
        path = self.path
        try:
            info, f = self._open(ref, what)
            with f:
                shape, fortran, dtype = self._header(f, what)
                offset = f.tell()
        except _ZIP_ERRORS as exc:
            raise ModelFormatError(f"{path}: truncated or corrupt archive ({what}): {exc}") from None
        _expect(not dtype.hasobject, f"{what} holds Python objects (dtype {dtype}), which would need "
                "unpickling: refused", path)
        if manifest:
            _expect(dtype == np.uint8 and len(shape) == 1, "manifest must be a uint8 byte array", path)
            _expect(shape[0] <= MAX_MANIFEST_BYTES, f"the manifest is {shape[0]} bytes, above the limit of "
                    f"{MAX_MANIFEST_BYTES} bytes (MAX_MANIFEST_BYTES)", path)
        else:
            _expect(dtype.kind in "iu", f"{what} must be integer, not {dtype}", path)
        _expect(all(d >= 0 for d in shape), f"{what} declares the invalid shape {shape}", path)
        n = math.prod(shape)
        _expect(n <= MAX_TENSOR_ELEMENTS, f"{what} declares shape {shape}: {n} elements, above the limit of "
                f"{MAX_TENSOR_ELEMENTS} per array (MAX_TENSOR_ELEMENTS)", path)
        self.total += n
        _expect(self.total <= MAX_MODEL_ELEMENTS, f"the arrays up to {what} hold {self.total} elements, "
                f"above the limit of {MAX_MODEL_ELEMENTS} per model file (MAX_MODEL_ELEMENTS)", path)
        nbytes = n * dtype.itemsize
        _expect(info.file_size == offset + nbytes,
                f"{what}: its .npy header declares shape {shape} of {dtype} ({nbytes} bytes of data) but the "
                f"archive member holds {info.file_size - offset} bytes of data", path)
        return shape, fortran, dtype

    def data(self, ref: str, what: str, header) -> np.ndarray:
        """The array of member *ref*, whose *header* was checked: exactly the declared bytes are read."""
        shape, fortran, dtype = header
        nbytes = math.prod(shape) * dtype.itemsize
        try:
            info, f = self._open(ref, what)
            with f:
                self._header(f, what)
                data = f.read(nbytes)
        except _ZIP_ERRORS as exc:
            raise ModelFormatError(f"{self.path}: truncated or corrupt archive ({what}): {exc}") from None
        _expect(len(data) == nbytes, f"{what} is truncated", self.path)
        arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
        if dtype.kind == "u" and dtype.itemsize == 8 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise ModelFormatError(f"{self.path}: {what} holds {int(arr.max())}, above the int64 range the golden "
                                   "model computes in")
        return arr


def archive_directory(fh) -> tuple[int, int] | None:
    """``(members, directory bytes)`` the zip's end-of-central-directory record declares (zip64 too), read
    before :class:`zipfile.ZipFile` parses the directory into one object per member; None if the records
    cannot be read (``zipfile`` then reports the damage)."""
    fh.seek(0, 2)
    size = fh.tell()
    tail_len = min(size, 22 + 0xFFFF)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or len(tail) < i + 22:
        return None
    count = int.from_bytes(tail[i + 10:i + 12], "little")
    dir_size = int.from_bytes(tail[i + 12:i + 16], "little")
    if i < 20 or tail[i - 20:i - 16] != b"PK\x06\x07":
        return count, dir_size
    fh.seek(int.from_bytes(tail[i - 12:i - 4], "little"))      # the zip64 end record
    rec = fh.read(56)
    if len(rec) < 56 or rec[:4] != b"PK\x06\x06":
        return None
    return int.from_bytes(rec[32:40], "little"), int.from_bytes(rec[40:48], "little")


def check_archive_limits(fh, path, error=ModelFormatError) -> None:
    """Raise *error* naming *path* when the zip's directory lists more than :data:`MAX_ARCHIVE_MEMBERS`
    members or is larger than :data:`MAX_ARCHIVE_DIRECTORY_BYTES` (read from the end record, before any
    member is opened). Shared by the model loader and the data loader."""
    from . import limits     # read at call time: the limits are module settings

    members, directory = archive_directory(fh) or (0, 0)
    if members > limits.MAX_ARCHIVE_MEMBERS:
        raise error(f"{path}: the archive lists {members} members, above the limit of "
                    f"{limits.MAX_ARCHIVE_MEMBERS} (MAX_ARCHIVE_MEMBERS)")
    if directory > limits.MAX_ARCHIVE_DIRECTORY_BYTES:
        raise error(f"{path}: the archive's directory is {directory} bytes, above the limit of "
                    f"{limits.MAX_ARCHIVE_DIRECTORY_BYTES} bytes (MAX_ARCHIVE_DIRECTORY_BYTES)")


def load(path) -> QuantizedNetwork:
    """Read a model file written by :func:`save`; never unpickles, checks everything.

    The manifest's schema is checked (exact JSON types, no coercion, bounded size and nesting), then every
    array's size, dtype and shape from the zip directory and its ``.npy`` header before its data is read
    (limits in :mod:`systolic.golden.limits`), then the network is built, which checks values, shapes and
    that it runs exactly in int64.

    Raises
    ------
    ModelFormatError
        On a missing, truncated or malformed file, another format or version, a limit exceeded, or an
        invalid network; the message names the file and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such model file")
    # Open the file ourselves so it is closed even when reading gives up half way.
    with open(path, "rb") as fh:
        # A zip's end record is read first: garbage, a truncated archive and a .npy / pickle stream all
        # stop here with one message.
        if not zipfile.is_zipfile(fh):
            raise ModelFormatError(f"{path}: not a systolic model file (not a complete .npz archive: "
                                   "truncated, or another format)")
        check_archive_limits(fh, path, ModelFormatError)
        fh.seek(0)
        try:
            zf = zipfile.ZipFile(fh)
        except _ZIP_ERRORS + (ValueError,) as exc:
            raise ModelFormatError(f"{path}: not a systolic model file (.npz archive): {exc}") from None
        with zf:
            return _load_zip(zf, path)


def _load_zip(zf: zipfile.ZipFile, path) -> QuantizedNetwork:
    reader = _ArrayReader(zf, path)
    _expect(MANIFEST_KEY in reader.members, "no manifest: not a systolic model file", path)
    raw = reader.data(MANIFEST_KEY, "the manifest", reader.header(MANIFEST_KEY, "the manifest", manifest=True))
    try:
        manifest = loads_json(raw.tobytes(), "manifest", MAX_MANIFEST_BYTES)
    except ValueError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None
    in_type, in_shape, rounding, meta, entries = _check_manifest(manifest, path)
    specs = [_layer_spec(e, i, path) for i, e in enumerate(entries)]     # the whole schema before any array
    reader.total = 0
    headers = [{key: reader.header(ref, f"layer {name!r}: array {ref!r}") for key, ref in refs.items()}
               for _, name, _, _, refs in specs]                       # every array's size before any data
    layers = []
    try:
        for (cls, name, inputs, kwargs, refs), hdrs in zip(specs, headers):
            for key, ref in refs.items():
                kwargs[key] = reader.data(ref, f"layer {name!r}: array {ref!r}", hdrs[key]).astype(np.int64)
            layers.append(cls(name=name, inputs=inputs, **kwargs))
        return QuantizedNetwork(input_type=in_type, input_shape=in_shape, layers=layers, rounding=rounding,
                                meta=meta)
    except (ValueError, TypeError, OverflowError) as exc:
        if isinstance(exc, ModelFormatError):
            raise
        raise ModelFormatError(f"{path}: invalid model: {exc}") from None
