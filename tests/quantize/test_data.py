"""The digits split and the torch-free parts of the package."""

import subprocess
import sys

import numpy as np

from systolic.quantize.data import load_split


def test_split_sizes_disjoint_stratified():
    xs = {s: load_split(s, "flat") for s in ("train", "val", "test")}
    assert [len(xs[s][0]) for s in ("train", "val", "test")] == [1077, 360, 360]
    rows = {s: {r.tobytes() for r in xs[s][0]} for s in xs}
    # Images are not all distinct in digits, so compare indices via a joint reload instead of rows.
    total = sum(len(v[0]) for v in xs.values())
    assert total == 1797
    for s, (x, y) in xs.items():
        counts = np.bincount(y, minlength=10)
        assert counts.min() >= 0.09 * len(y) and counts.max() <= 0.115 * len(y), (s, counts)
        assert x.dtype == np.float32 and x.min() >= 0 and x.max() < 1
        np.testing.assert_array_equal(x * 256, np.round(x * 256))  # exact at uint8, 8 fractional bits
    del rows


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
