"""Reference solutions for the exercises of chapter 5 (a flow is an energy-based model)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ebflow_lite import objectives


def split(x: torch.Tensor, params: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """E(x) and log Z of ``g = Dense_2 o SmoothLeakyReLU o Dense_1 o ActNorm``.

    ActNorm ``a = (x - loc) * exp(log_scale)``, ``h = W1 a + b1``,
    ``f(h) = alpha h + (1 - alpha) softplus(h)``, ``u = W2 f(h) + b2``.
    Only f is non-linear, so ``E = ||u||^2 / 2 + (D/2) log 2 pi - sum log f'(h)`` and
    ``log Z = -sum(log_scale) - log|det W1| - log|det W2|``.
    """
    alpha = params["alpha"]
    a = (x - params["loc"]) * params["log_scale"].exp()
    h = a @ params["W1"].T + params["b1"]
    f = alpha * h + (1 - alpha) * nn.functional.softplus(h)
    u = f @ params["W2"].T + params["b2"]
    slope = alpha + (1 - alpha) * torch.sigmoid(h)
    dim = x.shape[1]
    energy = 0.5 * (u**2).sum(1) + 0.5 * dim * math.log(2 * math.pi) - slope.log().sum(1)
    log_z = -(params["log_scale"].sum()
              + torch.linalg.slogdet(params["W1"]).logabsdet
              + torch.linalg.slogdet(params["W2"]).logabsdet)
    return energy, log_z


def logdet_gradient(W: torch.Tensor) -> torch.Tensor:
    """``grad_W log|det W| = W^{-T}``, by solving ``W^T G = I`` (no autograd)."""
    eye = torch.eye(W.shape[0], dtype=W.dtype, device=W.device)
    return torch.linalg.solve(W.T, eye)


class ShiftedEnergy(nn.Module):
    """An energy model with energy ``E(x) + shift(flow, x)``."""

    def __init__(self, flow: nn.Module, shift) -> None:
        super().__init__()
        self.flow = flow
        self.shift = shift

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow.energy(x) + self.shift(self.flow, x)


def gradient_change(flow: nn.Module, x: torch.Tensor, shift, seed: int) -> float:
    """Largest change of the SSM loss's parameter gradient when E becomes E + shift."""
    params = list(flow.parameters())
    gradients = []
    for model in (flow, ShiftedEnergy(flow, shift)):
        torch.manual_seed(seed)  # the same Rademacher projections for both losses
        loss = objectives.ssm(model, x, n_slices=1)
        found = torch.autograd.grad(loss, params, allow_unused=True)
        gradients.append([torch.zeros_like(p) if g is None else g
                          for p, g in zip(params, found, strict=True)])
    return max((a - b).abs().max().item() for a, b in zip(*gradients, strict=True))
