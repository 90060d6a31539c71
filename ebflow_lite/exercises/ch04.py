"""Checkers for the exercises of chapter 4 (score matching).

The references are independent computations: the implicit objective written out on the
same samples, exact traces and the variance formulas of Hutchinson's estimator, and the
Taylor expansion of the finite-difference sliced objective on a quartic energy.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ebflow_lite.exercises import CheckResult, checker, failed, passed


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
def hutchinson_variance(matrix: torch.Tensor, kind: str) -> float:
    """Variance of one probe ``v^T A v`` for a symmetric ``A``.

    Rademacher: ``2 (||A||_F^2 - sum_i A_ii^2)``; Gaussian: ``2 ||A||_F^2``.
    """
    frob = float((matrix**2).sum())
    if kind == "rademacher":
        return 2.0 * (frob - float((torch.diagonal(matrix) ** 2).sum()))
    if kind == "gaussian":
        return 2.0 * frob
    raise ValueError(f"kind must be 'rademacher' or 'gaussian', got {kind!r}")


@checker
def hutchinson_trace(estimator: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``estimator(matvec, dim, n_probes, kind, generator)`` -> per-probe ``v^T A v``."""
    gen = torch.Generator().manual_seed(42)
    dim = 6
    raw = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    matrix = 0.5 * (raw + raw.T) + 2.0 * torch.diag(torch.arange(1.0, dim + 1,
                                                                 dtype=torch.float64))
    trace = float(torch.trace(matrix))

    def matvec(v: torch.Tensor) -> torch.Tensor:
        return v.to(torch.float64) @ matrix.T

    n = 20_000
    messages = []
    for kind in ("rademacher", "gaussian"):
        est = estimator(matvec, dim, n, kind=kind, generator=torch.Generator().manual_seed(7))
        if not isinstance(est, torch.Tensor) or est.shape != (n,):
            return failed(f"return the {n} single-probe estimates v_k^T A v_k as a tensor of "
                          f"shape ({n},), got {getattr(est, 'shape', type(est).__name__)}")
        est = est.detach().to(torch.float64)
        var_formula = hutchinson_variance(matrix, kind)
        mean, var = float(est.mean()), float(est.var())
        se = math.sqrt(var_formula / n)
        if abs(mean - trace) > 5 * se:
            return failed(f"{kind} probes: the mean {mean:.3f} is not the trace {trace:.3f} "
                          f"(standard error {se:.3f}); probes need E[v v^T] = I (mean 0, "
                          "variance 1 per entry).")
        if abs(var - var_formula) > 0.15 * var_formula:
            other = "gaussian" if kind == "rademacher" else "rademacher"
            if abs(var - hutchinson_variance(matrix, other)) < 0.15 * var_formula:
                return failed(f"with kind={kind!r} the variance matches {other} probes: "
                              "Rademacher probes are random signs (+1/-1), Gaussian ones "
                              "N(0, 1).")
            return failed(f"{kind} probes: variance {var:.2f}, expected {var_formula:.2f}.")
        messages.append(f"{kind}: mean {mean:.2f} (trace {trace:.2f}), variance {var:.1f} "
                        f"(formula {var_formula:.1f})")
    return passed("; ".join(messages) + ".")


# ----------------------------------------------------------------------------- exercise 3
def quartic_energy(x: torch.Tensor) -> torch.Tensor:
    """``E(x) = sum_d x_d^4 / 4 + x_d^2 / 2``: smooth, with non-zero third/fourth derivatives."""
    return (0.25 * x**4 + 0.5 * x**2).sum(1)


def fdssm_bias_leading_term(dim: int) -> float:
    """Leading coefficient ``c`` of the FDSSM bias ``c eps^2`` for :func:`quartic_energy` at
    ``x ~ N(0, I)`` with directions uniform on the sphere (derived by Taylor expansion):
    ``3.5 * 3 / (dim + 2)``."""
    return 3.5 * 3.0 / (dim + 2)


@checker
def fdssm_bias(bias_fn: Callable[..., list[float]]) -> CheckResult:
    """Check ``bias_fn(energy, x, eps_values, generator)`` -> |FDSSM - SSM| per eps."""
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
                      "(directions on the unit sphere, exact term 0.5 (u.grad E)^2 - u^T H u).")
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


__all__ = [
    "gamma_score",
    "mixture_log_density",
    "mixture_score",
    "fdssm_bias",
    "fdssm_bias_leading_term",
    "hutchinson_trace",
    "hutchinson_variance",
    "implicit_sm_1d",
    "quartic_energy",
]
