"""The chapter-8 checkers accept the reference solutions and reject stubs and typical mistakes."""

from __future__ import annotations

import math

import torch
from solutions import ch08 as solutions

from ebflow_lite.exercises import ch08 as check


def _stub(*args, **kwargs):
    raise NotImplementedError


# ----------------------------------------------------------------------------- logit log-det


def test_logit_logdet_accepts_the_reference() -> None:
    assert check.logit_logdet(solutions.logit_logdet)


def test_logit_logdet_rejects_the_stub() -> None:
    result = check.logit_logdet(_stub)
    assert not result and "not implemented" in result.message


def test_logit_logdet_rejects_a_missing_squeeze_factor() -> None:
    def no_squeeze(x, alpha, eps):
        p = eps + (1 - 2 * eps) * x
        return (-math.log(alpha) - torch.log(p) - torch.log1p(-p)).sum(1)

    result = check.logit_logdet(no_squeeze)
    assert not result and "1 - 2 eps" in result.message


def test_logit_logdet_rejects_a_flipped_sign() -> None:
    result = check.logit_logdet(lambda x, a, e: -solutions.logit_logdet(x, a, e))
    assert not result and "sign" in result.message


def test_logit_logdet_rejects_a_missing_sum() -> None:
    def per_feature(x, alpha, eps):
        p = eps + (1 - 2 * eps) * x
        return math.log(1 - 2 * eps) - math.log(alpha) - torch.log(p) - torch.log1p(-p)

    result = check.logit_logdet(per_feature)
    assert not result and "shape" in result.message


# ----------------------------------------------------------------------------- EMA update


def test_ema_update_accepts_the_reference() -> None:
    assert check.ema_update(solutions.ema_update)


def test_ema_update_rejects_the_stub() -> None:
    result = check.ema_update(_stub)
    assert not result and "not implemented" in result.message


def test_ema_update_rejects_a_missing_warmup() -> None:
    def no_warmup(shadow, params, step, decay=0.999):
        return [decay * s + (1 - decay) * p for s, p in zip(shadow, params, strict=True)]

    result = check.ema_update(no_warmup)
    assert not result and "warm-up" in result.message


def test_ema_update_rejects_swapped_weights() -> None:
    def swapped(shadow, params, step, decay=0.999):
        m = min(decay, (2 + step) / (11 + step))
        return [(1 - m) * s + m * p for s, p in zip(shadow, params, strict=True)]

    result = check.ema_update(swapped)
    assert not result and "swapped" in result.message


def test_ema_update_rejects_an_off_by_one_warmup() -> None:
    def off_by_one(shadow, params, step, decay=0.999):
        m = min(decay, (1 + step) / (10 + step))
        return [m * s + (1 - m) * p for s, p in zip(shadow, params, strict=True)]

    result = check.ema_update(off_by_one)
    assert not result and "off by one" in result.message


# ----------------------------------------------------------------------------- divergences


def test_divergences_accepts_the_reference() -> None:
    result = check.divergences_two_ways(solutions.divergences_two_ways)
    assert result, result


def test_divergences_reference_agrees_for_other_seeds() -> None:
    exact_fx, exact_fy = check.exact_fisher()
    for seed in (1, 2):
        out = solutions.divergences_two_ways(40_000, torch.Generator().manual_seed(seed))
        assert abs(out["kl_x"] - check.exact_kl()) < 0.02
        assert abs(out["fisher_x"] / exact_fx - 1) < 0.05
        assert abs(out["fisher_y"] / exact_fy - 1) < 0.05


def test_divergences_rejects_the_stub() -> None:
    result = check.divergences_two_ways(_stub)
    assert not result and "not implemented" in result.message


def test_divergences_rejects_the_reverse_kl() -> None:
    def reverse(n, generator):
        saved = solutions.P_PARAMS, solutions.Q_PARAMS
        solutions.P_PARAMS, solutions.Q_PARAMS = saved[1], saved[0]
        try:
            return solutions.divergences_two_ways(n, generator)
        finally:
            solutions.P_PARAMS, solutions.Q_PARAMS = saved

    result = check.divergences_two_ways(reverse)
    assert not result and "KL(q || p)" in result.message


def test_divergences_rejects_a_jacobian_on_one_side_only() -> None:
    def one_sided(n, generator):
        out = solutions.divergences_two_ways(n, generator)
        # log p_Y with the Jacobian, log q_Y without: adds E[log sigma(y)(1 - sigma(y))]
        x = torch.distributions.Beta(torch.tensor(5.0), torch.tensor(9.0)).sample((n,))
        out["kl_y"] += float((x.log() + torch.log1p(-x)).mean())
        return out

    result = check.divergences_two_ways(one_sided)
    assert not result and "Jacobian" in result.message


def test_divergences_rejects_data_space_scores_in_logit_space() -> None:
    def no_chain_rule(n, generator):
        out = solutions.divergences_two_ways(n, generator)
        out["fisher_y"] = out["fisher_x"]
        return out

    result = check.divergences_two_ways(no_chain_rule)
    assert not result and "chain rule" in result.message


def test_exact_forms_match_quadrature() -> None:
    # 1-D trapezoid check of the closed forms on one coordinate pair.
    (a, b), (c, d) = check.P_PARAMS[0], check.Q_PARAMS[0]
    x = torch.linspace(0, 1, 200_001, dtype=torch.float64)[1:-1]

    def log_beta(x, a, b):
        return (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                + (a - 1) * x.log() + (b - 1) * torch.log1p(-x))

    w = log_beta(x, a, b).exp()
    kl = torch.trapezoid(w * (log_beta(x, a, b) - log_beta(x, c, d)), x)
    diff = (a - c) / x - (b - d) / (1 - x)
    fx = torch.trapezoid(w * 0.5 * diff**2, x)
    fy = torch.trapezoid(w * 0.5 * (diff * x * (1 - x)) ** 2, x)
    one = ((a, b),), ((c, d),)
    assert abs(float(kl) - check.exact_kl(*one)) < 1e-6
    exact_fx, exact_fy = check.exact_fisher(*one)
    assert abs(float(fx) - exact_fx) < 1e-6 * exact_fx
    assert abs(float(fy) - exact_fy) < 1e-6 * exact_fy
