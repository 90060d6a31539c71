"""Per-sample Jacobians by automatic differentiation, for checking log-determinants."""

from __future__ import annotations

from collections.abc import Callable

import torch


def batch_jacobian(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The ``(B, D_out, D_in)`` Jacobians of a map that acts on each row of ``x`` separately.

    Row ``b`` of the output may depend on row ``b`` of the input only (every flow layer in
    ``ebflow_lite`` in eval mode does). Then the gradient of the batch sum of output feature
    ``i`` holds row ``i`` of every sample's Jacobian, so ``D_out`` backward passes give all
    ``B`` Jacobians at once.

    Args:
        fn: a map from ``(B, D_in)`` to ``(B, D_out)``.
        x: the points, shape ``(B, D_in)``.
    """
    if x.dim() != 2:
        raise ValueError(f"batch_jacobian: expected x of shape (B, D), got {tuple(x.shape)}")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = fn(x)
        if y.dim() != 2 or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"batch_jacobian: fn must return shape (B, D_out), got {tuple(y.shape)}"
            )
        rows = [
            torch.autograd.grad(y[:, i].sum(), x, retain_graph=i + 1 < y.shape[1])[0]
            for i in range(y.shape[1])
        ]
    return torch.stack(rows, dim=1)


def energy_and_grad(
    model: object, x: torch.Tensor, create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E(x), grad_x E(x))`` for a model with ``energy(x) -> (B,)``.

    With ``create_graph=False`` (samplers, scores) both results are detached. With
    ``create_graph=True`` (score-matching objectives) the graph is kept, so the gradient can
    be differentiated again; pass an ``x`` that already requires grad to take that second
    derivative with respect to the same tensor.

    Raises:
        ValueError: the energy does not have shape ``(B,)``.
    """
    with torch.enable_grad():
        x = x if x.requires_grad else x.detach().requires_grad_(True)
        energy = model.energy(x)  # type: ignore[attr-defined]
        if not isinstance(energy, torch.Tensor) or energy.shape != (x.shape[0],):
            shape = tuple(energy.shape) if isinstance(energy, torch.Tensor) else type(energy)
            raise ValueError(
                f"energy must return a tensor of shape ({x.shape[0]},), one value per "
                f"sample, got {shape}"
            )
        (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=create_graph)
    return (energy if create_graph else energy.detach()), grad
