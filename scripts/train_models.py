#!/usr/bin/env python
"""Regenerate the shipped models systolic/models/digits-{mlp,cnn,resnet}.npz.

Each: float training (seed 0, 40 epochs, best validation epoch), batch norm folded,
8-bit TQT retraining (weights and log2 thresholds, two Adam optimizers), conversion
to the golden model, accumulator proof for 32 bits, test accuracy on the golden model.

Deterministic on CPU with one thread: a re-run gives the same integers and meta
(the .npz bytes differ only in zip timestamps). ``--check`` regenerates into a
temporary directory and compares with the shipped files instead of writing.

    python scripts/train_models.py            # rewrite systolic/models/*.npz
    python scripts/train_models.py --check    # verify the shipped files are reproduced
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


def train_one(name: str, progress: bool = True):
    from systolic.quantize.methods import quantize_model

    res = quantize_model(name, "tqt", 8, 8, seed=SEED, float_epochs=FLOAT_EPOCHS, progress=progress)
    net = res.network
    net.meta.update({
        "model": name, "method": "tqt", "bits": 8, "w_bits": 8, "a_bits": 8, "seed": SEED,
        "float_test_accuracy": res.float_acc, "test_accuracy": res.golden_acc,
        "dataset": "sklearn load_digits, stratified 60/20/20 split seed 0, test split (360 images)",
        "generated_by": "scripts/train_models.py",
    })
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
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out_dir = ROOT / "systolic" / "models"
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            t0 = time.perf_counter()
            net = train_one(name)
            target = (Path(tmp) if args.check else out_dir) / f"{name}.npz"
            net.save(target)
            bounds = net.check_accumulators(32)
            worst = max(max(-lo, hi) for lo, hi in bounds.values())
            print(f"{name}: float {100 * net.meta['float_test_accuracy']:.2f}%  TQT int8 golden "
                  f"{100 * net.meta['test_accuracy']:.2f}%  max |acc| {worst}  "
                  f"({time.perf_counter() - t0:.0f} s) -> {target}", flush=True)
            if args.check:
                same = same_network(load(target), load(out_dir / f"{name}.npz"))
                print(f"  reproduces the shipped file: {'yes' if same else 'NO'}")
                ok &= same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
