"""The chapter-6 checkers accept the reference solutions and reject stubs and typical mistakes."""

from __future__ import annotations

import torch
from solutions import ch06 as solutions

from ebflow_lite.exercises import ch06 as check


def stub(*args, **kwargs):
    raise NotImplementedError


# ----------------------------------------------------------------------------- closed forms
def test_gaussian_helpers_agree_with_torch_distributions():
    p, q = check.example_pair()
    dist_p = torch.distributions.MultivariateNormal(p.mean, p.cov)
    dist_q = torch.distributions.MultivariateNormal(q.mean, q.cov)
    x = torch.randn(20, 2, dtype=torch.float64)
    torch.testing.assert_close(p.log_prob(x), dist_p.log_prob(x))
    leaf = x.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(dist_p.log_prob(leaf).sum(), leaf)
    torch.testing.assert_close(p.score(x), score)
    expected = torch.distributions.kl_divergence(dist_p, dist_q).item()
    assert abs(check.gaussian_kl(p, q) - expected) < 1e-10


def test_gaussian_fisher_closed_form_matches_monte_carlo():
    p, q = check.example_pair()
    x = p.sample(400_000, torch.Generator().manual_seed(3))
    mc = 0.5 * ((p.score(x) - q.score(x)) ** 2).sum(1).mean().item()
    assert abs(mc - check.gaussian_fisher(p, q)) < 0.02 * check.gaussian_fisher(p, q)


# ----------------------------------------------------------------------------- KL
def test_kl_estimate_reference_passes():
    assert check.kl_estimate(solutions.kl_estimate)


def test_kl_estimate_rejects_stub():
    result = check.kl_estimate(stub)
    assert not result and "not implemented" in result.message


def test_kl_estimate_flags_sign():
    result = check.kl_estimate(lambda p, q, n, g: -solutions.kl_estimate(p, q, n, g))
    assert not result and "sign" in result.message


def test_kl_estimate_flags_samples_from_q():
    result = check.kl_estimate(lambda p, q, n, g: solutions.kl_estimate(q, p, n, g))
    assert not result and "KL(q || p)" in result.message


# ----------------------------------------------------------------------------- Fisher
def test_fisher_estimate_reference_passes():
    assert check.fisher_estimate(solutions.fisher_estimate)


def test_fisher_estimate_rejects_stub():
    result = check.fisher_estimate(stub)
    assert not result and "not implemented" in result.message


def test_fisher_estimate_flags_missing_half():
    result = check.fisher_estimate(lambda p, q, n, g: 2 * solutions.fisher_estimate(p, q, n, g))
    assert not result and "factor 1/2" in result.message


def test_fisher_estimate_flags_samples_from_q():
    result = check.fisher_estimate(lambda p, q, n, g: solutions.fisher_estimate(q, p, n, g))
    assert not result and "D_F(q || p)" in result.message


# ----------------------------------------------------------------------------- DSM bias
def test_dsm_bias_reference_passes():
    assert check.dsm_bias(solutions.dsm_bias)


def test_dsm_bias_rejects_stub():
    result = check.dsm_bias(stub)
    assert not result and "not implemented" in result.message


def test_dsm_bias_flags_an_unbiased_fit():
    # Reporting the data covariance itself (what ML would find) misses the sigma^2 I bias.
    result = check.dsm_bias(lambda sigma: check.dsm_data()[1].clone())
    assert not result and "DSM with noise level" in result.message
