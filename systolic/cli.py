"""Command-line interface: ``systolic <command> ...``.

Each command lives in a small module that defines ``register(subparsers)``;
that function adds one sub-parser and sets ``func`` to a callable taking the
parsed arguments and returning an exit code. Command modules import heavy
dependencies (torch, amaranth, cocotb) inside ``func``, never at import time,
so ``systolic --help`` stays fast and works without the optional extras.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Command modules, in the order ``--help`` lists them.
_COMMAND_MODULES = [
    "systolic.demo",
    "systolic.quantize.commands",
    "systolic.golden.commands",
    "systolic.golden.onnx_commands",
    "systolic.hw.commands",
    "systolic.sim.commands",
    "systolic.sim.cache_commands",
    "systolic.report.commands",
    "systolic.fpga.commands",
    "systolic.sweep.commands",
]


class CLIError(Exception):
    """An error to report to the user as one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="systolic",
        description="Co-design kit for integer neural-network accelerators.",
    )
    parser.add_argument("--version", action="version", version=f"systolic {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (``systolic eval --json | head``): not an error of ours. Point stdout at
        # devnull so the interpreter's final flush is silent too; the shell's code for SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except MemoryError:
        print("systolic: error: out of memory (a tensor, batch or file larger than this machine holds; "
              "use fewer images or a smaller model)", file=sys.stderr)
        return 1
    except (CLIError, ValueError, TypeError, OSError, OverflowError) as exc:
        # Known user-facing errors: a clear one-line message, no traceback.
        print(f"systolic: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("systolic: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
