"""The chapter-3 checkers accept the reference solutions and reject stubs and typical mistakes."""

from __future__ import annotations

import math

import torch
from solutions import ch03 as solutions

from ebflow_lite.exercises import ch03 as check


def stub(*args, **kwargs):
    raise NotImplementedError


# ----------------------------------------------------------------------------- importance log Z
def test_log_z_importance_accepts_reference():
    assert check.log_z_importance(solutions.log_z_importance)


def test_log_z_importance_rejects_stub():
    result = check.log_z_importance(stub)
    assert not result and "not implemented" in result.message


def test_log_z_importance_rejects_the_mean_of_the_log_weights():
    def elbo(energy, samples, proposal_log_prob):
        return float((-energy(samples) - proposal_log_prob(samples)).mean())

    result = check.log_z_importance(elbo)
    assert not result and "lower bound" in result.message, result


def test_log_z_importance_rejects_a_sum_in_place_of_the_mean():
    def summed(energy, samples, proposal_log_prob):
        return float(torch.logsumexp(-energy(samples) - proposal_log_prob(samples), 0))

    result = check.log_z_importance(summed)
    assert not result and "log N" in result.message, result


def test_log_z_importance_rejects_a_missing_proposal_density():
    def no_proposal(energy, samples, proposal_log_prob):
        return float(torch.logsumexp(-energy(samples), 0) - math.log(len(samples)))

    result = check.log_z_importance(no_proposal)
    assert not result and "proposal density" in result.message, result


def test_log_z_importance_rejects_exponentiating_outside_log_space():
    def naive(energy, samples, proposal_log_prob):
        weights = torch.exp(-energy(samples)) / torch.exp(proposal_log_prob(samples))
        return float(torch.log(weights.mean()))

    def naive_math_log(energy, samples, proposal_log_prob):
        weights = torch.exp(-energy(samples) - proposal_log_prob(samples))
        return math.log(float(weights.mean()))

    for answer in (naive, naive_math_log):
        result = check.log_z_importance(answer)
        assert not result and "log space" in result.message, result


def test_the_checker_target_has_the_stated_log_z():
    # exp(-E) integrates to exp(offset): a midpoint rule on a grid holding all the mass
    width = 0.02
    centres = torch.arange(-6 + width / 2, 6, width, dtype=torch.float64)
    grid = torch.cartesian_prod(centres, centres)
    log_z = torch.logsumexp(-check.mixture_energy(grid, 0.3, 2.0, 0.5, offset=1.5), 0) \
        + 2 * math.log(width)
    assert abs(float(log_z) - 1.5) < 1e-6


# ----------------------------------------------------------------------------- mode jumps
def test_mode_jump_mh_accepts_reference():
    assert check.mode_jump_mh(solutions.mode_jump_mh)


def test_mode_jump_mh_rejects_stub():
    assert not check.mode_jump_mh(stub)


def test_mode_jump_mh_rejects_a_local_random_walk():
    def local_only(energy, x0, n_steps, jump, local_std=0.5, jump_prob=0.2, generator=None):
        return solutions.mode_jump_mh(energy, x0, n_steps, jump, local_std, 0.0, generator)

    result = check.mode_jump_mh(local_only)
    assert not result and "never left" in result.message, result


def _faulty_jump_sampler(one_way: bool, skip_test_on_jumps: bool):
    """A mode-jumping sampler with one of two mistakes: jumps only by -J, or jumps that are
    accepted without the Metropolis test."""

    def sampler(energy, x0, n_steps, jump, local_std=0.5, jump_prob=0.2, generator=None):
        x, e_x = x0.clone(), energy(x0)
        for _ in range(n_steps):
            local = x + local_std * torch.randn(x.shape, generator=generator, dtype=x.dtype)
            sign = torch.where(torch.rand(len(x), generator=generator) < 0.5, 1.0, -1.0)
            sign = -torch.ones_like(sign) if one_way else sign
            is_jump = torch.rand(len(x), generator=generator) < jump_prob
            y = torch.where(is_jump[:, None], x + sign[:, None].to(x.dtype) * jump, local)
            e_y = energy(y)
            accept = torch.log(torch.rand(len(x), generator=generator, dtype=x.dtype)) < e_x - e_y
            if skip_test_on_jumps:
                accept = accept | is_jump
            x, e_x = torch.where(accept[:, None], y, x), torch.where(accept, e_y, e_x)
        return x

    return sampler


def test_mode_jump_mh_rejects_jumps_in_one_direction():
    result = check.mode_jump_mh(_faulty_jump_sampler(one_way=True, skip_test_on_jumps=False))
    assert not result and "symmetric" in result.message, result


def test_mode_jump_mh_rejects_jumps_accepted_without_a_metropolis_test():
    result = check.mode_jump_mh(_faulty_jump_sampler(one_way=False, skip_test_on_jumps=True))
    assert not result and "jumps included" in result.message, result


def test_mode_jump_mh_rejects_samples_that_ignore_the_generator():
    def fixed_seed(energy, x0, n_steps, jump, local_std=0.5, jump_prob=0.2, generator=None):
        return solutions.mode_jump_mh(energy, x0, n_steps, jump, local_std, jump_prob,
                                      torch.Generator().manual_seed(0))

    result = check.mode_jump_mh(fixed_seed)
    assert not result and "generator" in result.message, result


# ----------------------------------------------------------------------------- MALA step vs D
def test_tune_mala_step_accepts_reference():
    result = check.tune_mala_step(solutions.tune_mala_step)
    assert result, result


def test_tune_mala_step_rejects_stub():
    assert not check.tune_mala_step(stub)


def test_tune_mala_step_rejects_a_fixed_step():
    def fixed(dim, target=0.574, generator=None):
        return solutions.tune_mala_step(2, target, generator)   # tuned at D = 2 only

    result = check.tune_mala_step(fixed)
    assert not result and "falls with the dimension" in result.message, result


def test_tune_mala_step_rejects_random_walk_scaling():
    def one_over_d(dim, target=0.574, generator=None):
        return solutions.tune_mala_step(2, target, generator) * 2 / dim

    result = check.tune_mala_step(one_over_d)
    assert not result and "too fast" in result.message, result


def test_tune_mala_step_rejects_a_step_that_ignores_the_target():
    def default_target(dim, target=0.574, generator=None):
        return solutions.tune_mala_step(dim, 0.574, generator)

    result = check.tune_mala_step(default_target)
    assert not result and "target argument" in result.message, result
