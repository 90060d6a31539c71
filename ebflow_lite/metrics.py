"""Evaluation metrics: NLL, bits per dimension, KL and Fisher divergences, confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ebflow_lite.validation import check_batch


def nll(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> float:
    """Mean negative log-likelihood ``-(1/N) sum_i log p(x_i)`` in nats per sample.

    Runs in evaluation mode under ``torch.no_grad`` (the model's mode is restored after),
    in chunks of ``batch_size``. For a model with preprocessing the density is in data space,
    so on :func:`ebflow_lite.data.digits` the value is in nats per image on the ``[0, 17)``
    scale.

    Args:
        model: a module with ``log_prob(x) -> (B,)``, e.g. :class:`ebflow_lite.EBFlow`.
        x: data, shape ``(N, D)``.
        batch_size: evaluation chunk size.

    References:
        Chao et al., NeurIPS 2023, Table 2 (NLL in nats on the dequantized scale).
    """
    check_batch(x, where="nll")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                total += float(-model.log_prob(x[start : start + batch_size]).double().sum())
    finally:
        model.train(was_training)
    return total / x.shape[0]


def bits_per_dim(nll_nats: float, dim: int) -> float:
    """Convert an NLL in nats per sample to bits per dimension: ``nll / (D ln 2)``.

    No offset is added: the NLL must already be on the scale the data is reported on
    (for the digits, ``[0, 17)``).

    References:
        Chao et al., NeurIPS 2023, Table 2.
    """
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    if not math.isfinite(nll_nats):
        raise ValueError(f"nll_nats must be finite, got {nll_nats}")
    return nll_nats / (dim * math.log(2.0))


def _need(target: object, method: str, what: str) -> None:
    if method != "sample" and not getattr(target, "has_density", True):
        raise ValueError(f"{what} needs the target's exact density, but "
                         f"{getattr(target, 'name', type(target).__name__)!r} has none")
    if not callable(getattr(target, method, None)):
        raise ValueError(f"{what} needs a target with a `{method}` method; "
                         f"{type(target).__name__} has none")


def kl_divergence(
    target: object, model: nn.Module, n: int = 10_000,
    generator: torch.Generator | None = None,
) -> float:
    """Monte-Carlo ``KL(p || q) = E_{x~p}[log p(x) - log q(x)]`` with the target's exact density.

    ``x`` is drawn from the target ``p`` (``target.sample(n, generator)``), ``log p`` is the
    target's exact ``log_prob`` and ``log q`` the model's. The estimate is unbiased; its
    standard error shrinks like ``1/sqrt(n)``. It can be slightly negative when the two
    densities are close.

    Args:
        target: e.g. a :class:`ebflow_lite.data.ToyDensity` with ``sample`` and ``log_prob``.
        model: a module with ``log_prob``.
        n: number of samples.
        generator: the random stream for the samples.

    References:
        Chao et al., NeurIPS 2023, Table 1 (KL on 2-D densities).
    """
    _need(target, "sample", "kl_divergence")
    _need(target, "log_prob", "kl_divergence")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    x = target.sample(n, generator=generator)  # type: ignore[attr-defined]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            param = next(model.parameters(), None)
            if param is not None:
                x = x.to(device=param.device, dtype=param.dtype)
            log_p = target.log_prob(x).to(x)  # type: ignore[attr-defined]
            log_q = model.log_prob(x)
    finally:
        model.train(was_training)
    return float((log_p - log_q).double().mean())


def data_space_score(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``grad_x log q(x)`` in data space, shape like ``x``.

    For an :class:`ebflow_lite.EBFlow` without preprocessing this is ``model.score(x)``.
    With preprocessing the chain rule through the (parameter-free) preprocessing layers is
    applied by autograd, since :meth:`ebflow_lite.EBFlow.score` is in model space. For any
    other module, autograd of ``log_prob``.
    """
    preprocessing = getattr(model, "preprocessing", None)
    if hasattr(model, "score") and (preprocessing is None or len(preprocessing) == 0):
        return model.score(x)  # type: ignore[operator]
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        if preprocessing is not None and len(preprocessing) > 0:
            z, logdet = x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            for layer in preprocessing:
                z, ld = layer(z)
                logdet = logdet + ld
            log_q = -model.energy(z) + logdet  # type: ignore[operator]
        else:
            log_q = model.log_prob(x)
        (grad,) = torch.autograd.grad(log_q.sum(), x)
    return grad


def fisher_divergence(
    target: object, model: nn.Module, n: int = 10_000,
    generator: torch.Generator | None = None,
) -> float:
    """Monte-Carlo ``D_F(p || q) = 1/2 E_{x~p} ||grad log p(x) - grad log q(x)||^2``.

    Uses the target's exact ``score`` and the model's score in data space
    (:func:`data_space_score`; for a flow without preprocessing that is ``model.score``).

    Args:
        target: an object with ``sample(n, generator)`` and ``score(x)``.
        model: an :class:`ebflow_lite.EBFlow` or any module with ``log_prob``.
        n: number of samples.
        generator: the random stream for the samples.

    References:
        Hyvarinen, "Estimation of Non-Normalized Statistical Models by Score Matching",
        JMLR 2005; Chao et al., NeurIPS 2023, Table 1.
    """
    _need(target, "sample", "fisher_divergence")
    _need(target, "score", "fisher_divergence")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    x = target.sample(n, generator=generator)  # type: ignore[attr-defined]
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        s_p = target.score(x).to(x)  # type: ignore[attr-defined]
        s_q = data_space_score(model, x).detach()
    finally:
        model.train(was_training)
    return float(0.5 * ((s_p - s_q) ** 2).sum(1).double().mean())


def _student_t_cdf(t: float, df: int, panels: int = 4000) -> float:
    """The Student-t CDF at ``t >= 0`` by Simpson's rule on the density over ``[0, t]``."""
    log_norm = (math.lgamma((df + 1) / 2) - math.lgamma(df / 2)
                - 0.5 * math.log(df * math.pi))
    u = torch.linspace(0.0, t, panels + 1, dtype=torch.float64)
    pdf = torch.exp(log_norm - (df + 1) / 2 * torch.log1p(u * u / df))
    weights = torch.ones(panels + 1, dtype=torch.float64)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return 0.5 + float((weights * pdf).sum()) * (t / panels) / 3


def student_t_quantile(p: float, df: int) -> float:
    """The ``p``-quantile (``0.5 <= p < 1``) of Student's t with ``df`` degrees of freedom.

    Without scipy: for ``df <= 200``, bisection on a Simpson-rule CDF (absolute error below
    1e-6 for ``p <= 0.999``); above, the Cornish-Fisher expansion around the normal
    quantile ``z``: ``z + (z^3 + z) / (4 df) + (5 z^5 + 16 z^3 + 3 z) / (96 df^2)``.
    """
    if not 0.5 <= p < 1.0:
        raise ValueError(f"p must lie in [0.5, 1), got {p}")
    if df < 1:
        raise ValueError(f"df must be at least 1, got {df}")
    if df > 200:
        z = float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    lo, hi = 0.0, 1.0
    while _student_t_cdf(hi, df) < p:
        hi *= 2.0
    while hi - lo > 1e-9:
        mid = 0.5 * (lo + hi)
        if _student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def mean_confidence_interval(
    values: Sequence[float], level: float = 0.95,
) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval of the mean.

    ``half = t_{(1+level)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation.
    The quantile comes from :func:`student_t_quantile` (no scipy needed).

    Args:
        values: at least two numbers (e.g. a metric over independent runs).
        level: the confidence level in (0, 1).

    Returns:
        ``(mean, half_width)``.

    References:
        Chao et al., NeurIPS 2023 (results are "mean and 95% confidence interval of three
        independent runs").
    """
    vals = [float(v) for v in values]
    if len(vals) < 2:
        raise ValueError(f"need at least two values for an interval, got {len(vals)}")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError("values contain NaN or inf")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    n = len(vals)
    mean = sum(vals) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return mean, student_t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)


__all__ = [
    "bits_per_dim",
    "data_space_score",
    "fisher_divergence",
    "kl_divergence",
    "mean_confidence_interval",
    "nll",
    "student_t_quantile",
]
