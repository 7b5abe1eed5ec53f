"""The sweep spec: strict reading (exact messages), expansion, sampling, cache keys, error rows."""

import json

import pytest

from systolic.cli import main
from systolic.sweep.spec import expand, load_spec, parse_spec
from systolic.sweep.tasks import point_key, run_point


def _spec(**kw):
    return parse_spec({"models": ["random:mlp"], **kw})


@pytest.mark.parametrize("obj, exc, message", [
    ({"models": ["random:mlp"], "grd": {}}, ValueError,
     "unknown sweep spec key(s): grd (known keys: base, grid, configs, models, methods, quantize, metrics, images, "
     "seed, sample, synth)"),
    ({"grid": {}}, ValueError, "sweep spec: 'models' is required for the metrics cycles (a list of model names or "
                               "files)"),
    ({"models": ["random:mlp"], "grid": {"rows": ["4"]}}, TypeError, "grid.rows values must be of type int, not '4'"),
    ({"models": ["random:mlp"], "grid": {"in_signed": [1]}}, TypeError,
     "grid.in_signed values must be of type bool, not 1"),
    ({"models": ["random:mlp"], "grid": {"rows": []}}, TypeError, "grid.rows must be a non-empty list, not []"),
    ({"models": ["random:mlp"], "grid": {"rows": [2, 2]}}, ValueError, "grid.rows lists a value twice: [2, 2]"),
    ({"models": ["random:mlp"], "metrics": ["power"]}, ValueError,
     "metrics: unknown value 'power' (known: cycles, energy, accuracy, rtl, synth)"),
    ({"models": ["random:mlp"], "methods": ["tqa"]}, ValueError,
     "methods: unknown value 'tqa' (known: golden, max, percentile, mse, klj, tqt, fat, lsq, sq, multipoint, dsconv, inq)"),
    ({"models": ["random:mlp"], "methods": ["tqt"]}, ValueError,
     "methods tqt quantize a zoo model (train it in float, then quantize): 'random:mlp' is not one of digits-mlp, "
     "digits-cnn, digits-resnet, mnist-lenet5, mnist-resnet8, mnist-mobilenet; list quantized .npz files under "
     "method 'golden' instead"),
    ({"metrics": ["synth"], "methods": ["tqt"]}, ValueError, "methods tqt quantize a model: list 'models'"),
    ({"models": ["digits-mlp"], "methods": ["tqt"], "quantize": {"epochs": 0}}, ValueError,
     "quantize.epochs must be between 1 and 1000, not 0"),
    ({"models": ["digits-mlp"], "quantize": {"lr": 0.1}}, ValueError,
     "unknown quantize key(s): lr (known keys: epochs, float_epochs, data)"),
    ({"models": ["digits-mlp"], "quantize": {"data": "cifar"}}, ValueError,
     "quantize.data must be one of digits, mnist, not 'cifar'"),
    ({"models": ["random:mlp"], "configs": {"rows": 2}}, TypeError,
     "configs must be a non-empty list of objects, not {'rows': 2}"),
    ({"models": ["random:mlp"], "configs": [{"rows": "2"}]}, TypeError,
     "configs[0].rows values must be of type int, not '2'"),
    ({"models": ["random:mlp"], "configs": [{"rows": 2}], "grid": {"rows": [4]}}, ValueError,
     "configs[0].rows: the field is also a grid key; give it in one place"),
    ({"models": ["random:mlp"], "configs": [{"rows": 2}, {"rows": 2}]}, ValueError,
     "configs lists an object twice: [{'rows': 2}, {'rows': 2}]"),
    ({"models": ["random:mlp"], "synth": {"seed": 0}}, ValueError, "synth.seed must be between 1 and 2147483647, "
                                                                   "not 0"),
    ({"models": ["random:rnn"]}, ValueError,
     "models: unknown random model 'random:rnn' (random:mlp, random:cnn or random:resnet)"),
    ({"models": "random:mlp"}, TypeError, "models must be a non-empty list of strings, not 'random:mlp'"),
    ({"models": ["random:mlp"], "images": True}, TypeError, "images must be an int, not True"),
    ({"models": ["random:mlp"], "sample": 0}, ValueError, "sample must be between 1 and 100000, not 0"),
    ({"models": ["random:mlp"], "base": "huge"}, ValueError, "base must be one of tiny, small, default, large, "
                                                             "not 'huge'"),
    ({"models": ["random:mlp"], "synth": {"pnr": "no"}}, TypeError, "synth.pnr must be a bool, not 'no'"),
    ([1], TypeError, "sweep spec must be an object, not [1]"),
])
def test_spec_errors_are_exact(obj, exc, message):
    with pytest.raises(exc) as info:
        parse_spec(obj)
    assert str(info.value) == message


