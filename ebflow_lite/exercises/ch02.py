"""Checkers for the exercises of chapter 2 (flows and maximum likelihood).

Each checker compares the learner's function with an independent computation: the
log-density from the determinant of the autograd Jacobian of the whole flow, the library's
:class:`ebflow_lite.layers.AffineCoupling`, or a least-squares fit recomputed from the
learner's own timings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.autograd.functional import jacobian

from ebflow_lite.exercises import CheckResult, checker, failed, passed
from ebflow_lite.flow import EBFlow, standard_normal_log_prob
from ebflow_lite.layers import AffineCoupling, Dense, FlowLayer, SmoothLeakyReLU

DTYPE = torch.float64


def _coupling(dim: int, parity: int) -> AffineCoupling:
    layer = AffineCoupling(dim, hidden=16, depth=2, parity=parity).to(DTYPE)
    with torch.no_grad():  # a non-trivial conditioner (the last layer starts at zero)
        layer.net[-1].weight.normal_(0.0, 0.4)
        layer.net[-1].bias.normal_(0.0, 0.4)
    return layer


def _dense(dim: int) -> Dense:
    layer = Dense(dim, init="orthogonal").to(DTYPE)
    with torch.no_grad():
        layer.weight.mul_(1.3).add_(0.2 * torch.randn(dim, dim, dtype=DTYPE))
        layer.bias.normal_(0.0, 0.3)
    return layer


# ----------------------------------------------------------------------------- exercise 1
@checker
def composed_log_prob(
    learner: Callable[[Sequence[FlowLayer], torch.Tensor], torch.Tensor],
) -> CheckResult:
    """Check ``learner(layers, x)`` = ``log p_u(g(x)) + sum_i log|det J_i|``.

    The reference is the standard normal log-density of the latent plus the log-determinant
    of the autograd Jacobian of the whole composition, one sample at a time.
    """
    dim = 3
    with torch.random.fork_rng():  # leave the learner's random stream untouched
        torch.manual_seed(303)
        layers = [_coupling(dim, 0), _dense(dim), SmoothLeakyReLU(0.3, dim=dim),
                  _coupling(dim, 1), _dense(dim)]
        x = torch.randn(6, dim, dtype=DTYPE) * 1.5

    def latent_of(v: torch.Tensor) -> torch.Tensor:
        h = v.unsqueeze(0)
        for layer in layers:
            h = layer(h)[0]
        return h.squeeze(0)

    with torch.no_grad():
        latent = torch.stack([latent_of(x[i]) for i in range(x.shape[0])])
    log_prior = standard_normal_log_prob(latent)
    log_dets = torch.stack([torch.linalg.slogdet(jacobian(latent_of, x[i]))[1]
                            for i in range(x.shape[0])])
    reference = log_prior + log_dets
    library = EBFlow(layers).log_prob(x).detach()
    if not torch.allclose(reference, library, rtol=1e-9, atol=1e-9):
        raise RuntimeError("internal: EBFlow.log_prob disagrees with the autograd Jacobian")

    value = learner(list(layers), x.clone())
    if not isinstance(value, torch.Tensor):
        return failed(f"return a tensor of shape ({x.shape[0]},), got {type(value).__name__}")
    value = value.detach().to(DTYPE)
    if value.shape != (x.shape[0],):
        return failed(f"return one log-density per sample, shape ({x.shape[0]},); got "
                      f"{tuple(value.shape)}")
    if torch.allclose(value, reference, rtol=1e-9, atol=1e-9):
        return passed("your log-likelihood equals log p_u(g(x)) + log|det J_g(x)| computed "
                      "from the full autograd Jacobian, and EBFlow.log_prob.")
    if torch.allclose(value, log_prior - log_dets, atol=1e-8):
        return failed("the log-dets have the wrong sign: the layers map data -> latent, so "
                      "their log|det| are added to log p_u(g(x)).")
    if torch.allclose(value, log_prior, atol=1e-8):
        return failed("the log-dets are missing: add every layer's log|det J_i| (the second "
                      "output of each layer).")
    if torch.allclose(value - reference, torch.full_like(value, 0.5 * dim * math.log(2 * math.pi)),
                      atol=1e-8):
        return failed("off by the constant (D/2) log(2 pi): include the normalising constant "
                      "of the standard normal prior.")
    if torch.allclose(value, standard_normal_log_prob(x) + log_dets, atol=1e-8):
        return failed("the prior is evaluated at x; evaluate it at the latent u = g(x), the "
                      "output of the last layer.")
    with torch.no_grad():
        h = x
        for layer in layers[:-1]:
            h = layer(h)[0]
        last_only = log_prior + layers[-1](h)[1]
    if torch.allclose(value, last_only, atol=1e-8):
        return failed("only the last layer's log-det was used: accumulate the log-dets of "
                      "every layer in a running sum.")
    return failed(f"your log-likelihood differs from the reference by up to "
                  f"{float((value - reference).abs().max()):.3g}; feed each layer the output of "
                  "the previous one and add up the log-dets.")


# ----------------------------------------------------------------------------- exercise 2
@checker
def coupling_forward(
    learner: Callable[..., tuple[torch.Tensor, torch.Tensor]],
) -> CheckResult:
    """Check ``learner(x, scale_and_shift, parity) -> (y, logdet)`` against AffineCoupling.

    ``scale_and_shift(x_keep) -> (s, t)`` is the library layer's own (bounded) conditioner.
    """
    for dim, parity in ((4, 0), (5, 1), (5, 0)):
        with torch.random.fork_rng():
            torch.manual_seed(404 + dim + parity)
            layer = _coupling(dim, parity)
            x = torch.randn(7, dim, dtype=DTYPE)
        with torch.no_grad():
            y_ref, logdet_ref = layer(x)
        out = learner(x.clone(), layer._scale_shift, parity)
        if not (isinstance(out, tuple) and len(out) == 2):
            return failed("return a pair (y, logdet)")
        y, logdet = (v.detach().to(DTYPE) if isinstance(v, torch.Tensor) else v for v in out)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape:
            return failed(f"y must be a tensor shaped like x, {tuple(x.shape)}")
        if not isinstance(logdet, torch.Tensor) or logdet.shape != (x.shape[0],):
            return failed(f"logdet must have one value per sample, shape ({x.shape[0]},)")
        keep = torch.arange(dim) % 2 == parity
        if not torch.allclose(y[:, keep], x[:, keep], rtol=0, atol=0):
            return failed(f"with parity {parity} the features with index % 2 == {parity} must "
                          "pass through unchanged (you may have kept the other half).")
        with torch.no_grad():
            s, t = layer._scale_shift(x[:, keep])
        if not torch.allclose(y, y_ref, rtol=1e-10, atol=1e-10):
            x_change = x[:, ~keep]
            if torch.allclose(y[:, ~keep], x_change * torch.exp(-s) + t, atol=1e-9):
                return failed("the scale is inverted: multiply by exp(s), not exp(-s).")
            if torch.allclose(y[:, ~keep], (x_change + t) * torch.exp(s), atol=1e-9):
                return failed("scale first, then shift: y_b = x_b * exp(s) + t.")
            return failed("y differs from ebflow_lite.layers.AffineCoupling: y_a = x_a and "
                          "y_b = x_b * exp(s) + t with (s, t) = scale_and_shift(x_a).")
        if torch.allclose(logdet, logdet_ref, rtol=1e-10, atol=1e-10):
            continue
        if torch.allclose(logdet, -logdet_ref, atol=1e-9):
            return failed("the log-det has the wrong sign: y_b = x_b exp(s) + t stretches "
                          "by exp(s), so log|det J| = +sum(s).")
        if torch.allclose(logdet, torch.exp(s).sum(1), atol=1e-9):
            return failed("you summed exp(s): the Jacobian is triangular with diagonal "
                          "exp(s), so log|det J| = sum(log exp(s)) = sum(s).")
        if torch.allclose(logdet, torch.exp(s).prod(1), atol=1e-9):
            return failed("you returned |det J| = prod(exp(s)); return its logarithm, sum(s).")
        return failed("the log-det differs from ebflow_lite.layers.AffineCoupling: it is "
                      "the sum of s over the changed features, one value per sample.")
    return passed("your coupling layer equals ebflow_lite.layers.AffineCoupling for both "
                  "parities and odd and even D.")


# ----------------------------------------------------------------------------- exercise 3
TIMING_DIMS = (64, 128, 256, 512, 1024)
TIMING_REPEATS = 5
SLOPE_BAND = (1.5, 3.5)


def _least_squares_slope(dims: Sequence[float], seconds: Sequence[float]) -> float:
    return float(np.polyfit(np.log(np.asarray(dims, float)),
                            np.log(np.asarray(seconds, float)), 1)[0])


def _check_slope_formula(loglog_slope: Callable[..., float]) -> CheckResult | None:
    """The learner's fit on synthetic timings with a known exponent (None when correct)."""
    dims = [10.0, 20.0, 40.0, 80.0, 160.0]
    noise = [1.1, 0.95, 1.02, 0.9, 1.05]
    for power in (3.0, 2.0):
        seconds = [1e-9 * d**power * n for d, n in zip(dims, noise, strict=True)]
        expected = _least_squares_slope(dims, seconds)
        value = float(loglog_slope(list(dims), list(seconds)))
        if abs(value - expected) <= 1e-6:
            continue
        if abs(value - float(np.polyfit(np.asarray(dims), np.log(seconds), 1)[0])) <= 1e-6:
            return failed("fit log(seconds) against log(D), not against D itself.")
        if abs(value * expected - 1.0) <= 0.05:
            return failed("you regressed log D on log t; the slope we want comes from "
                          "regressing log t on log D (t ~ D^k).")
        if abs(value - expected / math.log(10)) <= 1e-3 or abs(value - expected * math.log(10)) \
                <= 1e-3:
            return failed("use the same logarithm on both axes.")
        return failed(f"on timings that grow like D^{power:g} (with 10% noise) your slope is "
                      f"{value:.4g}, the least-squares fit gives {expected:.4g}: fit a straight "
                      "line to (log D, log t), e.g. with np.polyfit(..., 1).")
    return None


