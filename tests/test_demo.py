"""The main job: ``systolic demo --json`` end to end on the RTL."""

import json

from systolic.cli import main


def test_demo_json_is_bit_exact_and_writes_a_report(tmp_path, capsys):
    out = tmp_path / "rep"
    rc = main(["demo", "--images", "8", "--out", str(out), "--json"])
    r = json.loads(capsys.readouterr().out)
    assert rc == 0
    for key in ("bit_exact", "images", "mismatches", "accuracy_rtl", "accuracy_golden", "cycles"):
        assert key in r
    assert r["bit_exact"] is True and r["mismatches"] == 0 and r["images"] == 8
    assert r["accuracy_rtl"] == r["accuracy_golden"]
    # The analytic cycle model equals the RTL's counters on the deterministic memory model.
    assert r["cycles"] == r["cycles_predicted"] > 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["schema"] == "systolic-report" and rep["counts_source"] == "rtl"
    assert {l["placement"] for l in rep["layers"]} >= {"accelerator"}
    # host_layers: every layer placed on the host but the flatten (a no-op), with the placement's reason.
    kinds = {l["name"]: l["kind"] for l in rep["layers"]}
    on_host = [n for n, p in r["placement"].items() if p != "accelerator" and kinds[n] != "flatten"]
    assert [h["layer"] for h in r["host_layers"]] == on_host and rep["host_layers"] == r["host_layers"]
    assert all(r["placement"][h["layer"]] == "host: " + h["reason"] for h in r["host_layers"])
    for name in ("report.md", "cycles.png", "energy.png", "utilization.png", "demo.json"):
        assert (out / name).stat().st_size > 0
    assert list((out / "verilog").glob("*.v"))


def test_demo_rejects_bad_image_count(capsys):
    assert main(["demo", "--images", "0"]) == 1
    assert "images must be a positive int, not 0" in capsys.readouterr().err
