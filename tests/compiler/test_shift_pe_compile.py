"""The compiler and the executor for a shift PE (pe="shift"): refusal of other weights, the DRAM encoding,
exact equality with the golden model; the config option and its energy."""

import json

import numpy as np
import pytest

from systolic.arch.config import PRESETS, AcceleratorConfig
from systolic.arch.sysmap import EXECUTOR_COUNTERS
from systolic.compiler import CompileError, MachineSpec, Opcode, Target, compile_network, run_compiled
from systolic.golden import Dense, QType, QuantizedNetwork
from systolic.golden.pe_weights import decode_shift_words, encode_shift_weights, shift_weight_values
from systolic.golden.random import NETWORK_KINDS, random_input, random_shift_network
from systolic.report.energy import estimate_energy

SHIFT = MachineSpec(rows=4, cols=4, a_lines=256, w_lines=64, acc_lines=64, pe="shift")
RULE = "0 and +-2**e for 0 <= e <= 6 (+-1 .. +-64) with 8-bit weights"


def _dense_net(weight, extra=None):
    rng = np.random.default_rng(0)
    k, n = weight.shape
    kw = {} if extra is None else dict(extra_weights=extra, extra_shifts=[4] * len(extra))
    layer = Dense(name="fc", inputs=("input",), weight=weight, w_type=QType(8, True, 4),
                  out_type=QType(8, True, 0), bias=rng.integers(-50, 50, n), **kw)
    return QuantizedNetwork(QType(8, True, 4), (k,), [layer])


def test_refuses_a_weight_the_shift_pe_cannot_take():
    w = np.full((5, 6), 4)
    w[3, 2] = -3
    with pytest.raises(CompileError) as info:
        compile_network(_dense_net(w), SHIFT)
    assert str(info.value) == f"layer 'fc': weight[3, 2] is -3, which the shift PE cannot take: it takes {RULE}"
    compile_network(_dense_net(w), MachineSpec(rows=4, cols=4, a_lines=256, w_lines=64, acc_lines=64))


def test_refuses_an_extra_weight_point():
    e = np.zeros((2, 5, 6), np.int64)
    e[1, 0, 4] = 127
    with pytest.raises(CompileError) as info:
        compile_network(_dense_net(np.ones((5, 6), np.int64), extra=e), SHIFT)
    assert str(info.value) == (f"layer 'fc': extra_weights[1][0, 4] is 127, which the shift PE cannot take: "
                               f"it takes {RULE}")
    e[1, 0, 4] = -64
    assert compile_network(_dense_net(np.ones((5, 6), np.int64), extra=e), SHIFT).placement["fc"] == "accelerator"


def _weight_bytes(cn):
    """Every byte a program LOADs into scratchpad W, as signed values, in program order."""
    out = []
    for step in cn.steps:
        for ins in getattr(step, "program", []):
            a = ins.args
            if ins.op == Opcode.LOAD and a["target"] == Target.W:
                idx = a["dram"] + a["stride"] * np.arange(a["lines"])[:, None] + np.arange(a["elems"])[None, :]
                out.append(cn.image[idx].astype(np.int8).astype(np.int64).ravel())
    return np.concatenate(out)


@pytest.mark.parametrize("kind", NETWORK_KINDS)
def test_weights_go_to_dram_as_shift_words(kind):
    net = random_shift_network(4, kind, 8)
    mult = compile_network(net, MachineSpec(rows=4, cols=4, a_lines=256, w_lines=64, acc_lines=64), batch=2)
    shift = compile_network(net, SHIFT, batch=2)
    values, words = _weight_bytes(mult), _weight_bytes(shift)
    assert len(words) == len(values) and np.count_nonzero(values) > 20
    assert (words == encode_shift_weights(values, 8)).all()
    assert (decode_shift_words(words, 8) == values).all()
    assert not (words == values).all()
    # Only the weight words differ: the programs and every other byte are the same.
    assert [s.program for s in shift.steps if hasattr(s, "program")] == \
        [s.program for s in mult.steps if hasattr(s, "program")]


