"""Input checks that turn silent wrong numbers into clear errors."""

from __future__ import annotations

import torch

# Checking for NaN costs a device synchronisation; a hot loop may switch it off.
CHECK_FINITE = True


def check_batch(x: object, dim: int | None = None, where: str = "input") -> torch.Tensor:
    """Check that ``x`` is a floating batch of shape ``(B, dim)`` with finite entries.

    Args:
        x: the candidate tensor.
        dim: the expected size of the last axis, or None to accept any.
        where: a name for error messages (the layer or function doing the check).

    Returns:
        ``x`` itself, so the call can be used inline.

    Raises:
        ValueError: not a tensor, not floating point, fewer than 2 axes (exactly 2 when
            ``dim`` is given), the wrong feature size, or NaN/inf entries.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{where}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(
            f"{where}: expected a floating-point tensor, got dtype {x.dtype}; "
            "convert with x.float()"
        )
    if x.dim() < 2:
        raise ValueError(
            f"{where}: expected a batch of shape (B, D), got shape {tuple(x.shape)}; "
            "add a batch axis with x.unsqueeze(0)"
        )
    if dim is not None and x.dim() != 2:
        raise ValueError(
            f"{where}: expected a batch of shape (B, {dim}), got shape {tuple(x.shape)}; "
            "flatten the feature axes with x.flatten(1)"
        )
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(
            f"{where}: expected feature dimension {dim}, got shape {tuple(x.shape)}"
        )
    if CHECK_FINITE and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{where}: input contains NaN or inf")
    return x


def check_same_device(x: torch.Tensor, module: torch.nn.Module, where: str) -> None:
    """Raise ValueError when ``x`` and the module's parameters live on different devices."""
    param = next(module.parameters(), None)
    if param is not None and param.device != x.device:
        raise ValueError(
            f"{where}: input is on {x.device} but the parameters are on {param.device}; "
            "move one with .to(device)"
        )
    if param is not None and param.dtype != x.dtype:
        raise ValueError(
            f"{where}: input dtype {x.dtype} differs from the parameters' dtype {param.dtype}"
        )
