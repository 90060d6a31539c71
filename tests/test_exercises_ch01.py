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


# ----------------------------------------------------------------------------- planar
def test_planar_accepts_reference():
    assert check.planar_forward(solutions.planar_forward)


def test_planar_rejects_stub():
    _assert_hint(check.planar_forward(stub), "not implemented")


def test_planar_flags_tanh_instead_of_its_derivative():
    def uses_tanh(x, u_hat, w, b):
        y, _ = solutions.planar_forward(x, u_hat, w, b)
        return y, torch.log(torch.abs(1 + torch.tanh(x @ w + b) * (u_hat @ w)))

    _assert_hint(check.planar_forward(uses_tanh), "derivative")


def test_planar_flags_missing_one_plus():
    def no_one(x, u_hat, w, b):
        y, _ = solutions.planar_forward(x, u_hat, w, b)
        return y, torch.log(torch.abs((1 - torch.tanh(x @ w + b) ** 2) * (u_hat @ w)))

    _assert_hint(check.planar_forward(no_one), "'1 +' is missing")


def test_planar_flags_determinant_instead_of_log():
    def no_log(x, u_hat, w, b):
        y, logdet = solutions.planar_forward(x, u_hat, w, b)
        return y, logdet.exp()

    _assert_hint(check.planar_forward(no_log), "logarithm")


def test_planar_flags_a_wrong_map():
    def forgot_tanh(x, u_hat, w, b):
        _, logdet = solutions.planar_forward(x, u_hat, w, b)
        return x + u_hat * (x @ w + b).unsqueeze(1), logdet

    _assert_hint(check.planar_forward(forgot_tanh), "y is wrong")


# ----------------------------------------------------------------------------- image area
def test_image_area_accepts_reference():
    result = check.image_area(solutions.image_area)
    assert result and "O(h^2)" in result.message


def test_image_area_rejects_stub():
    _assert_hint(check.image_area(stub), "not implemented")


def test_image_area_flags_clockwise_orientation():
    def signed(g, center, h):
        return -solutions.image_area(g, center, h)

    _assert_hint(check.image_area(signed), "counter-clockwise")


def test_image_area_flags_the_linear_approximation():
    def linearised(g, center, h):
        point = torch.tensor(center, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda v: g(v.unsqueeze(0)).squeeze(0), point)
        return abs(float(torch.linalg.det(jac))) * h * h

    _assert_hint(check.image_area(linearised), "linear approximation")


def test_image_area_flags_the_unmapped_square():
    _assert_hint(check.image_area(lambda g, center, h: h * h), "area of the square itself")


def test_image_area_flags_too_few_boundary_points():
    def coarse(g, center, h):
        return solutions.image_area(g, center, h, n_per_edge=2)

    _assert_hint(check.image_area(coarse), "more points per edge")
