"""Networks quantized with DSConv, INQ, adaptive multipoint and first/last-layer precision run bit-exactly on
the Accelerator RTL (direct Verilator driver), with counters equal to the executor and cycles equal to the
cycle formulas, on a weight-stationary and an output-stationary config."""

import numpy as np
import pytest

from tests.requirements import require

torch = require("torch", "quantize")

from systolic.arch.config import PRESETS  # noqa: E402
from systolic.arch.memory import MemoryModel  # noqa: E402
from systolic.compiler import CompileError, MachineSpec, compile_network  # noqa: E402
from systolic.quantize.data import load_for_network  # noqa: E402
from systolic.quantize.methods import quantize_model  # noqa: E402
from systolic.quantize.zoo import train_float  # noqa: E402
from tests.sim.test_system_rtl import MODEL_DRAM_BYTES, _ids, check_run  # noqa: E402

RECIPES = {"dsconv-w4a8": ("dsconv", 4, 8, None), "inq-w4a8": ("inq", 4, 8, None),
           "multipoint-w4a8": ("multipoint", 4, 8, None), "max-w4a4-fl8": ("max", 4, 4, 8)}


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    fnet = train_float("digits-cnn", seed=0, epochs=3)
    return {k: quantize_model("digits-cnn", m, wb, ab, float_net=fnet, first_last_bits=fl, epochs=1).network
            for k, (m, wb, ab, fl) in RECIPES.items()}


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [PRESETS["small"], PRESETS["default"]], ids=_ids)
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_quantized_method_equals_golden_on_rtl(models, recipe, cfg):
    net = models[recipe]
    x, _ = load_for_network(net, "test")
    xq = net.quantize_input(x[:3])
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=MODEL_DRAM_BYTES), batch=3)
    check_run(cn, xq, cfg, MemoryModel(latency=2))
    if recipe.startswith("dsconv"):
        assert any(len(l.points) > 1 for l in net.layers if hasattr(l, "points"))
    if recipe.startswith("inq"):
        for layer in net.layers:
            if hasattr(layer, "points"):
                mags = np.unique(np.abs(layer.weight))
                assert set(mags.tolist()) <= {0, 1, 2, 4}


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [PRESETS["small"].replace(pe="shift"), PRESETS["default"].replace(pe="shift")],
                         ids=_ids)
def test_inq_network_on_the_shift_pe(models, cfg):
    """INQ's weights (0, +-2**e) on the shift PE: bit-exact, so its accuracy is the golden model's; a network
    with other weights is refused."""
    net = models["inq-w4a8"]
    x, _ = load_for_network(net, "test")
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=MODEL_DRAM_BYTES), batch=3)
    check_run(cn, net.quantize_input(x[:3]), cfg, MemoryModel(latency=2))
    with pytest.raises(CompileError, match="shift PE"):
        compile_network(models["max-w4a4-fl8"], MachineSpec.from_config(cfg, dram_bytes=MODEL_DRAM_BYTES), batch=1)
