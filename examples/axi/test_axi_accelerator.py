"""Example cocotb tests of the accelerator's AXI top (``systolic generate --top axi``): copy and adapt.

What they check, with random back-pressure on every AXI channel (cocotbext-axi's AxiRam and
AxiLiteMaster, driven by systolic.fpga.axi_tb.AxiAcceleratorTB and its host driver):

- a shipped network compiled for the DUT's config runs bit-exactly: every tensor equals the golden
  model's, and each layer's event counters (MACs, bytes, scratchpad and accumulator accesses) equal
  the NumPy executor's;
- a program that writes past its data window stops with error 3 at the right instruction, raises the
  interrupt and writes nothing;
- the registers read back as written, and an address outside the register map reads 0.

Settings from the environment (the pytest launcher tests/fpga/test_axi_sim.py sets them):
SYSTOLIC_CONFIG (a preset name or a JSON config file; it must be the config the DUT was generated from),
SYSTOLIC_MODEL (default digits-mlp), SYSTOLIC_IMAGES (2), SYSTOLIC_BACKPRESSURE (0.3), SYSTOLIC_SEED (0),
SYSTOLIC_AXI_RESULT (a JSON file for the per-layer counters, optional).

Build and run with cocotb's runner, e.g.::

    systolic generate --top axi --config tiny --out build/axi
    # then cocotb_tools.runner.get_runner("verilator").build(sources=[...v], hdl_toplevel=<module>) and
    # .test(test_module="test_axi_accelerator", hdl_toplevel=<module>, ...)
"""

import json
import os

import cocotb
import numpy as np

from systolic.arch.config import load_config
from systolic.arch.isa import encode_program
from systolic.arch.sysmap import EXECUTOR_COUNTERS, csr_map
from systolic.compiler import Instr, Opcode, Target
from systolic.compiler.run import run_compiled
from systolic.flows import compile_checked, load_inputs, resolve_model
from systolic.fpga.axi_tb import AxiAcceleratorTB
from systolic.fpga.driver import AcceleratorError


def _settings():
    return (load_config(os.environ.get("SYSTOLIC_CONFIG", "tiny")), os.environ.get("SYSTOLIC_MODEL", "digits-mlp"),
            int(os.environ.get("SYSTOLIC_IMAGES", "2")), float(os.environ.get("SYSTOLIC_BACKPRESSURE", "0.3")),
            int(os.environ.get("SYSTOLIC_SEED", "0")))


@cocotb.test()
async def network_is_bit_exact(dut):
    cfg, model, images, backpressure, seed = _settings()
    net, kind = resolve_model(model)
    x, _ = load_inputs(net, images, seed, kind)
    cn = compile_checked(net, cfg, len(x))
    program_room = max(16 * len(s.program) for s in cn.steps if hasattr(s, "program")) + 16
    tb = AxiAcceleratorTB(dut, mem_bytes=cn.image.size + program_room, backpressure=backpressure, seed=seed)
    await tb.reset()
    outputs, counters = await tb.run_network(cn, x)

    gold = net.run(x)
    for name, want in gold.items():
        assert np.array_equal(outputs[name], want), f"layer {name}: AXI run differs from the golden model"
    _, reference = run_compiled(cn, x)             # the NumPy executor's event counts
    assert list(counters) == list(reference)
    for layer, c in counters.items():
        assert {k: c[k] for k in EXECUTOR_COUNTERS} == {k: getattr(reference[layer], k) for k in EXECUTOR_COUNTERS}
    if os.environ.get("SYSTOLIC_AXI_RESULT"):
        with open(os.environ["SYSTOLIC_AXI_RESULT"], "w") as f:
            json.dump({"counters": counters, "compared": int(sum(v.size for v in gold.values()))}, f)


@cocotb.test()
async def error_stops_the_run_and_raises_irq(dut):
    cfg, _, _, backpressure, seed = _settings()
    tb = AxiAcceleratorTB(dut, mem_bytes=1024, backpressure=backpressure, seed=seed + 1)
    await tb.reset()
    image = (np.arange(64) * 7 % 11).astype(np.uint8)
    program = [Instr(Opcode.LOAD, dict(target=Target.A, lines=1, elems=1, dram=0, stride=0)),
               Instr(Opcode.STORE, dict(lines=3, elems=1, bits=8, dram=50, stride=9)),     # 50, 59, 68: past 64
               Instr(Opcode.HALT)]
    try:
        await tb.run_program(image, program)
    except AcceleratorError as e:
        status = e.status
    else:
        raise AssertionError("a STORE past the data window ran without an error")
    assert status.error == 3 and status.err_index == 1 and status.err_arg == 68, status
    assert int(dut.irq.value) == 1
    # Byte 68 is inside the program, placed right after the window: the failed STORE wrote nothing there.
    assert tb.ram.read(image.size, 16 * len(program)) == encode_program(program)
    assert tb.ram.read(0, image.size) == image.tobytes()


@cocotb.test()
async def registers_read_back(dut):
    _, _, _, backpressure, seed = _settings()
    tb = AxiAcceleratorTB(dut, mem_bytes=256, backpressure=backpressure, seed=seed + 2)
    await tb.reset()
    drv = tb.driver
    for name, value in (("prog_addr", 0x12345670), ("prog_len", 7), ("dram_bytes", 0xABCDE)):
        await drv.write(name, value)
        assert await drv.read(name) == value, name
    assert (await drv.status()).describe() == "idle"
    used = {base + 4 * w for base, n, _ in csr_map().values() for w in range((n + 3) // 4)}
    free = next(a for a in range(0, 1 << 9, 4) if a not in used)
    assert await drv.registers.read32(free) == 0
    assert await drv.read("counter_cycles") == 0
