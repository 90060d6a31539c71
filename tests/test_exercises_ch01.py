"""The chapter-1 checkers accept the reference solutions and reject stubs and typical mistakes."""

from __future__ import annotations

import math

import torch
from solutions import ch01 as solutions

from ebflow_lite.exercises import ch01 as check


def stub(*args, **kwargs):
    raise NotImplementedError


def _assert_hint(result, *words: str) -> None:
    assert not result, result
    for word in words:
        assert word in result.message, result.message


# ----------------------------------------------------------------------------- affine density
def test_affine_density_accepts_reference():
    assert check.affine_log_density(solutions.affine_log_density)


def test_affine_density_rejects_stub():
    _assert_hint(check.affine_log_density(stub), "not implemented")


def test_affine_density_flags_flipped_log_det():
    def plus_log_det(y, a, c):
        return solutions.affine_log_density(y, a, c) + 2 * torch.linalg.slogdet(a)[1]

    _assert_hint(check.affine_log_density(plus_log_det), "wrong sign")


def test_affine_density_flags_missing_log_det():
    def no_log_det(y, a, c):
        return solutions.affine_log_density(y, a, c) + torch.linalg.slogdet(a)[1]

    _assert_hint(check.affine_log_density(no_log_det), "Jacobian term is missing")


def test_affine_density_flags_log_of_a_negative_determinant():
    def signed_log_det(y, a, c):
        x = torch.linalg.solve(a, (y - c).T).T
        log_prior = -0.5 * (x**2).sum(1) - 0.5 * y.shape[1] * math.log(2 * math.pi)
        return log_prior - torch.log(torch.linalg.det(a))

    _assert_hint(check.affine_log_density(signed_log_det), "|det A|")


def test_affine_density_flags_multiplying_by_a():
    def times_a(y, a, c):
        x = (y - c) @ a.T
        log_prior = -0.5 * (x**2).sum(1) - 0.5 * y.shape[1] * math.log(2 * math.pi)
        return log_prior - torch.linalg.slogdet(a)[1]

    _assert_hint(check.affine_log_density(times_a), "A^{-1}(y - c)")


def test_affine_density_flags_missing_constant():
    def no_constant(y, a, c):
        return solutions.affine_log_density(y, a, c) + 0.5 * y.shape[1] * math.log(2 * math.pi)

    _assert_hint(check.affine_log_density(no_constant), "log(2 pi)")


def test_affine_density_flags_summing_over_the_batch():
    def summed(y, a, c):
        return solutions.affine_log_density(y, a, c).sum()

    _assert_hint(check.affine_log_density(summed), "one value per sample")


# ----------------------------------------------------------------------------- generative planar
def _log_normal(u):
    return -0.5 * (u**2).sum(1) - 0.5 * u.shape[1] * math.log(2 * math.pi)


def _ridge_log_det(a, u_hat, w):
    return torch.log(torch.abs(1 + (1 - torch.tanh(a) ** 2) * (u_hat @ w)))


def test_generative_planar_accepts_reference():
    assert check.generative_planar_density(solutions.generative_planar_density)


def test_generative_planar_rejects_stub():
    _assert_hint(check.generative_planar_density(stub), "not implemented")


def test_generative_planar_flags_added_log_det():
    def plus(x, u_hat, w, b):
        u, _ = solutions.generative_planar_density(x, u_hat, w, b)
        return u, _log_normal(u) + _ridge_log_det(u @ w + b, u_hat, w)

    _assert_hint(check.generative_planar_density(plus), "wrong sign")


def test_generative_planar_flags_log_det_at_the_data_point():
    def at_x(x, u_hat, w, b):
        u, _ = solutions.generative_planar_density(x, u_hat, w, b)
        return u, _log_normal(u) - _ridge_log_det(x @ w + b, u_hat, w)

    _assert_hint(check.generative_planar_density(at_x), "evaluated at x")


def test_generative_planar_flags_prior_at_the_data_point():
    def prior_at_x(x, u_hat, w, b):
        u, _ = solutions.generative_planar_density(x, u_hat, w, b)
        return u, _log_normal(x) - _ridge_log_det(u @ w + b, u_hat, w)

    _assert_hint(check.generative_planar_density(prior_at_x), "prior is evaluated at x")


def test_generative_planar_flags_one_step_instead_of_a_root_find():
    def one_step(x, u_hat, w, b):
        u = x - u_hat * torch.tanh(x @ w + b).unsqueeze(1)
        return u, _log_normal(u) - _ridge_log_det(u @ w + b, u_hat, w)

    _assert_hint(check.generative_planar_density(one_step), "not the latent of x")


def test_generative_planar_flags_a_fixed_point_iteration():
    def fixed_point(x, u_hat, w, b):
        u = x.clone()
        for _ in range(200):
            u = x - u_hat * torch.tanh(u @ w + b).unsqueeze(1)
        return u, _log_normal(u) - _ridge_log_det(u @ w + b, u_hat, w)

    _assert_hint(check.generative_planar_density(fixed_point), "fixed-point", "Newton")


