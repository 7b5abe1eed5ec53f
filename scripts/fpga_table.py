"""FPGA resource / Fmax table: array sizes x dataflows x rounding modes on an ECP5-85.

Runs ``systolic.fpga.synth`` (Yosys + nextpnr, one job at a time) on the
system top (the whole accelerator behind its memory port and byte CSR port,
docs/fpga.md) of the default config with ``rows``/``cols``, ``dataflow`` and
``rounding`` changed, and writes docs/results/fpga.md and fpga.json. 16x16
needs 256 multipliers, more than the 156 MULT18X18D of the ECP5-85, so it is
synthesized only (resources, no Fmax). Only 8x8 WS half_even is placed and routed by default
(--pnr all for every size up to 8x8): one place and route of the system takes about 9 minutes here.

Results are cached in build/fpga_table/ by a hash of the config, the flow
options and the generator sources, so a re-run only redoes what changed.

Usage: python scripts/fpga_table.py [--sizes 2,4,8,16] [--out docs/results] [--no-cache]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from systolic.arch.config import AcceleratorConfig  # noqa: E402

DEVICE = "LFE5U-85F-6-CABGA381"
FREQ_MHZ = 100.0
#: Configs placed and routed by default (rows, dataflow, rounding): the reference design. A place
#: and route of the system takes about 9 minutes on this machine (nextpnr's placer dominates; the
#: 8x8 WS half_up one did not finish routing in 15 minutes, router2 stuck at 40 overused wires), so
#: the rest of the sweep is synthesized only unless --pnr all.
PNR_KEY = {(8, "ws", "half_even")}
#: Larger arrays need more multipliers than the ECP5-85 has (156 MULT18X18D): never placed.
PNR_MAX = 8
TARGET_PE_LUTS = 80


def _source_hash() -> str:
    # The generator (every source the FPGA top's Verilog depends on) and the flow; report parsing
    # (fpga/reports.py) is not part of the key.
    from systolic.hw.generate import source_closure

    h = hashlib.sha256()
    files = [*source_closure("systolic.hw.fpga_top"), *source_closure("systolic.hw.core"),
             ROOT / "systolic" / "fpga" / "wrappers.py", ROOT / "systolic" / "fpga" / "synth.py"]
    for p in sorted(set(files)):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def configs(sizes):
    """The sweep, most important first: 8x8 WS (the reference design) in both roundings, then the
    small sizes, then 8x8 OS, then the larger sizes."""
    base = AcceleratorConfig()
    every = [base.replace(rows=n, cols=n, dataflow=df, rounding=rnd)
             for n in sizes for df in ("ws", "os") for rnd in ("half_even", "half_up")]

    def rank(c):
        return (0 if (c.rows, c.dataflow) == (8, "ws") else 1 if c.rows < 8 else 2 if c.rows == 8 else 3,
                c.rows, c.dataflow != "ws", c.rounding != "half_even")

    return sorted(every, key=rank)


def wants_pnr(cfg, mode: str) -> bool:
    if cfg.rows > PNR_MAX or mode == "none":
        return False
    return mode == "all" or (cfg.rows, cfg.dataflow, cfg.rounding) in PNR_KEY


def cache_path(cfg, *, cache_dir: Path, src: str, pnr: bool) -> Path:
    key = hashlib.sha256(json.dumps([cfg.to_dict(), DEVICE, FREQ_MHZ, pnr, src]).encode()).hexdigest()[:16]
    return cache_dir / f"{cfg.name}-{key}.json"


def lookup(cfg, *, cache_dir: Path, src: str, pnr: bool):
    # A placed-and-routed result also answers a synthesis-only request.
    for p in ((True, False) if not pnr else (True,)):
        path = cache_path(cfg, cache_dir=cache_dir, src=src, pnr=p)
        if path.exists():
            return json.loads(path.read_text())
    return None


def run_one(cfg, *, cache_dir: Path, use_cache: bool, src: str, pnr: bool, log=print) -> dict:
    from systolic.fpga.synth import ToolError, synth

    path = cache_path(cfg, cache_dir=cache_dir, src=src, pnr=pnr)
    cached = lookup(cfg, cache_dir=cache_dir, src=src, pnr=pnr) if use_cache else None
    if cached is not None:
        log("  cached")
        return cached
    t0 = time.monotonic()
    try:
        res = synth(cfg, target="ecp5", device=DEVICE, top="system", freq_mhz=FREQ_MHZ, pnr=pnr,
                    out_dir=ROOT / "build" / "fpga_table" / cfg.name, progress=lambda m: log(f"  {m}"))
        row = res.to_dict()
        row["error"] = None
    except ToolError as exc:
        row = {"config": cfg.to_dict(), "config_name": cfg.name, "error": str(exc).splitlines()[0]}
    row["wall_s"] = round(time.monotonic() - t0, 1)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=2) + "\n")
    return row


def _f(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def _critical_path(r) -> dict:
    """The row's critical path, re-read from its nextpnr report when that is still on disk."""
    from systolic.fpga import reports

    rep = Path(r.get("out_dir") or "/nonexistent") / "report.json"
    if r.get("routed") and rep.exists():
        return reports.critical_path(json.loads(rep.read_text())) or {}
    return r.get("critical_path") or {}


