"""ONNX command: ``export-onnx MODEL OUT.onnx`` (needs the ``onnx`` extra)."""

from __future__ import annotations


def _export_onnx(args) -> int:
    from ..cli import CLIError
    from ..flows import resolve_model

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise CLIError("export-onnx needs the onnx package: pip install 'systolic[onnx]'") from None
    from .onnx_export import INPUT_NAME, INPUT_Q_NAME, OUTPUT_Q_NAME, export_onnx

    if args.check < 0:
        raise CLIError(f"--check must be at least 0, not {args.check}")
    net, _ = resolve_model(args.model)
    float_io = not args.int_io
    if args.check:       # the inputs first: a --check too large for memory is refused before anything is written
        from .random import random_input

        x = random_input(net, args.check, 0)
    model = export_onnx(net, args.out, float_io=float_io, intermediates=args.intermediates)
    ops = sorted({(n.domain + "." if n.domain else "") + n.op_type for n in model.graph.node})
    print(f"wrote {args.out}: {len(model.graph.node)} nodes ({', '.join(ops)}); "
          f"input {INPUT_NAME if float_io else INPUT_Q_NAME!r} -> output {OUTPUT_Q_NAME!r}")
    if args.check:
        import numpy as np

        try:
            import onnxruntime as ort
        except ImportError:
            raise CLIError("--check needs onnxruntime: pip install 'systolic[onnx]'") from None
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        if float_io:
            feed = {INPUT_NAME: np.ldexp(x.astype(np.float32), -net.input_type.frac_bits)}
        else:
            feed = {INPUT_Q_NAME: x.astype(np.int8 if net.input_type.signed else np.uint8)}
        got = sess.run([OUTPUT_Q_NAME], feed)[0].astype(np.int64)
        want = net(x)
        bad = int(np.count_nonzero(got != want))
        if bad:
            raise CLIError(f"onnxruntime differs from the golden model in {bad} of {want.size} output elements")
        print(f"onnxruntime {ort.__version__} equals the golden model on {args.check} random inputs "
              f"({want.size} output integers)")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "export-onnx", help="export a model to ONNX that onnxruntime runs bit-exactly",
        description="Export a quantized model (rounding half_even, at most 8-bit tensors) to an ONNX "
                    "graph of QuantizeLinear / QLinearConv / QGemm / QLinearAdd / QLinearAveragePool / "
                    "MaxPool / Concat / Clip nodes (and exact integer ops for average pools whose area is not "
                    "a power of two) whose integer output equals the golden model's bit for bit.")
    p.add_argument("model", help="model file (.npz) or shipped model name")
    p.add_argument("out", metavar="OUT.onnx", help="where to write the ONNX model")
    p.add_argument("--int-io", action="store_true",
                   help="take the int8/uint8 input 'input_q' instead of a float input (and add no float output)")
    p.add_argument("--intermediates", action="store_true",
                   help="also output every layer's integer tensor ('<layer>:q')")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="run N random inputs in onnxruntime and require exact equality with the golden model")
    p.set_defaults(func=_export_onnx)
