"""The Accelerator RTL (cocotb + Verilator) running compiled networks: exact equality with the golden model.

Two configs: the ``small`` preset (4x4 output-stationary, 4-byte bus) and the
``default`` preset (8x8 weight-stationary, 8-byte bus). Each network runs in
one simulator process (host layers on the golden model inside it). Besides
the outputs of every layer, every test checks the RTL performance counters
against the NumPy executor's (same events) and, with a stall-free memory,
the cycle counters against the formulas of docs/isa.md
(:mod:`systolic.arch.timing`).
"""

import numpy as np
import pytest

from systolic.compiler import Executor, Instr, MachineSpec, Opcode, ProgramError, Target, compile_network, \
    run_compiled
from systolic.arch.isa import VecOp, encode_program
from systolic.compiler.lower import AccelStep
from systolic.golden.random import NETWORK_KINDS, random_input, random_network
from systolic.arch.config import PRESETS
from systolic.arch.sysmap import CONTROLLER_UNITS, EXECUTOR_COUNTERS, UNITS
from systolic.report.cycles import extra_accept_cycles
from systolic.arch.timing import program_cycles
from systolic.arch.memory import MemoryModel, program_address
from systolic.sim.backend import RTLProgramError
from systolic.sim.system import run_network_rtl, run_program_rtl

CONFIGS = [PRESETS["small"], PRESETS["default"]]
DRAM_BYTES = 1 << 16
MODEL_DRAM_BYTES = 1 << 18   # digits-resnet at batch 32 needs about 70 KB of tensors


def _ids(cfg):
    return f"{cfg.dataflow}{cfg.rows}x{cfg.cols}"


def check_run(cn, x, cfg, memory, run=None):
    """Run *cn* on RTL; assert outputs == golden and counters == executor (and cycle formulas if stall-free)."""
    run = run or run_network_rtl(cn, x, cfg, memory)
    gold = cn.net.run(x)
    assert list(run.outputs) == list(gold)
    for name in gold:
        assert run.outputs[name].shape == gold[name].shape
        mismatches = int(np.count_nonzero(run.outputs[name] != gold[name]))
        assert mismatches == 0, f"layer {name}: {mismatches} elements differ from the golden model"
    _, ex = run_compiled(cn, x)
    assert list(run.counters) == list(ex)
    prog_addr = program_address(cn.spec.dram_bytes)
    programs = {s.layer: s.program for s in cn.steps if isinstance(s, AccelStep)}
    requests = late = 0
    for layer, c in run.counters.items():
        want = ex[layer].to_dict()
        assert c.executor_view() == {k: want[k] for k in EXECUTOR_COUNTERS}, layer
        assert c.by_opcode == want["by_opcode"], layer
        assert c.rtl["cycles"] == sum(c.rtl[f"{u}_busy"] for u in CONTROLLER_UNITS)
        assert c.rtl["matmul_busy"] <= c.rtl["cycles"]
        assert c.rtl["fetch_bytes"] == 16 * c.instructions
        d0 = memory.base_delay(cfg.bus_bytes)
        pred = program_cycles(cfg, programs[layer], prog_addr, d0, memory.latency)
        if memory.stall == 0:
            assert {k: c.rtl[k] for k in pred} == pred, layer
        else:
            # Random stalls only postpone events, by at most the extra accept cycles drawn.
            assert c.rtl["bus_reads"] == pred["bus_reads"] and c.rtl["bus_writes"] == pred["bus_writes"]
            assert c.rtl["cycles"] >= pred["cycles"], layer
            requests += pred["bus_reads"] + pred["bus_writes"]
            late += c.rtl["cycles"] - pred["cycles"]
    if memory.stall:
        assert 0 < late <= extra_accept_cycles(requests, cfg, memory)
    return run


@pytest.mark.slow
@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
@pytest.mark.parametrize("kind", NETWORK_KINDS)
def test_random_network_equals_golden(cfg, kind):
    seed = NETWORK_KINDS.index(kind) + 10 * CONFIGS.index(cfg)
    net = random_network(seed, kind, 8, per_channel=bool(seed % 2))
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=DRAM_BYTES), batch=2)
    check_run(cn, random_input(net, 2, seed), cfg, MemoryModel(latency=2))


