"""Noise contrastive estimation (NCE) and its flow-contrastive variant (FCE).

NCE fits an unnormalised model by logistic regression between data and samples of a known
noise density ``q``: the classifier's logit is ``G(x) = log p_model(x) - log q(x) - log nu``,
with ``nu`` noise samples per data sample. The model's log-density is read as ``-E(x)``
itself: the constant in the energy (a network's output bias) is a free parameter that NCE
fits, so at the optimum ``exp(-E)`` is normalised and no ``log Z`` is ever integrated.

Flow contrastive estimation (Gao et al., 2020) uses a flow as the noise and trains it to
*maximise* the same classification loss that the energy minimises: the flow chases the
energy, and the noise stays hard to tell from the data. :func:`nce` takes any noise object
with ``log_prob``, so FCE is :func:`nce` with a flow as ``noise`` plus an adversarial step
for the flow (see :func:`fce_flow_loss`).

References:
    Gutmann and Hyvarinen, "Noise-contrastive estimation: A new estimation principle for
    unnormalized statistical models", AISTATS 2010; Gao, Nijkamp, Kingma, Xu, Dai and Wu,
    "Flow Contrastive Estimation of Energy-Based Models", CVPR 2020.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.functional import logsigmoid

from ebflow_lite.objectives.score_matching import energy_variable
from ebflow_lite.validation import check_batch, model_event_shape


def _noise_log_prob(noise: object, v: torch.Tensor) -> torch.Tensor:
    log_prob = getattr(noise, "log_prob", None)
    if not callable(log_prob):
        raise ValueError(
            f"nce: the noise must have a log_prob(x) method, got {type(noise).__name__}"
        )
    return log_prob(v).to(v.dtype)


def nce_logits(model: nn.Module, noise: object, v: torch.Tensor, nu: float) -> torch.Tensor:
    """The classifier's logit ``G(v) = -E(v) - log q(v) - log nu``, shape ``(B,)``."""
    return -model.energy(v) - _noise_log_prob(noise, v) - math.log(nu)


def nce(
    model: nn.Module, x: torch.Tensor, noise: object = None,
    noise_samples: torch.Tensor | None = None, nu: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The NCE loss, ``-E_data[log sigmoid G] - nu E_q[log sigmoid(-G)]``.

    Args:
        model: a module with ``energy(z) -> (B,)``; ``-E`` is read as the normalised
            log-density (NCE learns the constant).
        x: a batch of data, shape ``(B, D)``.
        noise: the noise distribution: any object with ``log_prob(v) -> (N,)`` and (unless
            ``noise_samples`` is given) ``sample(n, generator=...)``; a toy density, a
            ``torch.distributions`` object wrapped to that interface, or a flow.
        noise_samples: samples of the noise, shape ``(N, D)``; None draws
            ``round(nu * B)`` of them under ``no_grad``. Pass them attached to the flow's
            graph to train a flow noise adversarially (FCE).
        nu: the ratio of noise to data samples in the loss (``N / B`` when samples are
            given is the usual choice).
        generator: for drawing the noise.

    Returns:
        The scalar loss; its minimiser over the energy is ``-E = log p_data`` when the
        model can represent it and ``q > 0`` where the data are.

    Raises:
        ValueError: no noise, a non-positive ``nu``, bad shapes.
    """
    if noise is None:
        raise ValueError("nce: pass noise=... (an object with log_prob and sample)")
    if isinstance(nu, bool) or not isinstance(nu, (int, float)) or not nu > 0:
        raise ValueError(f"nce: nu must be a positive number, got {nu!r}")
    z = energy_variable(model, x, "nce")
    if noise_samples is None:
        n = max(1, round(nu * z.shape[0]))
        with torch.no_grad():
            noise_samples = noise.sample(n, generator=generator).to(z.dtype)
    check_batch(noise_samples, model_event_shape(model), where="nce noise_samples")
    logit_data = nce_logits(model, noise, z, nu)
    logit_noise = nce_logits(model, noise, noise_samples, nu)
    return -logsigmoid(logit_data).mean() - nu * logsigmoid(-logit_noise).mean()


def fce_flow_loss(model: nn.Module, flow: nn.Module, x: torch.Tensor, n_noise: int | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The flow's loss in flow contrastive estimation: *minus* the NCE loss.

    The flow's samples are drawn with their graph (``u ~ N(0, I)``, ``y = g^{-1}(u)``), so
    the gradient reaches the flow through both its samples and its ``log_prob``; the
    energy's parameters should be left out of this step (the optimiser of the flow only).
    """
    z = energy_variable(model, x, "fce_flow_loss")
    n = z.shape[0] if n_noise is None else n_noise
    latent = torch.randn(n, *z.shape[1:], generator=generator, dtype=z.dtype, device=z.device)
    samples = flow.inverse(latent)
    return -nce(model, z, noise=flow, noise_samples=samples, nu=n / z.shape[0])


__all__ = ["fce_flow_loss", "nce", "nce_logits"]