@pytest.mark.parametrize("preset", ["tiny", "small", "default"])
@pytest.mark.parametrize("kind", NETWORK_KINDS)
def test_executor_equals_golden(preset, kind):
    cfg = PRESETS[preset].replace(pe="shift")
    net = random_shift_network(NETWORK_KINDS.index(kind), kind, 8, per_channel=kind == "cnn")
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=1 << 16), batch=2)
    assert cn.spec.pe == "shift"
    x = random_input(net, 2, 1)
    outs, _ = run_compiled(cn, x)
    gold = net.run(x)
    for name in gold:
        assert np.array_equal(outs[name], gold[name]), name


def test_random_shift_network_has_varied_shift_weights():
    net = random_shift_network(0, "resnet", 8)
    ws = np.concatenate([layer.weight.ravel() for layer in net.layers if hasattr(layer, "weight")])
    assert set(np.unique(ws).tolist()) <= set(shift_weight_values(8).tolist())
    assert len(np.unique(ws)) >= 8 and (ws < 0).any() and (ws == 0).any()


@pytest.mark.parametrize("kwargs, exc, msg", [
    ({"pe": "adder"}, ValueError, "pe must be one of multiplier, shift, not 'adder'"),
    ({"pe": 1}, TypeError, "pe must be a str, not 1"),
    ({"pe": "shift", "w_signed": False}, ValueError,
     "pe 'shift' needs w_signed=True: its weights are 0 and +-2**e, the word has a sign bit"),
])
def test_config_validation(kwargs, exc, msg):
    with pytest.raises(exc) as info:
        AcceleratorConfig(**kwargs)
    assert type(info.value) is exc and str(info.value) == msg
    with pytest.raises(ValueError, match=r"^pe must be one of multiplier, shift, not 'adder'$"):
        MachineSpec(rows=1, cols=1, a_lines=1, w_lines=1, acc_lines=1, pe="adder")


def test_config_name_json_and_derived_configs(tmp_path):
    cfg = AcceleratorConfig()
    assert cfg.pe == "multiplier" and cfg.name == "systolic_ws_8x8_i8s_w8s_a32_o8s_he"
    assert "pe" not in cfg.to_dict() and '"pe"' not in cfg.to_json()     # saved files and build keys unchanged
    shift = cfg.replace(pe="shift", dataflow="os")
    assert shift.name == "systolic_os_8x8_i8s_w8s_a32_o8s_he_shiftpe"
    assert json.loads(shift.to_json())["pe"] == "shift"
    assert AcceleratorConfig.load(shift.save(tmp_path / "s.json")) == shift
    assert AcceleratorConfig.from_dict({"pe": "multiplier"}) == cfg
    assert MachineSpec.from_config(shift).pe == "shift" and MachineSpec.from_config(cfg).pe == "multiplier"
    # The system's array: the shift PE takes the 8-bit word, the multiplier a 9-bit signed weight.
    assert (shift.array_config.pe, shift.array_config.w_bits, cfg.array_config.w_bits) == ("shift", 8, 9)
    assert shift.array_config.acc_bits == cfg.array_config.acc_bits
    assert shift.latencies == cfg.latencies


def test_energy_of_a_shift_mac():
    counters = {k: 0 for k in EXECUTOR_COUNTERS}
    counters["macs"] = 1000
    mult = estimate_energy(counters, AcceleratorConfig())
    shift = estimate_energy(counters, AcceleratorConfig(pe="shift"))
    t = mult.table
    add = t["add_int32"]
    assert mult.components["mac"] == pytest.approx(1000 * (t["mac_int8_mul"] + add))
    assert shift.components["mac"] == pytest.approx(1000 * (t["shifter_32"] * 8 / 32 + add))
    assert shift.components["mac"] < mult.components["mac"]
    assert {k: v for k, v in shift.components.items() if k != "mac"} == \
        {k: v for k, v in mult.components.items() if k != "mac"}
