"""Verilog generation for a :class:`~systolic.arch.config.AcceleratorConfig`."""

from __future__ import annotations

from pathlib import Path

from ..arch.config import AcceleratorConfig, load_config

__all__ = ["generate_verilog", "verilog_text"]


def verilog_text(config: AcceleratorConfig) -> str:
    """The Verilog of ``GemmCore(config)``, top module named ``config.name``."""
    from amaranth.back import verilog

    from .core import GemmCore

    config = load_config(config)
    return verilog.convert(GemmCore(config=config), name=config.name, emit_src=False)


def generate_verilog(config, out_dir) -> Path:
    """Write ``<out_dir>/<config.name>.v`` and return its path.

    *config* is an :class:`AcceleratorConfig`, a preset name or a JSON path.
    The file is only rewritten when its text changes (keeps build caches warm).
    """
    config = load_config(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{config.name}.v"
    text = verilog_text(config)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path
