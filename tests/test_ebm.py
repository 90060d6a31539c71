"""Plain energy-based models: the MLP energy and the closed-form Gaussian."""

from __future__ import annotations

import math

import pytest
import torch

from ebflow_lite.ebm import GaussianEnergy, MLPEnergy

DTYPE = torch.float64


def _gaussian() -> GaussianEnergy:
    cov = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.7]], dtype=DTYPE)
    return GaussianEnergy(torch.tensor([1.0, 0.0, -1.0], dtype=DTYPE), cov)


def test_gaussian_energy_matches_torch_distributions():
    model = _gaussian()
    reference = torch.distributions.MultivariateNormal(model.mean.detach(), model.cov.detach())
    x = torch.randn(10, 3, dtype=DTYPE)
    torch.testing.assert_close(model.log_prob(x), reference.log_prob(x))
    torch.testing.assert_close(model.cov, torch.tensor(
        [[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.7]], dtype=DTYPE))


def test_gaussian_score_is_minus_the_energy_gradient():
    model = _gaussian()
    x = torch.randn(10, 3, dtype=DTYPE, requires_grad=True)
    (grad,) = torch.autograd.grad(model.energy(x).sum(), x)
    torch.testing.assert_close(model.score(x.detach()), -grad)


def test_gaussian_log_prob_is_normalised():
    model = GaussianEnergy(torch.tensor([0.3], dtype=DTYPE), torch.tensor([[0.5]], dtype=DTYPE))
    grid = torch.linspace(-8, 8, 4001, dtype=DTYPE).unsqueeze(1)
    mass = torch.trapezoid(model.log_prob(grid).exp(), grid.squeeze(1))
    assert float(mass.detach()) == pytest.approx(1.0, abs=1e-8)


def test_mlp_energy_shapes_score_and_confinement():
    torch.manual_seed(0)
    model = MLPEnergy(2, hidden=16, depth=3, confinement=0.5)
    x = torch.randn(7, 2)
    assert model.energy(x).shape == (7,)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.energy(xg).sum(), xg)
    torch.testing.assert_close(model.score(x), -grad)
    free = MLPEnergy(2, hidden=16, depth=3)
    free.load_state_dict(model.state_dict())
    torch.testing.assert_close(model.energy(x) - free.energy(x), 0.25 * (x**2).sum(1))
    assert math.isfinite(float(model(x).sum().detach()))


@pytest.mark.parametrize(
    "build",
    [
        lambda: MLPEnergy(0),
        lambda: MLPEnergy(2, depth=0),
        lambda: MLPEnergy(2, confinement=-1.0),
        lambda: GaussianEnergy(torch.zeros(2), torch.eye(3)),
        lambda: GaussianEnergy(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]])),
        lambda: GaussianEnergy(torch.zeros(2), -torch.eye(2)),
    ],
)
def test_bad_construction_raises_value_error(build):
    with pytest.raises(ValueError):
        build()


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="dimension"):
        MLPEnergy(2).energy(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        _gaussian().energy(torch.full((2, 3), float("nan"), dtype=DTYPE))
