"""Quantized networks shipped with the package (torch-free).

``digits-mlp``, ``digits-cnn`` and ``digits-resnet`` are 8-bit TQT networks
trained on the scikit-learn digits data, ``mnist-lenet5``, ``mnist-resnet8`` and
``mnist-mobilenet`` on MNIST-28 (the 3,000-image training split), all by
``scripts/train_models.py``; each
``.npz`` is a golden-model file (:func:`systolic.golden.load`) whose ``meta``
records the model name, method, bit widths, float and integer test accuracy.

``resnet18-imagenet``, ``resnet50-imagenet`` and ``mobilenetv2-imagenet``
(:mod:`systolic.models.imagenet`) are not files: they are generated on use
from a seed, with random weights (for cycles, traffic, energy and
bit-exactness at ImageNet shapes; no accuracy is claimed for them).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["SHIPPED", "shipped_model_path", "load_shipped"]

#: Names of the shipped models, in the order the docs list them.
SHIPPED = ("digits-mlp", "digits-cnn", "digits-resnet", "mnist-lenet5", "mnist-resnet8", "mnist-mobilenet")


def shipped_model_path(name: str) -> Path:
    """Path of the shipped ``.npz`` file for *name* (one of :data:`SHIPPED`)."""
    if name not in SHIPPED:
        raise ValueError(f"unknown shipped model {name!r}; shipped models are {', '.join(SHIPPED)}")
    ref = resources.files(__name__).joinpath(f"{name}.npz")
    path = Path(str(ref))
    if not path.is_file():
        raise ValueError(f"shipped model {name!r} is missing from this installation ({path}); "
                         "regenerate it with scripts/train_models.py")
    return path


def load_shipped(name: str):
    """Load the shipped model *name* as a :class:`systolic.golden.QuantizedNetwork`."""
    from ..golden import load

    return load(shipped_model_path(name))
