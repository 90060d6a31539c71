"""The chapter-4 checkers accept the reference solutions and reject stubs and typical mistakes."""

from __future__ import annotations

import torch
from solutions import ch04 as solutions

from ebflow_lite.exercises import ch04 as check


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


# ----------------------------------------------------------------------------- Hutchinson
def test_hutchinson_accepts_reference():
    assert check.hutchinson_trace(solutions.hutchinson_trace)


def test_hutchinson_rejects_stub():
    assert not check.hutchinson_trace(stub)


def test_hutchinson_flags_gaussian_probes_for_rademacher():
    def always_gaussian(matvec, dim, n_probes, kind="rademacher", generator=None):
        return solutions.hutchinson_trace(matvec, dim, n_probes, "gaussian", generator)

    result = check.hutchinson_trace(always_gaussian)
    assert not result and "random signs" in result.message


def test_hutchinson_flags_uniform_probes():
    def uniform(matvec, dim, n_probes, kind="rademacher", generator=None):
        v = torch.rand(n_probes, dim, generator=generator, dtype=torch.float64)
        return (v * matvec(v)).sum(1)

    result = check.hutchinson_trace(uniform)
    assert not result and "E[v v^T] = I" in result.message


def test_hutchinson_variance_formula_against_enumeration():
    # Enumerate all 2^3 sign vectors: the exact variance of v^T A v.
    a = torch.tensor([[1.0, 2.0, -1.0], [2.0, 0.5, 0.3], [-1.0, 0.3, 4.0]], dtype=torch.float64)
    signs = torch.tensor([[(i >> k) & 1 for k in range(3)] for i in range(8)],
                         dtype=torch.float64) * 2 - 1
    values = ((signs @ a) * signs).sum(1)
    assert torch.isclose(values.mean(), torch.trace(a))
    assert abs(float(values.var(unbiased=False)) - check.hutchinson_variance(a, "rademacher")) \
        < 1e-10


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
