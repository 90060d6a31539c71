"""Checkers for the exercises of chapter 3 (energy-based models and MCMC).

Each checker compares a learner's function with an independent computation: the
importance-sampling estimate written out on the same samples (against a target whose
``log Z`` is known), the known mode weights of a mixture (measured on the learner's own
chains), and MALA's acceptance rate measured by :func:`ebflow_lite.sampling.mala` at the
learner's step sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import torch

from ebflow_lite.exercises import CheckResult, checker, failed, passed
from ebflow_lite.experiments.bench import fit_loglog_slope
from ebflow_lite.sampling import mala


def _as_float(value: object, what: str) -> float:
    """A float from a number or a one-element tensor; an AssertionError (a hint) otherwise."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise AssertionError(
                f"return one number for {what}, got shape {tuple(value.shape)}")
        return float(value.detach())
    if not isinstance(value, (int, float)):
        raise AssertionError(f"return a float for {what}, got {type(value).__name__}")
    return float(value)


# ----------------------------------------------------------------------------- exercise 1
def mixture_energy(
    x: torch.Tensor, right_weight: float, mean: float, std: float, offset: float = 0.0,
) -> torch.Tensor:
    """Energy of ``w N((m, 0), s^2 I) + (1 - w) N((-m, 0), s^2 I)`` on R^2, minus ``offset``.

    ``exp(-E)`` integrates to ``exp(offset)``: the energy's ``log Z`` is ``offset``.
    """
    centre = torch.tensor([mean, 0.0], dtype=x.dtype)
    log_n = [torch.distributions.Normal(sign * centre, std).log_prob(x).sum(1)
             for sign in (1.0, -1.0)]
    log_p = torch.logsumexp(torch.stack([log_n[0] + math.log(right_weight),
                                         log_n[1] + math.log(1 - right_weight)]), 0)
    return -log_p - offset


def _diag_gaussian(scale: tuple[float, float]) -> torch.distributions.Distribution:
    scale_t = torch.tensor(scale, dtype=torch.float64)
    return torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(2, dtype=torch.float64), scale_t), 1)


@checker
def log_z_importance(estimator: Callable[..., float]) -> CheckResult:
    """Check ``estimator(energy, samples, proposal_log_prob)`` = the importance-sampling
    estimate ``log (1/N) sum exp(-E(y_n) - log q(y_n))``.

    The reference is the same formula written out on the same samples, for two sample
    sizes and for an energy shifted by 1000 (which only a log-space computation survives).
    """
    offset = 2.5
    proposal = _diag_gaussian((2.5, 1.0))

    def energy(x: torch.Tensor) -> torch.Tensor:
        return mixture_energy(x, 0.5, 2.0, 0.5, offset)

    gen = torch.Generator().manual_seed(301)
    messages = []
    for n in (4000, 37):
        y = torch.randn(n, 2, generator=gen, dtype=torch.float64) * torch.tensor(
            [2.5, 1.0], dtype=torch.float64)
        log_w = -energy(y) - proposal.log_prob(y)
        expected = float(torch.logsumexp(log_w, 0) - math.log(n))
        got = _as_float(estimator(energy, y.clone(), proposal.log_prob), "log Z")
        if math.isclose(got, expected, rel_tol=1e-7, abs_tol=1e-7):
            messages.append(f"N = {n}: {got:.4f}")
            continue
        if math.isclose(got, float(log_w.mean()), abs_tol=1e-6):
            return failed("you averaged the log-weights: E_q[-E - log q] is the variational "
                          "lower bound of log Z (Jensen), not an estimate of it; take the log "
                          "of the average weight, log mean exp(log w).")
        if math.isclose(got, expected + math.log(n), abs_tol=1e-6):
            return failed("off by log N: the estimate is the log of the *mean* weight, so "
                          "subtract log N from the log-sum-exp.")
        if math.isclose(got, float(torch.logsumexp(-energy(y), 0) - math.log(n)),
                        abs_tol=1e-6):
            return failed("the proposal density is missing: each weight is "
                          "exp(-E(y)) / q(y), because E_q[exp(-E) / q] = Z.")
        if math.isclose(got, float(torch.logsumexp(energy(y) - proposal.log_prob(y), 0)
                                   - math.log(n)), abs_tol=1e-6):
            return failed("the sign of the energy is flipped: the density is proportional to "
                          "exp(-E).")
        return failed(f"with N = {n} samples your estimate is {got:.5f}, the importance "
                      f"sampling formula gives {expected:.5f} on the same samples.")
    y = torch.randn(4000, 2, generator=gen, dtype=torch.float64) * torch.tensor(
        [2.5, 1.0], dtype=torch.float64)

    def shifted(x: torch.Tensor) -> torch.Tensor:
        return energy(x) + 1000.0

    expected = float(torch.logsumexp(-shifted(y) - proposal.log_prob(y), 0) - math.log(4000))
    hint = ("exp(-1000) underflows to 0, so work in log space (torch.logsumexp of the "
            "log-weights).")
    try:
        got = _as_float(estimator(shifted, y.clone(), proposal.log_prob), "log Z")
    except (ValueError, ZeroDivisionError, OverflowError) as err:
        return failed(f"with the energy shifted by +1000 your code raised "
                      f"{type(err).__name__} ({err}): {hint}")
    if not math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-6):
        return failed(f"with the energy shifted by +1000 your estimate is {got}, expected "
                      f"{expected:.4f}: {hint}")
    return passed("your estimates match the importance-sampling formula ("
                  + ", ".join(messages) + f"; the true log Z is {offset}) and survive an "
                  "energy shifted by 1000.")


