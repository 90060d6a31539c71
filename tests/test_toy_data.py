"""Toy 2-D densities: normalisation, agreement of samples and density, exact scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ebflow_lite.data import TOY_DENSITIES, ToyDensity, toy
from ebflow_lite.data.toy import gauss_legendre

DTYPE = torch.float64


def _grid(density: ToyDensity, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs = torch.linspace(*density.xlim, n, dtype=DTYPE)
    ys = torch.linspace(*density.ylim, n, dtype=DTYPE)
    gx, gy = torch.meshgrid(xs, ys, indexing="ij")
    return xs, ys, torch.stack([gx.ravel(), gy.ravel()], 1)


def _box_probability(density: ToyDensity, lo: torch.Tensor, hi: torch.Tensor) -> float:
    """Integral of the density over a box by tensor-product Gauss-Legendre quadrature."""
    nx, wx = gauss_legendre(float(lo[0]), float(hi[0]), 3)
    ny, wy = gauss_legendre(float(lo[1]), float(hi[1]), 3)
    px, py = np.meshgrid(nx, ny, indexing="ij")
    points = torch.from_numpy(np.stack([px.ravel(), py.ravel()], 1))
    weights = torch.from_numpy(np.outer(wx, wy).ravel())
    return float((density.prob(points) * weights).sum())


def test_names_and_factory():
    assert set(TOY_DENSITIES) >= {"sine", "swirl", "checkerboard", "two_moons", "rings",
                                  "gaussian_mixture", "gaussian"}
    for name in TOY_DENSITIES:
        density = toy(name)
        assert isinstance(density, ToyDensity) and density.name == name
        assert density.has_density
    with pytest.raises(ValueError, match="unknown toy density"):
        toy("spiral galaxy")


@pytest.mark.parametrize("name", TOY_DENSITIES)
def test_density_integrates_to_one(name):
    density = toy(name)
    xs, ys, points = _grid(density, 80)
    values = density.prob(points).view(len(xs), len(ys))
    mass = torch.trapezoid(torch.trapezoid(values, ys, dim=1), xs)
    assert float(mass) == pytest.approx(1.0, abs=3e-3)


@pytest.mark.parametrize("name", TOY_DENSITIES)
def test_sample_frequencies_match_box_integrals(name):
    density = toy(name)
    n = 20000
    samples = density.sample(n, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    for centre in samples[:3]:
        lo, hi = centre - 1.0, centre + 1.0
        inside = ((samples >= lo) & (samples <= hi)).all(1).double().mean()
        prob = _box_probability(density, lo, hi)
        half_width = 5.0 * math.sqrt(prob * (1 - prob) / n) + 1e-3
        assert abs(float(inside) - prob) < half_width, (float(inside), prob)


@pytest.mark.parametrize("name", TOY_DENSITIES)
def test_score_is_the_gradient_of_log_prob(name):
    density = toy(name)
    x = density.sample(20, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    score = density.score(x)
    leaf = x.clone().requires_grad_(True)
    (autograd,) = torch.autograd.grad(density.log_prob(leaf).sum(), leaf)
    torch.testing.assert_close(score, autograd, rtol=1e-8, atol=1e-10)
    h = 1e-5
    for axis in range(2):
        step = torch.zeros(2, dtype=DTYPE)
        step[axis] = h
        central = (density.log_prob(x + step) - density.log_prob(x - step)) / (2 * h)
        torch.testing.assert_close(score[:, axis], central, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", TOY_DENSITIES)
def test_float32_and_float64_agree(name):
    density = toy(name)
    x = density.sample(200, generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    lp64 = density.log_prob(x)
    lp32 = density.log_prob(x.float())
    assert lp64.dtype == DTYPE and lp32.dtype == torch.float32
    assert bool(torch.isfinite(lp32).all())
    torch.testing.assert_close(lp32.double(), lp64, atol=2e-3, rtol=1e-4)
    assert density.score(x.float()).dtype == torch.float32


@pytest.mark.parametrize("name", ["sine", "swirl", "two_moons"])
def test_quadrature_has_converged(name):
    density, finer = toy(name), toy(name, n_panels=5 * {"sine": 40, "swirl": 60,
                                                          "two_moons": 20}[name])
    x = density.sample(300, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    assert float((density.log_prob(x) - finer.log_prob(x)).abs().max()) < 1e-5
    assert float((density.score(x) - finer.score(x)).abs().max()) < 1e-4


def test_rings_closed_form_equals_quadrature_over_the_angle():
    rings = toy("rings")
    x = rings.sample(500, generator=torch.Generator().manual_seed(4), dtype=DTYPE)
    angles, weights = gauss_legendre(0.0, 2 * math.pi, 64)
    angles, weights = torch.from_numpy(angles), torch.from_numpy(weights)
    s2 = rings.smoothing**2
    per_ring = []
    for r in rings.radii:
        cx, cy = r * torch.cos(angles), r * torch.sin(angles)
        sq = (x[:, :1] - cx) ** 2 + (x[:, 1:] - cy) ** 2
        logs = -sq / (2 * s2) - math.log(2 * math.pi * s2) + torch.log(weights / (2 * math.pi))
        per_ring.append(torch.logsumexp(logs, 1))
    quadrature = torch.logsumexp(torch.stack(per_ring, 1), 1) - math.log(len(rings.radii))
    torch.testing.assert_close(rings.log_prob(x), quadrature, atol=1e-9, rtol=0)


def test_sampling_is_deterministic_given_a_generator():
    for name in TOY_DENSITIES:
        density = toy(name)
        a = density.sample(50, generator=torch.Generator().manual_seed(5))
        b = density.sample(50, generator=torch.Generator().manual_seed(5))
        c = density.sample(50, generator=torch.Generator().manual_seed(6))
        assert a.shape == (50, 2) and a.dtype == torch.float32
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_paper_definitions_without_smoothing():
    g = torch.Generator().manual_seed(7)
    board = toy("checkerboard", smoothing=1e-9).sample(5000, generator=g, dtype=DTYPE)
    cells = torch.floor(board / 3.0)
    assert bool(((cells.sum(1) % 2) == 0).all())  # only the "black" squares
    assert bool((board.abs() <= 6.0 + 1e-6).all())
    sine = toy("sine", smoothing=1e-9).sample(20000, generator=g, dtype=DTYPE)
    residual = sine[:, 1] - 4.0 * torch.sin(3.0 * sine[:, 0] / 4.0)
    assert float(residual.std()) == pytest.approx(1.0, rel=0.03)  # 4 x 0.25
    swirl = toy("swirl", smoothing=1e-9).sample(20000, generator=g, dtype=DTYPE)
    radius = (swirl - torch.tensor([2.5 / 3, 5.0 / 3], dtype=DTYPE)).norm(dim=1)
    assert float(radius.max()) < 2.5 / 3 * (3 * math.pi + 0.75)


@pytest.mark.parametrize(
    "call",
    [
        lambda: toy("sine").sample(0),
        lambda: toy("sine").sample(2.5),
        lambda: toy("sine").log_prob(torch.zeros(4, 3)),
        lambda: toy("swirl").log_prob(torch.zeros(4)),
        lambda: toy("checkerboard").score(torch.full((2, 2), float("nan"))),
        lambda: toy("sine", smoothing=0.0),
        lambda: toy("rings", radii=(1.0, -2.0)),
        lambda: toy("gaussian", cov=((1.0, 2.0), (2.0, 1.0))),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()
