"""Hardware commands: ``generate``."""

from __future__ import annotations


def _generate(args) -> int:
    # amaranth (and the WebAssembly Yosys) load only here, not at CLI start-up.
    from ..arch.config import load_config
    from .generate import generate_verilog

    config = load_config(args.config)
    path = generate_verilog(config, args.out)
    if args.lint:
        from ..sim.verilator import lint

        lint(path, top=config.name)
    if args.save_config:
        config.save(path.with_suffix(".json"))
    print(path)
    return 0


def register(sub) -> None:
    p = sub.add_parser("generate", help="write the accelerator core's Verilog",
                       description="Generate the Verilog of the GemmCore (systolic array + "
                                   "shift-requantize units) of one accelerator config. The top "
                                   "module is named after the config, e.g. "
                                   "systolic_ws_8x8_i8s_w8s_a32_o8s_he.")
    p.add_argument("--config", default="default", metavar="CONFIG",
                   help="preset name (tiny, small, default, large) or JSON config file "
                        "(default: %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--lint", action="store_true",
                   help="also run verilator --lint-only -Wall (with the project's waivers)")
    p.add_argument("--save-config", action="store_true",
                   help="also write the config as JSON next to the Verilog")
    p.set_defaults(func=_generate)
