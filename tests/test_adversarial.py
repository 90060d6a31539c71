"""Adversarial EBM training: the variational bound on log Z and the sign of its entropy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import ebflow_lite
from ebflow_lite.ebm import GaussianEnergy
from ebflow_lite.layers import AffineCoupling
from ebflow_lite.objectives import adversarial_ebm_loss

DTYPE = torch.float64


class ScaledGaussianSampler(nn.Module):
    """``y = mean + exp(log_std) u``: a one-layer flow with an exact log-density."""

    def __init__(self, dim: int, std: float, mean: float = 0.0) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.full((dim,), mean, dtype=DTYPE))
        self.log_std = nn.Parameter(torch.tensor(math.log(std), dtype=DTYPE))

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        return self.mean + self.log_std.exp() * u

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        d = y.shape[1]
        u = (y - self.mean) / self.log_std.exp()
        return -0.5 * (u**2).sum(1) - d * (self.log_std + 0.5 * math.log(2 * math.pi))


class _Truncating(ScaledGaussianSampler):
    """A broken sampler whose draws lose a dimension."""

    def __init__(self) -> None:
        super().__init__(2, 1.0)

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        return u[:, :1]


def _standard_energy(dim: int) -> GaussianEnergy:
    return GaussianEnergy(torch.zeros(dim, dtype=DTYPE), torch.eye(dim, dtype=DTYPE),
                          trainable=False)


def test_the_bound_equals_log_z_when_the_sampler_is_the_model() -> None:
    energy = _standard_energy(3)
    x = torch.randn(32, 3, dtype=DTYPE)
    losses = adversarial_ebm_loss(energy, ScaledGaussianSampler(3, 1.0), x, n_samples=64,
                                  generator=torch.Generator().manual_seed(0))
    # -E(y) - log q(y) = log Z for every draw when q = p, so the estimate has no noise.
    torch.testing.assert_close(-losses.sampler, energy.log_z().to(DTYPE), rtol=0, atol=1e-10)


@pytest.mark.parametrize("std,mean", [(0.5, 0.0), (1.7, 0.0), (1.0, 0.8)])
def test_the_bound_is_below_log_z_for_another_sampler(std: float, mean: float) -> None:
    energy = _standard_energy(2)
    sampler = ScaledGaussianSampler(2, std, mean)
    n = 40_000
    losses = adversarial_ebm_loss(energy, sampler, torch.randn(8, 2, dtype=DTYPE), n_samples=n,
                                  generator=torch.Generator().manual_seed(1))
    # Closed form: E_q[-E] + H(q) = -(D/2)(std^2 + mean^2) + (D/2) log(2 pi e std^2).
    exact = -(std**2 + mean**2) + math.log(2 * math.pi * math.e * std**2)
    bound = float(-losses.sampler.detach())
    assert bound < float(energy.log_z())
    assert abs(bound - exact) < 4 * 2.0 / math.sqrt(n)


def test_the_sampler_gradient_points_to_the_model_and_the_entropy_sign_matters() -> None:
    energy = _standard_energy(2)
    x = torch.randn(8, 2, dtype=DTYPE)
    for std, direction in ((0.6, -1.0), (1.6, 1.0)):   # d loss / d log_std: grow, shrink
        sampler = ScaledGaussianSampler(2, std)
        losses = adversarial_ebm_loss(energy, sampler, x, n_samples=20_000,
                                      generator=torch.Generator().manual_seed(2))
        (grad,) = torch.autograd.grad(losses.sampler, [sampler.log_std], retain_graph=True)
        assert direction * float(grad) > 0
        # The slip: E_q[E] - H(q) (minimised) pushes even a narrow sampler narrower.
        draws = sampler.inverse(torch.randn(20_000, 2, dtype=DTYPE,
                                            generator=torch.Generator().manual_seed(2)))
        wrong = energy.energy(draws).mean() - sampler.log_prob(draws).mean()
        (wrong_grad,) = torch.autograd.grad(wrong, [sampler.log_std])
        assert float(wrong_grad) > 0


def test_the_energy_loss_is_data_minus_samples_and_stops_at_the_sampler() -> None:
    torch.manual_seed(0)
    model = ebflow_lite.ebm.MLPEnergy(2, hidden=8, depth=1).double()
    flow = ebflow_lite.EBFlow([AffineCoupling(2, hidden=8, parity=i % 2)
                               for i in range(2)]).double()
    x = torch.randn(16, 2, dtype=DTYPE)
    losses = adversarial_ebm_loss(model, flow, x, n_samples=24,
                                  generator=torch.Generator().manual_seed(3))
    latent = torch.randn(24, 2, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    with torch.no_grad():
        y = flow.inverse(latent)
        torch.testing.assert_close(losses.energy, model.energy(x).mean() - model.energy(y).mean())
        torch.testing.assert_close(losses.sampler,
                                   model.energy(y).mean() + flow.log_prob(y).mean())
    grads = torch.autograd.grad(losses.energy, list(flow.parameters()), allow_unused=True)
    assert all(g is None for g in grads)
    grads = torch.autograd.grad(losses.sampler, list(flow.parameters()), allow_unused=True)
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("sampler,kwargs,message", [
    (object(), {}, "inverse"),
    (ScaledGaussianSampler(2, 1.0), {"n_samples": 0}, "n_samples"),
    (ScaledGaussianSampler(2, 1.0), {"n_samples": True}, "n_samples"),
    (_Truncating(), {}, "sampler draws"),
])
def test_adversarial_ebm_loss_rejects_bad_arguments(sampler: object, kwargs: dict,
                                                    message: str) -> None:
    with pytest.raises(ValueError, match=message):
        adversarial_ebm_loss(_standard_energy(2), sampler, torch.randn(4, 2, dtype=DTYPE),
                             **kwargs)
