"""FPGA flow: open-source synthesis / place and route reports and vendor-flow export.

``systolic.fpga.synth(config, target="ecp5")`` runs Yosys and nextpnr (YoWASP
builds from PyPI) on a narrow-bus top and returns a :class:`SynthResult`;
``systolic.fpga.export_fusesoc(config, out_dir)`` writes the top's Verilog and
a FuseSoC ``.core`` (and the C header of the CSR map, :func:`csr_header_text`);
:class:`AcceleratorDriver` is the host driver of the CSR map (the AXI top's testbench,
``systolic.fpga.axi_tb``, runs on it). Names load lazily, so importing the package is cheap.
"""

__all__ = ["synth", "SynthResult", "ToolError", "parse_device", "export_fusesoc", "fusesoc_core_text",
           "RegisterBankTop", "make_top", "top_module_name", "csr_header_text", "AcceleratorDriver",
           "AcceleratorError", "RunStatus"]

_LAZY = {
    "synth": "synth", "SynthResult": "synth", "ToolError": "synth", "parse_device": "synth",
    "export_fusesoc": "export", "fusesoc_core_text": "export",
    "RegisterBankTop": "wrappers", "make_top": "wrappers", "top_module_name": "wrappers",
    "csr_header_text": "header", "AcceleratorDriver": "driver", "AcceleratorError": "driver", "RunStatus": "driver",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
