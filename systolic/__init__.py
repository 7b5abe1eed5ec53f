"""systolic: a co-design kit for integer neural-network accelerators.

Subpackages
-----------
golden    NumPy integer reference model: the bit-exact specification.
quantize  float -> integer quantization (TQT and related methods); needs the ``quantize`` extra.
hw        Amaranth accelerator components and :class:`~systolic.arch.config.AcceleratorConfig`.
compiler  QuantizedNetwork + AcceleratorConfig -> Program.
sim       RTL simulation (cocotb + Verilator).
report    cycle and energy models, reports and plots.
"""

__version__ = "0.1.0"
