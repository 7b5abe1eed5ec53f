"""Export random golden networks to ONNX, run them in onnxruntime, count exact integer matches.

    python scripts/onnx_equality.py [-n 40] [--batch 32] [--seed 0]

Every layer's integer output (``intermediates=True``) and the output of the plain
export are compared with the golden model with exact equality, at both ends of
onnxruntime's optimizer (no graph optimization, and all of it including its NHWC
layout rewrite). The last line
is a one-line summary; the exit status is 1 when anything differs.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import time
from collections import Counter

import numpy as np


def count_ties(net, outs) -> int:
    """Rounding shifts in the golden run whose operand lies exactly halfway (where half_even matters)."""
    from systolic.golden.layers import Add, AvgPool2D, Conv2D, Dense, im2col

    ties = 0
    for layer in net.layers:
        in_types = net.in_types(layer)
        xs = [outs[i] for i in layer.inputs]
        if isinstance(layer, (Conv2D, Dense)):
            a = im2col(xs[0], layer.kernel, layer.stride, layer.padding) if isinstance(layer, Conv2D) else xs[0]
            v = a @ layer.effective_weight().reshape(-1, layer.out_channels)
            if layer.bias is not None:
                v = v + layer.bias
            k = np.broadcast_to(layer.shift(in_types[0]), v.shape)
        elif isinstance(layer, AvgPool2D):
            v = layer._windows(xs[0]).sum(axis=3)
            k = np.full(v.shape, layer.shift(in_types[0]))
        elif isinstance(layer, Add):
            sa, sb, kk = layer.align(in_types)
            v = np.left_shift(xs[0], sa) + np.left_shift(xs[1], sb)
            k = np.full(v.shape, kk)
        else:
            continue
        m = k > 0
        ties += int(np.count_nonzero((v[m] & ((1 << k[m]) - 1)) == (1 << (k[m] - 1))))
    return ties


def check_networks(n: int = 40, batch: int = 32, seed: int = 0) -> dict:
    """Export and compare *n* random networks cycling through kind x bits x per_channel.

    Returns a dict with ``networks``, ``runs``, ``elements``, ``mismatches``
    (differing elements), ``bad`` (a list of ``(network, layer, level)``) and
    ``per_case`` counters.
    """
    import onnxruntime as ort

    from systolic.golden.onnx_export import INPUT_NAME, OUTPUT_Q_NAME, export_onnx, layer_output_name
    from systolic.golden.random import random_input, random_network

    levels = {"no_opt": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "all_opt": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    cases = list(itertools.product(("mlp", "cnn", "resnet"), (8, 4), (False, True)))
    stats = {"networks": 0, "runs": 0, "elements": 0, "mismatches": 0, "ties": 0, "bad": [], "per_case": Counter(),
             "layer_kinds": Counter()}
    for i in range(n):
        kind, bits, per_channel = cases[i % len(cases)]
        net_seed = seed + i
        net = random_network(net_seed, kind, bits, "half_even", per_channel)
        stats["layer_kinds"].update(layer.kind for layer in net.layers)
        model = export_onnx(net, intermediates=True).SerializeToString()
        # Exposing intermediates blocks some of onnxruntime's fusions, so the plain export runs too.
        plain = export_onnx(net).SerializeToString()
        x = random_input(net, batch, net_seed + 100_000)
        xf = np.ldexp(x.astype(np.float32), -net.input_type.frac_bits)
        gold = net.run(x)
        stats["ties"] += count_ties(net, gold)
        for level_name, level in levels.items():
            so = ort.SessionOptions()
            so.graph_optimization_level = level
            so.log_severity_level = 3
            sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
            outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {INPUT_NAME: xf})))
            for layer in net.layers:
                name = OUTPUT_Q_NAME if layer is net.layers[-1] else layer_output_name(layer.name)
                got = outs[name].astype(np.int64)
                want = gold[layer.name]
                diff = int(np.count_nonzero(got != want)) if got.shape == want.shape else want.size
                stats["elements"] += want.size
                stats["mismatches"] += diff
                if diff:
                    stats["bad"].append((f"{kind}/{bits}b/pc={per_channel}/seed={net_seed}", layer.name, level_name))
            sess = ort.InferenceSession(plain, so, providers=["CPUExecutionProvider"])
            got = sess.run([OUTPUT_Q_NAME], {INPUT_NAME: xf})[0].astype(np.int64)
            want = gold[net.output_name]
            diff = int(np.count_nonzero(got != want)) if got.shape == want.shape else want.size
            stats["elements"] += want.size
            stats["mismatches"] += diff
            if diff:
                stats["bad"].append((f"{kind}/{bits}b/pc={per_channel}/seed={net_seed}", "output_q (plain export)", level_name))
            stats["runs"] += 2
        stats["networks"] += 1
        stats["per_case"][(kind, bits, per_channel)] += 1
    return stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--networks", type=int, default=40, help="random networks to test (default 40)")
    parser.add_argument("--batch", type=int, default=32, help="inputs per network (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="first network seed (default 0)")
    args = parser.parse_args(argv)
    if args.networks < 1 or args.batch < 1:
        parser.error("--networks and --batch must be at least 1")

    import onnx
    import onnxruntime as ort

    t0 = time.perf_counter()
    s = check_networks(args.networks, args.batch, args.seed)
    dt = time.perf_counter() - t0
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, {platform.machine()}, "
          f"rounding half_even, batch {args.batch}, optimization levels no_opt + all_opt")
    print("kind    bits  per_channel  networks")
    for (kind, bits, pc), count in sorted(s["per_case"].items()):
        print(f"{kind:<7} {bits:>4}  {str(pc):<11}  {count:>8}")
    print("layers: " + ", ".join(f"{k} {v}" for k, v in sorted(s["layer_kinds"].items())))
    print(f"networks tested:   {s['networks']}")
    print(f"onnxruntime runs:  {s['runs']}")
    print(f"elements compared: {s['elements']}")
    print(f"rounding ties:     {s['ties']} (golden rounding shifts exactly halfway between two integers)")
    print(f"mismatches:        {s['mismatches']}")
    for net, layer, level in s["bad"][:20]:
        print(f"  MISMATCH {net} layer {layer!r} ({level})")
    verdict = "bit-exact" if s["mismatches"] == 0 else "NOT bit-exact"
    print(f"SUMMARY: {s['networks']} networks, {s['elements']} integer elements compared, "
          f"{s['mismatches']} mismatches: {verdict} ({dt:.1f} s)")
    return 0 if s["mismatches"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
