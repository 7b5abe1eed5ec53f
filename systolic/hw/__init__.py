"""Amaranth accelerator components and the :class:`AcceleratorConfig`.

``systolic.arch.config`` (and ``systolic.arch.ports``) import no amaranth; the
component classes are loaded lazily on first access, so ``from systolic.hw
import AcceleratorConfig`` stays light.
"""

from ..arch.config import PRESETS, AcceleratorConfig, load_config

__all__ = [
    "AcceleratorConfig", "PRESETS", "load_config",
    "ProcessingElement", "WSProcessingElement", "OSProcessingElement",
    "SystolicArray", "Requantizer", "RequantLane", "GemmCore", "generate_verilog",
]

_LAZY = {
    "ProcessingElement": "pe", "WSProcessingElement": "pe", "OSProcessingElement": "pe",
    "SystolicArray": "array", "Requantizer": "requantizer", "RequantLane": "requantizer",
    "GemmCore": "core", "generate_verilog": "generate",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
