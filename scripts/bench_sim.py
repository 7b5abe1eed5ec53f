"""Simulation speed: the kit's RTL path (run_network_rtl) against a raw Verilator C++ harness.

Two workloads on one config (default: the ``default`` preset):

- ``digits-cnn``: a batch of the shipped model's test images (host layers
  on the golden model between the accelerator programs);
- ``gemm``: one Dense layer, M=256 (batch), K=512, N=128, random int8 weights.

(a) runs the compiled network through :func:`systolic.sim.run_network_rtl`
(``--backend direct``, ``cocotb`` or ``amaranth``; default: the kit's default) and times
the whole call after the build: program starts, host layers and result
reads included. (b) is a minimal C++ ``main`` built by this script with
``verilator --cc --exe --build`` from the same Verilog: it clocks the model,
pulses ``start`` and serves the memory port from a byte array with the same
latency / bandwidth model (the C++ of :mod:`systolic.sim.direct_cxx`); it runs
the accelerator programs back to back, each on the DRAM image the host
would hand it (recorded from the NumPy executor), and times only the clocked
part. The output bytes of every accelerated layer in (b) must equal (a)'s,
and (a)'s every output the golden model's.

Prints cycles/s of (a) and (b) and the ratio a/b per workload; the last line
is the digits-cnn ratio. Usage::

    .venv/bin/python scripts/bench_sim.py [--config default] [--images 32] [--backend direct|cocotb]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MAIN_CPP = r"""
#include "direct_core.h"
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>
double sc_time_stamp() { return 0; }

