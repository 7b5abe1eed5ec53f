"""Quantization methods inside a sweep: one model per recipe, the config's widths, kept for reruns."""

import numpy as np
import pytest

from systolic.sweep import run as run_mod
from systolic.sweep.run import run_sweep
from systolic.sweep.spec import expand, parse_spec, quant_recipe
from systolic.sweep.tasks import recipe_key
from tests.requirements import require

require("torch", "quantize")

pytestmark = pytest.mark.slow

#: 8 points, 4 recipes (2 methods x 2 weight widths); the array size does not change the model.
SPEC = {"base": "tiny", "grid": {"w_bits": [4, 8], "rows": [2, 4]}, "models": ["digits-mlp"],
        "methods": ["max", "tqt"], "quantize": {"epochs": 1, "float_epochs": 2},
        "metrics": ["cycles", "accuracy"], "images": 2}


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("methods")
    return out, run_sweep(parse_spec(SPEC), out, workers=0, progress=False)


def test_one_model_per_recipe_at_the_config_widths(serial):
    from systolic.golden import load
    from systolic.quantize.methods import golden_accuracy

    out, run = serial
    assert run.computed == 8 and run.errors == 0
    points = expand(parse_spec(SPEC))
    files = sorted((out / "models").glob("*.npz"))
    assert len(files) == 4 == len({recipe_key(quant_recipe(p)) for p in points})
    for point, row in zip(points, run.rows):
        net = load(out / "models" / f"{recipe_key(quant_recipe(point))}.npz")
        assert (net.meta["method"], net.meta["w_bits"], net.meta["a_bits"]) == (
            point["method"], point["config"]["w_bits"], point["config"]["in_bits"])
        assert row["accuracy"] == golden_accuracy(net)[0]
        assert row["float_accuracy"] == net.meta["float_test_accuracy"]
        assert max(int(np.abs(layer.weight).max()) for layer in net.layers if hasattr(layer, "weight")) \
            <= 2 ** (point["config"]["w_bits"] - 1)


def test_recipe_equals_a_direct_quantization(serial):
    """The sweep's model is the one `quantize_model` makes from the same recipe (the same outputs)."""
    from systolic.golden import load
    from systolic.quantize.data import load_split
    from systolic.quantize.methods import quantize_model

    out, _ = serial
    point = expand(parse_spec(SPEC))[-1]                                   # tqt, w8
    r = quant_recipe(point)
    direct = quantize_model("digits-mlp", "tqt", w_bits=8, a_bits=8, seed=0, epochs=1, float_epochs=2).network
    swept = load(out / "models" / f"{recipe_key(r)}.npz")
    x, _ = load_split("test", "flat")
    a, b = swept.run(swept.quantize_input(x[:50])), direct.run(direct.quantize_input(x[:50]))
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_kept_models_are_not_trained_again(serial, monkeypatch, tmp_path):
    import shutil

    out, first = serial
    work = tmp_path / "again"
    shutil.copytree(out, work)
    monkeypatch.setattr(run_mod, "quantize_recipe", lambda recipe: pytest.fail("a kept model was trained again"))
    wider = {**SPEC, "grid": {**SPEC["grid"], "rows": [2, 4, 8]}}
    run = run_sweep(parse_spec(wider), work, workers=0, progress=False)
    assert (run.computed, run.cached) == (4, 8)
    assert [r["accuracy"] for r in run.rows if r["rows"] != 8] == [r["accuracy"] for r in first.rows]


def test_cluster_run_equals_serial(serial, tmp_path):
    require("distributed", "sweep")
    _, first = serial
    run = run_sweep(parse_spec(SPEC), tmp_path, workers=2, progress=False)
    assert run.computed == 8
    assert _strip(run.rows) == _strip(first.rows)
    assert len(list((tmp_path / "models").glob("*.npz"))) == 4
