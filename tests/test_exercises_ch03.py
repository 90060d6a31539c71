"""The chapter-3 checkers accept the reference solutions and reject stubs and typical mistakes."""

from __future__ import annotations

import math

import torch
from solutions import ch03 as solutions

from ebflow_lite.exercises import ch03 as check


def stub(*args, **kwargs):
    raise NotImplementedError


# ----------------------------------------------------------------------------- grad log Z
def test_grad_log_z_accepts_reference():
    assert check.grad_log_z(solutions.grad_log_z)


def test_grad_log_z_rejects_stub():
    result = check.grad_log_z(stub)
    assert not result and "not implemented" in result.message


def test_grad_log_z_flags_sign_error():
    def plus_sign(energy, theta, samples):
        return -solutions.grad_log_z(energy, theta, samples)

    result = check.grad_log_z(plus_sign)
    assert not result and "sign" in result.message


def test_grad_log_z_flags_sum_instead_of_mean():
    def summed(energy, theta, samples):
        theta = theta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(samples, theta).sum(), theta)
        return -grad

    result = check.grad_log_z(summed)
    assert not result and "average" in result.message


# ----------------------------------------------------------------------------- MALA
def test_mala_log_accept_accepts_reference():
    assert check.mala_log_accept(solutions.mala_log_accept)


def test_mala_log_accept_rejects_stub():
    assert not check.mala_log_accept(stub)


def test_mala_log_accept_flags_missing_proposal_correction():
    def random_walk_ratio(energy, x, y, step):
        return torch.clamp(-energy(y) + energy(x), max=0.0).detach()

    result = check.mala_log_accept(random_walk_ratio)
    assert not result and "not symmetric" in result.message


def test_mala_log_accept_flags_missing_min():
    def no_min(energy, x, y, step):
        value = solutions.mala_log_accept(energy, x, y, step)
        # undo the clamp by recomputing the raw ratio
        raw = value.clone()
        raw[value == 0] = 0.5
        return raw

    result = check.mala_log_accept(no_min)
    assert not result and "min(0" in result.message


def test_mala_log_accept_flags_wrong_variance():
    def variance_h(energy, x, y, step):
        # q with variance h instead of 2h is the same as the reference with step h/2 in the
        # noise term only: write it out
        def grad(z):
            z = z.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(energy(z).sum(), z)
            return g

        fwd = -((y - x + step * grad(x)) ** 2).sum(1) / (2 * step)
        bwd = -((x - y + step * grad(y)) ** 2).sum(1) / (2 * step)
        return torch.clamp((-energy(y) + energy(x) + bwd - fwd).detach(), max=0.0)

    result = check.mala_log_accept(variance_h)
    assert not result and "2h" in result.message


# ----------------------------------------------------------------------------- ULA variance
def test_ula_variance_accepts_reference():
    assert check.ula_variance(solutions.ula_variance)


def test_ula_variance_rejects_stub():
    assert not check.ula_variance(stub)


def test_ula_variance_flags_half_noise():
    def sqrt_h_noise(step, sigma, n_chains=4000, n_steps=300, generator=None):
        x = torch.zeros(n_chains, dtype=torch.float64)
        for _ in range(n_steps):
            x = x - step * x / sigma**2 + math.sqrt(step) * torch.randn(
                n_chains, generator=generator, dtype=torch.float64)
        return float(x.var())

    result = check.ula_variance(sqrt_h_noise)
    assert not result and "sqrt(2h)" in result.message


def test_ula_variance_flags_exact_sampler():
    def exact(step, sigma, n_chains=4000, n_steps=300, generator=None):
        return float((sigma * torch.randn(n_chains, generator=generator)).var())

    result = check.ula_variance(exact)
    assert not result and "MALA" in result.message


def test_closed_form_matches_fixed_point_of_the_variance_recursion():
    # v' = (1 - h/s^2)^2 v + 2h has the fixed point s^2 / (1 - h/(2 s^2)).
    for step in (0.05, 0.3, 1.2):
        v = check.ula_gaussian_variance(step, 1.3)
        assert math.isclose((1 - step / 1.3**2) ** 2 * v + 2 * step, v, rel_tol=1e-12)


def test_ula_variance_flags_an_answer_that_ignores_sigma():
    def unit_gradient(step, sigma, n_chains=4000, n_steps=300, generator=None):
        x = torch.randn(n_chains, generator=generator) * sigma
        for _ in range(n_steps):
            x = x - step * x + math.sqrt(2 * step) * torch.randn(n_chains, generator=generator)
        return float(x.var())

    result = check.ula_variance(unit_gradient)
    assert not result, result
    assert "sigma = 1 only" in result.message, result.message


def test_ula_variance_flags_the_closed_form_returned_without_simulation():
    def closed_form(step, sigma, n_chains=4000, n_steps=300, generator=None):
        return check.ula_gaussian_variance(step, sigma)

    result = check.ula_variance(closed_form)
    assert not result, result
    assert "random seed" in result.message, result.message
