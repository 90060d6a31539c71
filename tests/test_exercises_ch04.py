"""The chapter-4 checkers accept the reference solutions and reject stubs and typical mistakes."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from solutions import ch04 as solutions

from ebflow_lite.data import toy as ebflow_toy
from ebflow_lite.exercises import ch04 as check
from ebflow_lite.objectives import nce


def stub(*args, **kwargs):
    raise NotImplementedError


# ----------------------------------------------------------------------------- implicit SM
def test_implicit_sm_accepts_reference():
    assert check.implicit_sm_1d(solutions.implicit_sm_1d)


def test_implicit_sm_rejects_stub():
    result = check.implicit_sm_1d(stub)
    assert not result and "not implemented" in result.message


def test_implicit_sm_flags_sign_of_derivative_term():
    def minus_derivative(score, score_derivative, x):
        return (0.5 * score(x) ** 2 - score_derivative(x)).mean()

    result = check.implicit_sm_1d(minus_derivative)
    assert not result and "sign" in result.message


def test_implicit_sm_flags_missing_half():
    def no_half(score, score_derivative, x):
        return (score(x) ** 2 + score_derivative(x)).mean()

    result = check.implicit_sm_1d(no_half)
    assert not result and "1/2" in result.message


# ----------------------------------------------------------------------------- FDSSM bias
def test_fdssm_bias_accepts_reference():
    assert check.fdssm_bias(solutions.fdssm_bias)


def test_fdssm_bias_rejects_stub():
    assert not check.fdssm_bias(stub)


def test_fdssm_bias_flags_one_sided_difference():
    def one_sided(energy, x, eps_values, generator=None):
        u = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        u = u / u.norm(dim=1, keepdim=True)
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(xg).sum(), xg, create_graph=True)
        d = (g * u).sum(1)
        (hvp,) = torch.autograd.grad(d.sum(), xg)
        exact = (0.5 * d.detach() ** 2 - (u * hvp).sum(1)).mean()
        out = []
        with torch.no_grad():
            e0 = energy(x)
            for eps in eps_values:
                e1 = energy(x + eps * u)
                fd = (0.5 * (e1 - e0) ** 2 - (energy(x + 2 * eps * u) - 2 * e1 + e0)).mean()
                out.append(float((fd / eps**2 - exact).abs()))
        return out

    result = check.fdssm_bias(one_sided)
    assert not result and "central differences" in result.message


def test_fdssm_bias_flags_missing_one_eighth():
    def quarter(energy, x, eps_values, generator=None):
        u = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        u = u / u.norm(dim=1, keepdim=True)
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(xg).sum(), xg, create_graph=True)
        d = (g * u).sum(1)
        (hvp,) = torch.autograd.grad(d.sum(), xg)
        exact = (0.5 * d.detach() ** 2 - (u * hvp).sum(1)).mean()
        out = []
        with torch.no_grad():
            e0 = energy(x)
            for eps in eps_values:
                ep, em = energy(x + eps * u), energy(x - eps * u)
                fd = ((ep - em) ** 2 / 4 + 2 * e0 - ep - em).mean() / eps**2
                out.append(float((fd - exact).abs()))
        return out

    result = check.fdssm_bias(quarter)
    assert not result and "1/8" in result.message


def test_fdssm_bias_rejects_biases_computed_from_the_taylor_formula():
    def from_formula(energy, x, eps_values, generator=None):
        return [check.fdssm_bias_leading_term(x.shape[1]) * eps**2 for eps in eps_values]

    result = check.fdssm_bias(from_formula)
    assert not result and "ebflow_lite.objectives.fdssm" in result.message, result


def test_fdssm_leading_term_matches_small_eps_limit():
    x = torch.randn(20000, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eps = 0.02
    bias = solutions.fdssm_bias(check.quartic_energy, x, [eps],
                                generator=torch.Generator().manual_seed(4))[0]
    assert abs(bias / eps**2 - check.fdssm_bias_leading_term(4)) < 0.15 * \
        check.fdssm_bias_leading_term(4)


# ----------------------------------------------------------------------------- mode weights
def test_mixture_score_accepts_reference():
    assert check.mixture_score(solutions.mixture_score)


def test_mixture_score_rejects_weights_in_place_of_responsibilities():
    def by_weight(x, weight, mean, std):
        return weight * (-(x - mean) / std**2) + (1 - weight) * (-(x + mean) / std**2)

    result = check.mixture_score(by_weight)
    assert not result and "responsibilities" in result.message, result


def test_mixture_score_rejects_a_score_that_ignores_the_weight():
    def equal_weights(x, weight, mean, std):
        return solutions.mixture_score(x, 0.5, mean, std)

    result = check.mixture_score(equal_weights)
    assert not result and "ignores the weight" in result.message, result


def test_mixture_score_rejects_summed_component_scores():
    def summed(x, weight, mean, std):
        return -(x - mean) / std**2 - (x + mean) / std**2

    result = check.mixture_score(summed)
    assert not result and "added the component scores" in result.message, result


# ----------------------------------------------------------------------------- boundary term
def test_gamma_score_accepts_reference():
    assert check.gamma_score(solutions.gamma_score)


def test_gamma_score_rejects_the_exponent_k():
    result = check.gamma_score(lambda x, k: k / x - 1)
    assert not result and "k - 1" in result.message, result


def test_gamma_score_rejects_a_missing_rate_term():
    result = check.gamma_score(lambda x, k: (k - 1) / x)
    assert not result and "exp(-x)" in result.message, result


# ----------------------------------------------------------------------------- NCE and log Z
def _logits(log_unnormalised, data, noise_samples, noise_log_prob, nu):
    return (log_unnormalised(data) - noise_log_prob(data) - math.log(nu),
            log_unnormalised(noise_samples) - noise_log_prob(noise_samples) - math.log(nu))


def _bisect(slope_at):
    low, high = -1e3, 1e3
    for _ in range(100):
        c = 0.5 * (low + high)
        low, high = (low, c) if slope_at(c) > 0 else (c, high)
    return 0.5 * (low + high)


def test_nce_log_z_accepts_reference():
    result = check.nce_log_z(solutions.nce_log_z)
    assert result, result


def test_nce_log_z_rejects_stub():
    assert not check.nce_log_z(stub)


def test_nce_log_z_rejects_importance_sampling():
    def importance(log_unnormalised, data, noise_samples, noise_log_prob, nu):
        log_w = log_unnormalised(noise_samples) - noise_log_prob(noise_samples)
        return float(torch.logsumexp(log_w, 0)) - math.log(len(noise_samples))

    result = check.nce_log_z(importance)
    assert not result and "importance-sampling" in result.message, result


def test_nce_log_z_rejects_a_logit_without_log_nu():
    def no_log_nu(log_unnormalised, data, noise_samples, noise_log_prob, nu):
        return solutions.nce_log_z(log_unnormalised, data, noise_samples,
                                   lambda v: noise_log_prob(v) - math.log(nu), nu)

    result = check.nce_log_z(no_log_nu)
    assert not result and "log nu" in result.message, result


def test_nce_log_z_rejects_an_unweighted_noise_term():
    def unweighted(log_unnormalised, data, noise_samples, noise_log_prob, nu):
        a_x, a_y = _logits(log_unnormalised, data, noise_samples, noise_log_prob, nu)
        return _bisect(lambda c: float(torch.sigmoid(c - a_x).mean()
                                       - torch.sigmoid(a_y - c).mean()))

    result = check.nce_log_z(unweighted)
    assert not result and "nu times the mean" in result.message, result


def test_nce_log_z_rejects_a_flipped_sign():
    def minus(log_unnormalised, data, noise_samples, noise_log_prob, nu):
        return -solutions.nce_log_z(log_unnormalised, data, noise_samples, noise_log_prob, nu)

    result = check.nce_log_z(minus)
    assert not result and "sign" in result.message, result


def test_nce_minimiser_recovers_log_z_with_well_matched_noise():
    ring = ebflow_toy("gaussian_mixture")
    gen = torch.Generator().manual_seed(5)
    data = ring.sample(4000, generator=gen, dtype=torch.float64)
    noise = check.gaussian_noise(data, 1.0)
    y = noise.mean + torch.randn(4 * len(data), 2, generator=gen,
                                 dtype=torch.float64) @ noise.scale_tril.T
    estimate = check.nce_minimiser(lambda v: ring.log_prob(v) + 0.8, data, noise, y, 4.0)
    assert abs(estimate - 0.8) < 0.06, estimate


def test_nce_minimiser_minimises_the_library_loss_on_the_points_themselves():
    ring = ebflow_toy("gaussian_mixture")
    gen = torch.Generator().manual_seed(6)
    data = ring.sample(500, generator=gen, dtype=torch.float64)
    noise = check.gaussian_noise(data, 0.5)
    y = noise.mean + torch.randn(1000, 2, generator=gen, dtype=torch.float64) @ \
        noise.scale_tril.T
    best = check.nce_minimiser(ring.log_prob, data, noise, y, 2.0)

    def loss(c):
        model = SimpleNamespace(energy=lambda v: -ring.log_prob(v) + c, dim=2)
        return float(nce(model, data, noise=SimpleNamespace(log_prob=noise.log_prob),
                         noise_samples=y, nu=2.0))

    assert loss(best) < min(loss(best - 0.01), loss(best + 0.01))