# ----------------------------------------------------------------------------- exercise 2
_MODE_CASES = [(0.3, 601), (0.8, 602)]   # (weight of the right mode, seed)


@checker
def mode_jump_mh(sampler: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``sampler(energy, x0, n_steps, jump, local_std, jump_prob, generator)``.

    Chains start at the right mode of a two-mode mixture (modes 12 standard deviations
    apart); after the run the fraction of chains in each mode must match the mode weights,
    for two different weights, and the spread within a mode must match the component's.
    """
    mean, std, n_chains, n_steps = 3.0, 0.5, 2000, 200
    jump = torch.tensor([2 * mean, 0.0], dtype=torch.float64)
    x0 = torch.tensor([mean, 0.0], dtype=torch.float64).repeat(n_chains, 1)
    fractions, messages = [], []
    for weight, seed in _MODE_CASES:
        def energy(x: torch.Tensor, w: float = weight) -> torch.Tensor:
            return mixture_energy(x, w, mean, std)

        samples = sampler(energy, x0.clone(), n_steps, jump.clone(), local_std=0.5,
                          jump_prob=0.2, generator=torch.Generator().manual_seed(seed))
        if not isinstance(samples, torch.Tensor) or samples.shape != x0.shape:
            return failed(f"return the final states of the chains, a tensor of shape "
                          f"{tuple(x0.shape)}, got {getattr(samples, 'shape', type(samples))}")
        samples = samples.detach().to(torch.float64)
        if not bool(torch.isfinite(samples).all()):
            return failed("some chains are NaN or inf")
        right = float((samples[:, 0] > 0).double().mean())
        fractions.append(right)
        # the fraction is a mean of n_chains independent indicators
        tol = 5 * math.sqrt(weight * (1 - weight) / n_chains) + 0.01
        if abs(right - weight) > tol:
            continue
        near = samples[(samples[:, 0].abs() - mean).abs() < 4 * std]
        spread = float(near[:, 1].std())
        if abs(spread - std) > 0.15 * std:
            return failed(f"the mode weights are right, but the spread within a mode along "
                          f"x_2 is {spread:.3f} instead of {std}: the local random-walk move "
                          "x + local_std * N(0, I) must also pass the Metropolis test.")
        messages.append(f"right mode weight {weight}: {right:.3f} of the chains")
    if len(messages) == len(_MODE_CASES):
        weight = _MODE_CASES[-1][0]
        again = sampler(lambda x: mixture_energy(x, weight, mean, std), x0.clone(), n_steps,
                        jump.clone(), local_std=0.5, jump_prob=0.2,
                        generator=torch.Generator().manual_seed(999))
        if torch.equal(again.detach().to(torch.float64), samples):
            return failed("your chains do not change with the generator: draw every random "
                          "number with generator=generator.")
        return passed("; ".join(messages) + " (chains started in the right mode, modes "
                      f"{2 * mean / std:.0f} standard deviations apart).")
    if all(f > 0.97 for f in fractions):
        return failed("the chains never left the starting mode: with probability jump_prob "
                      "propose y = x + jump or y = x - jump instead of a local move.")
    if all(f < 0.03 for f in fractions):
        return failed("all chains ended in the left mode: a jump in one direction only is not "
                      "a symmetric proposal; propose +jump and -jump with probability 1/2 "
                      "each, so that q(y | x) = q(x | y).")
    if all(abs(f - 0.5) < 0.1 for f in fractions):
        return failed("about half the chains are in each mode whatever the weights: every "
                      "proposal, jumps included, must be accepted with probability "
                      "min(1, exp(E(x) - E(y))).")
    return failed("the fractions of chains in the right mode, "
                  + ", ".join(f"{f:.3f}" for f in fractions) + ", do not match its weights "
                  + ", ".join(str(w) for w, _ in _MODE_CASES) + ".")


# ----------------------------------------------------------------------------- exercise 3
_MALA_DIMS = (2, 8, 32, 128)
_MALA_TARGET = 0.574
_MALA_OTHER = (16, 0.85)   # a second target, at one dimension


def mala_acceptance(dim: int, step: float, n_chains: int = 1000, n_steps: int = 50,
                    seed: int = 0) -> float:
    """MALA's acceptance rate on ``N(0, I_dim)`` from stationary starts
    (:func:`ebflow_lite.sampling.mala`)."""
    standard_gaussian = SimpleNamespace(energy=lambda x: 0.5 * (x**2).sum(1), dim=dim)
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(n_chains, dim, generator=gen, dtype=torch.float64)
    return float(mala(standard_gaussian, start, step_size=step, n_steps=n_steps,
                      generator=gen).acceptance_rate)


@checker
def tune_mala_step(tune: Callable[..., float]) -> CheckResult:
    """Check ``tune(dim, target, generator)``: a MALA step with acceptance ``target``.

    The checker measures the acceptance of :func:`ebflow_lite.sampling.mala` at the returned
    steps itself (other chains, other seeds), at four dimensions and for a second target.
    """
    cases = [(d, _MALA_TARGET) for d in _MALA_DIMS] + [_MALA_OTHER]
    steps, rates = [], []
    for i, (dim, target) in enumerate(cases):
        step = _as_float(tune(dim, target, generator=torch.Generator().manual_seed(70 + i)),
                         "the step")
        if not (math.isfinite(step) and step > 0):
            return failed(f"the step for D = {dim} must be a positive number, got {step}")
        steps.append(step)
        rates.append(mala_acceptance(dim, step, seed=80 + i))
    off = [abs(r - t) > 0.05 for r, (_, t) in zip(rates, cases, strict=True)]
    table = ", ".join(f"D={d}: h={h:.3g} accepts {r:.2f}"
                      for (d, _), h, r in zip(cases, steps, rates, strict=True))
    if not any(off):
        slope = fit_loglog_slope(list(_MALA_DIMS), steps[:len(_MALA_DIMS)])
        return passed(f"measured acceptances {table}; the step shrinks like D^{slope:.2f} "
                      f"(theory: D^(-1/3); random-walk MH needs D^-1).")
    main = rates[:len(_MALA_DIMS)]
    if not any(off[:len(_MALA_DIMS)]):
        return failed(f"right for target {_MALA_TARGET}, but at target {_MALA_OTHER[1]} the "
                      f"step accepts {rates[-1]:.2f}: use the target argument. ({table})")
    if main[-1] < _MALA_TARGET - 0.05 and main[-1] < main[0]:
        return failed(f"the acceptance falls with the dimension ({table}): the step must "
                      "shrink as D grows; measure the acceptance at each D and adjust h.")
    if main[-1] > _MALA_TARGET + 0.05 and main[0] < main[-1]:
        return failed(f"the acceptance rises with the dimension ({table}): the step shrinks "
                      "too fast (1/D is random-walk Metropolis' rate, not MALA's).")
    return failed(f"the acceptance at your steps is off the target ({table}); bisect on "
                  "log h: a larger step when the chains accept more than the target, a "
                  "smaller one when they accept less.")


__all__ = [
    "log_z_importance",
    "mala_acceptance",
    "mixture_energy",
    "mode_jump_mh",
    "tune_mala_step",
]
