"""Resource limits of the golden model, its file format and the JSON it reads: defined once, here.

Every limit is checked *before* the memory it guards is allocated, and a
violation raises a ``ValueError`` (``ModelFormatError`` when loading a file)
naming the tensor, its size and the limit. docs/numerics.md (section
"Limits") lists them for users.
"""

from __future__ import annotations

import json
import math

__all__ = [
    "MAX_TENSOR_ELEMENTS", "MAX_RUN_ELEMENTS", "MAX_MODEL_ELEMENTS", "MAX_PADDING", "MAX_WINDOW",
    "MAX_LAYERS", "MAX_NAME_CHARS", "MAX_ARCHIVE_MEMBERS",
    "MAX_ARCHIVE_DIRECTORY_BYTES", "MAX_MANIFEST_BYTES", "MAX_CONFIG_BYTES", "MAX_JSON_DEPTH",
    "check_elements", "loads_json", "short_repr",
]

#: Largest element count of any one array: a model file's array, a network input batch, and every tensor
#: the golden model allocates while running a batch (a padded input, the im2col patch matrix, pooling
#: windows, an accumulator, a layer output). 16 Mi elements = 128 MiB as int64.
MAX_TENSOR_ELEMENTS = 1 << 24
#: Largest total element count of the tensors :meth:`QuantizedNetwork.run` returns for one batch
#: (the input and every layer's output, kept until the call returns). 64 Mi elements = 512 MiB as int64.
MAX_RUN_ELEMENTS = 1 << 26
#: Largest total element count of all arrays in one model file.
MAX_MODEL_ELEMENTS = 1 << 26
#: Largest zero padding of a convolution, per side.
MAX_PADDING = 255
#: Largest stride of a convolution or pooling layer and largest pooling window, per axis (no tensor is
#: longer along one axis than :data:`MAX_TENSOR_ELEMENTS`).
MAX_WINDOW = 1 << 24
#: Most layers in one network.
MAX_LAYERS = 1024
#: Longest layer name.
MAX_NAME_CHARS = 256
#: Most members, and largest central directory, of a model file's zip archive (both read from its end record
#: before the directory is parsed: ``zipfile`` makes an object per member).
MAX_ARCHIVE_MEMBERS = 8192
MAX_ARCHIVE_DIRECTORY_BYTES = 1 << 22
#: Largest JSON manifest inside a model file.
MAX_MANIFEST_BYTES = 1 << 22
#: Largest accelerator config file (JSON).
MAX_CONFIG_BYTES = 1 << 16
#: Deepest nesting of JSON arrays and objects in a manifest or a config file.
MAX_JSON_DEPTH = 32


def short_repr(value, limit: int = 60) -> str:
    """``repr(value)``, cut to about *limit* characters (error messages quote hostile input)."""
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + "..."


def check_elements(what: str, shape, limit: int = MAX_TENSOR_ELEMENTS, name: str = "MAX_TENSOR_ELEMENTS") -> int:
    """Return ``prod(shape)`` (a Python int, never wrapping); raise ``ValueError`` above *limit*."""
    n = math.prod(int(s) for s in shape)
    if n > limit:
        dims = " x ".join(str(int(s)) for s in shape)
        raise ValueError(f"{what} would hold {dims} = {n} elements, above the limit of {limit} ({name})")
    return n


def _pairs_no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {short_repr(key)}")
        out[key] = value
    return out


def _depth(obj) -> int:
    """Nesting depth of JSON arrays / objects (a scalar is 0), without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            deepest = max(deepest, d)
            if d <= MAX_JSON_DEPTH:          # deeper is refused anyway: stop walking
                stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def loads_json(data, what: str, max_bytes: int):
    """Parse JSON strictly: at most *max_bytes* bytes of UTF-8, no duplicate keys, nesting at most
    :data:`MAX_JSON_DEPTH`. Raises ``ValueError`` (``"{what} ..."``) otherwise; never ``RecursionError``."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        raise ValueError(f"{what} is {len(data)} bytes, above the limit of {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not UTF-8: {exc}") from None
    try:
        obj = json.loads(text, object_pairs_hook=_pairs_no_duplicates)
    except RecursionError:
        raise ValueError(f"{what} nests arrays/objects deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:       # JSONDecodeError, a duplicate key, an integer of more than 4300 digits
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
    if _depth(obj) > MAX_JSON_DEPTH:
        raise ValueError(f"{what} nests arrays/objects deeper than {MAX_JSON_DEPTH} levels")
    return obj
