"""Evaluation metrics: NLL, bits per dimension, KL and Fisher divergences, confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ebflow_lite.validation import (
    ArgumentTypeError,
    check_batch,
    check_finite_parameters,
    check_generator,
    check_method,
    check_positive_int,
    check_real,
    model_event_shape,
)


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
    check_method(model, "log_prob", "nll", signature="log_prob(x) -> (B,)")
    check_batch(x, model_event_shape(model), where="nll", nonempty=True)
    batch_size = check_positive_int(batch_size, "batch_size", "nll")
    check_finite_parameters(model, "nll")
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
    dim = check_positive_int(dim, "dim", "bits_per_dim")
    nll_nats = check_real(nll_nats, "nll_nats", "bits_per_dim")
    return nll_nats / (dim * math.log(2.0))


def _check_divergence_arguments(
    target: object, model: nn.Module, n: object, generator: object, what: str,
    target_methods: tuple[str, ...], model_methods: tuple[str, ...],
) -> int:
    for method in target_methods:
        _need(target, method, what)
    if not any(callable(getattr(model, m, None)) for m in model_methods):
        raise ArgumentTypeError(
            f"{what}: the model must have a {' or '.join(f'{m}(x)' for m in model_methods)} "
            f"method, got {type(model).__name__}"
        )
    n = check_positive_int(n, "n", what)
    check_generator(generator, what)
    check_finite_parameters(model, what)
    return n


def _target_sample(target: object, n: int, generator: object, what: str) -> torch.Tensor:
    x = target.sample(n, generator=generator)  # type: ignore[attr-defined]
    check_batch(x, where=f"{what}: the target's samples", nonempty=True)
    return x


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
    n = _check_divergence_arguments(target, model, n, generator, "kl_divergence",
                                    ("sample", "log_prob"), ("log_prob",))
    x = _target_sample(target, n, generator, "kl_divergence")
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
    n = _check_divergence_arguments(target, model, n, generator, "fisher_divergence",
                                    ("sample", "score"), ("score", "log_prob", "energy"))
    x = _target_sample(target, n, generator, "fisher_divergence")
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


def student_t_quantile(p: float, df: float) -> float:
    """The ``p``-quantile (``0 < p < 1``) of Student's t with ``df > 0`` degrees of freedom.

    Computed by SciPy (``scipy.stats.t.ppf``), accurate in both tails for every ``df``
    (for ``df = 1``, the Cauchy distribution, ``t_{0.9999} = 3183.1``).
    """
    p = check_real(p, "p", "student_t_quantile", low=0.0, high=1.0, low_open=True,
                   high_open=True)
    df = check_real(df, "df", "student_t_quantile", low=0.0, low_open=True)
    from scipy.stats import t as student_t  # imported here: scipy.stats loads slowly

    return float(student_t.ppf(p, df))


def mean_confidence_interval(
    values: Sequence[float], level: float = 0.95,
) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval of the mean.

    ``half = t_{(1+level)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation.
    The quantile comes from :func:`student_t_quantile`.

    Args:
        values: at least two numbers (e.g. a metric over independent runs).
        level: the confidence level in (0, 1).

    Returns:
        ``(mean, half_width)``.

    References:
        Chao et al., NeurIPS 2023 (results are "mean and 95% confidence interval of three
        independent runs").
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ArgumentTypeError(
            f"mean_confidence_interval: values must be a sequence of numbers, got "
            f"{type(values).__name__}"
        )
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise ArgumentTypeError(
            f"mean_confidence_interval: values must be numbers ({err})"
        ) from None
    if len(vals) < 2:
        raise ValueError(f"need at least two values for an interval, got {len(vals)}")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError("values contain NaN or inf")
    level = check_real(level, "level", "mean_confidence_interval", low=0.0, high=1.0,
                       low_open=True, high_open=True)
    n = len(vals)
    mean = sum(vals) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return mean, student_t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)


def mmd(a: torch.Tensor, b: torch.Tensor, bandwidths: Sequence[float] = (0.5, 1.0, 2.0)
        ) -> float:
    """Squared maximum mean discrepancy between two samples (biased V-statistic).

    Uses a sum of Gaussian kernels ``exp(-|x - y|^2 / (2 h^2))`` over ``bandwidths``; zero
    for large samples exactly when the two distributions agree, and it sees mode weights
    (a sample that covers one mode only is far from a sample of two).

    Args:
        a: a sample, shape ``(N, D)``.
        b: a sample, shape ``(M, D)``.
        bandwidths: the kernel widths ``h``.

    Raises:
        ValueError: samples of different feature shape, or a non-positive bandwidth.
    """
    check_batch(a, where="mmd a")
    check_batch(b, where="mmd b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mmd: samples of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if not bandwidths or any(not float(h) > 0 for h in bandwidths):
        raise ValueError(f"mmd: bandwidths must be positive, got {bandwidths!r}")
    a, b = a.detach().flatten(1).double(), b.detach().flatten(1).double()

    def kernel(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(u, v) ** 2
        return sum(torch.exp(-d2 / (2 * float(h) ** 2)) for h in bandwidths)

    return float(kernel(a, a).mean() + kernel(b, b).mean() - 2 * kernel(a, b).mean())


__all__ = [
    "bits_per_dim",
    "data_space_score",
    "fisher_divergence",
    "kl_divergence",
    "mean_confidence_interval",
    "mmd",
    "nll",
    "student_t_quantile",
]
