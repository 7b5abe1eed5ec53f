"""Quantization commands: ``quantize`` (needs torch) and ``eval`` (torch-free).

``systolic quantize MODEL METHOD [--w-bits N] [--a-bits N] [--data D] --out FILE``
    trains the float zoo model on data set D (default digits), or imports a trained
    float model (``.onnx``, ``FILE.py:FUNCTION``), quantizes it with
    METHOD, converts it to a golden model file and prints the float and integer
    test accuracy.
``systolic eval MODEL [--data D] [--images N] [--json]``
    runs a golden model (shipped name or .npz file) on the test split of D
    (default: the built-in data set of the model's input shape: digits or mnist).

D is ``digits``, ``mnist`` or a path to a ``.npz`` data file
(:func:`systolic.quantize.data.load_dataset`).
"""

from __future__ import annotations

import json
import time

from . import METHODS, MODELS, check_bits, check_method, check_model


def evaluate(model: str, images: int | None = None, data=None) -> dict:
    """Run golden model *model* (shipped name or ``.npz`` path) on the test split of *data* (torch-free).

    *data*: ``"digits"``, ``"mnist"``, a ``.npz`` data file or a Dataset; None: the built-in data set of
    the model's input shape. ``images`` (and ``n``) is the number of test images run.
    """
    import numpy as np

    from ..flows import resolve_model
    from .data import dataset_for_network, load_dataset

    if images is not None and (isinstance(images, bool) or not isinstance(images, int) or images < 1):
        raise ValueError(f"images must be a positive integer, not {images!r}")
    net, _ = resolve_model(model)
    ds = dataset_for_network(net) if data is None else load_dataset(data)
    x, y = ds.split("test", net.input_shape, what=f"model {model}")
    if images is not None:
        x, y = x[:images], y[:images]
    t0 = time.perf_counter()
    pred = np.concatenate([net.predict(net.quantize_input(x[i:i + 128])) for i in range(0, len(x), 128)])
    return {
        "model": model,
        "data": ds.name,
        "images": int(len(y)),
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "correct": int((pred == y).sum()),
        "predictions": [int(p) for p in pred],
        "labels": [int(v) for v in y],
        "meta": net.meta,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _eval(args) -> int:
    r = evaluate(args.model, args.images, args.data)
    if args.json:
        print(json.dumps(r))
        return 0
    m = r["meta"]
    what = f" ({m.get('method', '?')} w{m.get('w_bits', '?')}a{m.get('a_bits', '?')})" if m else ""
    on = "" if r["data"] == "digits" else f" {r['data']}"
    print(f"{r['model']}{what}: {r['correct']}/{r['n']}{on} test images correct, accuracy {100 * r['accuracy']:.2f}%")
    if "float_test_accuracy" in m and args.images is None:
        print(f"float model accuracy recorded at training time: {100 * m['float_test_accuracy']:.2f}%")
    return 0


def _quantize(args) -> int:
    from .importer import is_import_spec

    imported = is_import_spec(args.model)
    if not imported:
        check_model(args.model)
    check_method(args.method)
    check_bits(args.w_bits, "--w-bits")
    check_bits(args.a_bits, "--a-bits")
    if args.first_last_bits is not None:
        check_bits(args.first_last_bits, "--first-last-bits")
    if args.bfp and args.method != "dsconv":
        raise ValueError(f"--bfp (block-floating-point activations) belongs to the dsconv method, not {args.method}")
    if not 1 <= args.block <= 4096:
        raise ValueError(f"--block must be between 1 and 4096, not {args.block}")
    for name in ("epochs", "float_epochs"):
        v = getattr(args, name)
        if v is not None and v < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be non-negative, not {v}")
    from .data import load_dataset

    data = args.data
    if data is None:                      # the mnist-* zoo models train on MNIST, everything else on digits
        data = "mnist" if args.model.startswith("mnist-") else "digits"
    ds = load_dataset(data)               # a bad data file is reported before torch is imported
    try:
        import torch
    except ImportError:
        raise ValueError("the quantize command needs torch: pip install 'systolic[quantize]'") from None
    from .methods import quantize_model

    torch.set_num_threads(max(1, min(torch.get_num_threads(), args.threads)))
    model = args.model
    if imported:                # the user's trained float network, taken as it is
        from .importer import import_model

        model = import_model(args.model, ds.network_shapes)
    res = quantize_model(model, args.method, args.w_bits, args.a_bits, seed=args.seed,
                         rounding=args.rounding, epochs=args.epochs, float_epochs=args.float_epochs,
                         progress=not args.json, data=ds, first_last_bits=args.first_last_bits,
                         block=args.block, bfp=args.bfp)
    res.network.save(args.out)
    s = res.summary()
    s["out"] = str(args.out)
    s["data"] = ds.name
    if args.json:
        print(json.dumps(s))
        return 0
    on = "" if ds.name == "digits" else f", data {ds.name}"
    print(f"{args.model} {args.method} w{args.w_bits}a{args.a_bits} (seed {args.seed}, {args.rounding}{on})")
    print("  test accuracy")
    print(f"    float model                                        {100 * res.float_acc:6.2f}%")
    if args.method in ("fat", "lsq"):
        print(f"    fake quant, trained scales (before power-of-two rounding) {100 * res.fakequant_acc:6.2f}%")
    print(f"    integer golden model (power-of-two scales)         {100 * res.golden_acc:6.2f}%")
    cost = res.extra.get("point_cost")
    if cost:
        print(f"  weight points: {100 * cost['macs_ratio']:.1f} % of a one-point network's MACs, "
              f"{100 * cost['weight_bytes_ratio']:.1f} % of its weight bytes")
    print(f"written to {args.out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a zoo or imported model and write a golden model file (needs torch)",
                       description="Train the float zoo model (or import a trained float model: an .onnx file or "
                                   "FILE.py:FUNCTION returning a torch nn.Module, docs/import.md), quantize it "
                                   "with METHOD (power-of-two scales), convert it to the integer golden model and "
                                   "write it to --out.")
    p.add_argument("model", help=f"zoo model ({', '.join(MODELS)}), a float .onnx file, or FILE.py:FUNCTION "
                                 "(imports FILE and runs its code, as Python's import does)")
    p.add_argument("method", help=f"quantization method: {', '.join(METHODS)}")
    p.add_argument("--w-bits", type=int, default=8, metavar="N", help="weight bits, 2..8 (default 8)")
    p.add_argument("--a-bits", type=int, default=8, metavar="N", help="activation bits, 2..8 (default 8)")
    p.add_argument("--data", default=None, metavar="D",
                   help="data set: digits, mnist or a .npz file with x, y (default: mnist for the mnist-* zoo "
                        "models, else digits); the zoo model is built for its sample shape and classes")
    p.add_argument("--out", required=True, metavar="FILE", help="output model file (.npz)")
    p.add_argument("--seed", type=int, default=0, help="seed of float training and retraining (default 0)")
    p.add_argument("--rounding", default="half_even", choices=("half_even", "half_up"),
                   help="rounding mode of fake quant and golden model (default half_even)")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="retraining epochs (method default; per stage for sq and inq; dsconv: distillation epochs, "
                        "default 0 = post-training)")
    p.add_argument("--first-last-bits", type=int, default=None, metavar="N",
                   help="first layer's weights and last layer's weights, input and output at N bits (the TQT "
                        "paper's convention, e.g. 8); default: every layer at --w-bits / --a-bits")
    p.add_argument("--block", type=int, default=8, metavar="B",
                   help="dsconv: K elements (im2col order) per kernel shift; the array's rows make one block one "
                        "MATMUL (default 8)")
    p.add_argument("--bfp", action="store_true",
                   help="dsconv: block-floating-point activations (mantissa --a-bits, one exponent per --block "
                        "channels); golden model only, the accelerator's compiler refuses them")
    p.add_argument("--float-epochs", type=int, default=40, metavar="N", help="float training epochs (default 40)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="torch CPU threads (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object, no progress bar")
    p.set_defaults(func=_quantize)

    e = sub.add_parser("eval", help="run a golden model on a test split",
                       description="Run a quantized model (shipped name or .npz file) in the golden model on "
                                   "the test split of a data set and print its accuracy.")
    e.add_argument("model", help="model file (.npz), an already-quantized .onnx (QONNX or QDQ) or a shipped model "
                                 "name")
    e.add_argument("--data", default=None, metavar="D",
                   help="data set: digits, mnist or a .npz data file (default: digits or mnist, by the model's "
                        "input shape)")
    e.add_argument("--images", type=int, default=None, metavar="N",
                   help="first N test images (default: the whole split, 360 for digits)")
    e.add_argument("--json", action="store_true",
                   help="print one JSON object (accuracy, images, correct, predictions, labels, ...)")
    e.set_defaults(func=_eval)
