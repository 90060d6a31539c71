"""Checkers for the exercises of chapter 6 (training EBFlow on 2-D densities).

The estimators are checked against closed forms between two Gaussians; the DSM experiment
against the known optimum of denoising score matching for a Gaussian model, the data
covariance plus ``sigma^2 I``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ebflow_lite.exercises import CheckResult, checker, failed, passed


class Gaussian:
    """A multivariate normal ``N(mean, cov)`` with ``sample``, ``log_prob`` and ``score``.

    It follows the interface of the toy densities, so the learner's estimators can be run
    on it and on :func:`ebflow_lite.data.toy` alike.
    """

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.cov = torch.as_tensor(cov, dtype=torch.float64)
        dim = self.mean.shape[0]
        if self.cov.shape != (dim, dim):
            raise ValueError(f"cov must have shape ({dim}, {dim}), got {tuple(self.cov.shape)}")
        self.dim = dim
        self.chol = torch.linalg.cholesky(self.cov)
        self.precision = torch.cholesky_inverse(self.chol)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.mean + noise @ self.chol.T

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        diff = x.to(torch.float64) - self.mean
        maha = ((diff @ self.precision) * diff).sum(1)
        logdet = 2 * torch.log(torch.diagonal(self.chol)).sum()
        return -0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return -(x.to(torch.float64) - self.mean) @ self.precision


def gaussian_kl(p: Gaussian, q: Gaussian) -> float:
    """Closed-form ``KL(p || q)`` between two Gaussians."""
    diff = q.mean - p.mean
    trace = torch.trace(q.precision @ p.cov)
    maha = diff @ q.precision @ diff
    logdets = torch.linalg.slogdet(q.cov).logabsdet - torch.linalg.slogdet(p.cov).logabsdet
    return float(0.5 * (trace + maha - p.dim + logdets))


def gaussian_fisher(p: Gaussian, q: Gaussian) -> float:
    """Closed-form ``1/2 E_p ||grad log p - grad log q||^2`` between two Gaussians.

    The score difference is affine, ``d(x) = A x + c`` with ``A = P_q - P_p`` and
    ``c = P_p m_p - P_q m_q``, so ``E_p||d||^2 = ||A m_p + c||^2 + tr(A S_p A^T)``.
    """
    a = q.precision - p.precision
    c = p.precision @ p.mean - q.precision @ q.mean
    centre = a @ p.mean + c
    return float(0.5 * (centre @ centre + torch.trace(a @ p.cov @ a.T)))


def example_pair() -> tuple[Gaussian, Gaussian]:
    """Two 2-D Gaussians whose forward and reverse divergences differ clearly."""
    p = Gaussian(torch.tensor([0.5, -0.3]), torch.tensor([[1.0, 0.6], [0.6, 0.8]]))
    q = Gaussian(torch.tensor([-0.2, 0.4]), torch.tensor([[2.0, -0.3], [-0.3, 1.5]]))
    return p, q


def _as_float(value: object) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)  # type: ignore


# ----------------------------------------------------------------------------- exercise 1
@checker
def kl_estimate(learner: Callable[..., float]) -> CheckResult:
    """Check ``learner(p, q, n, generator) -> KL(p || q)`` against the closed form."""
    p, q = example_pair()
    n = 200_000
    got = _as_float(learner(p, q, n, torch.Generator().manual_seed(0)))
    if not math.isfinite(got):
        return failed(f"the estimate is not finite: {got}")
    exact = gaussian_kl(p, q)
    reverse = gaussian_kl(q, p)
    # per-sample std of log p - log q is about 1 here: 200k samples -> std error ~ 0.003
    tol = 0.02
    if abs(got - exact) <= tol:
        return passed(f"your estimate {got:.4f} matches the closed form {exact:.4f}.")
    if abs(got + exact) <= tol:
        return failed("the sign is flipped: KL(p || q) = E_p[log p(x) - log q(x)] >= 0.")
    if abs(got - reverse) <= 3 * tol:
        return failed(f"this looks like KL(q || p) = {reverse:.4f}: draw the samples from the "
                      "target p, not from q.")
    return failed(f"your estimate {got:.4f} differs from the closed form {exact:.4f} by more "
                  f"than {tol}: average log p(x) - log q(x) over samples x ~ p.")


# ----------------------------------------------------------------------------- exercise 2
@checker
def fisher_estimate(learner: Callable[..., float]) -> CheckResult:
    """Check ``learner(p, q, n, generator) -> D_F(p || q)`` against the closed form.

    Only ``log_prob`` is used by the reference: the learner has to take the scores by
    autograd (the Gaussians' ``score`` method is hidden during the check).
    """
    p, q = example_pair()

    class LogProbOnly:
        def __init__(self, g: Gaussian) -> None:
            self._g = g

        def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
            return self._g.sample(n, generator)

        def log_prob(self, x: torch.Tensor) -> torch.Tensor:
            return self._g.log_prob(x)

    n = 200_000
    got = _as_float(learner(LogProbOnly(p), LogProbOnly(q), n, torch.Generator().manual_seed(1)))
    if not math.isfinite(got):
        return failed(f"the estimate is not finite: {got}")
    exact = gaussian_fisher(p, q)
    reverse = gaussian_fisher(q, p)
    tol = 0.03 * exact
    if abs(got - exact) <= tol:
        return passed(f"your estimate {got:.4f} matches the closed form {exact:.4f}.")
    if abs(got - 2 * exact) <= 2 * tol:
        return failed("the estimate is twice the closed form: D_F has a factor 1/2, "
                      "1/2 E_p ||grad log p - grad log q||^2.")
    if abs(got - exact / 2) <= tol:
        return failed("the estimate is half the closed form: use the squared norm "
                      "||.||^2 summed over coordinates, with a single factor 1/2.")
    if abs(got - reverse) <= 3 * tol:
        return failed(f"this looks like D_F(q || p) = {reverse:.4f}: the expectation is over "
                      "samples of the target p.")
    return failed(f"your estimate {got:.4f} differs from the closed form {exact:.4f}: take "
                  "the scores grad_x log p and grad_x log q by autograd of log_prob at x ~ p.")


# ----------------------------------------------------------------------------- exercise 3
def dsm_data(n: int = 20_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of a correlated 2-D Gaussian (float32) and its covariance (float64)."""
    cov = torch.tensor([[1.0, 0.5], [0.5, 0.6]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    return x.float(), cov


@checker
def dsm_bias(learner: Callable[[float], torch.Tensor]) -> CheckResult:
    """Check ``learner(sigma) -> fitted covariance`` of a Gaussian EBFlow trained by DSM.

    DSM with noise level sigma matches the score of the data density convolved with
    ``N(0, sigma^2 I)``; for Gaussian data and a Gaussian model the optimum is the data
    covariance plus ``sigma^2 I``. The check allows the optimisation and Monte-Carlo error
    of a short run.
    """
    _, cov = dsm_data()
    results = {}
    for sigma in (0.1, 0.7):
        fitted = learner(sigma)
        if not isinstance(fitted, torch.Tensor) or fitted.shape != (2, 2):
            return failed("return the fitted 2 x 2 covariance matrix as a tensor")
        fitted = fitted.detach().to(torch.float64)
        if not bool(torch.isfinite(fitted).all()):
            return failed("the fitted covariance has NaN or inf entries: lower the learning rate")
        results[sigma] = fitted
    for sigma, fitted in results.items():
        expected = cov + sigma**2 * torch.eye(2, dtype=torch.float64)
        error = (fitted - expected).abs().max().item()
        if error > 0.12:
            no_bias = (fitted - cov).abs().max().item()
            if sigma > 0.5 and no_bias < error:
                return failed(f"at sigma={sigma} the fit is close to the data covariance, not "
                              "to cov + sigma^2 I: are you training by DSM with noise level "
                              "sigma (objectives.dsm(model, x, sigma=sigma))?")
            return failed(f"at sigma={sigma} the fitted covariance\n{fitted.numpy().round(3)}\n"
                          f"is far from cov + sigma^2 I =\n{expected.numpy().round(3)}: train "
                          "longer, or compute the covariance as (W^T W)^{-1} for u = W x + b.")
    bias = {s: (f - cov).abs().max().item() for s, f in results.items()}
    return passed(f"DSM's optimum is cov + sigma^2 I: bias {bias[0.1]:.3f} at sigma=0.1, "
                  f"{bias[0.7]:.3f} at sigma=0.7.")


__all__ = [
    "Gaussian",
    "dsm_bias",
    "dsm_data",
    "example_pair",
    "fisher_estimate",
    "gaussian_fisher",
    "gaussian_kl",
    "kl_estimate",
]
