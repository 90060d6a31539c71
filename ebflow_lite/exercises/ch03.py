"""Checkers for the exercises of chapter 3 (energy-based models and MCMC).

Each checker compares a learner's function with an independent computation: a closed form
(the Gaussian partition function, the stationary variance of ULA) or an explicit density
(the MALA proposal written with ``torch.distributions``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ebflow_lite.exercises import CheckResult, checker, failed, passed


# ----------------------------------------------------------------------------- exercise 1
def _gaussian_energy(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``E(x; theta) = 0.5 sum_d exp(a_d) (x_d - mu_d)^2`` with ``theta = (mu, a)``."""
    dim = x.shape[1]
    mu, log_precision = theta[:dim], theta[dim:]
    return 0.5 * (log_precision.exp() * (x - mu) ** 2).sum(1)


def _gaussian_log_z(theta: torch.Tensor, dim: int) -> torch.Tensor:
    log_precision = theta[dim:]
    return (0.5 * math.log(2 * math.pi) - 0.5 * log_precision).sum()


@checker
def grad_log_z(estimator: Callable[..., torch.Tensor]) -> CheckResult:
    """Check a Monte-Carlo estimator of ``grad_theta log Z`` on a diagonal Gaussian.

    The learner's ``estimator(energy, theta, samples)`` must return ``-mean grad_theta E``.
    The reference is autograd of the closed-form ``log Z``.
    """
    gen = torch.Generator().manual_seed(31)
    dim = 3
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    log_precision = torch.tensor([0.0, 0.7, -0.4], dtype=torch.float64)
    theta = torch.cat([mu, log_precision])
    n = 40_000
    std = (-0.5 * log_precision).exp()
    samples = mu + std * torch.randn(n, dim, generator=gen, dtype=torch.float64)

    theta_leaf = theta.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad(_gaussian_log_z(theta_leaf, dim), theta_leaf)

    estimate = estimator(_gaussian_energy, theta.clone(), samples)
    if not isinstance(estimate, torch.Tensor):
        return failed(f"return a tensor shaped like theta, got {type(estimate).__name__}")
    estimate = estimate.detach().to(torch.float64).reshape(-1)
    if estimate.shape != theta.shape:
        return failed(f"the gradient must have the shape of theta {tuple(theta.shape)}, "
                      f"got {tuple(estimate.shape)}")
    if not bool(torch.isfinite(estimate).all()):
        return failed("the estimate has NaN or inf entries")
    # Per-sample gradients have standard deviation <= ~1.3 here; 40k samples -> MC error < 0.01.
    tol = 0.04
    error = (estimate - exact).abs().max().item()
    if error <= tol:
        return passed(f"your estimate matches the closed form grad log Z (max error {error:.3f}).")
    if (estimate + exact).abs().max().item() <= tol:
        return failed("the sign looks flipped: grad_theta log Z = -E_p[grad_theta E], "
                      "because p is proportional to exp(-E).")
    if (estimate[dim:] - 2 * exact[dim:]).abs().max().item() <= 2 * tol:
        return failed("the answer is off by a factor 2: check the 1/2 in the energy, or that "
                      "you average (not sum) over samples and differentiate E only once.")
    if estimate.abs().max().item() > 10:
        return failed("the estimate is far too large: average grad_theta E over the samples "
                      "(divide by their number) instead of summing.")
    return failed(f"the estimate {estimate.tolist()} differs from the closed form "
                  f"{exact.tolist()} by {error:.3f} (> {tol}).")


# ----------------------------------------------------------------------------- exercise 2
def _double_well_energy(x: torch.Tensor) -> torch.Tensor:
    """A non-Gaussian energy on R^2 whose gradient is not linear in x."""
    return (x[:, 0] ** 2 - 1.0) ** 2 + 0.5 * (x[:, 1] - 0.3 * x[:, 0]) ** 2


def _reference_mala_log_accept(
    energy: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
    step: float,
) -> torch.Tensor:
    """Independent computation with explicit Normal densities."""

    def grad_e(z: torch.Tensor) -> torch.Tensor:
        z = z.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(z).sum(), z)
        return g

    scale = math.sqrt(2.0 * step)
    forward = torch.distributions.Normal(x - step * grad_e(x), scale).log_prob(y).sum(1)
    backward = torch.distributions.Normal(y - step * grad_e(y), scale).log_prob(x).sum(1)
    log_ratio = -energy(y) + energy(x) + backward - forward
    return torch.clamp(log_ratio.detach(), max=0.0)


