import json


from systolic.cli import main


def test_report_from_cycle_model(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["report", "--model", "digits-mlp", "--images", "8", "--out", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["counts_source"] == "executor" and rep["cycles_source"] == "cycle-model"
    assert rep["run"]["mismatches_vs_golden"] == 0
    acc = [l for l in rep["layers"] if l["placement"] == "accelerator"]
    # (With source "model" the total is the prediction by construction; that it equals the RTL's is
    # tests/sim/test_command_paths.py::test_report_from_the_rtl_equals_the_cycle_model.)
    assert acc and all(l["cycles"]["total"] > 0 for l in acc)
    for l in acc:
        c = l["cycles"]
        assert c["total"] == c["compute"] + c["stall"] + c["other"]
    assert rep["totals"]["cycles"] == sum(l["cycles"]["total"] for l in acc)
    assert all(0 < l["utilization"] <= l["ideal_utilization"] <= 1 for l in acc)
    saved = json.loads((out / "report.json").read_text())
    assert saved["schema"] == "systolic-report" and saved["version"] == 4
    assert "| component | energy (nJ) | share |" in (out / "report.md").read_text()
    for png in ("cycles.png", "energy.png", "utilization.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_report_energy_table_override_and_errors(tmp_path, capsys):
    table = tmp_path / "t.json"
    table.write_text(json.dumps({"entries": {"dram_lpddr4_bit": 0}}))
    assert main(["report", "--model", "digits-mlp", "--images", "2", "--out", str(tmp_path / "r"),
                 "--energy-table", str(table), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["totals"]["energy_pj"]["dram"] == 0
    table.write_text(json.dumps({"entries": {"warp_drive": 1}}))
    assert main(["report", "--images", "2", "--out", str(tmp_path / "r"), "--energy-table", str(table)]) == 1
    assert "unknown energy entry 'warp_drive'" in capsys.readouterr().err


def test_report_console_of_a_network_with_vector_layers(tmp_path, capsys):
    """digits-cnn's max-pools run on the vector unit: no GEMM, so no ideal utilization ('-' on the console), and
    their cycles and energy count in the totals."""
    assert main(["report", "--model", "digits-cnn", "--images", "2", "--out", str(tmp_path / "r")]) == 0
    lines = capsys.readouterr().out.splitlines()
    pools = [ln.split() for ln in lines if ln.split()[:1] in (["l3"], ["l7"])]
    assert len(pools) == 2 and all(p[1] == "accelerator" and p[6] == "-" and int(p[2]) > 0 for p in pools)
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    pool = {l["name"]: l for l in rep["layers"]}["l3"]
    assert pool["ideal_utilization"] is None and pool["energy_pj"]["vector"] > 0
    acc = [l for l in rep["layers"] if l["placement"] == "accelerator"]
    assert rep["totals"]["cycles"] == sum(l["cycles"]["total"] for l in acc)
