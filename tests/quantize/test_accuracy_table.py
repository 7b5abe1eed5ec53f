"""scripts/accuracy_table.py's bookkeeping: a results file seeds the per-(model, seed) cache only when the same
code wrote it, and a table of part of the tasks says what is missing. Runs no training (the committed MNIST
results are its input)."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("accuracy_table", ROOT / "scripts" / "accuracy_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _committed():
    return json.loads((ROOT / "docs" / "results" / "accuracy.json").read_text())


def test_committed_results_are_consistent():
    """Every (model, seed) with rows has its task time, and every task time has rows of its model and seed."""
    d = _committed()
    have = {(r["model"], r["seed"]) for r in d["results"]}
    tasks = {(t.rsplit("_s", 1)[0], int(t.rsplit("_s", 1)[1])) for t in d["task_seconds"]}
    assert have == tasks and have
    assert all(s in d["seeds"] for _, s in have)


def test_seed_cache_only_from_the_same_code(tmp_path):
    at = _script()
    d = _committed()
    out = tmp_path / "out"
    out.mkdir()
    d["task_seconds"] = {t: v for t, v in list(d["task_seconds"].items())[:2]}
    (out / "accuracy.json").write_text(json.dumps(d))
    cache = tmp_path / "cache"
    cache.mkdir()
    assert at.seed_cache("mnist", out, "another key", cache) == []
    assert not list(cache.iterdir())
    seeded = at.seed_cache("mnist", out, d["code_key"], cache)
    assert len(seeded) == 2
    for model, seed in seeded:
        task = json.loads((cache / f"{model}_s{seed}.json").read_text())
        assert task["rows"] == [r for r in d["results"] if r["model"] == model and r["seed"] == seed]
    assert at.seed_cache("mnist", out, d["code_key"], cache) == []       # present already: not overwritten


def test_a_partial_table_says_what_is_missing(tmp_path):
    at = _script()
    d = _committed()
    model = d["results"][0]["model"]
    rows = [r for r in d["results"] if r["model"] == model and r["seed"] == 0]
    at.write_outputs("mnist", rows, [0, 1, 2], tmp_path, 1.0, d["code_key"], {f"{model}_s0": 1.0})
    md = (tmp_path / "accuracy.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("**Incomplete.**"))
    others = [m for m in at.SETTINGS["mnist"]["models"] if m != model]
    assert f"not in this table: {', '.join(others)}" in line
    assert f"{model}: 1 of 3 seeds (0)" in line
    assert json.loads((tmp_path / "accuracy.json").read_text())["code_key"] == d["code_key"]
