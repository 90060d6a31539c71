"""The chapter-2 checkers accept the reference solutions and reject stubs and typical mistakes."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from solutions import ch02 as solutions

from ebflow_lite.exercises import ch02 as check


def stub(*args, **kwargs):
    raise NotImplementedError


def _assert_hint(result, *words: str) -> None:
    assert not result, result
    for word in words:
        assert word in result.message, result.message


def _latent_and_log_dets(layers, x):
    h, log_dets = x, []
    for layer in layers:
        h, log_det = layer(h)
        log_dets.append(log_det)
    return h, log_dets


def _log_normal(u):
    return -0.5 * (u**2).sum(1) - 0.5 * u.shape[1] * math.log(2 * math.pi)


# ----------------------------------------------------------------------------- composition
def test_composed_log_prob_accepts_reference():
    assert check.composed_log_prob(solutions.composed_log_prob)


def test_composed_log_prob_rejects_stub():
    _assert_hint(check.composed_log_prob(stub), "not implemented")


def test_composed_log_prob_flags_subtracted_log_dets():
    def subtracted(layers, x):
        u, log_dets = _latent_and_log_dets(layers, x)
        return _log_normal(u) - sum(log_dets)

    _assert_hint(check.composed_log_prob(subtracted), "wrong sign")


def test_composed_log_prob_flags_missing_log_dets():
    def prior_only(layers, x):
        return _log_normal(_latent_and_log_dets(layers, x)[0])

    _assert_hint(check.composed_log_prob(prior_only), "log-dets are missing")


def test_composed_log_prob_flags_prior_at_x():
    def prior_at_x(layers, x):
        return _log_normal(x) + sum(_latent_and_log_dets(layers, x)[1])

    _assert_hint(check.composed_log_prob(prior_at_x), "latent u = g(x)")


def test_composed_log_prob_flags_last_log_det_only():
    def last_only(layers, x):
        u, log_dets = _latent_and_log_dets(layers, x)
        return _log_normal(u) + log_dets[-1]

    _assert_hint(check.composed_log_prob(last_only), "only the last layer")


def test_composed_log_prob_flags_missing_constant():
    def no_constant(layers, x):
        u, log_dets = _latent_and_log_dets(layers, x)
        return -0.5 * (u**2).sum(1) + sum(log_dets)

    _assert_hint(check.composed_log_prob(no_constant), "log(2 pi)")


# ----------------------------------------------------------------------------- coupling
def test_coupling_accepts_reference():
    assert check.coupling_forward(solutions.coupling_forward)


def test_coupling_rejects_stub():
    _assert_hint(check.coupling_forward(stub), "not implemented")


def _coupling_variant(x, scale_and_shift, parity, *, keep_parity=None, inverse_scale=False,
                      shift_first=False, log_det="sum"):
    index = torch.arange(x.shape[1])
    kept = parity if keep_parity is None else keep_parity
    keep, change = index[index % 2 == kept], index[index % 2 != kept]
    s, t = scale_and_shift(x[:, keep])
    y = x.clone()
    scale = torch.exp(-s if inverse_scale else s)
    y[:, change] = (x[:, change] + t) * scale if shift_first else x[:, change] * scale + t
    value = {"sum": s.sum(1), "neg": -s.sum(1), "exp": torch.exp(s).sum(1)}[log_det]
    return y, value


def test_coupling_flags_the_wrong_half():
    def wrong_half(x, scale_and_shift, parity):
        return _coupling_variant(x, scale_and_shift, parity, keep_parity=1 - parity)

    _assert_hint(check.coupling_forward(wrong_half), "pass through unchanged")


def test_coupling_flags_inverted_scale():
    def inverted(x, scale_and_shift, parity):
        return _coupling_variant(x, scale_and_shift, parity, inverse_scale=True)

    _assert_hint(check.coupling_forward(inverted), "exp(-s)")


def test_coupling_flags_shift_before_scale():
    def shift_first(x, scale_and_shift, parity):
        return _coupling_variant(x, scale_and_shift, parity, shift_first=True)

    _assert_hint(check.coupling_forward(shift_first), "scale first")


def test_coupling_flags_negative_log_det():
    def negative(x, scale_and_shift, parity):
        return _coupling_variant(x, scale_and_shift, parity, log_det="neg")

    _assert_hint(check.coupling_forward(negative), "wrong sign")


def test_coupling_flags_sum_of_exp():
    def summed_exp(x, scale_and_shift, parity):
        return _coupling_variant(x, scale_and_shift, parity, log_det="exp")

    _assert_hint(check.coupling_forward(summed_exp), "summed exp(s)")


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
