"""Golden-model command: ``inspect``."""

from __future__ import annotations

import json


def _inspect(args) -> int:
    from ..flows import resolve_model

    net, _ = resolve_model(args.model)
    bounds = net.check_accumulators(args.acc_bits) if args.acc_bits is not None else net.accumulator_bounds()
    if args.json:
        print(json.dumps({
            "input": {"qtype": net.input_type.to_json(), "shape": list(net.input_shape)},
            "rounding": net.rounding,
            "layers": [{"name": l.name, "kind": l.kind, "inputs": list(l.inputs),
                        "out_qtype": net.qtype(l.name).to_json(), "out_shape": list(net.shape(l.name)),
                        "acc_bound": list(bounds[l.name]) if l.name in bounds else None}
                       for l in net.layers],
            "meta": net.meta,
        }))
        return 0
    print(net.summary())
    print(f"rounding: {net.rounding}")
    for name, (lo, hi) in bounds.items():
        need = max((-lo - 1).bit_length(), hi.bit_length()) + 1  # signed width
        print(f"accumulator {name:<10} worst case [{lo}, {hi}]  needs {need} bits")
    if args.acc_bits is not None:
        print(f"all accumulators fit {args.acc_bits} bits")
    return 0


def register(sub) -> None:
    p = sub.add_parser("inspect", help="print a model's layers, types and accumulator bounds",
                       description="Print a quantized model's layers, integer types, shifts and the "
                                   "worst-case accumulator range of every layer.")
    p.add_argument("model", help="model file (.npz) or shipped model name")
    p.add_argument("--acc-bits", type=int, default=None, metavar="N",
                   help="prove every accumulator fits N bits (error otherwise)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_inspect)
