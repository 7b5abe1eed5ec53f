"""``systolic demo``: the main job on its embedded default.

Until the accelerator system exists (issue 5) the demo is a golden-model run:
the shipped digits-cnn (or, in a build without shipped models, a random CNN)
on the digits test split, with the accumulator proof, a comparison of the
integer network against its dequantized float view, and a report directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

DEFAULT_MODEL = "digits-cnn"


def _digits_test_split():
    from .data import load_digits_split

    return load_digits_split("test")


def run_demo(model: str = DEFAULT_MODEL, images: int | None = None, out: str | Path = "demo-report",
             acc_bits: int = 32, progress: bool = True) -> dict:
    from tqdm import tqdm

    from .golden.commands import resolve_model

    t0 = time.perf_counter()
    net = resolve_model(model)
    bounds = net.check_accumulators(acc_bits)
    x, y = _digits_test_split()
    if images is not None:
        if images < 1:
            raise ValueError(f"images must be at least 1, not {images}")
        x, y = x[:images], y[:images]
    x = x.reshape(len(x), *net.input_shape)
    xq = net.quantize_input(x)
    preds = []
    batch = 64
    for i in tqdm(range(0, len(xq), batch), desc="golden model", unit="batch", disable=not progress):
        preds.append(net.predict(xq[i:i + batch]))
    pred = np.concatenate(preds)
    result = {
        "model": model,
        "images": int(len(pred)),
        "accuracy_golden": float((pred == y).mean()),
        "acc_bits": acc_bits,
        "accumulator_bounds": {k: list(v) for k, v in bounds.items()},
        "layers_on_host": [l.name for l in net.layers],
        "layers_on_accelerator": [],
        "seconds": round(time.perf_counter() - t0, 3),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "model.txt").write_text(net.summary() + "\n")
    return result


def _cmd(args) -> int:
    r = run_demo(args.model, args.images, args.out, progress=not args.json)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"model {r['model']}: {r['images']} test images, golden accuracy {100 * r['accuracy_golden']:.2f}%")
    print(f"every accumulator fits {r['acc_bits']} bits (worst cases in {args.out}/demo.json)")
    print(f"report written to {args.out}/")
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the main job on its embedded default",
                       description="Run the shipped digits network through the golden model on the "
                                   "digits test split and write a report directory.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model file or shipped name (default {DEFAULT_MODEL})")
    p.add_argument("--images", type=int, default=None, help="number of test images (default: all)")
    p.add_argument("--out", default="demo-report", help="report directory (default demo-report)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd)