@checker
def slogdet_scaling(
    time_slogdet: Callable[[Sequence[int], int], tuple[Sequence[int], Sequence[float]]],
    loglog_slope: Callable[[Sequence[float], Sequence[float]], float],
) -> CheckResult:
    """Check the timing of ``torch.linalg.slogdet`` and the fitted log-log slope.

    ``time_slogdet(dims, repeats) -> (dims, seconds)`` is run on one CPU thread (so that
    parallelism does not hide the growth) for D in :data:`TIMING_DIMS`; the checker refits
    the learner's own timings, compares the learner's ``loglog_slope`` with that fit, and
    asks the slope to lie in :data:`SLOPE_BAND`. Timings are noisy, so a slope outside the
    band is measured again (three attempts) before the checker gives up.
    """
    formula = _check_slope_formula(loglog_slope)
    if formula is not None:
        return formula
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # The checker's own fastest slogdet of the largest matrix: no honest measurement
        # can be much faster than this.
        largest = torch.randn(max(TIMING_DIMS), max(TIMING_DIMS), dtype=torch.float64)
        torch.linalg.slogdet(largest)
        fastest_possible = math.inf
        for _ in range(3):
            start = time.perf_counter()
            torch.linalg.slogdet(largest)
            fastest_possible = min(fastest_possible, time.perf_counter() - start)
        slopes = []
        for _ in range(3):
            start = time.perf_counter()
            out = time_slogdet(list(TIMING_DIMS), TIMING_REPEATS)
            wall = time.perf_counter() - start
            if not (isinstance(out, tuple) and len(out) == 2):
                return failed("return a pair (dims, seconds)")
            dims, seconds = list(out[0]), [float(s) for s in out[1]]
            if dims != list(TIMING_DIMS):
                return failed(f"return the dims you were given, {list(TIMING_DIMS)}, got {dims}")
            if len(seconds) != len(dims) or not all(s > 0 and math.isfinite(s) for s in seconds):
                return failed("return one positive time in seconds per dimension")
            if max(seconds) > 60.0:
                return failed(f"a slogdet of a {max(dims)} x {max(dims)} matrix takes well under "
                              f"a minute, but you report {max(seconds):.3g}: return times in "
                              "seconds, as measured by time.perf_counter().")
            if sum(seconds) > wall * 1.05 + 1e-3:
                return failed(f"your timings add up to {sum(seconds):.3g} s, but the call of "
                              f"time_slogdet took only {wall:.3g} s: measure the calls, do not "
                              "compute the times from a formula.")
            if seconds[-1] < 0.2 * fastest_possible:
                return failed(f"you report {1e3 * seconds[-1]:.3g} ms for D = {dims[-1]}, but "
                              f"this machine needs at least {1e3 * fastest_possible:.3g} ms: "
                              "time the slogdet call itself, after building the matrix.")
            slope = float(loglog_slope(dims, seconds))
            if abs(slope - _least_squares_slope(dims, seconds)) > 1e-6:
                return failed("your slope is not the least-squares slope of your own timings")
            slopes.append(slope)
            if SLOPE_BAND[0] <= slope <= SLOPE_BAND[1]:
                times = ", ".join(f"D={d}: {1e3 * s:.2f} ms" for d, s in zip(dims, seconds,
                                                                           strict=True))
                return passed(f"slogdet time grows like D^{slope:.2f} ({times}): close to the "
                              "D^3 of an LU factorisation.")
    finally:
        torch.set_num_threads(threads)
    low = max(slopes) < SLOPE_BAND[0]
    hint = ("time only the slogdet call (build the matrix before starting the clock) and take "
            "the fastest of the repeats, which is the least disturbed by other programs"
            if low else "the timings are noisy: take the fastest of the repeats, not the "
            "mean, and close other busy programs")
    return failed(f"the fitted slopes {[round(s, 2) for s in slopes]} lie outside "
                  f"[{SLOPE_BAND[0]}, {SLOPE_BAND[1]}]: {hint}.")


