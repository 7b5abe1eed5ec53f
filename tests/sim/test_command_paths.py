"""Command paths the demo does not take: simulate on cocotb with --batch and a shipped model, report from
the RTL, and a half_up network through the compiler and the RTL."""

import json

import numpy as np
import pytest

from systolic.arch.config import PRESETS
from systolic.arch.machine import MachineSpec
from systolic.arch.memory import MemoryModel
from systolic.cli import main
from systolic.compiler import compile_network
from systolic.golden import load
from systolic.golden.random import random_input, random_network
from systolic.models import shipped_model_path
from systolic.quantize.data import load_for_network
from systolic.sim.system import run_network_rtl


def _golden_correct(model: str, images: int) -> int:
    """Correct predictions of the golden model on the first *images* test images: counted here."""
    net = load(shipped_model_path(model))
    x, y = load_for_network(net, "test")
    return int((net.predict(net.quantize_input(x[:images])) == y[:images]).sum())


@pytest.mark.slow
def test_simulate_cocotb_batched_shipped_model_equals_direct(tmp_path, capsys):
    runs = {}
    for backend in ("cocotb", "direct"):
        out = tmp_path / f"{backend}.json"
        assert main(["simulate", "--config", "small", "--model", "digits-mlp", "--images", "6", "--batch", "4",
                     "--backend", backend, "--no-progress", "--json", str(out)]) == 0
        text = capsys.readouterr().out
        assert "mismatches vs golden: 0 of" in text
        runs[backend] = json.loads(out.read_text())
    cocotb, direct = runs["cocotb"], runs["direct"]
    assert cocotb["images"] == 6 and cocotb["mismatches"] == 0
    # Two batches (4 + 2 images) on one simulator; cycles per layer equal to the other simulator's.
    assert [r["cycles"] for r in cocotb["layers"]] == [r["cycles"] for r in direct["layers"]]
    assert cocotb["cycles"] == sum(r["cycles"] for r in cocotb["layers"]) > 0
    assert round(cocotb["accuracy_rtl"] * 6) == _golden_correct("digits-mlp", 6)


@pytest.mark.parametrize("batch", ["0", "-1"])
def test_simulate_rejects_a_bad_batch(capsys, batch):
    assert main(["simulate", "--config", "small", "--model", "digits-mlp", "--images", "2", "--batch", batch]) == 1
    out = capsys.readouterr()
    assert out.err == f"systolic: error: batch must be a positive int, not {batch}\n" and out.out == ""


@pytest.mark.slow
def test_report_from_the_rtl_equals_the_cycle_model(tmp_path, capsys):
    reports = {}
    for source in ("rtl", "model"):
        out = tmp_path / source
        assert main(["report", "--model", "digits-mlp", "--config", "small", "--images", "4", "--source", source,
                     "--out", str(out), "--json"]) == 0
        reports[source] = json.loads(capsys.readouterr().out)
    rtl, model = reports["rtl"], reports["model"]
    assert rtl["counts_source"] == "rtl" and rtl["cycles_source"] == "rtl"
    assert rtl["run"]["mismatches_vs_golden"] == 0
    acc = {l["name"]: l for l in rtl["layers"] if l["placement"] == "accelerator"}
    assert acc
    # The RTL's cycles (measured) against the cycle model's (predicted) of the other report: equal,
    # layer by layer, on the deterministic memory.
    for l in model["layers"]:
        if l["placement"] == "accelerator":
            assert acc[l["name"]]["cycles"]["total"] == l["cycles"]["total"] > 0, l["name"]
    assert rtl["totals"]["cycles"] == model["totals"]["cycles"]


def test_half_up_network_through_compiler_and_rtl():
    """A half_up network on a half_up accelerator: every tensor equals the golden model's (amaranth.sim)."""
    cfg = PRESETS["tiny"].replace(rounding="half_up", spad_a_bytes=4096, spad_w_bytes=4096, acc_entries=256)
    net = random_network(3, "mlp", 8, rounding="half_up")
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=1 << 14), batch=2)
    x = random_input(net, 2, 3)
    run = run_network_rtl(cn, x, cfg, MemoryModel(), backend="amaranth")
    gold = net.run(x)
    assert list(run.outputs) == list(gold)
    for name in gold:
        assert np.array_equal(run.outputs[name], gold[name]), name
    # ... and the rounding is the one that matters: half_even gives other results on this network.
    even = random_network(3, "mlp", 8, rounding="half_even").run(x)
    assert any(not np.array_equal(even[n], gold[n]) for n in gold)
