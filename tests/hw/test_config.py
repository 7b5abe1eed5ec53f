import json

import dataclasses

import pytest

from systolic.arch.config import PRESETS, AcceleratorConfig, load_config


def test_defaults_and_name():
    cfg = AcceleratorConfig()
    assert (cfg.rows, cfg.cols, cfg.dataflow, cfg.acc_bits) == (8, 8, "ws", 32)
    assert cfg.name == "systolic_ws_8x8_i8s_w8s_a32_o8s_he"
    assert PRESETS["default"] == cfg
    assert AcceleratorConfig(rows=4, cols=2, dataflow="os", in_bits=4, in_signed=False,
                             rounding="half_up", per_channel_shift=False).name == \
        "systolic_os_4x2_i4u_w8s_a32_o8s_hu_pt"
    assert AcceleratorConfig(shift_bits=5).name.endswith("_s5")


def test_presets():
    assert (PRESETS["tiny"].rows, PRESETS["tiny"].cols) == (2, 2)
    assert (PRESETS["small"].rows, PRESETS["small"].dataflow) == (4, "os")
    assert AcceleratorConfig.preset("default") is PRESETS["default"]
    with pytest.raises(ValueError, match=r"^preset must be one of tiny, small, default, large, not 'huge'$"):
        AcceleratorConfig.preset("huge")


def test_derived_widths():
    cfg = AcceleratorConfig()
    assert cfg.product_bits == 16
    assert AcceleratorConfig(in_signed=False).product_bits == 17
    assert cfg.psum_bits == 32
    assert cfg.in_range == (-128, 127)
    assert AcceleratorConfig(out_signed=False).out_range == (0, 255)
    assert cfg.shift_range == (-32, 31)
    assert cfg.max_product == 128 * 128
    assert cfg.max_safe_k == (2**31 - 1) // (128 * 128)
    assert cfg.max_safe_k * cfg.max_product <= 2**31 - 1 < (cfg.max_safe_k + 1) * cfg.max_product
    assert cfg.shift_lanes == 8 and AcceleratorConfig(per_channel_shift=False).shift_lanes == 1


@pytest.mark.parametrize("kwargs, exc, msg", [
    ({"rows": 0}, ValueError, "rows must be between 1 and 64, not 0"),
    ({"rows": 65}, ValueError, "rows must be between 1 and 64, not 65"),
    ({"cols": 0}, ValueError, "cols must be between 1 and 64, not 0"),
    ({"rows": 2.0}, TypeError, "rows must be an int, not 2.0"),
    ({"rows": True}, TypeError, "rows must be an int, not True"),
    ({"dataflow": "is"}, ValueError, "dataflow must be one of ws, os, not 'is'"),
    ({"dataflow": 1}, TypeError, "dataflow must be a str, not 1"),
    ({"in_bits": 1}, ValueError, "in_bits must be between 2 and 16, not 1"),
    ({"w_bits": 17}, ValueError, "w_bits must be between 2 and 16, not 17"),
    ({"in_signed": 1}, TypeError, "in_signed must be a bool, not 1"),
    ({"acc_bits": 49}, ValueError, "acc_bits must be between 8 and 48, not 49"),
    ({"acc_bits": 15}, ValueError, "acc_bits must be at least the product width 16, not 15"),
    ({"out_bits": 33}, ValueError, "out_bits must be between 2 and 32, not 33"),
    ({"acc_bits": 16, "out_bits": 20}, ValueError, "out_bits must be at most acc_bits (16), not 20"),
    ({"rounding": "nearest"}, ValueError, "rounding must be one of half_even, half_up, not 'nearest'"),
    ({"per_channel_shift": "yes"}, TypeError, "per_channel_shift must be a bool, not 'yes'"),
    ({"shift_bits": 8}, ValueError, "shift_bits must be between 2 and 7, not 8"),
    ({"bus_bytes": 3}, ValueError, "bus_bytes must be a power of two between 1 and 64, not 3"),
    ({"bus_bytes": 128}, ValueError, "bus_bytes must be between 1 and 64, not 128"),
    ({"acc_entries": 0}, ValueError, "acc_entries must be between 1 and 1048576, not 0"),
    ({"spad_a_bytes": 8}, ValueError, "spad_a_bytes must be between 16 and 16777216, not 8"),
])
def test_validation_messages(kwargs, exc, msg):
    with pytest.raises(exc) as info:
        AcceleratorConfig(**kwargs)
    assert str(info.value) == msg


def test_keyword_only_and_frozen():
    with pytest.raises(TypeError) as info:
        AcceleratorConfig(8, 8)
    assert type(info.value) is TypeError
    assert str(info.value) == "AcceleratorConfig.__init__() takes 1 positional argument but 3 were given"
    cfg = AcceleratorConfig()
    with pytest.raises(dataclasses.FrozenInstanceError) as info:
        cfg.rows = 4
    assert str(info.value) == "cannot assign to field 'rows'"
    assert cfg.replace(rows=4).rows == 4
    with pytest.raises(ValueError, match="^rows must be between 1 and 64, not 99$"):
        cfg.replace(rows=99)


def test_json_round_trip(tmp_path):
    for cfg in PRESETS.values():
        assert AcceleratorConfig.from_json(cfg.to_json()) == cfg
    cfg = AcceleratorConfig(rows=3, cols=5, dataflow="os", rounding="half_up", out_signed=False)
    path = cfg.save(tmp_path / "c.json")
    assert AcceleratorConfig.load(path) == cfg
    assert load_config(path) == cfg
    assert load_config(str(path)) == cfg
    assert load_config("tiny") is PRESETS["tiny"]


def test_json_refuses_unknown_keys(tmp_path):
    obj = AcceleratorConfig().to_dict()
    obj["colums"] = 4
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ValueError) as info:
        AcceleratorConfig.load(path)
    assert str(info.value).startswith(f"{path}: unknown accelerator config key(s): colums (known keys: ")
    with pytest.raises(ValueError, match="not valid JSON"):
        AcceleratorConfig.from_json("{")
    with pytest.raises(TypeError, match="^an accelerator config must be a JSON object, not 3$"):
        AcceleratorConfig.from_json("3")
    # Values are validated like constructor arguments.
    with pytest.raises(ValueError, match="rows must be between 1 and 64, not 0"):
        AcceleratorConfig.from_json(json.dumps({"rows": 0}))


def test_load_config_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^config must be a preset \(tiny, small, default, large\) "
                                         r"or an existing JSON file, not 'nope'$"):
        load_config("nope")
    with pytest.raises(TypeError, match="^config must be a preset name or a path, not 3$"):
        load_config(3)


def test_config_module_does_not_import_amaranth():
    import subprocess
    import sys

    code = "import sys, systolic.hw, systolic.arch.config, systolic.arch.ports; print('amaranth' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
