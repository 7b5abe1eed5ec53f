"""Shared fixtures: tiny float models (a few epochs) so the whole directory stays fast."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    try:
        import torch
    except ImportError:  # the torch-free tests (data, calibration, eval) still run
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def float_nets():
    from systolic.quantize.zoo import train_float

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = train_float(name, seed=0, epochs=3)
        return cache[name]

    return get
