"""Amaranth units of the accelerator, one per file, and Verilog generation of every top.

Datapath: ``pe`` (processing elements), ``array`` (the systolic array, WS or
OS), ``requantizer`` (shift-requantize lanes), ``core`` (array + lanes
behind streams). System units: ``controller`` (with ``checker``), ``dma``,
``scratchpad``, ``accumulator``, ``array_unit`` (the interface) with
``array_unit_ws`` / ``array_unit_os`` (chosen in ``array_units``), ``store``,
``counters``; ``system`` wires them into the ``Accelerator``, ``fpga_top``
adds a byte-wide CSR port. ``generate`` writes the Verilog of the tops.
Every number they share with the compiler and the simulators comes from
``systolic.arch``.

The component classes load lazily on first access, so importing this
package does not import amaranth.
"""

__all__ = [
    "ProcessingElement", "WSProcessingElement", "OSProcessingElement", "SystolicArray", "Requantizer",
    "RequantLane", "GemmCore", "Accelerator", "FpgaTop", "generate_verilog", "module_name", "TOPS",
]

_LAZY = {
    "ProcessingElement": "pe", "WSProcessingElement": "pe", "OSProcessingElement": "pe",
    "SystolicArray": "array", "Requantizer": "requantizer", "RequantLane": "requantizer",
    "GemmCore": "core", "Accelerator": "system", "FpgaTop": "fpga_top",
    "generate_verilog": "generate", "module_name": "generate", "TOPS": "generate",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
