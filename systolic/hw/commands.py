"""Hardware commands: ``generate``."""

from __future__ import annotations


def _generate(args) -> int:
    # amaranth (and the WebAssembly Yosys) load only here, not at CLI start-up.
    from ..arch.config import load_config
    from .generate import generate_verilog, module_name

    config = load_config(args.config)
    if args.top != "core":
        config.check_system()
    path = generate_verilog(config, args.out, top=args.top)
    if args.lint:
        from ..sim.verilator import lint

        lint(path, top=module_name(config, args.top))
    if args.save_config:
        config.save(path.with_name(f"{config.name}.json"))
    print(path)
    return 0


def register(sub) -> None:
    p = sub.add_parser("generate", help="write the Verilog of the core, the accelerator system or the FPGA top",
                       description="Generate the Verilog of one top for one accelerator config: core (the "
                                   "systolic array + shift-requantize units behind streams), system (the whole "
                                   "accelerator: controller, DMA, scratchpads, array unit, accumulator, STORE "
                                   "pipeline, counters), fpga (the system with a byte-wide CSR port) or axi (the "
                                   "system with an AXI4 memory master, an AXI4-Lite CSR slave and an interrupt). The "
                                   "module is named after the config and the top, e.g. "
                                   "systolic_ws_8x8_i8s_w8s_a32_o8s_he_system.")
    p.add_argument("--top", choices=("core", "system", "fpga", "axi"), default="core",
                   help="which top (default: %(default)s)")
    p.add_argument("--config", default="default", metavar="CONFIG",
                   help="preset name (tiny, small, default, large) or JSON config file "
                        "(default: %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--lint", action="store_true",
                   help="also run verilator --lint-only -Wall (with the project's waivers)")
    p.add_argument("--save-config", action="store_true",
                   help="also write the config as JSON next to the Verilog (<config name>.json)")
    p.set_defaults(func=_generate)