def _counts(r):
    return r.get("yosys_counts") or {k: r.get(k) for k in ("luts", "ffs", "dsps", "brams")}


def markdown(rows) -> str:
    out = [
        "# FPGA results: ECP5-85 (LFE5U-85F-6-CABGA381)",
        "",
        "Generated by `python scripts/fpga_table.py` (Yosys 0.70 + nextpnr 0.11.1, YoWASP builds, nextpnr "
        f"seed 1, {FREQ_MHZ:g} MHz constraint). Design: `--top system`, the whole accelerator (controller, "
        "DMA, scratchpads, accumulator buffer, array, requantizer lanes, 25 64-bit counters) behind its "
        "memory port and the byte-wide CSR port (docs/fpga.md), default config (int8, acc32, 16 KiB + "
        "16 KiB scratchpads, 512-line accumulator buffer, 64-bit bus) with the size, dataflow and rounding "
        "changed.",
        "",
        "LUTs / FFs / DSPs / BRAMs are Yosys's counts after `synth_ecp5` (LUTs = LUT4 + 2 x CCU2C, "
        "DSPs = MULT18X18D, BRAMs = DP16KD of 18 Kbit), the same for every row; *LUTs packed* and *Fmax* "
        "come from nextpnr and exist only for the rows that were placed and routed (a place and route of "
        "the system takes about 9 min here, so by default only the 8x8 WS half_even row is). Per-PE and per-lane "
        "costs come from Yosys synthesizing one PE / one requantizer lane of the system alone (the "
        "system's array uses 9-bit signed operands, so one array serves signed and unsigned int8 loads). "
        "16x16 needs 256 multipliers, the device has 156: synthesized only.",
        "",
        "| array | dataflow | rounding | LUTs | FFs | DSPs | BRAMs | LUTs packed | Fmax MHz | LUT/PE | FF/PE "
        "| DSP/PE | LUT/lane | critical path |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        c = r["config"]
        arr = f"{c['rows']}x{c['cols']}"
        if r.get("error"):
            out.append(f"| {arr} | {c['dataflow'].upper()} | {c['rounding']} | {r['error']} "
                       "| | | | | | | | | | |")
            continue
        y = _counts(r)
        pe = (r.get("per_module") or {}).get("pe", {}).get("each", {})
        lane = (r.get("per_module") or {}).get("lane", {}).get("each", {})
        cp = _critical_path(r)
        routed = r.get("routed")
        out.append(
            f"| {arr} | {c['dataflow'].upper()} | {c['rounding']} | {y['luts']} | {y['ffs']} | {y['dsps']} "
            f"| {y['brams']} | {r['luts'] if routed else '-'} | {_f(r.get('fmax_mhz')) if routed else '-'} "
            f"| {_f(pe.get('luts'), 0)} | {_f(pe.get('ffs'), 0)} | {_f(pe.get('dsps'), 0)} "
            f"| {_f(lane.get('luts'), 0)} | {cp.get('summary', '-') if routed else '-'} |")
    out += ["", "## Rounding cost (half_even vs half_up)", "",
            "| array | dataflow | LUTs half_even | LUTs half_up | total +% | LUT/lane half_even "
            "| LUT/lane half_up | lane +% |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    by = {(r["config"]["rows"], r["config"]["dataflow"], r["config"]["rounding"]): r for r in rows
          if not r.get("error")}
    for (n, df, rnd), he in sorted(by.items()):
        if rnd != "half_even" or (n, df, "half_up") not in by:
            continue
        hu = by[(n, df, "half_up")]
        the, thu = _counts(he)["luts"], _counts(hu)["luts"]
        lhe = he["per_module"]["lane"]["each"]["luts"]
        lhu = hu["per_module"]["lane"]["each"]["luts"]
        out.append(f"| {n}x{n} | {df.upper()} | {the} | {thu} | {100 * (the / thu - 1):+.1f} | {lhe:.0f} "
                   f"| {lhu:.0f} | {100 * (lhe / lhu - 1):+.1f} |")
    out.append("")
    return "\n".join(out)


def summary(rows) -> str:
    key = next((r for r in rows if not r.get("error") and r["config"]["rows"] == 8
                and r["config"]["dataflow"] == "ws" and r["config"]["rounding"] == "half_even"), None)
    ok = sum(1 for r in rows if not r.get("error"))
    if key is None:
        return f"fpga_table: {ok}/{len(rows)} configs done; 8x8 WS half_even not in this run"
    pe = key["per_module"]["pe"]["each"]
    return (f"fpga_table: {ok}/{len(rows)} configs done; 8x8 WS int8 on {DEVICE}: {_counts(key)['luts']} LUTs, "
            f"{key['dsps']} DSPs, {key['brams']} BRAMs, Fmax {_f(key.get('fmax_mhz'))} MHz "
            f"(target {FREQ_MHZ:g}), per PE {pe['luts']:.0f} LUTs / {pe['dsps']:.0f} DSP")


def write(out: Path, rows) -> None:
    (out / "fpga.md").write_text(markdown(rows))
    slim = [{k: v for k, v in r.items() if k not in ("utilization",)} for r in rows]
    (out / "fpga.json").write_text(json.dumps(slim, indent=2) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2,4,8,16", help="comma-separated array sizes (default: %(default)s)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"), help="output folder")
    ap.add_argument("--no-cache", action="store_true", help="ignore cached results")
    ap.add_argument("--pnr", choices=("key", "all", "none"), default="key",
                    help="which configs to place and route: key = 8x8 WS half_even (default), all up "
                         "to 8x8, none")
    ap.add_argument("--budget-min", type=float, default=30.0,
                    help="start no new config after this many minutes (default: %(default)s)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    cache = ROOT / "build" / "fpga_table" / "cache"
    src = _source_hash()
    todo = configs(sizes)
    rows = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    for i, cfg in enumerate(todo, 1):
        elapsed = time.monotonic() - t0
        if elapsed > 60 * args.budget_min:
            print(f"[{i}/{len(todo)}] {cfg.name}: skipped, time budget of {args.budget_min:g} min used",
                  flush=True)
            row = {"config": cfg.to_dict(), "config_name": cfg.name,
                   "error": f"not run (time budget {args.budget_min:g} min)"}
            cached = (lookup(cfg, cache_dir=cache, src=src, pnr=wants_pnr(cfg, args.pnr))
                      if not args.no_cache else None)
            rows.append(cached or row)
            continue
        print(f"[{i}/{len(todo)}] {cfg.name} ({elapsed:.0f} s)", flush=True)
        row = run_one(cfg, cache_dir=cache, use_cache=not args.no_cache, src=src,
                      pnr=wants_pnr(cfg, args.pnr), log=lambda m: print(m, flush=True))
        if row.get("error"):
            print(f"  FAILED: {row['error']}", flush=True)
        else:
            print(f"  {row['luts']} LUTs, {row['ffs']} FFs, {row['dsps']} DSPs, {row['brams']} BRAMs, "
                  f"Fmax {_f(row.get('fmax_mhz'))} MHz ({row['wall_s']:.0f} s)", flush=True)
        rows.append(row)
        write(out, rows)   # after every config, so an interrupted run still leaves a table
    write(out, rows)
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