@pytest.mark.slow
@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_random_memory_stalls(cfg):
    """Random accept stalls, long latency and a narrow memory: same outputs and event counts, more cycles."""
    net = random_network(7, "resnet", 8, input_hw=6)
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=DRAM_BYTES), batch=2)
    x = random_input(net, 2, 7)
    slow = MemoryModel(latency=5, bytes_per_cycle=2, stall=0.4, seed=3)
    run = check_run(cn, x, cfg, slow)
    fast = run_network_rtl(cn, x, cfg, MemoryModel(latency=1))
    for layer, c in run.counters.items():
        assert c.rtl["cycles"] > fast.counters[layer].rtl["cycles"]
        assert sum(c.rtl[f"{u}_stall"] for u in UNITS) > 0


def _digits(name):
    from systolic.models import shipped_model_path
    from systolic.quantize.data import load_for_network

    from systolic.golden import load

    net = load(shipped_model_path(name))   # shipped with the package: a missing or corrupt one is a failure
    x, _ = load_for_network(net, "test")
    return net, net.quantize_input(x[:32])


@pytest.mark.slow
@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
@pytest.mark.parametrize("model", ["digits-mlp", "digits-cnn", "digits-resnet"])
def test_shipped_model_32_images(cfg, model):
    net, x = _digits(model)
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=MODEL_DRAM_BYTES), batch=32)
    check_run(cn, x, cfg, MemoryModel(latency=2))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["digits-mlp", "digits-cnn", "digits-resnet"])
def test_shipped_model_on_cocotb(model):
    """The cocotb + Verilator testbench (not only the direct driver) runs every shipped model bit-exactly."""
    cfg = CONFIGS[1]
    net, x = _digits(model)
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=MODEL_DRAM_BYTES), batch=32)
    memory = MemoryModel(latency=2, stall=0.1, seed=5)
    check_run(cn, x, cfg, memory, run=run_network_rtl(cn, x, cfg, memory, backend="cocotb"))


@pytest.mark.slow
def test_shipped_model_with_random_stalls():
    cfg = CONFIGS[0]
    net, x = _digits("digits-cnn")
    cn = compile_network(net, MachineSpec.from_config(cfg, dram_bytes=MODEL_DRAM_BYTES), batch=32)
    check_run(cn, x, cfg, MemoryModel(latency=3, bytes_per_cycle=2, stall=0.3, seed=11))


# ------------------------------------------------------------------------------- bad programs
SMALL = PRESETS["small"]
_A_LINES = SMALL.spad_a_bytes // SMALL.rows

BAD_PROGRAMS = {
    "dram": [Instr(Opcode.LOAD, dict(target=Target.A, lines=1, elems=4, dram=254, stride=4))],
    "spad": [Instr(Opcode.LOAD, dict(target=Target.A, lines=2, spad=_A_LINES - 1, elems=4))],
    "line": [Instr(Opcode.LOAD, dict(target=Target.W, lines=1, elems=3, offset=2))],
    "acc": [Instr(Opcode.FENCE), Instr(Opcode.MATMUL, dict(m=1, acc=SMALL.acc_entries))],
    "bits": [Instr(Opcode.STORE, dict(lines=1, elems=4, bits=9))],
    "store_dram": [Instr(Opcode.STORE, dict(lines=3, elems=4, bits=8, dram=240, stride=20))],
    "overflow": [Instr(Opcode.LOAD, dict(target=Target.A, lines=1, elems=1, dram=0)),
                 Instr(Opcode.LOAD, dict(target=Target.W, lines=1, elems=1, dram=1)),
                 Instr(Opcode.MATMUL, dict(m=1, shift=17)),
                 Instr(Opcode.MATMUL, dict(m=1, shift=17, accumulate=1))],
    # The vector unit: a pooling window past the data window or past the accumulator, a bad op, a shift
    # that overflows the accumulator (127 << 31 > 2**31 - 1), an even divisor, a DIV result out of range.
    "vec_dram": [Instr(Opcode.VEC, dict(op=VecOp.MAX, lines=2, elems=4, dram=250, stride=4))],
    "vec_acc": [Instr(Opcode.VEC, dict(op=VecOp.SET, lines=2, acc=SMALL.acc_entries - 1, elems=4))],
    "vec_elems": [Instr(Opcode.VEC, dict(op=VecOp.ADD, lines=1, elems=5))],
    "vec_op": [Instr(Opcode.FENCE), Instr(Opcode.VEC, dict(op=3, lines=1, elems=1))],
    "vec_shift": [Instr(Opcode.VEC, dict(op=VecOp.SET, lines=1, elems=2, shift=24)),
                  Instr(Opcode.VEC, dict(op=VecOp.ADD, lines=1, elems=2, shift=31))],
    "vec_max_shift": [Instr(Opcode.VEC, dict(op=VecOp.MAX, lines=1, elems=1, shift=31))],
    "div_even": [Instr(Opcode.DIV, dict(lines=1, elems=4, divisor=6))],
    "div_acc": [Instr(Opcode.DIV, dict(lines=3, acc=SMALL.acc_entries - 2, elems=4, divisor=3))],
    "div_overflow": [Instr(Opcode.VEC, dict(op=VecOp.SET, lines=1, elems=1, shift=23)),      # 127 << 23
                     Instr(Opcode.DIV, dict(lines=1, elems=1, divisor=1))],               # 4 * that
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_PROGRAMS) + ["no_halt"])
def test_bad_program_sets_error_status_and_raises(case):
    """The RTL's error status gives the executor's message, word for word."""
    prog = BAD_PROGRAMS.get(case, [Instr(Opcode.FENCE)])
    if case != "no_halt":
        prog = prog + [Instr(Opcode.HALT)]
    dram = np.zeros(256, dtype=np.uint8)
    dram[:2] = 127
    with pytest.raises(ProgramError) as want:
        Executor(MachineSpec.from_config(SMALL, dram_bytes=256), dram.copy()).run(prog)
    with pytest.raises(RTLProgramError) as got:
        run_program_rtl(SMALL, dram.copy(), prog)
    assert str(got.value) == str(want.value)
    assert got.value.index == want.value.index and got.value.code > 0


