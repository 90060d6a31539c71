"""Sampling-based maximum likelihood: the ML gradient without the normalizing constant."""

from __future__ import annotations

import torch
from torch import nn

from ebflow_lite.objectives.score_matching import energy_variable
from ebflow_lite.validation import check_batch, model_event_shape


def sml(
    model: nn.Module, x: torch.Tensor, negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """``mean E(z_data) - mean E(z_neg)`` with the negative samples held fixed.

    Since ``grad log Z = -E_model[grad E]``, the parameter gradient of this loss,
    ``E_data[grad E] - E_model[grad E]``, equals the gradient of the negative
    log-likelihood in expectation over the negatives (the contrastive-divergence form). The
    value itself is not the NLL (it drops ``log Z``). In training mode, a model with
    uninitialised data-dependent layers (ActNorm's ``initialized`` buffer) is first run on
    the data alone, so that those layers initialise on data, never on negatives.

    Args:
        model: a module with ``energy(z) -> (B,)``.
        x: a batch of data, shape ``(B, D)`` (preprocessed by ``model.preprocess`` when the
            model has it).
        negatives: samples of the model in *model space* (the energy's variable), any
            number of them, for example from :func:`ebflow_lite.sampling.langevin` for a
            plain energy network. None: draw ``B`` exact samples with
            ``model.sample(B, through_preprocessing=False)`` under ``no_grad`` (an EBFlow
            inverts its layers, so this costs O(D^3) per dense layer).

    Returns:
        The scalar loss.

    Raises:
        ValueError: no negatives given and the model cannot sample; bad shapes or NaN.

    References:
        Chao et al., NeurIPS 2023 (L_SML); Hinton, "Training Products of Experts by
        Minimizing Contrastive Divergence", Neural Computation 2002.
    """
    z = energy_variable(model, x, "sml")
    if model.training and any(
        name.endswith("initialized") and not bool(flag) for name, flag in model.named_buffers()
    ):
        # Data-dependent initialisation (ActNorm) must see the data alone, as in ML, not the
        # concatenation below, half of which are the model's own samples.
        with torch.no_grad():
            model.energy(z)
    if negatives is None:
        sampler = getattr(model, "sample", None)
        if not callable(sampler):
            raise ValueError(
                "sml: the model has no sample() method; pass negatives=... (e.g. from MCMC)"
            )
        with torch.no_grad():
            negatives = sampler(z.shape[0], through_preprocessing=False)
    check_batch(negatives, model_event_shape(model), where="sml negatives", nonempty=True)
    if negatives.shape[1:] != z.shape[1:]:
        raise ValueError(
            f"sml: negatives have shape {tuple(negatives.shape)}, data {tuple(z.shape)}"
        )
    negatives = negatives.detach().to(device=z.device, dtype=z.dtype)
    energies = model.energy(torch.cat([z, negatives]))
    return energies[: z.shape[0]].mean() - energies[z.shape[0]:].mean()
