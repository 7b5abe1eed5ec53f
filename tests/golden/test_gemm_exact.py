"""The golden GEMM is exact whichever way it computes: float64 (BLAS) below 2**53, int64 above."""

import numpy as np

from systolic.golden.ops import FLOAT_EXACT, grouped_matmul, matmul


def _ref(a, w):
    return np.array(a.astype(object) @ w.astype(object), dtype=object)


def test_random_products_equal_python_ints():
    rng = np.random.default_rng(0)
    for bits in (8, 16, 24, 28):
        a = rng.integers(-(1 << bits), 1 << bits, size=(17, 40))
        w = rng.integers(-(1 << bits), 1 << bits, size=(40, 9))
        got = matmul(a, w)
        assert got.dtype == np.int64
        assert (got.astype(object) == _ref(a, w)).all()


def test_at_the_float_bound_and_just_above():
    # Partial sums bounded by exactly 2**53: the float path, still exact.
    a = np.array([[1 << 26, 1 << 26]], dtype=np.int64)
    w = np.array([[1 << 26], [1 << 26]], dtype=np.int64)
    assert int(matmul(a, w)[0, 0]) == FLOAT_EXACT
    # 2**54 + 1 is not a float64: only the int64 path gets it right.
    a = np.array([[1 << 27, 1]], dtype=np.int64)
    w = np.array([[1 << 27], [1]], dtype=np.int64)
    assert int(matmul(a, w)[0, 0]) == (1 << 54) + 1
    g = grouped_matmul(a[None], w[None])
    assert int(g[0, 0, 0]) == (1 << 54) + 1


def test_grouped_equals_python_ints():
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, size=(3, 11, 7))
    w = rng.integers(-128, 128, size=(3, 7, 5))
    got = grouped_matmul(a, w)
    for g in range(3):
        assert (got[g].astype(object) == _ref(a[g], w[g])).all()