def test_grid_key_names_the_config_fields():
    with pytest.raises(ValueError, match=r"^unknown grid key\(s\): rowz \(known keys: acc_bits, acc_entries, "):
        _spec(grid={"rowz": [1]})


def test_too_many_points_is_refused():
    grid = {"rows": list(range(1, 65)), "cols": list(range(1, 65)), "acc_entries": list(range(1, 30))}
    with pytest.raises(ValueError, match=r"^the grid has 118784 points, above the limit of 100000"):
        _spec(grid=grid)


def test_load_spec_names_the_file(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('{"models": ["random:mlp"], "models": []}')
    with pytest.raises(ValueError) as info:
        load_spec(p)
    assert str(info.value).startswith(f"{p}: sweep spec is not valid JSON: duplicate key 'models'")
    q = tmp_path / "s.txt"
    q.write_text("{}")
    with pytest.raises(ValueError) as info:
        load_spec(q)
    assert str(info.value) == f"{q}: a sweep spec must be a .json, .yaml or .yml file, not '.txt'"


def test_yaml_spec_equals_json_and_refuses_aliases(tmp_path):
    pytest.importorskip("yaml")
    y = tmp_path / "s.yaml"
    y.write_text("models: [random:mlp]\ngrid:\n  rows: [2, 4]\n")
    j = tmp_path / "s.json"
    j.write_text(json.dumps({"models": ["random:mlp"], "grid": {"rows": [2, 4]}}))
    assert load_spec(y) == load_spec(j)
    y.write_text("models: &m [random:mlp]\nmethods: *m\n")
    with pytest.raises(ValueError, match="uses YAML aliases"):
        load_spec(y)


def test_model_files_are_relative_to_the_spec(tmp_path):
    from systolic.golden.random import random_network

    random_network(1, "mlp", 8).save(tmp_path / "m.npz")
    (tmp_path / "s.json").write_text(json.dumps({"models": ["m.npz"]}))
    assert load_spec(tmp_path / "s.json")["models"] == [str((tmp_path / "m.npz").resolve())]


def test_expand_grid_order_and_sample():
    spec = _spec(base="tiny", grid={"rows": [2, 4], "dataflow": ["ws", "os"]}, models=["random:mlp", "random:cnn"])
    pts = expand(spec)
    assert len(pts) == 2 * 2 * 2
    assert [(p["model"], p["config"]["rows"], p["config"]["dataflow"]) for p in pts[:4]] == [
        ("random:mlp", 2, "ws"), ("random:mlp", 2, "os"), ("random:mlp", 4, "ws"), ("random:mlp", 4, "os")]
    assert all(p["config"]["spad_a_bytes"] == 1024 for p in pts)          # the tiny preset's value
    spec["sample"] = 3
    sample = expand(spec)
    assert len(sample) == 3 and all(p in pts for p in sample)
    assert sample == expand(spec)                                         # seeded: the same points
    assert [pts.index(p) for p in sample] == sorted(pts.index(p) for p in sample)


def test_point_key_follows_content(tmp_path):
    from systolic.golden.random import random_network

    (p,) = expand(_spec())
    assert point_key(p) == point_key(json.loads(json.dumps(p)))
    assert point_key(p) != point_key({**p, "config": {**p["config"], "rows": 4}})
    path = tmp_path / "m.npz"
    random_network(1, "mlp", 8).save(path)
    q = {**p, "model": str(path)}
    k1 = point_key(q)
    random_network(2, "mlp", 8).save(path)                                # same name, other weights
    assert point_key(q) != k1


def test_invalid_configs_are_error_rows():
    spec = _spec(base="tiny", grid={"rows": [2, 100], "in_bits": [8, 16]})
    rows = {(p["config"]["rows"], p["config"]["in_bits"]): run_point(p) for p in expand(spec)}
    assert rows[(2, 8)]["status"] == "ok" and rows[(2, 8)]["cycles_per_image"] > 0
    assert rows[(100, 8)] == {"status": "error", "error": "rows must be between 1 and 64, not 100",
                              "seconds": rows[(100, 8)]["seconds"], "cycles_per_image": None, "utilization": None,
                              "host_layers": None}
    assert rows[(2, 16)]["error"] == "in_bits must be at most 8 for the system (one-byte containers), not 16"


def test_point_cycles_equal_run_images():
    from systolic.arch.config import PRESETS
    from systolic.flows import load_inputs, resolve_model, run_images

    (p,) = expand(_spec(base="small", models=["random:cnn"], images=3, seed=5))
    net, kind = resolve_model("random:cnn", seed=5)
    x, _ = load_inputs(net, 3, seed=5, kind=kind)
    run = run_images(net, PRESETS["small"], x, source="model", progress=False)
    assert run_point(p)["cycles_per_image"] == run.total_cycles / 3


def test_cli_bad_spec_is_one_line(tmp_path, capsys):
    p = tmp_path / "s.json"
    p.write_text('{"models": ["random:mlp"], "metric": ["cycles"]}')
    assert main(["sweep", str(p), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"systolic: error: {p}: unknown sweep spec key(s): metric")


def test_cli_serial_sweep_writes_results_and_plots(tmp_path, capsys):
    import csv

    p = tmp_path / "s.json"
    p.write_text(json.dumps({"base": "tiny", "grid": {"rows": [2, 4], "cols": [2, 64]}, "models": ["random:mlp"],
                             "metrics": ["cycles", "energy"]}))
    out = tmp_path / "o"
    assert main(["sweep", str(p), "--out", str(out), "--workers", "0", "--plot", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("4 points: 4 computed, 0 from the cache, 0 errors")
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["rows"], r["cols"], r["status"]) for r in rows] == [("2", "2", "ok"), ("2", "64", "ok"),
                                                                   ("4", "2", "ok"), ("4", "64", "ok")]
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["points"] == 4 and meta["computed"] == 4 and set(meta["versions"]) == {
        "systolic", "numpy", "dask", "distributed", "amaranth", "torch"}
    assert (out / "pareto_cycles_energy.png").stat().st_size > 0
    assert not (out / "pareto_cycles_luts.png").exists()                  # no synthesis ran
    assert len(list((out / "cache").glob("*.json"))) == 4


def test_configs_link_fields_and_cross_the_grid():
    spec = _spec(base="tiny", configs=[{"rows": 2, "cols": 2}, {"rows": 4, "cols": 4}], grid={"dataflow": ["ws", "os"]})
    got = [(p["config"]["rows"], p["config"]["cols"], p["config"]["dataflow"]) for p in expand(spec)]
    assert got == [(2, 2, "ws"), (2, 2, "os"), (4, 4, "ws"), (4, 4, "os")]


def test_synthesis_only_sweep_needs_no_model():
    from systolic.sweep.tasks import code_fingerprint

    (p,) = expand(parse_spec({"base": "tiny", "metrics": ["synth"]}))
    assert p["model"] is None and "quantize" not in p
    assert code_fingerprint(True) != code_fingerprint(False)            # the design hash, not the package's


def test_point_key_follows_the_code(monkeypatch):
    """A change of the package's source recomputes the points (the key is not just the version)."""
    from systolic.sweep import tasks

    (p,) = expand(_spec())
    k = point_key(p)
    monkeypatch.setattr(tasks, "code_fingerprint", lambda synth_only=False: "other code")
    assert point_key(p) != k


def test_recipe_follows_the_config_widths():
    from systolic.sweep.spec import quant_recipe

    spec = parse_spec({"base": "tiny", "models": ["digits-mlp"], "methods": ["golden", "tqt"],
                       "grid": {"w_bits": [4, 8], "rows": [2, 4]}, "quantize": {"epochs": 2}})
    recipes = [quant_recipe(p) for p in expand(spec)]
    assert recipes[:4] == [None] * 4
    assert recipes[4] == {"model": "digits-mlp", "method": "tqt", "w_bits": 4, "a_bits": 8, "rounding": "half_even",
                          "seed": 0, "epochs": 2, "float_epochs": 40, "data": None}
    assert recipes[4] == recipes[5] and recipes[4] != recipes[6]        # rows do not change the model


def _fpga_table():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "fpga_table.py"
    spec = importlib.util.spec_from_file_location("fpga_table", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fpga_table_is_a_sweep():
    """scripts/fpga_table.py's two sweeps: every square size x dataflow x rounding synthesized, the key config
    placed and routed per seed, the worst seed reported and a failed seed named."""
    ft = _fpga_table()
    points = expand(parse_spec(ft.spec([2, 4, 8, 16])))
    assert len(points) == 16 and all(p["config"]["rows"] == p["config"]["cols"] for p in points)
    assert all(p["synth"]["pnr"] is False and p["model"] is None for p in points)
    todo = ft.pnr_configs([2, 4, 8, 16], "key")
    assert todo == [(8, "ws", "half_even")] and len(ft.pnr_configs([2, 4, 8, 16], "all")) == 12
    (p,) = expand(parse_spec(ft.spec([2, 4, 8, 16], todo, seed=3)))
    assert p["synth"]["pnr"] is True and p["synth"]["seed"] == 3 and p["config"]["rows"] == 8

    row = {"rows": 8, "cols": 8, "dataflow": "ws", "rounding": "half_even", "status": "ok"}
    seeds = [[{**row, "fmax_mhz": 40.0}], [{**row, "fmax_mhz": 37.5}]]
    (merged,) = ft.merge([row], seeds, [1, 2])
    assert merged["pnr"]["worst"]["fmax_mhz"] == 37.5 and merged["pnr"]["seeds"] == 2
    assert merged["fmax_mhz"] == 37.5 and merged["routed"] is True        # the worst seed at the top level
    assert merged["pnr"]["fmax_by_seed"] == {"1": 40.0, "2": 37.5}
    failed = [[{**row, "fmax_mhz": 40.0}], [{**row, "status": "error", "fmax_mhz": None, "error": "did not route"}]]
    (merged,) = ft.merge([row], failed, [1, 2])
    assert merged["pnr"]["worst"] is None and merged["pnr"]["failed"] == ["did not route"]
    assert "fmax_mhz" not in merged


def test_fpga_table_latency_per_image(tmp_path):
    """Latency per image = RTL cycles per image (system_rtl.json) / the routed config's worst-seed Fmax."""
    ft = _fpga_table()
    rows = [{"rows": 8, "cols": 8, "dataflow": "ws", "rounding": "half_even", "status": "ok", "fmax_mhz": 40.0},
            {"rows": 4, "cols": 4, "dataflow": "ws", "rounding": "half_even", "status": "ok"}]
    rtl = tmp_path / "system_rtl.json"
    rtl.write_text(json.dumps({"memory": {"latency": 2}, "rows": [
        {"model": "digits-cnn", "config": "default", "images": 32, "cycles_per_image": 3000.0},
        {"model": "digits-cnn", "config": "small", "images": 32, "cycles_per_image": 5000.0}]}))
    lines = ft.latency_lines(rows, rtl)
    table = [ln for ln in lines if ln.startswith("| digits")]
    assert table == ["| digits-cnn | 8x8 | WS | half_even | 3,000.0 | 40.0 | 75.00 | 30.00 |"]
    assert ft.latency_lines(rows[1:], rtl) == []                  # nothing routed: no section
    assert "is missing" in ft.latency_lines(rows, tmp_path / "none.json")[-1]


def test_fpga_table_notes_kept_by_render(tmp_path):
    """--note prints under the title and is stored in fpga.json; --render keeps the stored notes and adds new ones."""
    ft = _fpga_table()
    row = {"rows": 2, "cols": 2, "dataflow": "ws", "rounding": "half_even", "status": "ok", "yosys_luts": 100,
           "ffs": 50, "dsps": 4, "brams": 2, "lut_per_pe": 10, "ff_per_pe": 5, "dsp_per_pe": 1, "lut_per_lane": 300}
    ft.write(tmp_path, [row], [], ["first note"])
    assert json.loads((tmp_path / "fpga.json").read_text())["notes"] == ["first note"]
    assert ft.main(["--render", "--out", str(tmp_path), "--note", "second note"]) == 0
    md = (tmp_path / "fpga.md").read_text()
    head = md.split("| array |", 1)[0]
    assert "**Note:** first note" in head and "**Note:** second note" in head
    assert json.loads((tmp_path / "fpga.json").read_text())["notes"] == ["first note", "second note"]


def test_fpga_table_marks_abc_mapped_rows():
    """A row synthesized again with abc after Yosys's ABC9 assertion is marked, with the note under the table;
    without such a row there is neither."""
    ft = _fpga_table()
    row = {"rows": 2, "cols": 2, "dataflow": "ws", "rounding": "half_even", "status": "ok", "yosys_luts": 100,
           "ffs": 50, "dsps": 4, "brams": 2, "lut_per_pe": 10, "ff_per_pe": 5, "dsp_per_pe": 1, "lut_per_lane": 300,
           "yosys_workaround": None}
    plain = ft.markdown([row], [])
    assert "¹" not in plain and "not `abc9`" not in plain
    marked = ft.markdown([row, {**row, "rows": 4, "cols": 4, "yosys_workaround": "abc"}], [])
    lines = marked.splitlines()
    assert [ln.startswith("| 4x4 | WS | half_even | 100 ¹ | 50 ¹ |") for ln in lines if ln.startswith("| 4x4")] == [True]
    assert [ln.startswith("| 2x2 | WS | half_even | 100 | 50 |") for ln in lines if ln.startswith("| 2x2")] == [True]
    assert sum(ln.startswith("¹ LUTs mapped by Yosys's `abc`, not `abc9`") for ln in lines) == 1
    # The rounding comparison does not set an abc-mapped design against an abc9-mapped one.
    he = {**row, "rows": 8, "cols": 8, "yosys_luts": 200}
    hu = {**he, "rounding": "half_up", "yosys_luts": 190, "lut_per_lane": 294, "yosys_workaround": "abc"}
    cost = [ln for ln in ft.markdown([he, hu], []).splitlines() if ln.startswith("| 8x8 | WS | 200")]
    assert cost == ["| 8x8 | WS | 200 | 190 ¹ | - (¹) | 300 | 294 | +2.0 |"]
    cost = [ln for ln in ft.markdown([he, {**hu, "yosys_workaround": None}], []).splitlines()
            if ln.startswith("| 8x8 | WS | 200")]
    assert cost == ["| 8x8 | WS | 200 | 190 | +5.3 | 300 | 294 | +2.0 |"]
