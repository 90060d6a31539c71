"""ebflow_lite.diagnostics: ArviZ's R-hat, ESS and autocorrelation on torch traces, and the
two-sample KS statistic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from ebflow_lite import diagnostics
from ebflow_lite.ebm import GaussianEnergy
from ebflow_lite.sampling import mala


def _ar1(rho: float, n_draws: int, n_chains: int, seed: int = 0) -> torch.Tensor:
    """Stationary AR(1) chains with unit variance, shape (n_draws, n_chains)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.empty(n_draws, n_chains, dtype=torch.float64)
    x[0] = torch.randn(n_chains, generator=gen, dtype=torch.float64)
    noise = torch.randn(n_draws, n_chains, generator=gen, dtype=torch.float64)
    for t in range(1, n_draws):
        x[t] = rho * x[t - 1] + math.sqrt(1 - rho**2) * noise[t]
    return x


def test_independent_draws_have_rhat_one_and_full_ess() -> None:
    x = _ar1(0.0, 2000, 4)
    summary = diagnostics.summarize(x)
    assert abs(summary.rhat - 1) < 0.01
    assert 0.8 < summary.ess_per_draw < 1.2
    assert summary.mixed()
    assert (summary.n_chains, summary.n_draws) == (4, 2000)


def test_ess_of_ar1_chains_matches_the_formula() -> None:
    # ESS / N = (1 - rho) / (1 + rho) for an AR(1) process.
    rho = 0.8
    x = _ar1(rho, 5000, 4, seed=1)
    expected = x.numel() * (1 - rho) / (1 + rho)
    assert abs(diagnostics.ess(x) / expected - 1) < 0.2


def test_autocorrelation_of_ar1_is_geometric() -> None:
    rho = 0.7
    acf = diagnostics.autocorrelation(_ar1(rho, 20_000, 4, seed=2), max_lag=5)
    assert acf.shape == (6,) and float(acf[0]) == pytest.approx(1.0)
    torch.testing.assert_close(acf, torch.tensor([rho**k for k in range(6)],
                                                 dtype=torch.float64), atol=0.03, rtol=0)


def test_rhat_flags_chains_stuck_in_different_places() -> None:
    x = _ar1(0.5, 500, 4, seed=3) + torch.tensor([0.0, 0.0, 3.0, 3.0], dtype=torch.float64)
    assert diagnostics.rhat(x) > 1.5
    assert diagnostics.rhat(x, method="split") > 1.5
    assert not diagnostics.summarize(x).mixed()


def test_burn_in_drops_the_transient() -> None:
    x = _ar1(0.5, 1000, 4, seed=4)
    x[:100] += 50.0 * torch.linspace(1, 0, 100, dtype=torch.float64)[:, None] * torch.tensor(
        [1.0, -1.0, 2.0, -2.0], dtype=torch.float64)
    assert diagnostics.rhat(x) > 1.05
    assert diagnostics.rhat(x, burn_in=100) < 1.02


def test_diagnostics_agree_with_arviz_on_the_same_numbers() -> None:
    import arviz

    x = _ar1(0.3, 400, 4, seed=5)
    chains = x.numpy().T
    assert diagnostics.rhat(x) == pytest.approx(float(arviz.rhat(chains)))
    assert diagnostics.ess(x, method="tail") == pytest.approx(
        float(arviz.ess(chains, method="tail")))


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="n_draws, n_chains"):
        diagnostics.rhat(torch.zeros(10, 4, 3))
    with pytest.raises(ValueError, match="at least 4 draws"):
        diagnostics.ess(torch.zeros(10, 4), burn_in=8)
    with pytest.raises(ValueError, match="NaN"):
        diagnostics.ess(torch.full((10, 4), float("nan")))
    with pytest.raises(ValueError, match="at least 4 chains"):
        diagnostics.summarize(_ar1(0.0, 100, 3))
    with pytest.raises(ValueError, match="at least 2 chains"):
        diagnostics.rhat(_ar1(0.0, 100, 1))
    with pytest.raises(ValueError, match="method"):
        diagnostics.ess(_ar1(0.0, 100, 4), method="mean")
    with pytest.raises(ValueError, match="torch.Tensor"):
        diagnostics.rhat([[1.0, 2.0]])


def test_energy_trace_evaluates_every_kept_state() -> None:
    target = GaussianEnergy(torch.zeros(3), torch.eye(3), trainable=False)
    result = mala(target, torch.randn(5, 3), step_size=0.3, n_steps=6, keep_trace=True,
                  thin=2)
    energies = diagnostics.energy_trace(target, result.trace, batch_size=4)
    assert energies.shape == (4, 5)
    torch.testing.assert_close(energies[-1], target.energy(result.samples))
    with pytest.raises(ValueError, match="n_draws, B"):
        diagnostics.energy_trace(target, result.samples)


def test_ks_statistic_matches_scipy() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(300, generator=gen)
    b = 0.3 + torch.randn(451, generator=gen)
    for u, v in ((a, b), (a, a[:100]), (a.round(), b.round())):  # ties included
        expected = scipy.stats.ks_2samp(u.numpy(), v.numpy()).statistic
        assert diagnostics.ks_statistic(u, v) == pytest.approx(expected, abs=1e-12)
    assert diagnostics.ks_statistic(a, a + 100) == 1.0
    with pytest.raises(ValueError, match="1-D"):
        diagnostics.ks_statistic(a[:, None], b)


def test_ks_critical_value_has_its_level() -> None:
    # Two samples of one law exceed the 5% critical value about 5% of the time.
    rng = np.random.default_rng(0)
    n, m, trials = 200, 300, 400
    crit = diagnostics.ks_critical_value(n, m, alpha=0.05)
    exceed = sum(
        diagnostics.ks_statistic(torch.from_numpy(rng.normal(size=n)),
                                 torch.from_numpy(rng.normal(size=m))) > crit
        for _ in range(trials)
    )
    # binomial(400, 0.05): mean 20, sd 4.4; the asymptotic value is slightly conservative
    assert 4 <= exceed <= 36
    with pytest.raises(ValueError):
        diagnostics.ks_critical_value(0, 5)
