"""The digits data set (scikit-learn ``load_digits``): fixed splits, torch-free.

1,797 real 8x8 grey-level images with 17 levels (0..16), ten classes, shipped
inside scikit-learn (no download).

Split (fixed, documented in docs/quantization.md): stratified by class with
``random_state=0``: 60 % train (1,077), 20 % validation (360), 20 % test (360).
First the test fifth is split off, then a quarter of the remainder becomes the
validation set.

Pixels: ``min(pixel / 16, 255/256)`` as float32, i.e. in ``[0, 1)``; every value
is a multiple of 1/256 so the uint8 input type with 8 fractional bits
(:data:`INPUT_QTYPE`) represents it exactly (pixel 16 becomes 255/256).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["SPLITS", "LAYOUTS", "load_split", "INPUT_FRAC_BITS", "input_qtype", "SPLIT_SEED"]

SPLITS = ("train", "val", "test")
LAYOUTS = ("nhwc", "flat")
SPLIT_SEED = 0
#: Input type of every digits network: uint8 with 8 fractional bits (exact for these pixels).
INPUT_FRAC_BITS = 8


def input_qtype():
    from ..golden import QType

    return QType(8, False, INPUT_FRAC_BITS)


@lru_cache(maxsize=1)
def _splits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = np.minimum(d.images.astype(np.float64) / 16.0, 255.0 / 256.0).astype(np.float32)
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=0.2, stratify=y, random_state=SPLIT_SEED)
    train, val = train_test_split(rest, test_size=0.25, stratify=y[rest], random_state=SPLIT_SEED)
    return x, y, {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def load_split(name: str = "test", layout: str = "nhwc") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(x, y)`` of split *name*.

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
    x, y, idx = _splits()
    i = idx[name]
    xs = x[i]
    xs = xs.reshape(len(i), 8, 8, 1) if layout == "nhwc" else xs.reshape(len(i), 64)
    return xs.copy(), y[i].copy()


def load_for_network(net, name: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The split shaped for a golden network's ``input_shape`` (``(8, 8, 1)`` or ``(64,)``)."""
    shape = tuple(net.input_shape)
    if shape == (8, 8, 1):
        return load_split(name, "nhwc")
    if shape == (64,):
        return load_split(name, "flat")
    raise ValueError(f"the digits data fits networks with input shape (8, 8, 1) or (64,), not {shape}")
