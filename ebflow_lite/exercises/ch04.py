"""Checkers for the exercises of chapter 4 (score matching).

The references are independent computations: the implicit objective written out on the
same samples, the Taylor expansion of the finite-difference sliced objective on a quartic
energy, autograd derivatives of mixture and Gamma log-densities, and the minimiser of the
library's NCE loss (:func:`ebflow_lite.objectives.nce`) over the normalising constant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import torch

from ebflow_lite.data import toy
from ebflow_lite.exercises import CheckResult, checker, failed, passed
from ebflow_lite.objectives import fdssm, nce


# ----------------------------------------------------------------------------- exercise 1
@checker
def implicit_sm_1d(objective: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``objective(score, score_derivative, x) = mean(0.5 s(x)^2 + s'(x))``.

    Model ``N(mu, sigma^2)``, data ``N(m, tau^2)`` samples; the reference is the same
    average written out, and the checker also confirms that explicit minus implicit equals
    ``0.5 E[s_data^2]``.
    """
    gen = torch.Generator().manual_seed(41)
    mu, sigma = 0.7, 1.5
    m, tau = -0.2, 0.8
    x = m + tau * torch.randn(20_000, generator=gen, dtype=torch.float64)

    def score(z: torch.Tensor) -> torch.Tensor:
        return -(z - mu) / sigma**2

    def score_derivative(z: torch.Tensor) -> torch.Tensor:
        return torch.full_like(z, -1.0 / sigma**2)

    got = objective(score, score_derivative, x.clone())
    if not isinstance(got, torch.Tensor) and not isinstance(got, float):
        return failed(f"return a scalar tensor, got {type(got).__name__}")
    got = float(got)
    expected = float((0.5 * score(x) ** 2 + score_derivative(x)).mean())
    if math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9):
        explicit = float((0.5 * (score(x) + (x - m) / tau**2) ** 2).mean())
        constant = float((0.5 * ((x - m) / tau**2) ** 2).mean())
        return passed(f"J = {got:.4f}; the explicit Fisher divergence {explicit:.4f} minus J is "
                      f"{explicit - got:.4f}, close to 0.5 E[s_data^2] = {constant:.4f}.")
    if math.isclose(got, float((0.5 * score(x) ** 2 - score_derivative(x)).mean()),
                    rel_tol=1e-6):
        return failed("the derivative term has the wrong sign: integrating by parts turns "
                      "-E[s_model s_data] into +E[s_model'], because s_data p_data = p_data'.")
    if math.isclose(got, float((score(x) ** 2 + score_derivative(x)).mean()), rel_tol=1e-6):
        return failed("the squared score needs the factor 1/2: J = E[0.5 s^2 + s'].")
    if math.isclose(got, float((0.5 * score(x) ** 2).mean()), rel_tol=1e-6):
        return failed("the derivative term s'(x) is missing: it is what replaces the unknown "
                      "data score after integration by parts.")
    return failed(f"got {got:.5f}, expected {expected:.5f} on these samples: average "
                  "0.5 s(x)^2 + s'(x) over x.")


# ----------------------------------------------------------------------------- exercise 2
def quartic_energy(x: torch.Tensor) -> torch.Tensor:
    """``E(x) = sum_d x_d^4 / 4 + x_d^2 / 2``: smooth, with non-zero third/fourth derivatives."""
    return (0.25 * x**4 + 0.5 * x**2).sum(1)


def fdssm_bias_leading_term(dim: int) -> float:
    """Leading coefficient ``c_FD`` of the FDSSM bias ``c_FD eps^2`` for :func:`quartic_energy` at
    ``x ~ N(0, I)`` with directions uniform on the sphere (derived by Taylor expansion):
    ``3.5 * 3 / (dim + 2)``."""
    return 3.5 * 3.0 / (dim + 2)