# ----------------------------------------------------------------------------- additive coupling
def _shift_net(n_keep: int, n_change: int, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(n_keep, 16), torch.nn.Tanh(),
                                  torch.nn.Linear(16, n_change)).to(torch.float64)
    return net


@checker
def additive_coupling(learner: Callable[..., tuple[torch.Tensor, torch.Tensor]]
                      ) -> CheckResult:
    """Check ``learner(x, shift, parity) -> (y, logdet)`` for NICE's additive coupling.

    ``y_a = x_a``, ``y_b = x_b + t(x_a)``; the log-det is zero for every sample, which the
    checker confirms with the determinant of an autograd Jacobian.
    """
    gen = torch.Generator().manual_seed(404)
    for dim, parity in [(4, 0), (5, 1)]:
        keep = torch.arange(dim)[torch.arange(dim) % 2 == parity]
        change = torch.arange(dim)[torch.arange(dim) % 2 != parity]
        shift = _shift_net(len(keep), len(change), seed=dim)
        x = torch.randn(6, dim, generator=gen, dtype=torch.float64)
        out = learner(x.clone(), shift, parity)
        if not (isinstance(out, tuple) and len(out) == 2):
            return failed("return a pair (y, logdet)")
        y, logdet = out
        expected = x.clone()
        with torch.no_grad():
            expected[:, change] = x[:, change] + shift(x[:, keep])
        if not isinstance(y, torch.Tensor) or y.shape != x.shape:
            return failed(f"y must be a tensor shaped like x, {tuple(x.shape)}")
        y = y.detach().to(torch.float64)
        if not torch.allclose(y[:, keep], x[:, keep]):
            return failed("the kept features (index % 2 == parity) must pass unchanged")
        with torch.no_grad():
            multiplied = x[:, change] * torch.exp(shift(x[:, keep]))
        if torch.allclose(y[:, change], multiplied, atol=1e-9):
            return failed("you rescaled x_b by exp(t(x_a)); an additive coupling only adds: "
                          "y_b = x_b + t(x_a).")
        if not torch.allclose(y, expected, atol=1e-9):
            return failed("y_b is wrong: y_b = x_b + t(x_a), with t = shift(x_a)")
        if not isinstance(logdet, torch.Tensor) or logdet.shape != (x.shape[0],):
            shape = tuple(logdet.shape) if isinstance(logdet, torch.Tensor) else type(logdet)
            return failed(f"return one log-det per sample, a tensor of shape ({x.shape[0]},); "
                          f"got {shape}. Every sample needs its own entry, even when all are "
                          "equal.")

        def mapping(v: torch.Tensor, keep=keep, change=change, shift=shift) -> torch.Tensor:
            out_v = v.clone()
            out_v[change] = v[change] + shift(v[keep])
            return out_v

        autograd = torch.stack([torch.linalg.slogdet(jacobian(mapping, x[i]))[1]
                                for i in range(x.shape[0])])
        if not torch.allclose(logdet.detach().to(torch.float64), autograd, atol=1e-9):
            with torch.no_grad():
                summed = shift(x[:, keep]).sum(1)
            if torch.allclose(logdet.detach().to(torch.float64), summed, atol=1e-9):
                return failed("you summed the shift as if it were a log-scale; a shift moves "
                              "points without changing volumes: the Jacobian's diagonal is 1.")
            return failed("the log-det differs from the autograd Jacobian's, which is "
                          f"{autograd.abs().max():.1e} at most")
    return passed("your additive coupling matches the formula, and its log-det is zero, as "
                  "the autograd Jacobian confirms: a volume-preserving layer.")
