"""Checkers for the exercises of chapter 2 (flows and maximum likelihood).

Each checker compares the learner's function with an independent computation: the
determinant of the autograd Jacobian of a whole inverse flow or of one layer, the library's
:class:`ebflow_lite.EBFlow` and :class:`ebflow_lite.layers.IAF` (with the network passes of
the learner's own functions counted), or a least-squares fit recomputed from the learner's
own timings.
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
from ebflow_lite.layers import IAF, AffineCoupling, Dense, FlowLayer, SmoothLeakyReLU

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
def _order_flow(dim: int) -> list[FlowLayer]:
    """Five layers that do not commute: couplings of both parities, dense, leaky ReLU."""
    with torch.random.fork_rng():  # leave the learner's random stream untouched
        torch.manual_seed(303)
        return [_coupling(dim, 0), _dense(dim), SmoothLeakyReLU(0.3, dim=dim),
                _coupling(dim, 1), _dense(dim)]


def _inverse_in_order(layers: Sequence[FlowLayer], u: torch.Tensor) -> torch.Tensor:
    """``g_L^{-1}`` applied last: the mistake of inverting the layers in their own order."""
    h = u
    for layer in layers:
        h = layer.inverse(h)
    return h


@checker
def sample_with_log_prob(
    learner: Callable[[Sequence[FlowLayer], torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> CheckResult:
    """Check ``learner(layers, u) -> (x, log p(x))`` with ``x = g^{-1}(u)``.

    The references are :meth:`ebflow_lite.EBFlow.inverse` for ``x`` and
    ``log p_u(u) - log|det J_{g^{-1}}(u)|`` from the autograd Jacobian of the whole inverse
    map, one sample at a time (which must equal :meth:`ebflow_lite.EBFlow.log_prob` at ``x``).
    """
    dim = 3
    layers = _order_flow(dim)
    flow = EBFlow(layers)
    gen = torch.Generator().manual_seed(313)
    u = torch.randn(6, dim, generator=gen, dtype=DTYPE)
    with torch.no_grad():
        x_ref = flow.inverse(u)
        log_p_library = flow.log_prob(x_ref)

    def sample_of(v: torch.Tensor) -> torch.Tensor:
        return flow.inverse(v.unsqueeze(0)).squeeze(0)

    log_dets_inverse = torch.stack([torch.linalg.slogdet(jacobian(sample_of, u[i]))[1]
                                    for i in range(u.shape[0])])
    log_prior = standard_normal_log_prob(u)
    reference = log_prior - log_dets_inverse
    if not torch.allclose(reference, log_p_library, rtol=1e-8, atol=1e-8):
        raise RuntimeError("internal: EBFlow.log_prob disagrees with the autograd Jacobian")

    out = learner(list(layers), u.clone())
    if not (isinstance(out, tuple) and len(out) == 2):
        return failed("return a pair (x, log_p)")
    x, log_p = (v.detach().to(DTYPE) if isinstance(v, torch.Tensor) else v for v in out)
    if not isinstance(x, torch.Tensor) or x.shape != u.shape:
        return failed(f"x must be a tensor shaped like u, {tuple(u.shape)}")
    if not torch.allclose(x, x_ref, rtol=1e-9, atol=1e-9):
        with torch.no_grad():
            in_order = _inverse_in_order(layers, u)
            forward = u
            for layer in reversed(layers):
                forward = layer(forward)[0]
        if torch.allclose(x, in_order, atol=1e-8):
            return failed("the layers are inverted in the wrong order: g = g_L o ... o g_1, so "
                          "g^{-1} = g_1^{-1} o ... o g_L^{-1}: invert the last layer first "
                          "(reversed(layers)).")
        if torch.allclose(x, forward, atol=1e-8):
            return failed("you applied the layers' forward maps (data -> latent); a sample "
                          "needs their inverses, layer.inverse(h).")
        return failed(f"x differs from g^{{-1}}(u) by up to "
                      f"{float((x - x_ref).abs().max()):.3g}: invert the layers from the last "
                      "to the first, each applied to the output of the one after it.")
    if not isinstance(log_p, torch.Tensor) or log_p.shape != (u.shape[0],):
        return failed(f"log_p must have one value per sample, shape ({u.shape[0]},)")
    if torch.allclose(log_p, reference, rtol=1e-9, atol=1e-9):
        return passed("your samples equal EBFlow.inverse(u), and their log-densities equal "
                      "log p_u(u) - log|det J_{g^{-1}}(u)| from the autograd Jacobian of the "
                      "whole inverse.")
    with torch.no_grad():
        inputs = [x_ref]
        for layer in layers[:-1]:
            inputs.append(layer(inputs[-1])[0])
        outputs = inputs[1:] + [u]
        at_inputs = sum(layer(h)[1] for layer, h in zip(layers, inputs, strict=True))
        at_outputs = sum(layer(h)[1] for layer, h in zip(layers, outputs, strict=True))
    if torch.allclose(log_p, log_prior - at_inputs, atol=1e-8):
        return failed("the log-dets have the wrong sign: layer(x_{i-1})[1] is the log-det of "
                      "the data -> latent layer g_i, and those are added; it is the inverse "
                      "maps' log-dets that are subtracted.")
    if torch.allclose(log_p, log_prior + at_outputs, atol=1e-8):
        return failed("each log-det is evaluated at its layer's output: log|det J_{g_i}| "
                      "belongs at the layer's input x_{i-1} = g_i^{-1}(x_i), the point you "
                      "get right after inverting layer i.")
    if torch.allclose(log_p, standard_normal_log_prob(x_ref) + at_inputs, atol=1e-8):
        return failed("the prior is evaluated at the sample x; evaluate it at the latent u.")
    if torch.allclose(log_p, log_prior, atol=1e-8):
        return failed("the log-dets are missing: add log|det J_{g_i}(x_{i-1})| of every layer.")
    return failed(f"your log-densities differ from the reference by up to "
                  f"{float((log_p - reference).abs().max()):.3g}.")


# ----------------------------------------------------------------------------- exercise 2
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


# ----------------------------------------------------------------------------- exercise 3
def counted_iaf(dim: int) -> tuple[IAF, Callable[[torch.Tensor], tuple], list[int]]:
    """An IAF layer with a non-trivial MADE, a conditioner that counts its calls, the counts.

    The conditioner is a closure: the learner reaches the network only through it, so the
    number of entries in the list is the number of network passes the learner made.
    """
    with torch.random.fork_rng():
        torch.manual_seed(606)
        layer = IAF(dim, hidden=24, depth=2).to(DTYPE)
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.6 * torch.randn_like(p))
    calls: list[int] = []

    def conditioner(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(int(v.shape[0]))
        return layer._scale_shift(v)

    return layer, conditioner, calls


IAF_DIM = 6


@checker
def iaf_costs(
    iaf_sample: Callable[[Callable, torch.Tensor], torch.Tensor],
    iaf_log_prob: Callable[[Callable, torch.Tensor], torch.Tensor],
) -> CheckResult:
    """Check ``iaf_sample(conditioner, u) -> x`` and ``iaf_log_prob(conditioner, x)``.

    ``conditioner(v) -> (log_scale, shift)`` is the MADE of an :class:`ebflow_lite.layers.IAF`
    wrapped in a call counter; the references are ``IAF.inverse`` (sampling) and
    ``log N(u) - log|det J|`` with the autograd Jacobian of the sampling map. The checker
    counts the passes the learner's own functions make: one for a sample, at most ``D + 1``
    for a density, each on the whole batch.
    """
    dim, batch = IAF_DIM, 7
    layer, conditioner, calls = counted_iaf(dim)
    u = torch.randn(batch, dim, generator=torch.Generator().manual_seed(616), dtype=DTYPE)
    with torch.no_grad():
        x_ref = layer.inverse(u)

    def sample_of(v: torch.Tensor) -> torch.Tensor:
        return layer.inverse(v.unsqueeze(0)).squeeze(0)

    log_det_sampling = torch.stack([torch.linalg.slogdet(jacobian(sample_of, u[i]))[1]
                                    for i in range(batch)])
    log_p_ref = standard_normal_log_prob(u) - log_det_sampling
    with torch.no_grad():
        latent, log_det = layer(x_ref)
    if not torch.allclose(standard_normal_log_prob(latent) + log_det, log_p_ref, atol=1e-9):
        raise RuntimeError("internal: ebflow_lite.layers.IAF disagrees with autograd")

    calls.clear()
    with torch.no_grad():
        x = iaf_sample(conditioner, u.clone())
    sample_calls = list(calls)
    if not isinstance(x, torch.Tensor) or x.shape != u.shape:
        return failed(f"iaf_sample must return a tensor shaped like u, {tuple(u.shape)}")
    x = x.detach().to(DTYPE)
    if not torch.allclose(x, x_ref, rtol=1e-9, atol=1e-9):
        with torch.no_grad():
            log_scale, shift = layer._scale_shift(u)
        if torch.allclose(x, (u - shift) * torch.exp(-log_scale), atol=1e-8):
            return failed("iaf_sample undid the map: a sample is x = u * exp(log_scale) + "
                          "shift, with (log_scale, shift) = conditioner(u).")
        return failed("iaf_sample differs from ebflow_lite.layers.IAF.inverse: "
                      "x = u * exp(log_scale) + shift, with (log_scale, shift) computed from u.")
    if len(sample_calls) != 1:
        return failed(f"iaf_sample is right but called the network {len(sample_calls)} times. "
                      "The IAF's network reads the latent, and you know all of u: one pass "
                      "gives every log_scale and shift at once.")

    calls.clear()
    with torch.no_grad():
        log_p = iaf_log_prob(conditioner, x_ref.clone())
    density_calls = list(calls)
    if not isinstance(log_p, torch.Tensor) or log_p.shape != (batch,):
        return failed(f"iaf_log_prob must return one value per sample, shape ({batch},)")
    log_p = log_p.detach().to(DTYPE)
    if not torch.allclose(log_p, log_p_ref, rtol=1e-9, atol=1e-9):
        with torch.no_grad():
            scale_x, shift_x = layer._scale_shift(x_ref)
            maf_latent = (x_ref - shift_x) * torch.exp(-scale_x)
        if torch.allclose(log_p, standard_normal_log_prob(u) + log_det_sampling, atol=1e-8):
            return failed("the log-det has the wrong sign: log p(x) = log N(u) - "
                          "sum(log_scale(u)); the sampling map x = u exp(log_scale) + shift "
                          "stretches by exp(sum(log_scale)), so the density shrinks.")
        if torch.allclose(log_p, standard_normal_log_prob(maf_latent) - scale_x.sum(1),
                          atol=1e-8):
            return failed("you fed x to the network: that is MAF's map, one pass. The IAF's "
                          "log_scale and shift are functions of the latent u, which you must "
                          "first recover from x one feature at a time.")
        if len(density_calls) < dim:
            return failed(f"iaf_log_prob made {len(density_calls)} passes for D = {dim} and "
                          "missed the latent: after k passes only the first k features of u "
                          f"are exact (feature i needs u_<i), so it takes {dim} passes.")
        return failed(f"iaf_log_prob differs from log N(u) - log|det J| by up to "
                      f"{float((log_p - log_p_ref).abs().max()):.3g}: recover u from x "
                      "feature by feature, then add log N(u) and subtract sum(log_scale(u)).")
    if any(rows != batch for rows in density_calls) or len(density_calls) > dim + 1:
        return failed(f"iaf_log_prob is right but made {len(density_calls)} network calls "
                      f"for a batch of {batch} in D = {dim}: pass the whole batch each time, "
                      f"and update every feature at each pass; {dim} passes suffice.")
    return passed(f"a sample took {len(sample_calls)} network pass, a density "
                  f"{len(density_calls)} sequential passes (D = {dim}), counted on your own "
                  "functions: IAF samples in one pass and evaluates densities in D, the "
                  "reverse of MAF.")


# ----------------------------------------------------------------------------- exercise 4
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
