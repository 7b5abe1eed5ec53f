"""Verilog of every top, one naming scheme, and what each top's Verilog depends on.

Tops (:data:`TOPS`):

- ``core``: :class:`~systolic.hw.core.GemmCore`, the array and the
  requantizer lanes behind valid/ready streams (the GEMM-core bench's DUT);
- ``system``: :class:`~systolic.hw.system.Accelerator`, the whole accelerator
  behind its memory port and CSR-like host ports (what the simulators run);
- ``fpga``: :class:`~systolic.hw.fpga_top.FpgaTop`, the accelerator with the
  memory port and a byte-wide CSR port, for synthesis and vendor flows;
- ``axi``: :class:`~systolic.hw.axi.AxiTop`, the accelerator with an AXI4
  memory master, an AXI4-Lite CSR slave and an interrupt.

Every generated module is named :func:`module_name`: the config's name
(``systolic_ws_8x8_i8s_w8s_a32_o8s_he``: dataflow, size, widths, rounding)
followed by ``_<top>``; submodules are prefixed with it, so the tops of two
configs never clash. Amaranth is imported only when Verilog is made.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
from pathlib import Path

from ..arch.config import AcceleratorConfig, load_config

__all__ = ["TOPS", "module_name", "top_component", "verilog_text", "generate_verilog", "design_fingerprint",
           "source_closure"]

#: Top -> "module:class" of its component.
TOPS = {
    "core": "systolic.hw.core:GemmCore",
    "system": "systolic.hw.system:Accelerator",
    "fpga": "systolic.hw.fpga_top:FpgaTop",
    "axi": "systolic.hw.axi:AxiTop",
}

_PKG = Path(__file__).resolve().parent.parent


def _check_top(top) -> str:
    if top not in TOPS:
        raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")
    return top


def module_name(config: AcceleratorConfig, kind: str) -> str:
    """The Verilog module name of top (or harness) *kind* of *config*: ``<config.name>_<kind>``."""
    return f"{config.name}_{kind}"


def top_component(config, top: str = "core"):
    """The Amaranth component of *top* for *config*."""
    config = load_config(config)
    module, cls = TOPS[_check_top(top)].split(":")
    return getattr(importlib.import_module(module), cls)(config=config)


def verilog_text(config, top: str = "core") -> str:
    """The Verilog of *top* for *config* (module :func:`module_name`)."""
    from amaranth.back import verilog

    config = load_config(config)
    return verilog.convert(top_component(config, top), name=module_name(config, top), emit_src=False)


def generate_verilog(config, out_dir, top: str = "core") -> Path:
    """Write ``<out_dir>/<module_name>.v`` and return its path.

    *config* is an :class:`AcceleratorConfig`, a preset name or a JSON path.
    The file is only rewritten when its text changes (keeps build caches warm).
    """
    config = load_config(config)
    _check_top(top)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{module_name(config, top)}.v"
    text = verilog_text(config, top)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


@functools.lru_cache(maxsize=None)
def source_closure(module: str) -> tuple[Path, ...]:
    """The package's source files *module* imports, directly or not (read, not imported; found once per
    process: a change of the files' text still changes :func:`design_fingerprint`)."""
    seen, todo = {}, [module]
    while todo:
        name = todo.pop()
        path = _PKG.parent / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = _PKG.parent / name.replace(".", "/") / "__init__.py"
        if name in seen or not path.exists():
            continue
        seen[name] = path
        pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else (node.module or "")
                if base.startswith("systolic"):
                    todo.append(base)
                    todo.extend(f"{base}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                todo.extend(a.name for a in node.names if a.name.startswith("systolic"))
    return tuple(sorted(seen.values()))


def design_fingerprint(config, top: str = "core") -> str:
    """A hash of everything the Verilog of *top* is a function of: the config, the top, and the text of
    every package source its component imports (the build caches' key; no Verilog is generated)."""
    config = load_config(config)
    module = TOPS[_check_top(top)].split(":")[0]
    h = hashlib.sha256(f"{config.to_json()}\n{top}\n".encode())
    for src in source_closure(module):
        h.update(str(src.relative_to(_PKG)).encode())
        h.update(src.read_bytes())
    return h.hexdigest()