def test_generative_planar_flags_newton_without_a_bracket():
    def plain_newton(x, u_hat, w, b):
        c, target = u_hat @ w, x @ w + b
        a = target.clone()
        for _ in range(60):
            a = a - (a + c * torch.tanh(a) - target) / (1 + c * (1 - torch.tanh(a) ** 2))
        u = x - u_hat * torch.tanh(a).unsqueeze(1)
        return u, _log_normal(u) - _ridge_log_det(a, u_hat, w)

    _assert_hint(check.generative_planar_density(plain_newton), "cycle", "bracket")


def test_generative_planar_flags_a_bracket_that_accepts_long_newton_steps():
    def long_steps(x, u_hat, w, b):
        c, target = u_hat @ w, x @ w + b
        lo, hi = target - c.abs(), target + c.abs()
        a = target.clone()
        for _ in range(60):
            residual = a + c * torch.tanh(a) - target
            lo = torch.where(residual < 0, a, lo)
            hi = torch.where(residual > 0, a, hi)
            newton = a - residual / (1 + c * (1 - torch.tanh(a) ** 2))
            a = torch.where((newton >= lo) & (newton <= hi), newton, 0.5 * (lo + hi))
        u = x - u_hat * torch.tanh(a).unsqueeze(1)
        return u, _log_normal(u) - _ridge_log_det(a, u_hat, w)

    _assert_hint(check.generative_planar_density(long_steps), "longer than half")


def test_generative_planar_flags_a_dense_jacobian():
    def dense(x, u_hat, w, b):
        u, _ = solutions.generative_planar_density(x, u_hat, w, b)
        slope = 1 - torch.tanh(u @ w + b) ** 2
        eye = torch.eye(x.shape[1], dtype=x.dtype)
        jac = eye + slope[:, None, None] * u_hat[:, None] * w[None, :]   # (B, D, D)
        return u, _log_normal(u) - torch.linalg.slogdet(jac)[1]

    _assert_hint(check.generative_planar_density(dense), "D x D matrix")


def test_generative_planar_flags_summing_over_the_batch():
    def summed(x, u_hat, w, b):
        u, log_p = solutions.generative_planar_density(x, u_hat, w, b)
        return u, log_p.sum()

    _assert_hint(check.generative_planar_density(summed), "one value per sample")


# ----------------------------------------------------------------------------- folded density
def _branch_parts(x, branch):
    """The latent of one branch and the signed det of its Jacobian (1 or 2 features)."""
    x = x.detach().requires_grad_(True)
    u = branch(x)
    rows = [torch.autograd.grad(u[:, i].sum(), x, retain_graph=True)[0]
            for i in range(u.shape[1])]
    return u.detach(), torch.linalg.det(torch.stack(rows, 1))


def test_folded_density_accepts_reference():
    assert check.folded_log_density(solutions.folded_log_density)


def test_folded_density_rejects_stub():
    _assert_hint(check.folded_log_density(stub), "not implemented")


def test_folded_density_flags_one_branch():
    def one_branch(x, log_p_u, branches):
        return solutions.folded_log_density(x, log_p_u, branches[:1])

    _assert_hint(check.folded_log_density(one_branch), "single branch")


def test_folded_density_flags_a_doubled_branch():
    # right for x = u^2 with a centred Gaussian, wrong as soon as the branches differ
    def doubled(x, log_p_u, branches):
        return solutions.folded_log_density(x, log_p_u, branches[:1]) + math.log(len(branches))

    _assert_hint(check.folded_log_density(doubled), "multiplied one branch", "N(0.8")


def test_folded_density_flags_averaged_branches():
    def averaged(x, log_p_u, branches):
        return solutions.folded_log_density(x, log_p_u, branches) - math.log(len(branches))

    _assert_hint(check.folded_log_density(averaged), "averaged")


def test_folded_density_flags_summed_log_densities():
    def summed_logs(x, log_p_u, branches):
        return sum(solutions.folded_log_density(x, log_p_u, [g]) for g in branches)

    _assert_hint(check.folded_log_density(summed_logs), "multiplies their densities")


def test_folded_density_flags_a_missing_absolute_value():
    def signed_det(x, log_p_u, branches):
        total = 0.0
        for branch in branches:
            u, det = _branch_parts(x, branch)
            total = total + log_p_u(u).exp() * det
        return total.log()

    _assert_hint(check.folded_log_density(signed_det), "absolute value", "|det J_{g_k}|")


def test_folded_density_flags_the_log_of_a_negative_determinant():
    def log_det(x, log_p_u, branches):
        terms = []
        for branch in branches:
            u, det = _branch_parts(x, branch)
            terms.append(log_p_u(u) + torch.log(det))
        return torch.logsumexp(torch.stack(terms), 0)

    _assert_hint(check.folded_log_density(log_det), "NaN", "slogdet")


def test_folded_density_flags_the_generator_jacobian():
    def generator_direction(x, log_p_u, branches):
        terms = []
        for branch in branches:
            u, det = _branch_parts(x, branch)
            terms.append(log_p_u(u) - det.abs().log())  # |det J_f(u)| = 1 / |det J_g(x)|
        return torch.logsumexp(torch.stack(terms), 0)

    _assert_hint(check.folded_log_density(generator_direction), "wrong sign", "generator")


def test_folded_density_flags_summing_over_the_batch():
    def summed(x, log_p_u, branches):
        return solutions.folded_log_density(x, log_p_u, branches).sum()

    _assert_hint(check.folded_log_density(summed), "one value per sample")
