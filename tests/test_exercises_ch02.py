"""The chapter-2 checkers accept the reference solutions and reject stubs and typical mistakes."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from solutions import ch02 as solutions

from ebflow_lite.exercises import ch02 as check


def stub(*args, **kwargs):
    raise NotImplementedError


def _assert_hint(result, *words: str) -> None:
    assert not result, result
    for word in words:
        assert word in result.message, result.message


def _log_normal(u):
    return -0.5 * (u**2).sum(1) - 0.5 * u.shape[1] * math.log(2 * math.pi)


# ----------------------------------------------------------------------------- sampling order
def _backward_sweep(layers, u, *, order="reversed", step="inverse", log_det_at="input"):
    """Variants of the backward sweep: layer order, map, and where each log-det is taken."""
    h, log_dets = u, []
    for layer in (reversed(layers) if order == "reversed" else layers):
        before = h
        h = layer.inverse(h) if step == "inverse" else layer(h)[0]
        log_dets.append(layer(h if log_det_at == "input" else before)[1])
    return h, log_dets


def test_sample_with_log_prob_accepts_reference():
    assert check.sample_with_log_prob(solutions.sample_with_log_prob)


def test_sample_with_log_prob_rejects_stub():
    _assert_hint(check.sample_with_log_prob(stub), "not implemented")


def _sweep_variant(*, sign=1, prior_at="u", **sweep):
    def learner(layers, u):
        x, log_dets = _backward_sweep(layers, u, **sweep)
        return x, _log_normal(u if prior_at == "u" else x) + sign * sum(log_dets)

    return learner


@pytest.mark.parametrize(("variant", "hint"), [
    ({"order": "as given"}, "last layer first"),
    ({"step": "forward"}, "forward maps"),
    ({"sign": -1}, "wrong sign"),
    ({"log_det_at": "output"}, "layer's output"),
    ({"prior_at": "x"}, "prior is evaluated at the sample"),
], ids=["inverses_in_the_layers_order", "forward_maps", "subtracted_log_dets",
        "log_dets_at_the_outputs", "prior_at_the_sample"])
def test_sample_with_log_prob_flags(variant, hint):
    _assert_hint(check.sample_with_log_prob(_sweep_variant(**variant)), hint)


def test_sample_with_log_prob_flags_missing_log_dets():
    def prior_only(layers, u):
        return _backward_sweep(layers, u)[0], _log_normal(u)

    _assert_hint(check.sample_with_log_prob(prior_only), "log-dets are missing")


# ----------------------------------------------------------------------------- IAF costs
def test_iaf_costs_accepts_reference():
    result = check.iaf_costs(solutions.iaf_sample, solutions.iaf_log_prob)
    assert result and "1 network pass" in result.message, result


def test_iaf_costs_rejects_stubs():
    _assert_hint(check.iaf_costs(stub, solutions.iaf_log_prob), "not implemented")
    _assert_hint(check.iaf_costs(solutions.iaf_sample, stub), "not implemented")


def test_iaf_costs_flags_a_sequential_sampler():
    def sequential_sample(conditioner, u):      # right values, D passes
        x = torch.zeros_like(u)
        for i in range(u.shape[1]):
            log_scale, shift = conditioner(u)
            x[:, i] = u[:, i] * torch.exp(log_scale[:, i]) + shift[:, i]
        return x

    _assert_hint(check.iaf_costs(sequential_sample, solutions.iaf_log_prob),
                 "called the network 6 times")


def test_iaf_costs_flags_a_sampler_that_inverts():
    def undone(conditioner, u):
        log_scale, shift = conditioner(u)
        return (u - shift) * torch.exp(-log_scale)

    _assert_hint(check.iaf_costs(undone, solutions.iaf_log_prob), "undid the map")


def test_iaf_costs_flags_added_log_scales():
    def plus(conditioner, x):
        u = torch.zeros_like(x)
        for _ in range(x.shape[1]):
            log_scale, shift = conditioner(u)
            u = (x - shift) * torch.exp(-log_scale)
        return _log_normal(u) + log_scale.sum(1)

    _assert_hint(check.iaf_costs(solutions.iaf_sample, plus), "wrong sign")


def test_iaf_costs_flags_the_maf_formula():
    def one_pass(conditioner, x):              # feeds x to the network: MAF's density
        log_scale, shift = conditioner(x)
        return _log_normal((x - shift) * torch.exp(-log_scale)) - log_scale.sum(1)

    _assert_hint(check.iaf_costs(solutions.iaf_sample, one_pass), "MAF's map")


def test_iaf_costs_flags_one_pass_too_few():
    def short(conditioner, x):                  # D - 1 passes: the last feature is not exact
        u = torch.zeros_like(x)
        for _ in range(x.shape[1] - 1):
            log_scale, shift = conditioner(u)
            u = (x - shift) * torch.exp(-log_scale)
        return _log_normal(u) - log_scale.sum(1)

    _assert_hint(check.iaf_costs(solutions.iaf_sample, short), "after k passes")


def test_iaf_costs_flags_a_loop_over_samples():
    def per_sample(conditioner, x):            # right values, B * D passes of one row each
        return torch.cat([solutions.iaf_log_prob(conditioner, x[i:i + 1])
                          for i in range(x.shape[0])])

    _assert_hint(check.iaf_costs(solutions.iaf_sample, per_sample), "whole batch")


# ----------------------------------------------------------------------------- slogdet timing
def test_slogdet_scaling_accepts_reference():
    result = check.slogdet_scaling(solutions.time_slogdet, solutions.loglog_slope)
    assert result, result


def test_slogdet_scaling_rejects_stubs():
    _assert_hint(check.slogdet_scaling(stub, solutions.loglog_slope), "not implemented")
    _assert_hint(check.slogdet_scaling(solutions.time_slogdet, stub), "not implemented")


def test_slogdet_scaling_flags_fit_against_d():
    def linear_in_d(dims, seconds):
        return float(np.polyfit(np.asarray(dims, float), np.log(seconds), 1)[0])

    _assert_hint(check.slogdet_scaling(solutions.time_slogdet, linear_in_d), "not against D")


def test_slogdet_scaling_flags_reversed_regression():
    def reversed_fit(dims, seconds):
        return float(np.polyfit(np.log(seconds), np.log(np.asarray(dims, float)), 1)[0])

    _assert_hint(check.slogdet_scaling(solutions.time_slogdet, reversed_fit), "log D on log t")


def test_slogdet_scaling_flags_flat_timings():
    def constant_times(dims, repeats):          # times the same (largest) matrix every time
        matrix = torch.randn(max(dims), max(dims), dtype=torch.float64)
        seconds = []
        for _ in dims:
            start = time.perf_counter()
            torch.linalg.slogdet(matrix)
            seconds.append(time.perf_counter() - start)
        return list(dims), seconds

    _assert_hint(check.slogdet_scaling(constant_times, solutions.loglog_slope),
                 "outside", "time only the slogdet call")


def test_slogdet_scaling_flags_a_slope_that_ignores_the_timings():
    _assert_hint(check.slogdet_scaling(solutions.time_slogdet, lambda dims, seconds: 3.0),
                 "least-squares fit gives")


def test_slogdet_scaling_flags_implausible_times():
    def not_seconds(dims, repeats):
        return list(dims), [float(d) ** 3 for d in dims]

    _assert_hint(check.slogdet_scaling(not_seconds, solutions.loglog_slope), "in seconds")


def test_slogdet_scaling_flags_wrong_dims():
    def other_dims(dims, repeats):
        return [1, 2], [1.0, 2.0]

    _assert_hint(check.slogdet_scaling(other_dims, solutions.loglog_slope), "return the dims")


def test_slogdet_scaling_rejects_timings_from_a_formula():
    def too_slow(dims, repeats):            # cubic "timings" that were never measured
        return list(dims), [1e-9 * d**3 for d in dims]

    def too_fast(dims, repeats):
        return list(dims), [1e-15 * d**3 for d in dims]

    _assert_hint(check.slogdet_scaling(too_slow, solutions.loglog_slope), "formula")
    _assert_hint(check.slogdet_scaling(too_fast, solutions.loglog_slope), "at least")


# ----------------------------------------------------------------------------- additive coupling
def test_additive_coupling_accepts_reference():
    assert check.additive_coupling(solutions.additive_coupling)


def test_additive_coupling_rejects_stub():
    _assert_hint(check.additive_coupling(stub), "not implemented")


def test_additive_coupling_rejects_the_wrong_half():
    def other_half(x, shift, parity):
        return solutions.additive_coupling(x, lambda v: shift(v[:, : shift[0].in_features]),
                                           1 - parity)

    _assert_hint(check.additive_coupling(other_half), "pass unchanged")


def test_additive_coupling_rejects_the_shift_summed_as_a_log_scale():
    def summed(x, shift, parity):
        y, _ = solutions.additive_coupling(x, shift, parity)
        index = torch.arange(x.shape[1])
        return y, shift(x[:, index[index % 2 == parity]]).sum(1)

    _assert_hint(check.additive_coupling(summed), "log-scale")


def test_additive_coupling_rejects_a_scalar_log_det():
    def scalar(x, shift, parity):
        return solutions.additive_coupling(x, shift, parity)[0], torch.tensor(0.0)

    _assert_hint(check.additive_coupling(scalar), "one log-det per sample")


def test_additive_coupling_rejects_a_multiplicative_update():
    def multiplied(x, shift, parity):
        index = torch.arange(x.shape[1])
        keep, change = index[index % 2 == parity], index[index % 2 != parity]
        y = x.clone()
        y[:, change] = x[:, change] * torch.exp(shift(x[:, keep]))
        return y, torch.zeros(x.shape[0], dtype=x.dtype)

    _assert_hint(check.additive_coupling(multiplied), "only adds")
