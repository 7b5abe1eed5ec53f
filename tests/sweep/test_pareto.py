"""The Pareto helper on hand-made points (fronts worked out by hand), and a corrupt cache entry."""

import pytest

from systolic.sweep.plot import pareto_front, plot_pareto
from systolic.sweep.run import run_sweep
from systolic.sweep.spec import parse_spec


def test_front_min_min():
    # (3, 8) is beaten by (2, 7); (5, 4) by (4, 4); the two (2, 7) do not beat each other.
    pts = [(1, 9), (2, 7), (3, 8), (4, 4), (5, 4), (6, 1), (2, 7)]
    assert pareto_front(pts) == [0, 1, 3, 5, 6]


def test_front_min_max():
    # energy (min) vs accuracy (max): (12, 0.85) is beaten by (10, 0.9); (30, 0.95) by (20, 0.95).
    pts = [(10, 0.9), (5, 0.8), (20, 0.95), (12, 0.85), (30, 0.95)]
    assert pareto_front(pts, ("min", "max")) == [0, 1, 2]


def test_front_bad_sense():
    with pytest.raises(ValueError, match="senses must be 'min' or 'max'"):
        pareto_front([(1, 2)], ("min", "low"))


def test_plots_skip_missing_columns(tmp_path):
    rows = [{"status": "ok", "in_bits": 8, "w_bits": 8, "out_bits": 8, "energy_pj_per_image": e,
             "accuracy": a, "cycles_per_image": c} for e, a, c in [(1.0, 0.5, 10), (2.0, 0.9, 5)]]
    files = plot_pareto(rows, tmp_path)
    assert sorted(f.name for f in files) == ["pareto_cycles_energy.png", "pareto_energy_accuracy.png"]


def test_corrupt_cache_entry_is_recomputed(tmp_path):
    spec = parse_spec({"base": "tiny", "grid": {"rows": [2, 4]}, "models": ["random:mlp"]})
    first = run_sweep(spec, tmp_path, workers=0, progress=False)
    victim = sorted((tmp_path / "cache").glob("*.json"))[0]
    victim.write_text('{"truncated": ')
    again = run_sweep(spec, tmp_path, workers=0, progress=False)
    assert (again.computed, again.cached) == (1, 1)
    assert [r["cycles_per_image"] for r in again.rows] == [r["cycles_per_image"] for r in first.rows]