@checker
def fdssm_bias(bias_fn: Callable[..., list[float]]) -> CheckResult:
    """Check ``bias_fn(energy, x, eps_values, generator)`` -> |FDSSM - SSM| per eps.

    On :func:`quartic_energy` in ``D = 4`` against the Taylor prediction, then on a
    stretched quartic in ``D = 3`` against the library's :func:`ebflow_lite.objectives.fdssm`.
    """
    dim = 4
    x = torch.randn(8000, dim, generator=torch.Generator().manual_seed(43),
                    dtype=torch.float64)
    eps_values = [0.4, 0.2, 0.1, 0.05]
    biases = bias_fn(quartic_energy, x.clone(), eps_values,
                     generator=torch.Generator().manual_seed(8))
    biases = [float(b) for b in biases]
    if len(biases) != len(eps_values):
        return failed(f"return one bias per eps ({len(eps_values)}), got {len(biases)}")
    if not all(math.isfinite(b) and b >= 0 for b in biases):
        return failed(f"biases must be finite absolute values, got {biases}")
    if min(biases) == 0.0:
        return failed("a bias of exactly 0 means the finite difference and the exact term are "
                      "the same expression: compare against the autograd Hessian term.")
    slope = (math.log(biases[0]) - math.log(biases[-1])) / (
        math.log(eps_values[0]) - math.log(eps_values[-1]))
    leading = [fdssm_bias_leading_term(dim) * e**2 for e in eps_values]
    if not 1.75 <= slope <= 2.3:
        if 0.6 <= slope < 1.75:
            hint = ("the bias shrinks like eps, not eps^2: use central differences "
                    "E(x+v) - E(x-v) and 2E(x) - E(x+v) - E(x-v).")
        elif abs(slope) < 0.4:
            hint = ("the bias does not shrink with eps: check the factor 1/8 on the squared "
                    "difference and the division by eps^2.")
        elif slope > 3.4:
            hint = "the bias shrinks too fast: did you forget to divide by eps^2?"
        else:
            hint = f"the log-log slope is {slope:.2f}, expected about 2."
        return failed(f"biases {[f'{b:.2e}' for b in biases]}: {hint}")
    ratio = [b / r for b, r in zip(biases, leading, strict=True)]
    if not all(0.6 < r < 1.6 for r in ratio):
        return failed(f"the bias shrinks like eps^2 (slope {slope:.2f}) but its size "
                      f"{[f'{b:.2e}' for b in biases]} differs from the Taylor prediction "
                      f"{[f'{r:.2e}' for r in leading]}: check the per-dimension scaling "
                      "(unit directions v_hat on the sphere, exact term "
                      "0.5 (v_hat.grad E)^2 - v_hat^T H v_hat).")
    # A second energy and dimension, whose bias has no formula in this module: the library's
    # FDSSM at eps against eps -> 0 with the same directions (other directions than the
    # learner's, so the two agree within the Monte-Carlo error of 8000 samples, a few %).
    def stretched(z: torch.Tensor) -> torch.Tensor:
        return quartic_energy(1.3 * z)

    x_other = torch.randn(8000, 3, generator=torch.Generator().manual_seed(44),
                          dtype=torch.float64)
    eps_other = [0.2, 0.1]
    got_other = [float(b) for b in bias_fn(stretched, x_other.clone(), eps_other,
                                           generator=torch.Generator().manual_seed(9))]
    model = SimpleNamespace(energy=stretched, dim=3)

    def library_fdssm(eps: float) -> float:
        return float(fdssm(model, x_other, eps=eps, generator=torch.Generator().manual_seed(10)))

    expected_other = [abs(library_fdssm(e) - library_fdssm(1e-4)) for e in eps_other]
    if len(got_other) != len(eps_other) or not all(
            0.8 < g / e < 1.25 for g, e in zip(got_other, expected_other, strict=True)):
        return failed(f"for the energy E(1.3 x) in D = 3 your biases {got_other} differ from "
                      f"those of ebflow_lite.objectives.fdssm, {expected_other}: compute the "
                      "bias from the energy and the samples you are given.")
    return passed(f"bias {[f'{b:.2e}' for b in biases]} at eps {eps_values}: log-log slope "
                  f"{slope:.2f} (O(eps^2)), matching the Taylor prediction "
                  f"{fdssm_bias_leading_term(dim):.2f} eps^2.")



# ----------------------------------------------------------------------------- mode weights
def mixture_log_density(x: torch.Tensor, weight: float, mean: float, std: float
                        ) -> torch.Tensor:
    """``log(w N(x; m, s^2) + (1 - w) N(x; -m, s^2))`` for a 1-D batch ``x`` of shape (B,)."""
    right = torch.distributions.Normal(mean, std).log_prob(x) + math.log(weight)
    left = torch.distributions.Normal(-mean, std).log_prob(x) + math.log(1 - weight)
    return torch.logsumexp(torch.stack([right, left]), 0)


