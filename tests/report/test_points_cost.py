"""`systolic report` shows what extra weight points cost: per accelerated layer the array MACs and weight bytes
of its program, against a one-point layer of the same shape (docs/isa.md, "Zero weight tiles")."""

import json

import numpy as np

from systolic.arch.config import PRESETS
from systolic.cli import main
from systolic.compiler import MachineSpec, compile_network
from systolic.golden import save

from tests.compiler import zero_tile_cases as zc


def test_report_shows_multipoint_cost_against_one_point(tmp_path, capsys):
    cfg = PRESETS["small"]
    R, C = cfg.rows, cfg.cols
    rng = np.random.default_rng(8)
    # A second point on half of the 4 N chunks, a third on none: 1.5 points' tiles.
    net = zc.multipoint_dense(rng, 6 * R, 4 * C, second_channels=range(2 * C), third_zero_rows=6 * R)
    path = tmp_path / "mp.npz"
    save(net, path)
    images = 6
    out = tmp_path / "r"
    assert main(["report", "--model", str(path), "--config", "small", "--images", str(images), "--out", str(out),
                 "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    (l,) = [l for l in rep["layers"] if l["placement"] == "accelerator"]
    tiles = zc.nonzero_tiles(net.layers[0], R, C)
    assert tiles == 6 * 4 + 6 * 2
    assert l["array_macs"] == l["counters"]["macs"] == R * C * images * tiles
    assert l["weight_bytes"] == R * C * tiles            # every tile fits scratchpad W: each loaded once
    one = compile_network(zc.one_point_like(net, rng), MachineSpec.from_config(cfg, dram_bytes=1 << 18),
                          batch=images).steps[0]
    assert l["one_point"] == {"array_macs": one.array_macs, "weight_bytes": one.weight_bytes}
    assert l["vs_one_point"] == {"array_macs": l["array_macs"] / one.array_macs,
                                 "weight_bytes": l["weight_bytes"] / one.weight_bytes}
    assert l["vs_one_point"]["array_macs"] == 1.5
    t = rep["totals"]
    assert (t["array_macs"], t["weight_bytes"]) == (l["array_macs"], l["weight_bytes"])
    assert t["one_point"] == l["one_point"]
    md = (out / "report.md").read_text()
    assert f"| fc | {l['array_macs']:,} | {one.array_macs:,} | 1.50 |" in md