@pytest.mark.slow
def test_bad_opcode():
    blob = encode_program([Instr(Opcode.FENCE)]) + (9).to_bytes(16, "little") + encode_program([Instr(Opcode.HALT)])
    with pytest.raises(RTLProgramError, match=r"^instruction 1: bad opcode 9$"):
        run_program_rtl(SMALL, np.zeros(64, dtype=np.uint8), blob)


@pytest.mark.slow
def test_run_program_rtl_as_run_compiled_accel():
    """The per-program API plugs into run_compiled (one simulator process per layer)."""
    net = random_network(2, "mlp", 8)
    cn = compile_network(net, MachineSpec.from_config(SMALL, dram_bytes=4096), batch=1)
    x = random_input(net, 1, 2)
    outs, counters = run_compiled(cn, x, accel=lambda spec, dram, prog: run_program_rtl(SMALL, dram, prog))
    gold = net.run(x)
    for name in gold:
        assert np.array_equal(outs[name], gold[name]), name
    _, ex = run_compiled(cn, x)
    for layer in ex:
        assert counters[layer].executor_view() == {k: getattr(ex[layer], k) for k in EXECUTOR_COUNTERS}


def test_api_errors():
    net = random_network(0, "mlp", 8)
    cn = compile_network(net, MachineSpec.from_config(SMALL, dram_bytes=4096), batch=1)
    with pytest.raises(ValueError, match="the network was compiled for"):
        run_network_rtl(cn, random_input(net, 1, 0), PRESETS["default"])
    with pytest.raises(ValueError, match="compiled for batch 1, not 2"):
        run_network_rtl(cn, random_input(net, 2, 0), SMALL)
    with pytest.raises(TypeError, match="memory must be a MemoryModel"):
        run_network_rtl(cn, random_input(net, 1, 0), SMALL, memory={"latency": 1})
    with pytest.raises(TypeError, match="dram must be a 1-D uint8 array"):
        run_program_rtl(SMALL, np.zeros(4, dtype=np.int64), [Instr(Opcode.HALT)])
    with pytest.raises(ValueError, match="latency must be an int between 1 and 1000, not 0"):
        MemoryModel(latency=0)
    for bad in (1.0, 0.9999999, -0.1, True):
        with pytest.raises(ValueError) as info:
            MemoryModel(stall=bad)
        assert str(info.value) == ("stall must be a probability between 0 and 0.99 (each request waits "
                                   f"stall / (1 - stall) extra cycles on average), not {bad!r}")
    assert MemoryModel(stall=0.99).stall == 0.99


@pytest.mark.slow
def test_simulate_command(tmp_path, capsys):
    import argparse
    import json

    from systolic.sim import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    out = tmp_path / "s.json"
    args = parser.parse_args(["simulate", "--config", "small", "--model", "random:mlp", "--images", "3",
                              "--stall", "0.2", "--json", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "mismatches vs golden: 0 of" in text and "images/s" in text
    summary = json.loads(out.read_text())
    assert summary["mismatches"] == 0 and summary["images"] == 3
    assert summary["cycles"] == sum(r["cycles"] for r in summary["layers"])


def test_commands_module_imports_no_amaranth_or_cocotb():
    import subprocess
    import sys

    code = "import sys, systolic.sim.commands; print('amaranth' in sys.modules or 'cocotb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