@checker
def mixture_score(learner: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``learner(x, weight, mean, std)``: the score of a two-component 1-D mixture.

    The reference is the autograd derivative of :func:`mixture_log_density`, for several
    weights, means and widths.
    """
    gen = torch.Generator().manual_seed(505)
    for weight, mean, std in [(0.5, 2.0, 0.7), (0.9, 1.0, 1.0), (0.2, 3.0, 0.5)]:
        x = torch.linspace(-5, 5, 41, dtype=torch.float64) + 0.01 * torch.randn(
            41, generator=gen, dtype=torch.float64)
        x_grad = x.clone().requires_grad_(True)
        (reference,) = torch.autograd.grad(
            mixture_log_density(x_grad, weight, mean, std).sum(), x_grad)
        value = learner(x.clone(), weight, mean, std)
        if not isinstance(value, torch.Tensor) or value.shape != x.shape:
            return failed(f"return one score per point, a tensor of shape {tuple(x.shape)}")
        value = value.detach().to(torch.float64)
        if torch.allclose(value, reference, atol=1e-8):
            continue
        s_right, s_left = -(x - mean) / std**2, -(x + mean) / std**2
        if torch.allclose(value, weight * s_right + (1 - weight) * s_left, atol=1e-8):
            return failed("you weighted the component scores by the mixture weights; the "
                          "weights must be the posterior responsibilities, which depend on x: "
                          "r(x) = w N(x; m) / p(x).")
        if torch.allclose(value, s_right + s_left, atol=1e-8):
            return failed("you added the component scores; the score of a mixture is their "
                          "average weighted by the responsibilities r(x) and 1 - r(x).")
        half = 0.5 * torch.ones(())
        x_half = x.clone().requires_grad_(True)
        (equal_weights,) = torch.autograd.grad(
            mixture_log_density(x_half, float(half), mean, std).sum(), x_half)
        if weight != 0.5 and torch.allclose(value, equal_weights, atol=1e-8):
            return failed("your score ignores the weight: the responsibilities contain w.")
        return failed(f"for w = {weight}, m = {mean}, s = {std} your score differs from the "
                      f"derivative of log p by up to {float((value - reference).abs().max()):.3g}")
    return passed("your mixture score matches the derivative of the log-density for every "
                  "weight, mean and width.")



# ----------------------------------------------------------------------------- boundary term
@checker
def gamma_score(learner: Callable[[torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """Check ``learner(x, shape)``: the score of Gamma(shape, rate 1) on ``x > 0``.

    The reference is the autograd derivative of ``torch.distributions.Gamma.log_prob``.
    """
    for shape in (1.0, 2.5, 4.0):
        x = torch.linspace(0.2, 6.0, 30, dtype=torch.float64)
        x_grad = x.clone().requires_grad_(True)
        gamma = torch.distributions.Gamma(torch.tensor(shape, dtype=torch.float64),
                                          torch.tensor(1.0, dtype=torch.float64))
        (reference,) = torch.autograd.grad(gamma.log_prob(x_grad).sum(), x_grad)
        value = learner(x.clone(), shape)
        if not isinstance(value, torch.Tensor) or value.shape != x.shape:
            return failed(f"return one score per point, a tensor of shape {tuple(x.shape)}")
        value = value.detach().to(torch.float64)
        if torch.allclose(value, reference, atol=1e-9):
            continue
        if torch.allclose(value, shape / x - 1, atol=1e-9):
            return failed("the exponent of x in the density is k - 1, so the first term of "
                          "the score is (k - 1) / x, not k / x.")
        if torch.allclose(value, (shape - 1) / x, atol=1e-9):
            return failed("the factor exp(-x) contributes -1 to the score.")
        if torch.allclose(value, -reference, atol=1e-9):
            return failed("the sign is flipped: the score is + d/dx log p.")
        return failed(f"for k = {shape} your score differs from d/dx log p by up to "
                      f"{float((value - reference).abs().max()):.3g}")
    return passed("your Gamma score matches the derivative of the log-density for "
                  "k = 1, 2.5 and 4.")


# ----------------------------------------------------------------------------- NCE and log Z
def gaussian_noise(data: torch.Tensor, width: float) -> torch.distributions.Distribution:
    """A Gaussian with the data's mean and covariance scaled by ``width**2``."""
    cov = torch.cov(data.T) * width**2
    return torch.distributions.MultivariateNormal(data.mean(0), covariance_matrix=cov)


def nce_minimiser(log_unnormalised: Callable[[torch.Tensor], torch.Tensor],
                  data: torch.Tensor, noise: torch.distributions.Distribution,
                  noise_samples: torch.Tensor, nu: float) -> float:
    """The ``c`` minimising :func:`ebflow_lite.objectives.nce` for the energy
    ``E_c = -log_unnormalised + c``: bisection on the autograd derivative of the loss in
    ``c``, which increases with ``c`` (the loss is convex in ``c``).

    The loss sees a point only through ``t = log_unnormalised - log q``, so it is evaluated
    on the 1-D variable ``t`` (energy ``-t + c``, noise log-density 0): the same loss, with
    the densities computed once instead of at every step of the bisection.
    """
    t_data = (log_unnormalised(data) - noise.log_prob(data)).detach()[:, None]
    t_noise = (log_unnormalised(noise_samples) - noise.log_prob(noise_samples)).detach()[:, None]
    flat_noise = SimpleNamespace(log_prob=lambda t: torch.zeros(len(t), dtype=t.dtype))
    low, high = -100.0, 100.0   # far wider than any log Z of the checker's targets
    for _ in range(45):         # a bracket 200 / 2^45 ~ 6e-12 wide
        mid = 0.5 * (low + high)
        c = torch.tensor(mid, dtype=t_data.dtype, requires_grad=True)
        model = SimpleNamespace(energy=lambda t, c=c: -t[:, 0] + c, dim=1)
        loss = nce(model, t_data, noise=flat_noise, noise_samples=t_noise, nu=nu)
        (slope,) = torch.autograd.grad(loss, c)
        if slope > 0:
            high = mid
        else:
            low = mid
    return 0.5 * (low + high)


_NCE_CASES = [(1.0, 4), (0.35, 1), (3.0, 2)]   # (noise width, noise samples per data point)
_NCE_LOG_Z = 1.7


@checker
def nce_log_z(estimator: Callable[..., float]) -> CheckResult:
    """Check ``estimator(log_unnormalised, data, noise_samples, noise_log_prob, nu)``: NCE's
    estimate of ``log Z`` for a 2-D density known up to its constant.

    The target is the eight-Gaussian ring with ``log Z = 1.7`` added; the noise is Gaussian,
    of three widths, with 1, 2 and 4 noise samples per data point. The reference is the
    minimiser of the library's NCE loss on the same samples.
    """
    ring = toy("gaussian_mixture")

    def log_unnormalised(x: torch.Tensor) -> torch.Tensor:
        return ring.log_prob(x) + _NCE_LOG_Z

    messages = []
    for i, (width, nu) in enumerate(_NCE_CASES):
        gen = torch.Generator().manual_seed(440 + i)
        data = ring.sample(1000, generator=gen, dtype=torch.float64)
        noise = gaussian_noise(data, width)
        y = noise.mean + torch.randn(nu * len(data), 2, generator=gen,
                                     dtype=torch.float64) @ noise.scale_tril.T
        got = float(estimator(log_unnormalised, data.clone(), y.clone(), noise.log_prob,
                              float(nu)))
        expected = nce_minimiser(log_unnormalised, data, noise, y, float(nu))
        if not math.isfinite(got):
            return failed(f"the estimate is {got} for noise width {width}")
        if abs(got - expected) < 2e-3:
            messages.append(f"width {width}, nu = {nu}: {got:.3f}")
            continue
        log_w = log_unnormalised(y) - noise.log_prob(y)
        importance = float(torch.logsumexp(log_w, 0)) - math.log(len(y))
        if abs(got - importance) < 1e-6:
            return failed("that is the importance-sampling estimate with the noise as the "
                          "proposal; NCE's estimate is the constant c that minimises the "
                          "logistic loss of the classifier between data and noise.")
        if abs(got + expected) < 2e-3:
            return failed("the sign is flipped: the model is log p_c = log p~ - c, and the "
                          "estimate of log Z is c, not -c.")
        if nu != 1 and abs(got - expected - math.log(nu)) < 2e-3:
            return failed(f"off by log nu = {math.log(nu):.3f} with nu = {nu}: the logit is "
                          "G(x) = log p~(x) - c - log q(x) - log nu.")
        if nu != 1:
            return failed(f"with nu = {nu} noise samples per data point your estimate is "
                          f"{got:.4f}, NCE's minimiser {expected:.4f}: the noise term of the "
                          "loss is nu times the mean of -log sigmoid(-G) over the noise "
                          "samples, and the logit contains -log nu.")
        return failed(f"with noise width {width} your estimate is {got:.4f}, the minimiser "
                      f"of the NCE loss on the same samples is {expected:.4f}.")
    return passed("your estimates match the minimiser of ebflow_lite's NCE loss ("
                  + "; ".join(messages) + f"); the true log Z is {_NCE_LOG_Z}.")


__all__ = [
    "gamma_score",
    "mixture_log_density",
    "mixture_score",
    "fdssm_bias",
    "fdssm_bias_leading_term",
    "gaussian_noise",
    "implicit_sm_1d",
    "nce_log_z",
    "nce_minimiser",
    "quartic_energy",
]
