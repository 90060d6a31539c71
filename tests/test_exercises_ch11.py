"""The chapter-11 checkers accept the reference solutions and reject stubs and typical mistakes."""

from __future__ import annotations

import math

import torch
from solutions import ch11 as solutions

from ebflow_lite.exercises import ch11 as check
from ebflow_lite.metrics import bits_per_dim


def _stub(*args, **kwargs):
    raise NotImplementedError


# ----------------------------------------------------------------------------- bits per dim


def test_bits_per_dim_accepts_the_reference() -> None:
    assert check.bits_per_dim_from_unit_scale(solutions.bits_per_dim_from_unit_scale)


def test_bits_per_dim_reference_agrees_with_the_library() -> None:
    # a uniform density on [0, 1)^D has NLL 0 there and log2 K bits/dim on [0, K)^D
    assert math.isclose(solutions.bits_per_dim_from_unit_scale(0.0, 784, 256), 8.0)
    nll_unit = -1234.5
    assert math.isclose(solutions.bits_per_dim_from_unit_scale(nll_unit, 784, 256),
                        bits_per_dim(nll_unit + 784 * math.log(256), 784))


def test_bits_per_dim_rejects_the_stub() -> None:
    result = check.bits_per_dim_from_unit_scale(_stub)
    assert not result and "not implemented" in result.message


def test_bits_per_dim_rejects_a_missing_offset() -> None:
    result = check.bits_per_dim_from_unit_scale(lambda n, d, k: n / (d * math.log(2)))
    assert not result and "D log K" in result.message


def test_bits_per_dim_rejects_a_flipped_offset() -> None:
    result = check.bits_per_dim_from_unit_scale(
        lambda n, d, k: (n - d * math.log(k)) / (d * math.log(2)))
    assert not result and "wrong sign" in result.message


def test_bits_per_dim_rejects_k_minus_one_and_nats() -> None:
    result = check.bits_per_dim_from_unit_scale(
        lambda n, d, k: (n + d * math.log(k - 1)) / (d * math.log(2)))
    assert not result and "K - 1" in result.message
    result = check.bits_per_dim_from_unit_scale(lambda n, d, k: (n + d * math.log(k)) / d)
    assert not result and "ln 2" in result.message


# ----------------------------------------------------------------------------- gaussian


def test_gaussian_accepts_the_reference() -> None:
    result = check.gaussian_bits_per_dim(solutions.gaussian_bits_per_dim)
    assert result, result


def test_gaussian_reference_is_below_the_uniform_and_the_diagonal() -> None:
    x_train, x_test, levels, alpha, eps = check.gaussian_cases()[0]
    full = solutions.gaussian_bits_per_dim(x_train, x_test, levels, alpha, eps)
    diagonal = check.reference_gaussian_bits_per_dim(x_train, x_test, levels, alpha, eps,
                                                     diagonal=True)
    assert full < diagonal < math.log2(levels)


def test_gaussian_rejects_the_stub() -> None:
    result = check.gaussian_bits_per_dim(_stub)
    assert not result and "not implemented" in result.message


def _logit_space_bpd(x_train, x_test, levels, alpha, eps, sign=0.0, offset=0.0):
    """The reference with the preprocessing log-det scaled by ``sign`` plus ``offset``."""
    dim = x_train[0].numel()
    p = eps + (1 - 2 * eps) * x_test.reshape(x_test.shape[0], -1).double() / levels
    logdet = (math.log(1 - 2 * eps) - math.log(levels) - math.log(alpha) - torch.log(p)
              - torch.log1p(-p)).sum(1)
    right = solutions.gaussian_bits_per_dim(x_train, x_test, levels, alpha, eps)
    bits = float(logdet.mean()) / (dim * math.log(2))
    return right + bits * (1 - sign) + offset


def test_gaussian_rejects_a_missing_preprocessing_logdet() -> None:
    result = check.gaussian_bits_per_dim(lambda *a: _logit_space_bpd(*a, sign=0.0))
    assert not result and "logit-space" in result.message


def test_gaussian_rejects_a_flipped_logdet_and_the_unit_box() -> None:
    result = check.gaussian_bits_per_dim(lambda *a: _logit_space_bpd(*a, sign=-1.0))
    assert not result and "plus sign" in result.message
    result = check.gaussian_bits_per_dim(
        lambda *a: solutions.gaussian_bits_per_dim(*a) - math.log2(a[2]))
    assert not result and "unit box" in result.message


def test_gaussian_rejects_a_diagonal_covariance() -> None:
    result = check.gaussian_bits_per_dim(
        lambda *a: check.reference_gaussian_bits_per_dim(*a, diagonal=True))
    assert not result and "diagonal" in result.message


# ----------------------------------------------------------------------------- budgets


def test_best_within_budget_accepts_the_reference() -> None:
    result = check.best_within_budget(solutions.best_within_budget)
    assert result, result


def test_best_within_budget_rejects_the_stub() -> None:
    result = check.best_within_budget(_stub)
    assert not result and "not implemented" in result.message


def test_best_within_budget_rejects_inverted_throughput() -> None:
    def inverted(curves, rates, seconds):
        return solutions.best_within_budget(curves, {k: 1 / r for k, r in rates.items()},
                                            seconds)

    result = check.best_within_budget(inverted)
    assert not result and "t * (batches per second)" in result.message


def test_best_within_budget_rejects_the_last_instead_of_the_best() -> None:
    def last(curves, rates, seconds):
        out = {}
        for name, (steps, values) in curves.items():
            done = [v for s, v in zip(steps, values, strict=True) if s <= rates[name] * seconds]
            out[name] = done[-1] if done else math.inf
        return out

    result = check.best_within_budget(last)
    assert not result and "lowest validation value" in result.message


def test_best_within_budget_rejects_missing_methods() -> None:
    result = check.best_within_budget(lambda c, r, s: {"ml": 1.0})
    assert not result and "one entry per method" in result.message
