"""The golden model: NumPy integer reference of the accelerator = the spec.

No torch, no amaranth here. Every numeric behaviour (rounding, saturation,
shift, overflow) is defined in this package first; hardware and compiler follow.
"""

from .qtypes import QType, ROUNDING_MODES, check_rounding
from .primitives import round_shift, round_div, saturate, quantize, dequantize, MAX_SHIFT, QTensor

__all__ = [
    "QType", "QTensor", "ROUNDING_MODES", "check_rounding",
    "round_shift", "round_div", "saturate", "quantize", "dequantize", "MAX_SHIFT",
]

from .pe_weights import (PE_KINDS, shift_weight_values, is_shift_weight, encode_shift_weights,
                         decode_shift_words, round_to_shift_weights)

__all__ += ["PE_KINDS", "shift_weight_values", "is_shift_weight", "encode_shift_weights", "decode_shift_words",
            "round_to_shift_weights"]

from .ops import matmul, requantize, AccumulatorOverflowError, check_acc_range

__all__ += ["matmul", "requantize", "AccumulatorOverflowError", "check_acc_range"]

from .layers import Layer, Dense, Conv2D, MaxPool2D, AvgPool2D, Add, Concat, Flatten, BlockFloat, LAYER_KINDS, im2col
from .network import QuantizedNetwork, ModelFormatError, FORMAT_VERSION, load, save

__all__ += [
    "Layer", "Dense", "Conv2D", "MaxPool2D", "AvgPool2D", "Add", "Concat", "Flatten", "BlockFloat", "LAYER_KINDS",
    "im2col",
    "QuantizedNetwork", "ModelFormatError", "FORMAT_VERSION", "load", "save",
]
