"""Noise contrastive estimation and the flow's step of flow contrastive estimation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import ebflow_lite
from ebflow_lite.ebm import GaussianEnergy
from ebflow_lite.layers import AffineCoupling
from ebflow_lite.objectives import fce_flow_loss, get, nce
from ebflow_lite.testing import perturb_parameters

DTYPE = torch.float64


class GaussianNoise:
    """N(mean, std^2 I) with the log_prob / sample interface that nce expects."""

    def __init__(self, mean: torch.Tensor, std: float) -> None:
        self.mean, self.std = mean, std

    def log_prob(self, v: torch.Tensor) -> torch.Tensor:
        d = v.shape[1]
        return (-0.5 * ((v - self.mean) / self.std) ** 2).sum(1) - d * math.log(
            self.std * math.sqrt(2 * math.pi))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean + self.std * torch.randn(n, len(self.mean), generator=generator,
                                                  dtype=self.mean.dtype)


class ShiftedGaussianEnergy(nn.Module):
    """A Gaussian energy plus a free constant c: -E is normalised only when c = log Z."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gaussian = GaussianEnergy(torch.zeros(dim, dtype=DTYPE),
                                       torch.eye(dim, dtype=DTYPE))
        self.c = nn.Parameter(torch.zeros((), dtype=DTYPE))
        self.dim = dim

    def energy(self, v: torch.Tensor) -> torch.Tensor:
        return self.gaussian.energy(v) + self.c


def test_nce_equals_the_logistic_loss_written_out() -> None:
    torch.manual_seed(0)
    model = ShiftedGaussianEnergy(2)
    noise = GaussianNoise(torch.zeros(2, dtype=DTYPE), 2.0)
    x, y = torch.randn(7, 2, dtype=DTYPE), noise.sample(21)
    nu = 3.0
    g_x = -model.energy(x) - noise.log_prob(x) - math.log(nu)
    g_y = -model.energy(y) - noise.log_prob(y) - math.log(nu)
    by_hand = (-torch.log(1 / (1 + torch.exp(-g_x)))).mean() - nu * torch.log(
        1 - 1 / (1 + torch.exp(-g_y))).mean()
    torch.testing.assert_close(nce(model, x, noise=noise, noise_samples=y, nu=nu), by_hand)
    torch.testing.assert_close(get("nce", noise=noise, noise_samples=y, nu=nu)(model, x),
                               by_hand)


def test_nce_recovers_a_gaussian_and_its_normalising_constant() -> None:
    generator = torch.Generator().manual_seed(0)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=DTYPE)
    mean = torch.tensor([0.5, -1.0], dtype=DTYPE)
    data = mean + torch.randn(20_000, 2, generator=generator, dtype=DTYPE) @ torch.linalg.cholesky(
        cov).T
    noise = GaussianNoise(torch.zeros(2, dtype=DTYPE), 2.5)
    noise_samples = noise.sample(20_000, generator=generator)
    model = ShiftedGaussianEnergy(2)
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nce(model, data, noise=noise, noise_samples=noise_samples)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        torch.testing.assert_close(model.gaussian.mean, mean, atol=0.05, rtol=0)
        torch.testing.assert_close(model.gaussian.cov, cov, atol=0.08, rtol=0)
        # -E is normalised: c equals the Gaussian's log Z
        assert abs(float(model.c - model.gaussian.log_z())) < 0.05
        # a model with the wrong constant has a larger loss (the constant is identified)
        best = float(nce(model, data, noise=noise, noise_samples=noise_samples))
        model.c += 0.5
        assert float(nce(model, data, noise=noise, noise_samples=noise_samples)) > best + 1e-3


def test_nce_draws_its_own_noise_with_a_generator() -> None:
    model = ShiftedGaussianEnergy(2)
    noise = GaussianNoise(torch.zeros(2, dtype=DTYPE), 2.0)
    x = torch.randn(8, 2, dtype=DTYPE)
    a = nce(model, x, noise=noise, nu=2, generator=torch.Generator().manual_seed(3))
    b = nce(model, x, noise=noise, nu=2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "noise"), ({"noise": object()}, "log_prob"), ({"nu": 0.0}, "nu must be a positive"),
])
def test_nce_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    model = ShiftedGaussianEnergy(2)
    if "noise" not in kwargs and message != "noise":
        kwargs["noise"] = GaussianNoise(torch.zeros(2, dtype=DTYPE), 1.0)
    with pytest.raises(ValueError, match=message):
        nce(model, torch.randn(4, 2, dtype=DTYPE), noise_samples=torch.randn(4, 2, dtype=DTYPE),
            **kwargs)


def test_fce_flow_loss_is_minus_nce_and_reaches_the_flow() -> None:
    torch.manual_seed(0)
    flow = ebflow_lite.EBFlow([AffineCoupling(2, hidden=8, parity=i % 2) for i in range(2)])
    flow = perturb_parameters(flow.double(), 0.3)
    model = ShiftedGaussianEnergy(2)
    x = torch.randn(16, 2, dtype=DTYPE)
    loss = fce_flow_loss(model, flow, x, generator=torch.Generator().manual_seed(1))
    latent = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    with torch.no_grad():
        expected = -nce(model, x, noise=flow, noise_samples=flow.inverse(latent))
    torch.testing.assert_close(loss.detach(), expected)
    grads = torch.autograd.grad(loss, list(flow.parameters()), allow_unused=True)
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)