@checker
def mala_log_accept(log_accept: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``log_accept(energy, x, y, step)`` = log of MALA's acceptance probability."""
    gen = torch.Generator().manual_seed(32)
    n = 256
    step = 0.15
    x = torch.randn(n, 2, generator=gen, dtype=torch.float64) * 1.2
    # Proposals drawn as MALA would (plus some far-away ones so that rejections happen).
    x_req = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_double_well_energy(x_req).sum(), x_req)
    y = x - step * g + math.sqrt(2 * step) * torch.randn(n, 2, generator=gen,
                                                         dtype=torch.float64)
    y[: n // 4] += torch.randn(n // 4, 2, generator=gen, dtype=torch.float64)

    expected = _reference_mala_log_accept(_double_well_energy, x, y, step)
    got = log_accept(_double_well_energy, x.clone(), y.clone(), step)
    if not isinstance(got, torch.Tensor):
        return failed(f"return a tensor of shape ({n},), got {type(got).__name__}")
    got = got.detach().to(torch.float64)
    if got.shape != (n,):
        return failed(f"return one log-probability per chain, shape ({n},), "
                      f"got {tuple(got.shape)}")
    if torch.allclose(got, expected, atol=1e-6, rtol=1e-6):
        return passed("your log acceptance probabilities match an independent computation.")
    if bool((got > 1e-9).any()):
        return failed("some values are > 0, i.e. probabilities above 1: take min(0, log ratio).")
    # Diagnose common mistakes.
    random_walk = torch.clamp(-_double_well_energy(y) + _double_well_energy(x), max=0.0)
    if torch.allclose(got, random_walk, atol=1e-6):
        return failed("you used the random-walk Metropolis ratio exp(E(x) - E(y)); MALA's "
                      "proposal is not symmetric, so add log q(x|y) - log q(y|x).")
    flipped = _reference_mala_log_accept(_double_well_energy, y, x, step)
    if torch.allclose(got, flipped, atol=1e-6):
        return failed("the roles of x and y look swapped: the ratio is "
                      "p(y) q(x|y) / (p(x) q(y|x)), with q(y|x) = N(y; x - h grad E(x), 2h I).")
    return failed("the values differ from an independent computation (max error "
                  f"{(got - expected).abs().max().item():.3g}); check that the proposal "
                  "variance is 2h (not h) and its mean x - h grad E(x).")


# ----------------------------------------------------------------------------- exercise 3
def ula_gaussian_variance(step: float, sigma: float) -> float:
    """Stationary variance of ULA with step ``h`` on ``N(0, sigma^2)``.

    The closed form is ``sigma^2 / (1 - h / (2 sigma^2))``.
    """
    return sigma**2 / (1.0 - step / (2.0 * sigma**2))


_ULA_CASES = [(1.0, 0.1), (1.0, 0.5), (1.0, 1.0), (0.6, 0.05), (0.6, 0.2), (0.6, 0.4)]


@checker
def ula_variance(ula_stationary_variance: Callable[..., float]) -> CheckResult:
    """Check an empirical ULA stationary variance against the closed form.

    Two targets (``sigma = 1`` and ``sigma = 0.6``) and three steps each, so an answer that
    ignores ``sigma`` fails; and the value must change with the generator's seed, so a
    closed form returned in place of a simulation fails too.
    """
    values, closed = [], []
    for i, (sigma, step) in enumerate(_ULA_CASES):
        gen = torch.Generator().manual_seed(33 + i)
        value = float(ula_stationary_variance(step, sigma, n_chains=4000, n_steps=300,
                                              generator=gen))
        if not math.isfinite(value):
            return failed(f"the variance at step {step}, sigma {sigma} is not finite")
        values.append(value)
        closed.append(ula_gaussian_variance(step, sigma))
    again = float(ula_stationary_variance(0.5, 1.0, n_chains=4000, n_steps=300,
                                          generator=torch.Generator().manual_seed(999)))
    if again == values[1]:
        return failed("your value does not change with the random seed: run the chains and "
                      "measure their variance, do not return the closed form.")
    # 4000 chains: the sample variance has relative standard error sqrt(2/4000) ~ 2.2%.
    rel = [abs(v - c) / c for v, c in zip(values, closed, strict=True)]
    if max(rel) < 0.1:
        return passed("the empirical variances " + ", ".join(f"{v:.3f}" for v in values)
                      + " match sigma^2/(1 - h/(2 sigma^2)) = "
                      + ", ".join(f"{c:.3f}" for c in closed) + " for sigma = 1 and 0.6.")
    if all(abs(v - sig**2) / sig**2 < 0.1 for v, (sig, _) in zip(values, _ULA_CASES,
                                                                   strict=True)):
        return failed("the variance is unbiased (about sigma^2) at every step: that is what "
                      "MALA does; unadjusted Langevin has no accept/reject step and is biased.")
    half = [sig**2 / (2.0 - h / sig**2) for sig, h in _ULA_CASES]
    if all(abs(v - c) / c < 0.1 for v, c in zip(values, half, strict=True)):
        return failed("the variance is about half of the expected value: the Langevin noise "
                      "is sqrt(2h) * N(0, 1), not sqrt(h) * N(0, 1).")
    unit = [ula_gaussian_variance(h, 1.0) for _, h in _ULA_CASES]
    if all(abs(v - c) / c < 0.1 for v, c in zip(values[:3], closed[:3], strict=True)) and \
            all(abs(v - c) / c < 0.15 for v, c in zip(values[3:], unit[3:], strict=True)):
        return failed("right for sigma = 1 only: the gradient of E(x) = x^2 / (2 sigma^2) is "
                      "x / sigma^2; your chains seem to use x.")
    return failed("the empirical variances " + ", ".join(f"{v:.3f}" for v in values)
                  + " do not match the closed form " + ", ".join(f"{c:.3f}" for c in closed)
                  + "; check the update x <- x - h x / sigma^2 + sqrt(2h) xi, the number of "
                  "steps (burn-in) and that you return the variance, not the std.")


__all__ = ["grad_log_z", "mala_log_accept", "ula_gaussian_variance", "ula_variance"]
