"""Running a subset of a network's layers (``systolic simulate --layers``): each chosen layer on its golden
inputs, compared and counted alone, with the same cycles as in a run of the whole network."""

import json

import numpy as np
import pytest

from systolic.arch.config import load_config
from systolic.cli import main
from systolic.compiler.run import ExecutorRunner, run_network
from systolic.flows import compile_checked, run_images, select_layers
from systolic.golden.random import random_input, random_network


def _net():
    return random_network(3, "mixed", 8)


def test_select_layers_names_patterns_and_order():
    net = _net()
    names = [l.name for l in net.layers]
    # Patterns and names, given out of order: the result keeps the network's order, each layer once.
    got = select_layers(net, "fc, *conv*,pw")
    assert got == [n for n in names if n == "fc" or "conv" in n or n == "pw"]
    assert len(got) == len(set(got)) and "fc" in got and "gconv" in got
    assert select_layers(net, ["dw"]) == ["dw"]


@pytest.mark.parametrize("spec, message", [
    ("nope", "no layer matches 'nope'; the layers are conv1, dw,"),
    ("conv1,layer9.*", "no layer matches 'layer9.*'"),
    (" , ", "no layer named"),
])
def test_select_layers_errors(spec, message):
    with pytest.raises(ValueError) as e:
        select_layers(_net(), spec)
    assert message in str(e.value)


def test_subset_on_the_executor_equals_the_whole_run():
    net = _net()
    cfg = load_config("small")
    x = random_input(net, 2, 5)
    whole = run_images(net, cfg, x, source="model", batch=2, progress=False)
    chosen = ["pw", "add1", "gap", "fc"]          # inputs from layers that do not run: their golden values
    part = run_images(net, cfg, x, source="model", batch=2, progress=False, layers=chosen)
    assert whole.bit_exact and part.bit_exact
    assert list(part.counters) == chosen and list(part.outputs) == ["input", *chosen]
    assert part.compared == sum(int(np.prod(part.outputs[n].shape)) for n in ["input", *chosen])
    for name in chosen:
        assert np.array_equal(part.outputs[name], whole.outputs[name]), name
        assert part.cycles[name] == whole.cycles[name], name
    assert part.total_cycles < whole.total_cycles


def test_subset_reads_its_inputs_from_the_golden_tensors_given():
    """The chosen layer computes on the tensors handed in, not on what earlier layers would have left: a
    changed input tensor changes its output exactly as the golden layer says."""
    net = _net()
    cfg = load_config("small")
    x = random_input(net, 1, 7)
    cn = compile_checked(net, cfg, 1)
    gold = net.run(x)
    changed = dict(gold)
    layer = net.layer("pw")
    (src,) = layer.inputs
    changed[src] = np.clip(gold[src][..., ::-1], -128, 127)      # channels reversed: a different input
    from systolic.arch.machine import MachineSpec

    run = run_network(cn, x, ExecutorRunner(MachineSpec.from_config(cfg, dram_bytes=cn.spec.dram_bytes)),
                      only=["pw"], golden=changed)
    want = layer.forward([changed[src]], net.in_types(layer), net.rounding)
    assert not np.array_equal(want, gold["pw"])
    assert np.array_equal(run.outputs["pw"], want)


def test_subset_errors():
    net = _net()
    cfg = load_config("small")
    cn = compile_checked(net, cfg, 1)
    runner = ExecutorRunner(cn.spec)
    x = random_input(net, 1, 0)
    with pytest.raises(ValueError, match="needs the golden tensors"):
        run_network(cn, x, runner, only=["pw"])
    with pytest.raises(ValueError, match="no layer named 'zz'"):
        run_network(cn, x, runner, only=["zz"], golden=net.run(x))
    with pytest.raises(ValueError, match=r"no layer of those chosen runs on the accelerator \S+ \(flat: flatten"):
        compile_checked(net, cfg, 1, layers=["flat"])


def test_simulate_rejects_an_unknown_layer_before_building(capsys):
    assert main(["simulate", "--config", "small", "--model", "random:mixed", "--images", "1",
                 "--layers", "conv1,missing*", "--backend", "amaranth"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("systolic: error: no layer matches 'missing*'; the layers are conv1,")


@pytest.mark.slow
def test_simulate_layers_on_the_rtl(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["simulate", "--config", "small", "--model", "random:mixed", "--images", "2", "--layers",
                 "dw,add1,fc", "--no-progress", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "only 3 layers ran, each on its golden inputs: dw, add1, fc" in text
    s = json.loads(out.read_text())
    assert s["mismatches"] == 0 and s["layers_run"] == ["dw", "add1", "fc"]
    assert [r["layer"] for r in s["layers"]] == ["dw", "add1", "fc"]
    # The RTL's counters against the cycle model's prediction for the same programs.
    assert s["cycles"] == s["cycles_predicted"] == sum(r["cycles"] for r in s["layers"]) > 0
    net = random_network(0, "mixed", 8)
    assert s["compared_elements"] == 2 * sum(int(np.prod(net.run(random_input(net, 1, 0))[n].shape[1:]))
                                             for n in ("input", "dw", "add1", "fc"))
