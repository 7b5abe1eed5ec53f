"""Float -> integer: datasets, model zoo, fake-quant training and conversion to the golden model.

Only this package imports torch, and only where training or fake-quant needs
it: importing ``systolic.quantize``, :mod:`systolic.quantize.data`,
:mod:`systolic.quantize.calibrate` and the shipped-model helpers in
:mod:`systolic.quantize.zoo` works without torch installed.

Entry points (see docs/quantization.md):

* :func:`systolic.quantize.data.load_dataset` -- a data set (``"digits"``, ``"mnist"``, a
  user ``.npz``) with train/val/test splits and its input type; :func:`~systolic.quantize.data.load_split`
  -- the digits splits.
* :func:`systolic.quantize.zoo.build` / :func:`train_float` -- the model zoo.
* :func:`systolic.quantize.methods.quantize_model` -- one call from a model name (or a float
  GraphNet), a method name and a data set to a trained, converted
  :class:`~systolic.golden.QuantizedNetwork`.
* :func:`systolic.quantize.convert.to_golden` -- fake-quant torch graph -> golden network.
"""

from __future__ import annotations

#: Models of the zoo.
MODELS = ("digits-mlp", "digits-cnn", "digits-resnet", "mnist-lenet5", "mnist-resnet8", "mnist-mobilenet")
#: Quantization methods accepted by :func:`systolic.quantize.methods.quantize_model`.
METHODS = ("max", "percentile", "mse", "klj", "tqt", "fat", "lsq", "sq", "multipoint", "dsconv", "inq")
#: Accepted bit widths for weights and activations.
MIN_BITS, MAX_BITS = 2, 8


def check_model(name) -> str:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; supported models: {', '.join(MODELS)}")
    return name


def check_method(name) -> str:
    if name not in METHODS:
        raise ValueError(f"unknown quantization method {name!r}; supported methods: {', '.join(METHODS)}")
    return name


def check_bits(bits, what: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{what} must be an integer between {MIN_BITS} and {MAX_BITS}, not {bits!r}")
    return bits


__all__ = ["MODELS", "METHODS", "MIN_BITS", "MAX_BITS", "check_model", "check_method", "check_bits"]
