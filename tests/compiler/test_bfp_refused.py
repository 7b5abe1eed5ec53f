"""A network with a block floating-point (bfp) layer is refused by the compiler, naming the layer and why, before
the DRAM image (``dram_bytes``) is allocated."""

import numpy as np
import pytest

from systolic.compiler import CompileError, MachineSpec, compile_network
from systolic.golden import BlockFloat, Dense, QType, QuantizedNetwork


def _net():
    rng = np.random.default_rng(0)
    fc = Dense(name="fc", inputs=("input",), weight=rng.integers(-8, 8, (16, 8)), w_type=QType(8, True, 5),
               out_type=QType(8, True, 2))
    bfp = BlockFloat(name="act_bfp", inputs=("fc",), block=4, mantissa_bits=4)
    out = Dense(name="out", inputs=("act_bfp",), weight=rng.integers(-8, 8, (8, 4)), w_type=QType(8, True, 5),
                out_type=QType(8, True, 0))
    return QuantizedNetwork(QType(8, True, 4), (16,), [fc, bfp, out])


def test_bfp_layer_is_refused_naming_the_layer_and_why():
    with pytest.raises(CompileError) as info:
        compile_network(_net(), MachineSpec(rows=4, cols=4, a_lines=64, w_lines=64, acc_lines=16), batch=2)
    msg = str(info.value)
    assert "layer 'act_bfp'" in msg and "block floating-point" in msg
    assert "one shift per instruction" in msg and "fixed-point" in msg


class _BigAllocation(Exception):
    pass


def test_refused_before_the_dram_image_is_allocated(monkeypatch):
    """No array of ``dram_bytes`` (2**40 here) is created before the refusal; without the bfp layer one is."""
    zeros = np.zeros

    def guarded(shape, *args, **kwargs):
        if int(np.prod(shape)) >= 1 << 40:
            raise _BigAllocation(shape)
        return zeros(shape, *args, **kwargs)

    monkeypatch.setattr(np, "zeros", guarded)
    spec = MachineSpec(rows=4, cols=4, a_lines=64, w_lines=64, acc_lines=16, dram_bytes=1 << 40)
    with pytest.raises(CompileError, match="layer 'act_bfp'"):
        compile_network(_net(), spec, batch=2)
    net = _net()
    plain = QuantizedNetwork(net.input_type, net.input_shape, [net.layers[0]])
    with pytest.raises(_BigAllocation):
        compile_network(plain, spec, batch=2)
