"""MCMC samplers: stationary moments on Gaussians, ULA's step-size bias, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from ebflow_lite import EBFlow
from ebflow_lite.ebm import GaussianEnergy, MLPEnergy
from ebflow_lite.layers import Dense
from ebflow_lite.sampling import SamplerResult, langevin, mala, metropolis_hastings

DTYPE = torch.float64
MEAN = torch.tensor([1.0, -1.0], dtype=DTYPE)
COV = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=DTYPE)


def _target() -> GaussianEnergy:
    return GaussianEnergy(MEAN, COV, trainable=False)


def _start(n: int = 4000) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(1), dtype=DTYPE) * 3.0


def _assert_moments(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor,
                    tol: float) -> None:
    torch.testing.assert_close(samples.mean(0), mean, atol=tol, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), cov, atol=tol * 1.5, rtol=0)


def test_mala_reproduces_the_gaussian_exactly():
    g = torch.Generator().manual_seed(0)
    result = mala(_target(), _start(), step_size=0.5, n_steps=150, generator=g)
    assert isinstance(result, SamplerResult)
    assert 0.3 < result.acceptance_rate < 0.99
    # 4000 chains: the standard error of each moment is about 0.03
    _assert_moments(result.samples, MEAN, COV, tol=0.12)


def test_metropolis_hastings_reproduces_the_gaussian():
    g = torch.Generator().manual_seed(0)
    result = metropolis_hastings(_target(), _start(), proposal_std=1.2, n_steps=200, generator=g)
    assert 0.2 < result.acceptance_rate < 0.9
    _assert_moments(result.samples, MEAN, COV, tol=0.12)


def test_ula_with_a_small_step_is_approximately_right():
    g = torch.Generator().manual_seed(0)
    result = langevin(_target(), _start(), step_size=0.05, n_steps=300, generator=g)
    assert result.acceptance_rate is None
    _assert_moments(result.samples, MEAN, COV, tol=0.15)


def test_ula_bias_with_a_large_step_matches_the_closed_form():
    """For a Gaussian with precision A the ULA chain's stationary covariance is
    ``(A - h A^2 / 2)^{-1}`` (variance ``s^2 / (1 - h / (2 s^2))`` per eigen-direction)."""
    h = 0.6
    precision = torch.linalg.inv(COV)
    ula_cov = torch.linalg.inv(precision - 0.5 * h * precision @ precision)
    assert float((ula_cov - COV).abs().max()) > 0.3  # the bias is large at this step
    g = torch.Generator().manual_seed(0)
    start = _start(8000)
    ula = langevin(_target(), start, step_size=h, n_steps=150, generator=g).samples
    _assert_moments(ula, MEAN, ula_cov, tol=0.12)
    # MALA with the same step corrects the bias
    exact = mala(_target(), start, step_size=h, n_steps=150, generator=g).samples
    _assert_moments(exact, MEAN, COV, tol=0.12)


def test_one_dimensional_ula_variance_formula():
    sigma2, h = 1.0, 0.5
    target = GaussianEnergy(torch.zeros(1, dtype=DTYPE), torch.full((1, 1), sigma2, dtype=DTYPE),
                            trainable=False)
    x0 = torch.zeros(20000, 1, dtype=DTYPE)
    samples = langevin(target, x0, step_size=h, n_steps=100,
                       generator=torch.Generator().manual_seed(3)).samples
    expected = sigma2 / (1.0 - h / (2.0 * sigma2))  # 4/3
    assert float(samples.var()) == pytest.approx(expected, rel=0.04)
    assert abs(float(samples.var()) - sigma2) > 0.2


def test_mala_samples_an_ebflow_like_its_exact_sampler():
    torch.manual_seed(0)
    flow = EBFlow([Dense(2, init="orthogonal")]).to(DTYPE)
    with torch.no_grad():
        flow.layers[0].weight.mul_(torch.tensor([[1.5], [0.7]], dtype=DTYPE))
        flow.layers[0].bias.copy_(torch.tensor([0.5, -1.0], dtype=DTYPE))
    exact = flow.sample(20000, generator=torch.Generator().manual_seed(4))
    chains = mala(flow, torch.zeros(4000, 2, dtype=DTYPE), step_size=0.3, n_steps=150,
                  generator=torch.Generator().manual_seed(5)).samples
    _assert_moments(chains, exact.mean(0), torch.cov(exact.T), tol=0.1)


@pytest.mark.parametrize("sampler", ["langevin", "mala", "mh"])
def test_samplers_are_deterministic_and_keep_traces(sampler):
    model = MLPEnergy(2, hidden=8, confinement=1.0)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        x0 = torch.zeros(5, 2)
        if sampler == "langevin":
            return langevin(model, x0, 0.1, 10, keep_trace=True, thin=3, generator=g)
        if sampler == "mala":
            return mala(model, x0, 0.1, 10, keep_trace=True, thin=3, generator=g)
        return metropolis_hastings(model, x0, 0.5, 10, keep_trace=True, thin=3, generator=g)

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples, c.samples)
    assert a.trace.shape == (10 // 3 + 1, 5, 2)
    assert torch.equal(a.trace[0], torch.zeros(5, 2))
    assert all(p.grad is None for p in model.parameters())


def test_zero_steps_and_noise_free_langevin():
    target = _target()
    x0 = _start(10)
    assert torch.equal(mala(target, x0, 0.1, 0).samples, x0)
    # without noise Langevin is gradient descent and converges to the mode
    descent = langevin(target, x0, step_size=0.2, n_steps=300, noise=False).samples
    torch.testing.assert_close(descent, MEAN.expand(10, 2), atol=1e-6, rtol=0)


def test_progress_bar_runs():
    result = langevin(_target(), _start(4), 0.1, 5, progress=True)
    assert result.samples.shape == (4, 2)
    assert math.isfinite(float(result.samples.sum()))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x: langevin(m, x, 0.0, 10), "step_size"),
        (lambda m, x: langevin(m, x, -0.1, 10), "step_size"),
        (lambda m, x: mala(m, x, float("nan"), 10), "step_size"),
        (lambda m, x: mala(m, x, 0.1, -1), "n_steps"),
        (lambda m, x: mala(m, x, 0.1, 2.5), "n_steps"),
        (lambda m, x: metropolis_hastings(m, x, 0.0, 10), "proposal_std"),
        (lambda m, x: langevin(m, x[0], 0.1, 10), "shape"),
        (lambda m, x: langevin(m, torch.zeros(3, 5, dtype=DTYPE), 0.1, 10), "dimension"),
        (lambda m, x: langevin(m, torch.full_like(x, float("nan")), 0.1, 10), "NaN"),
        (lambda m, x: langevin(m, x, 0.1, 10, keep_trace=True, thin=0), "thin"),
        (lambda m, x: langevin(torch.nn.Linear(2, 1), x, 0.1, 10), "energy"),
    ],
)
def test_bad_arguments_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(_target(), _start(3))
