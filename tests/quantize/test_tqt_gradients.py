"""TQT's forward and gradients against the formulas of docs/quantization.md.

r = round(x/s), s = 2**ceil(l) / 2**(b - signed):
  dq/dx = 1 if n <= r <= p else 0
  dq/dl = s ln2 (r - x/s  | n if r < n | p if r > p), summed over the tensor.
"""

import math

import numpy as np
import pytest

from tests.requirements import require

torch = require("torch", "quantize")

from systolic.quantize.quantizers import TQTQuantizer, tqt_quantize, tqt_quantize_ste  # noqa: E402


def formulas(x, l, bits, signed, rounding):
    n, p = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    s = 2.0 ** math.ceil(l) / 2.0 ** (bits - int(signed))
    xs = x / s
    r = np.rint(xs) if rounding == "half_even" else np.floor(xs + 0.5)
    q = np.clip(r, n, p) * s
    inside = (r >= n) & (r <= p)
    dqdx = inside.astype(np.float64)
    dqdl = s * math.log(2) * np.where(inside, r - xs, np.where(r < n, n, p))
    return q, dqdx, dqdl


CASES = [
    (8, True, 0.3, "half_even"),
    (4, True, -0.7, "half_up"),
    (4, False, 0.2, "half_even"),
    (2, True, 1.5, "half_up"),
    (3, False, -1.2, "half_even"),
]


@pytest.mark.parametrize("bits,signed,l0,rounding", CASES)
@pytest.mark.parametrize("impl", [tqt_quantize, tqt_quantize_ste])
def test_gradients_match_formulas(bits, signed, l0, rounding, impl):
    rng = np.random.default_rng(CASES.index((bits, signed, l0, rounding)))  # a fixed seed per case
    t = 2.0 ** l0
    # Values well inside, near the ends and far outside the range (clipped elements on both sides).
    xv = np.concatenate([rng.uniform(-2.5 * t, 2.5 * t, 40), [0.0, 3 * t, -3 * t, 0.49 * t, -0.51 * t]])
    x = torch.tensor(xv, dtype=torch.float64, requires_grad=True)
    l = torch.tensor(l0, dtype=torch.float64, requires_grad=True)
    w = torch.tensor(rng.normal(size=xv.size), dtype=torch.float64)  # upstream gradient
    q = impl(x, l, bits, signed, rounding)
    (q * w).sum().backward()
    q_ref, dqdx, dqdl = formulas(xv, l0, bits, signed, rounding)
    np.testing.assert_array_equal(q.detach().numpy(), q_ref)
    np.testing.assert_allclose(x.grad.numpy(), w.numpy() * dqdx, rtol=0, atol=1e-12)
    np.testing.assert_allclose(float(l.grad), float((w.numpy() * dqdl).sum()), rtol=1e-10, atol=1e-12)
    assert (dqdx == 0).any() and (dqdx == 1).any()  # the case exercises clipping


def test_per_element_dqdl_signs():
    """Clipped above: +p s ln2; clipped below: n s ln2; the function is per element before the sum."""
    bits, l0 = 4, 0.0
    s = 2.0 ** 0 / 2 ** 3
    for xv, expect in [(5.0, 7 * s * math.log(2)), (-5.0, -8 * s * math.log(2)), (0.3, (2 - 0.3 / s) * s * math.log(2))]:
        x = torch.tensor([xv], dtype=torch.float64, requires_grad=True)
        l = torch.tensor(l0, dtype=torch.float64, requires_grad=True)
        tqt_quantize(x, l, bits, True, "half_even").sum().backward()
        assert float(l.grad) == pytest.approx(expect, abs=1e-12)


def test_ceil_forward_and_straight_through():
    """The forward uses ceil(l) (piecewise constant); the gradient flows as if ceil were the identity."""
    x = torch.linspace(-3, 3, 101, dtype=torch.float64)
    q1 = tqt_quantize(x, torch.tensor(0.01, dtype=torch.float64), 8, True)
    q2 = tqt_quantize(x, torch.tensor(0.99, dtype=torch.float64), 8, True)
    assert torch.equal(q1, q2)
    q3 = tqt_quantize(x, torch.tensor(1.01, dtype=torch.float64), 8, True)
    assert not torch.equal(q1, q3)


def test_numeric_derivative_wrt_x_inside_range():
    """dq/dx: central difference of the rounding-free part equals 1 in range, 0 when clipped."""
    l0, bits = 0.0, 8
    s = 1 / 128
    xs = np.array([0.1, -0.4, 0.9, 1.7, -2.2])
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    tqt_quantize(x, torch.tensor(l0, dtype=torch.float64), bits, True).sum().backward()
    # Numerically: over a step of several quanta, q grows by the step in range and not at all when clipped.
    h = 4 * s
    qf = lambda v: formulas(v, l0, bits, True, "half_even")[0]
    num = (qf(xs + h) - qf(xs - h)) / (2 * h)
    np.testing.assert_allclose(x.grad.numpy(), num, atol=1e-12)


def test_threshold_learns_toward_data():
    """A few Adam steps on MSE move a far too large threshold down (sanity of dq/dl's sign)."""
    x = torch.randn(2000, generator=torch.Generator().manual_seed(0))
    qz = TQTQuantizer(4, True, threshold=64.0)
    opt = torch.optim.Adam(qz.parameters(), lr=0.1)
    for _ in range(100):
        opt.zero_grad()
        ((qz(x) - x) ** 2).mean().backward()
        opt.step()
    assert float(qz.log2_t.detach()) < 3.0
    assert qz.frac_bits() == 3 - math.ceil(float(qz.log2_t.detach()))
