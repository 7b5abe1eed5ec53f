"""systolic: a co-design kit for integer neural-network accelerators.

Subpackages (each imports only those above it; docs/architecture.md has the map)
-----------
golden    NumPy integer reference model: the bit-exact specification.
arch      the contract: AcceleratorConfig and its derived geometry, ISA, host map, named latencies,
          the exact cycle model, the memory model.
compiler  QuantizedNetwork + config -> programs; the NumPy executor; the network loop.
hw        Amaranth units, one per file, and the Verilog of every top.
sim       the accelerator RTL on three backends behind one interface; the GEMM-core bench.
report    cycle and energy models per layer, reports and plots.
flows     the use cases the commands share (run images and compare, simulate, demo).
quantize  float -> integer quantization (TQT and related methods); needs the ``quantize`` extra.
fpga      synthesis, place and route, FuseSoC export.
"""

__version__ = "0.1.0"
