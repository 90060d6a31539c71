"""Adversarial training of an EBM with a flow sampler and the variational bound on ``log Z``.

For any density ``q``, Jensen's inequality gives ``log Z >= E_q[-E] + H(q)``, with equality
exactly when ``q = p_model``. Putting the bound into the NLL ``E_data[E] + log Z`` gives the
game ``min_E max_q E_data[E] - E_q[E] + H(q)``: the energy's step is the SML gradient with
the sampler's draws as negatives, and the sampler minimises ``E_q[E] - H(q)``, which is
``KL(q || p_model) - log Z``. A flow sampler gives the entropy term exactly, through its
log-density ``log q(y) = log p_u(g(y)) + log|det J_g(y)|``, so nothing is estimated but the
expectations.

References:
    Kim and Bengio, "Deep Directed Generative Models with Energy-Based Probability
    Estimation", arXiv:1606.03439, 2016; Dai, Almahairi, Bachman, Hovy and Courville,
    "Calibrating Energy-based Generative Adversarial Networks", ICLR 2017.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch
from torch import nn

from ebflow_lite.objectives.score_matching import energy_variable
from ebflow_lite.validation import check_batch, model_event_shape


class AdversarialLosses(NamedTuple):
    """The two players' losses; each is meant for its own optimiser only."""

    energy: torch.Tensor
    """``E_data[E] - E_q[E]`` with the sampler's draws detached (the energy's step)."""
    sampler: torch.Tensor
    """``E_q[E] + E_q[log q] = -(E_q[-E] + H(q))``: minus the bound on ``log Z``."""


def adversarial_ebm_loss(
    model: nn.Module, sampler: nn.Module, x: torch.Tensor, n_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> AdversarialLosses:
    """The energy's and the sampler's losses of adversarial EBM training, on one batch.

    The sampler draws ``y = sampler.inverse(u)`` with ``u ~ N(0, I)`` and its graph kept,
    and evaluates ``log q(y) = sampler.log_prob(y)`` exactly, so the entropy term is
    ``-mean(log q(y))`` with gradients through both the draws and the log-density.

    Args:
        model: a module with ``energy(z) -> (B,)`` (an energy network or an EBFlow).
        sampler: a flow with a standard-normal latent: ``inverse(u) -> y`` and
            ``log_prob(y) -> (N,)`` (an :class:`ebflow_lite.EBFlow`).
        x: a batch of data, shape ``(B, D)``.
        n_samples: the number of sampler draws; None uses ``B``.
        generator: for drawing the latents.

    Returns:
        :class:`AdversarialLosses` ``(energy, sampler)``. Step the energy's optimiser on
        ``energy`` and the sampler's optimiser on ``sampler`` only: ``sampler`` also has
        gradients with respect to the energy's parameters, which must not be applied.
        ``-sampler`` is a Monte-Carlo lower bound on ``log Z``, tight when ``q = p_model``.

    Raises:
        ValueError: a model without ``energy``, a sampler without ``inverse``/``log_prob``,
            a bad ``n_samples``, bad shapes, or sampler draws of the wrong shape.
    """
    z = energy_variable(model, x, "adversarial_ebm_loss")
    for method in ("inverse", "log_prob"):
        if not callable(getattr(sampler, method, None)):
            raise ValueError(
                f"adversarial_ebm_loss: the sampler must have a {method}() method, "
                f"got {type(sampler).__name__}"
            )
    if n_samples is None:
        n_samples = z.shape[0]
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or (
            n_samples < 1):
        raise ValueError(f"adversarial_ebm_loss: n_samples must be a positive int, "
                         f"got {n_samples!r}")
    latent = torch.randn(int(n_samples), *z.shape[1:], generator=generator, dtype=z.dtype,
                         device=z.device)
    y = sampler.inverse(latent)
    check_batch(y, model_event_shape(model), where="adversarial_ebm_loss sampler draws")
    log_q = sampler.log_prob(y)
    energy_loss = model.energy(z).mean() - model.energy(y.detach()).mean()
    sampler_loss = model.energy(y).mean() + log_q.mean()
    return AdversarialLosses(energy_loss, sampler_loss)


__all__ = ["AdversarialLosses", "adversarial_ebm_loss"]
