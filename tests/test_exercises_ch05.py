"""The chapter-5 checkers accept the reference solutions and reject stubs and typical mistakes."""

from __future__ import annotations

import math

import torch
from solutions import ch05 as solutions

from ebflow_lite.exercises import ch05 as check


def stub(*args, **kwargs):
    raise NotImplementedError


# ----------------------------------------------------------------------------- split
def test_split_reference_passes():
    assert check.split(solutions.split)


def test_split_rejects_stub():
    result = check.split(stub)
    assert not result and "not implemented" in result.message


def test_split_flags_linear_logdets_in_energy():
    def full_nll(x, params):
        energy, log_z = solutions.split(x, params)
        return energy + log_z, log_z

    result = check.split(full_nll)
    assert not result and "-log p(x)" in result.message


def test_split_flags_missing_nonlinear_logdet():
    def no_slope(x, params):
        energy, log_z = solutions.split(x, params)
        alpha = params["alpha"]
        h = ((x - params["loc"]) * params["log_scale"].exp()) @ params["W1"].T + params["b1"]
        slope = alpha + (1 - alpha) * torch.sigmoid(h)
        return energy + slope.log().sum(1), log_z

    result = check.split(no_slope)
    assert not result and "leaky ReLU's log-det is missing" in result.message


def test_split_flags_log_z_sign():
    def flipped(x, params):
        energy, log_z = solutions.split(x, params)
        return energy, -log_z

    result = check.split(flipped)
    assert not result and "sign of log Z" in result.message


def test_split_flags_actnorm_left_out_of_log_z():
    def no_actnorm(x, params):
        energy, log_z = solutions.split(x, params)
        return energy, log_z + params["log_scale"].sum()

    result = check.split(no_actnorm)
    assert not result and "ActNorm is linear" in result.message


def test_split_flags_missing_prior_constant():
    def no_constant(x, params):
        energy, log_z = solutions.split(x, params)
        return energy - 0.5 * x.shape[1] * math.log(2 * math.pi), log_z

    result = check.split(no_constant)
    assert not result and "log(2 pi)" in result.message


def test_split_reference_equals_library_flow():
    params = check.split_parameters(4, seed=7)
    x = torch.randn(10, 4, dtype=torch.float64)
    flow = check.flow_from_parameters(params)
    energy, log_z = solutions.split(x, params)
    with torch.no_grad():
        torch.testing.assert_close(-energy - log_z, flow.log_prob(x))


# ----------------------------------------------------------------------------- logdet gradient
def test_logdet_gradient_reference_passes():
    assert check.logdet_gradient(solutions.logdet_gradient)


def test_logdet_gradient_rejects_stub():
    result = check.logdet_gradient(stub)
    assert not result and "not implemented" in result.message


def test_logdet_gradient_flags_missing_transpose():
    result = check.logdet_gradient(lambda W: torch.linalg.inv(W))
    assert not result and "transpose" in result.message


def test_logdet_gradient_flags_gradient_of_det():
    result = check.logdet_gradient(lambda W: torch.linalg.det(W) * torch.linalg.inv(W).T)
    assert not result and "gradient of det W" in result.message


def test_logdet_gradient_flags_autograd_use():
    def with_autograd(W):
        W = W.requires_grad_(True)
        (g,) = torch.autograd.grad(torch.linalg.slogdet(W).logabsdet, W)
        return g

    result = check.logdet_gradient(with_autograd)
    assert not result and "raised" in result.message


def test_relative_gradient_identity():
    W = torch.randn(5, 5, dtype=torch.float64)
    torch.testing.assert_close(solutions.logdet_gradient(W) @ W.T,
                               torch.eye(5, dtype=torch.float64))


# ----------------------------------------------------------------------------- gradient change
def test_gradient_change_reference_passes():
    assert check.gradient_change(solutions.gradient_change)


def test_gradient_change_rejects_stub():
    result = check.gradient_change(stub)
    assert not result and "not implemented" in result.message


def test_gradient_change_flags_constant_answer():
    result = check.gradient_change(lambda flow, x, shift, seed: 0.0)
    assert not result and "x-dependent" in result.message


def test_gradient_change_flags_unseeded_projections():
    def unseeded(flow, x, shift, seed):
        torch.manual_seed(seed + 1)  # the second loss below sees other projections
        return solutions_unseeded(flow, x, shift)

    def solutions_unseeded(flow, x, shift):
        from ebflow_lite import objectives

        params = list(flow.parameters())
        grads = []
        for model in (flow, solutions.ShiftedEnergy(flow, shift)):
            loss = objectives.ssm(model, x, n_slices=1)
            found = torch.autograd.grad(loss, params, allow_unused=True)
            grads.append([torch.zeros_like(p) if g is None else g
                          for p, g in zip(params, found, strict=True)])
        return max((a - b).abs().max().item() for a, b in zip(*grads, strict=True))

    result = check.gradient_change(unseeded)
    assert not result and "manual_seed" in result.message