static std::vector<uint8_t> slurp(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

int main(int argc, char** argv) {
    // argv: bus_bytes latency base_delay manifest
    // manifest lines: pre_image blob prog_addr data_bytes limit post_image
    Sim s;
    sim_init(&s, atoi(argv[1]), atoi(argv[2]), atoi(argv[3]));
    std::ifstream man(argv[4]);
    std::string pre, blobp, post;
    uint64_t prog_addr, data_bytes, limit;
    double seconds = 0;
    uint64_t cycles = 0;
    while (man >> pre >> blobp >> prog_addr >> data_bytes >> limit >> post) {
        std::vector<uint8_t> img = slurp(pre), blob = slurp(blobp);
        img.resize(prog_addr + blob.size());
        memcpy(img.data() + prog_addr, blob.data(), blob.size());
        s.mem = img.data(); s.mem_size = img.size();
        uint64_t c0 = s.cycles;
        auto t0 = std::chrono::steady_clock::now();
        prog_start(&s, prog_addr, blob.size() / 16, data_bytes, limit);
        int r = prog_run(&s, ~0ull);
        auto t1 = std::chrono::steady_clock::now();
        seconds += std::chrono::duration<double>(t1 - t0).count();
        cycles += s.cycles - c0;
        if (r != R_DONE || s.top->error || !s.top->done) {
            std::cerr << "program " << blobp << " failed: status " << r << " error " << (int)s.top->error << "\n";
            return 1;
        }
        std::ofstream(post, std::ios::binary).write((const char*)img.data(), data_bytes);
    }
    std::cout << cycles << " " << seconds << "\n";
    sim_free(&s);
    return 0;
}
"""


def build_harness(config) -> Path:
    """Build (cached) the raw harness of *config*; returns the executable."""
    from systolic.hw.generate import module_name, verilog_text
    from systolic.sim.build import build_key, cache_root, cached_build
    from systolic.sim.direct import cxx_opt, direct_flags
    from systolic.sim.direct_cxx import CORE_H
    from systolic.sim.verilator import tool_env, verilator_root

    top = module_name(config, "system")
    key = build_key(config, "system", *direct_flags(), cxx_opt(), CORE_H, MAIN_CPP)

    def build(d: Path) -> dict:
        (d / "direct_core.h").write_text(CORE_H)
        (d / "main.cpp").write_text(MAIN_CPP)
        (d / f"{top}.v").write_text(verilog_text(config, "system"))
        env = tool_env()
        opt = cxx_opt()
        env["MAKEFLAGS"] += f" OPT_FAST={opt} OPT_SLOW=-O0 OPT_GLOBAL={opt}"
        cmd = [str(verilator_root() / "bin" / "verilator"), "--cc", "--exe", "--build", "-j", "2", *direct_flags(),
               "--top-module", top, "--prefix", "Vtop", "--Mdir", str(d / "obj"), "-CFLAGS", f"-I{d} {opt}",
               str(d / "main.cpp"), str(d / f"{top}.v")]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"harness build failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
        return {}

    # The one simulator cache (atomic, checked, objects deleted, superseded builds pruned).
    d = cached_build(cache_root(), f"{top}-bench", key, build, keep=["obj/Vtop"])[0]
    return d / "obj" / "Vtop"


def workloads(images: int):
    from systolic.golden import Dense, QType, QuantizedNetwork
    from systolic.models import load_shipped
    from systolic.quantize.data import load_for_network

    net = load_shipped("digits-cnn")
    xf, _ = load_for_network(net, "test")
    yield "digits-cnn", net, net.quantize_input(xf[:images])
    rng = np.random.default_rng(0)
    m, k, n = 256, 512, 128
    i8 = QType(8, True, 4)
    dense = Dense("fc", ("input",), weight=rng.integers(-128, 128, (k, n)), w_type=QType(8, True, 7),
                  out_type=QType(8, True, 2), bias=rng.integers(-1000, 1000, n), relu=False)
    gnet = QuantizedNetwork(i8, (k,), (dense,))
    yield f"gemm {m}x{k}x{n}", gnet, rng.integers(-128, 128, (m, k))


def bench(name, net, x, config, memory, backend, dram_bytes, repeat=1):
    from systolic.compiler import MachineSpec, compile_network, run_compiled
    from systolic.compiler.executor import Executor
    from systolic.arch.isa import encode_program
    from systolic.compiler.lower import AccelStep
    from systolic.compiler.run import read_region
    from systolic.arch.memory import program_address
    from systolic.sim.backend import cycle_limit
    from systolic.sim.system import build_backend, run_network_rtl

    cn = compile_network(net, MachineSpec.from_config(config, dram_bytes=dram_bytes), batch=int(x.shape[0]))
    build_backend(backend, config)
    # (a) the kit's path
    a_times, b_times = [], []
    t0 = time.perf_counter()
    run = run_network_rtl(cn, x, config, memory, backend=backend)
    a_times.append(time.perf_counter() - t0)
    gold = net.run(x)
    mism = sum(int(np.count_nonzero(run.outputs[k] != gold[k])) for k in gold)
    if mism:
        sys.exit(f"{name}: (a) differs from the golden model in {mism} elements")
    a_cycles = run.cycles
    # (b) the raw harness, on the images the host hands each program
    exe = build_harness(config)
    pre = []

    def record(spec, dram, program):
        pre.append(dram.copy())
        return Executor(spec, dram).run(program)

    run_compiled(cn, x, accel=record)
    steps = [s for s in cn.steps if isinstance(s, AccelStep)]
    prog_addr = program_address(cn.image.size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lines = []
        for i, (s, img) in enumerate(zip(steps, pre)):
            blob = encode_program(s.program)
            (tmp / f"pre{i}").write_bytes(img.tobytes())
            (tmp / f"blob{i}").write_bytes(blob)
            limit = cycle_limit(config, s.program, memory)
            lines.append(f"{tmp / f'pre{i}'} {tmp / f'blob{i}'} {prog_addr} {cn.image.size} {limit} {tmp / f'post{i}'}")
        (tmp / "manifest").write_text("\n".join(lines) + "\n")
        for r in range(repeat):
            if r:   # (a) and (b) in turn, so a drift in machine speed hits both
                t0 = time.perf_counter()
                run_network_rtl(cn, x, config, memory, backend=backend)
                a_times.append(time.perf_counter() - t0)
            proc = subprocess.run([str(exe), str(config.bus_bytes), str(memory.latency),
                                   str(memory.base_delay(config.bus_bytes)), str(tmp / "manifest")],
                                  capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"harness failed: {proc.stdout}{proc.stderr}")
            b_cycles, b_s = proc.stdout.split()
            b_cycles = int(b_cycles)
            b_times.append(float(b_s))
        for i, s in enumerate(steps):
            post = np.frombuffer((tmp / f"post{i}").read_bytes(), dtype=np.uint8)
            got = read_region(post, cn.regions[s.layer])
            if not np.array_equal(got, run.outputs[s.layer]):
                sys.exit(f"{name}: harness output of layer {s.layer} differs from (a)")
    a_s, b_s = float(np.median(a_times)), float(np.median(b_times))
    a_rate, b_rate = a_cycles / a_s, b_cycles / b_s
    ratio = float(np.median([(a_cycles / a) / (b_cycles / b) for a, b in zip(a_times, b_times)]))
    runs = f" (medians of {repeat} alternating runs; ratio: median of the pairs)" if repeat > 1 else ""
    print(f"{name}: {x.shape[0]} samples, {len(steps)} accelerator programs, (a) {backend}: {a_cycles} cycles in "
          f"{a_s:.3f} s = {a_rate:,.0f} cycles/s; (b) raw harness: {b_cycles} cycles in {b_s:.3f} s = "
          f"{b_rate:,.0f} cycles/s; outputs equal; ratio a/b = {ratio:.3f}{runs}", flush=True)
    return ratio


def main(argv=None):
    from systolic.arch.config import load_config
    from systolic.arch.memory import MemoryModel

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="default")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--backend", choices=["direct", "cocotb", "amaranth"],
                   default=os.environ.get("SYSTOLIC_SIM_BACKEND", "direct"))
    p.add_argument("--latency", type=int, default=2)
    p.add_argument("--bytes-per-cycle", type=int, default=64)
    p.add_argument("--dram-bytes", type=int, default=1 << 19)
    p.add_argument("--repeat", type=int, default=1, help="alternating runs of (a) and (b); medians are reported")
    args = p.parse_args(argv)
    config = load_config(args.config)
    memory = MemoryModel(latency=args.latency, bytes_per_cycle=args.bytes_per_cycle)
    ratios = {}
    for name, net, x in workloads(args.images):
        ratios[name] = bench(name, net, x, config, memory, args.backend, args.dram_bytes, args.repeat)
    print(f"{ratios['digits-cnn']:.3f}")


if __name__ == "__main__":
    main()
