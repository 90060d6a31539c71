"""Evaluation metrics against closed forms (Gaussians) and scipy's Student t."""

from __future__ import annotations

import math

import pytest
import torch

from ebflow_lite import EBFlow
from ebflow_lite.layers import Affine, Dense, Logit, SmoothLeakyReLU
from ebflow_lite.metrics import (
    bits_per_dim,
    data_space_score,
    fisher_divergence,
    kl_divergence,
    mean_confidence_interval,
    nll,
    student_t_quantile,
)
from ebflow_lite.models import fc_flow

DT = torch.float64


class Gaussian:
    """A target N(mu, cov) with the ToyDensity interface: sample, log_prob, score."""

    def __init__(self, mu: torch.Tensor, cov: torch.Tensor) -> None:
        self.mu, self.cov = mu, cov
        self.dist = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(n, self.mu.shape[0], generator=generator, dtype=DT)
        return self.mu + eps @ torch.linalg.cholesky(self.cov).T

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.dist.log_prob(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return -(x - self.mu) @ torch.linalg.inv(self.cov)


def _linear_gaussian_flow(d: int) -> tuple[EBFlow, torch.Tensor, torch.Tensor]:
    """A one-layer flow u = W x + b: exactly N(-W^{-1} b, (W^T W)^{-1})."""
    layer = Dense(d, init="orthogonal").double()
    with torch.no_grad():
        layer.weight.mul_(torch.linspace(0.6, 1.5, d, dtype=DT))
        layer.bias.copy_(torch.randn(d, dtype=DT))
    w, b = layer.weight.detach(), layer.bias.detach()
    return EBFlow([layer]), -torch.linalg.solve(w, b), torch.linalg.inv(w.T @ w)


def _gaussian_kl(m0, c0, m1, c1) -> float:  # KL(N0 || N1)
    d = m0.shape[0]
    c1_inv = torch.linalg.inv(c1)
    diff = m1 - m0
    return float(0.5 * (torch.trace(c1_inv @ c0) + diff @ c1_inv @ diff - d
                        + torch.logdet(c1) - torch.logdet(c0)))


def test_nll_is_mean_negative_log_prob_and_keeps_mode() -> None:
    model = fc_flow(5, init="orthogonal").double()
    x = torch.randn(250, 5, dtype=DT)
    model.train()
    value = nll(model, x, batch_size=64)
    assert model.training
    assert value == pytest.approx(float(-model.log_prob(x).detach().mean()), rel=1e-10)
    with pytest.raises(ValueError, match="batch_size"):
        nll(model, x, batch_size=0)
    with pytest.raises(ValueError, match="NaN"):
        nll(model, torch.full((3, 5), float("nan"), dtype=DT))


def test_bits_per_dim() -> None:
    # paper-facts 1.1: 1092.4 nats on MNIST (D = 784) is 2.01 bits/dim.
    assert bits_per_dim(1092.4, 784) == pytest.approx(2.010, abs=5e-4)
    assert bits_per_dim(64 * math.log(2), 64) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        bits_per_dim(1.0, 0)
    with pytest.raises(ValueError):
        bits_per_dim(float("nan"), 3)


def test_kl_matches_the_gaussian_closed_form() -> None:
    d = 3
    model, m_q, c_q = _linear_gaussian_flow(d)
    target = Gaussian(torch.zeros(d, dtype=DT), torch.diag(torch.tensor([1.0, 2.0, 0.5], dtype=DT)))
    exact = _gaussian_kl(target.mu, target.cov, m_q, c_q)
    gen = torch.Generator().manual_seed(1)
    est = kl_divergence(target, model, n=40_000, generator=gen)
    # The per-sample terms have standard deviation below about 3 here: 5 standard errors.
    assert est == pytest.approx(exact, abs=5 * 3 / math.sqrt(40_000))
    same = Gaussian(m_q, c_q)
    assert kl_divergence(same, model, n=2000) == pytest.approx(0.0, abs=1e-9)


def test_fisher_matches_the_gaussian_closed_form() -> None:
    d = 3
    model, m_q, c_q = _linear_gaussian_flow(d)
    target = Gaussian(torch.ones(d, dtype=DT), torch.diag(torch.tensor([1.0, 2.0, 0.5], dtype=DT)))
    # s_p(x) - s_q(x) = A x + c with A = C_q^-1 - C_p^-1, c = C_p^-1 m_p - C_q^-1 m_q.
    a = torch.linalg.inv(c_q) - torch.linalg.inv(target.cov)
    c = torch.linalg.inv(target.cov) @ target.mu - torch.linalg.inv(c_q) @ m_q
    mean_part = a @ target.mu + c
    exact = float(0.5 * (mean_part @ mean_part + torch.trace(a @ target.cov @ a.T)))
    gen = torch.Generator().manual_seed(2)
    est = fisher_divergence(target, model, n=40_000, generator=gen)
    assert est == pytest.approx(exact, rel=0.05)
    assert fisher_divergence(Gaussian(m_q, c_q), model, n=500) == pytest.approx(0.0, abs=1e-12)


def test_divergences_need_the_right_target_methods() -> None:
    model, _, _ = _linear_gaussian_flow(2)

    class OnlySamples:
        def sample(self, n, generator=None):
            return torch.zeros(n, 2, dtype=DT)

    with pytest.raises(ValueError, match="log_prob"):
        kl_divergence(OnlySamples(), model)
    with pytest.raises(ValueError, match="score"):
        fisher_divergence(OnlySamples(), model)


def test_divergences_of_an_untrained_toy_flow_on_a_toy_density() -> None:
    from ebflow_lite.data import TOY_DENSITIES, toy
    from ebflow_lite.models import toy_flow

    name = "two_moons" if "two_moons" in TOY_DENSITIES else TOY_DENSITIES[0]
    target = toy(name)
    model = toy_flow(n_blocks=2, hidden=16, seed=0)
    gen = torch.Generator().manual_seed(0)
    kl = kl_divergence(target, model, n=2000, generator=gen)
    fisher = fisher_divergence(target, model, n=2000, generator=gen)
    assert math.isfinite(kl) and kl > 0.1  # a standard-normal-like flow is far from the data
    assert math.isfinite(fisher) and fisher > 0.1


def test_data_space_score_goes_through_the_preprocessing() -> None:
    d = 3
    layers = [Dense(d, init="orthogonal"), SmoothLeakyReLU(0.3, dim=d), Dense(d)]
    pre = [Affine(0.5, dim=d), Logit(alpha=0.5, eps=0.01, dim=d)]
    model = EBFlow(layers, preprocessing=pre).double()
    x = 2 * torch.rand(8, d, dtype=DT)
    xr = x.clone().requires_grad_(True)
    h, logdet = xr, 0.0
    for layer in pre:
        h, ld = layer(h)
        logdet = logdet + ld
    (expected,) = torch.autograd.grad((-model.energy(h) + logdet).sum(), xr)
    torch.testing.assert_close(data_space_score(model, x), expected)
    plain = fc_flow(d).double()
    torch.testing.assert_close(data_space_score(plain, x), plain.score(x))


@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 29, 150, 201, 500])
@pytest.mark.parametrize("p", [0.9, 0.975, 0.995])
def test_student_t_quantile_matches_scipy(df: int, p: float) -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    assert student_t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), abs=1e-5)


def test_mean_confidence_interval() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    values = [1092.1, 1092.9, 1092.3]
    mean, half = mean_confidence_interval(values)
    sem = scipy_stats.sem(values)
    assert mean == pytest.approx(sum(values) / 3)
    assert half == pytest.approx(sem * scipy_stats.t.ppf(0.975, 2), rel=1e-6)
    _, half90 = mean_confidence_interval(values, level=0.9)
    assert half90 < half
    with pytest.raises(ValueError, match="two values"):
        mean_confidence_interval([1.0])
    with pytest.raises(ValueError, match="level"):
        mean_confidence_interval([1.0, 2.0], level=1.0)
    with pytest.raises(ValueError, match="NaN"):
        mean_confidence_interval([1.0, float("nan")])
