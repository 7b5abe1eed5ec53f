"""FPGA commands: ``synth``, ``export-fpga`` and ``board``."""

from __future__ import annotations

import sys


def _synth(args) -> int:
    # amaranth and the tool wrappers load only here, not at CLI start-up.
    from ..arch.config import load_config
    from .synth import ToolError, synth

    ice40 = args.target == "ice40"
    if ice40 and (args.config is None or args.top is None) and not args.json:
        print("[synth] iCE40 defaults: the tiny config's core (the whole accelerator needs more logic cells "
              "than any iCE40 has; docs/fpga.md)", file=sys.stderr, flush=True)
    config = load_config(args.config if args.config is not None else ("tiny" if ice40 else "default"))
    args.top = args.top if args.top is not None else ("core" if ice40 else "system")

    def progress(msg):
        if not args.json:
            print(f"[synth] {msg}", file=sys.stderr, flush=True)

    try:
        result = synth(config, target=args.target, device=args.device, top=args.top, out_dir=args.out,
                       freq_mhz=args.freq, seed=args.seed, placer=args.placer, timeout_s=args.timeout,
                       pnr=not args.no_pnr, progress=progress)
    except ToolError as exc:
        print(f"systolic: error: {exc}", file=sys.stderr)
        return 1
    print(result.to_json() if args.json else result.to_text())
    return 0


def _export(args) -> int:
    from .export import export_fusesoc

    files = export_fusesoc(args.config, args.out, top=args.top, vlnv=args.vlnv)
    for path in files:
        print(path)
    return 0


def _board(args) -> int:
    import json

    from .board import build_board

    if not args.json:
        print(f"[board] {args.board}: Yosys, nextpnr, ecppack in {args.out} (minutes)", file=sys.stderr, flush=True)
    result = build_board(args.board, args.config, args.out, baud=args.baud, mem_bytes=args.mem_bytes,
                         seed=args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        fmax = f", post-route Fmax {result['fmax_mhz']:.1f} MHz" if result["fmax_mhz"] else ""
        print(f"{result['bitstream']}: {result['bytes']:,} bytes, {result['config']} on {result['board']} at "
              f"{result['clk_hz'] / 1e6:g} MHz{fmax}, {result['mem_bytes']:,} bytes of block RAM, UART "
              f"{result['baud']} baud; built in {result['seconds']:.0f} s. Programming it is up to you "
              f"(e.g. openFPGALoader -b ulx3s {result['bitstream']}).")
    return 0


def register(sub) -> None:
    from .synth import PLACERS

    p = sub.add_parser(
        "synth", help="synthesize, place and route on an ECP5 / iCE40 (resources, Fmax)",
        description="Generate the Verilog of a narrow-bus top (docs/fpga.md), synthesize it with Yosys and "
                    "place and route it with nextpnr (YoWASP builds), then report LUTs, FFs, DSPs, block "
                    "RAMs, I/O, Fmax and the critical path.")
    p.add_argument("--config", default=None, metavar="CONFIG",
                   help="preset name (tiny, small, default, large) or JSON config file (default: default on ECP5, "
                        "tiny on iCE40)")
    p.add_argument("--target", choices=("ecp5", "ice40"), default="ecp5", help="FPGA family (default: %(default)s)")
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="ECP5: LFE5U-85F-6-CABGA381 (default); iCE40: hx8k-ct256 (default), up5k-sg48, ...")
    p.add_argument("--top", choices=("system", "axi", "core", "array"), default=None,
                   help="system: whole accelerator, memory port + byte CSR port; axi: whole accelerator, AXI4 "
                        "master + AXI4-Lite slave; core / array: the datapath behind a register-bank harness "
                        "(default: system on ECP5, core on iCE40)")
    p.add_argument("--freq", type=float, default=100.0, metavar="MHZ",
                   help="clock constraint for nextpnr (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placer seed (default: %(default)s)")
    p.add_argument("--placer", choices=PLACERS, default=None,
                   help="nextpnr placer (default: static on ECP5, where heap's placement of the system top does not "
                        "route, heap on iCE40)")
    p.add_argument("--timeout", type=float, default=1800.0, metavar="S",
                   help="per-tool time limit in seconds (default: %(default)s)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="work folder (default: build/fpga/<config name>-<top>-<target>)")
    p.add_argument("--no-pnr", action="store_true", help="stop after Yosys (resources only, no Fmax)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of text")
    p.set_defaults(func=_synth)

    e = sub.add_parser(
        "export-fpga", help="write Verilog, a FuseSoC .core and a C header for vendor flows (Vivado, Quartus, ...)",
        description="Write the Verilog of the FPGA top (module <config name>_fpga; <config name>_axi for --top "
                    "axi; <config name>_core_bank / _array_bank for --top core / array), a FuseSoC CAPI2 .core "
                    "file describing it and, for the system and axi tops, the C header <config name>_csr.h of "
                    "their CSR map for a host driver; prints the paths written. See docs/fpga.md for Vivado / "
                    "Quartus projects and the header.")
    e.add_argument("--config", default="default", metavar="CONFIG",
                   help="preset name or JSON config file (default: %(default)s)")
    e.add_argument("--top", choices=("system", "axi", "core", "array"), default="system",
                   help="which top (default: %(default)s)")
    e.add_argument("--vlnv", default=None, metavar="VLNV",
                   help="FuseSoC name vendor:library:name:version (default: systolic:accel:<config name>:0.1.0)")
    e.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    e.set_defaults(func=_export)

    from .boards import BOARDS

    b = sub.add_parser(
        "board", help="build a bitstream for a real board: the accelerator, block RAM and a UART host link",
        description="Elaborate the accelerator for a board of amaranth-boards with on-chip memory and a serial "
                    "link to the host (docs/fpga.md, \"A real board\"), then run Yosys, nextpnr and ecppack "
                    "(YoWASP builds) to DIR/top.bit. Nothing is programmed. Boards: "
                    + "; ".join(f"{k}: {v[1]}" for k, v in BOARDS.items()) + ".")
    b.add_argument("board", choices=tuple(BOARDS), help="the board")
    b.add_argument("--config", default="tiny", metavar="CONFIG",
                   help="preset name or JSON config file (default: %(default)s, which places and routes in "
                        "minutes)")
    b.add_argument("--out", default="build/board", metavar="DIR", help="build folder (default: %(default)s)")
    b.add_argument("--baud", type=int, default=115_200, help="serial line rate (default: %(default)s)")
    b.add_argument("--mem-bytes", type=int, default=1 << 16, metavar="N",
                   help="on-chip memory for data and programs (default: %(default)s)")
    b.add_argument("--seed", type=int, default=1, help="nextpnr placer seed (default: %(default)s)")
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    b.set_defaults(func=_board)
