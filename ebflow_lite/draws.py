"""One helper for every random draw of the library, so that a ``torch.Generator`` works
the same way everywhere: the numbers are drawn on the generator's device (reproducible for a
given generator), then moved to the device and dtype the caller needs."""

from __future__ import annotations

from collections.abc import Sequence

import torch

DRAW_KINDS = ("normal", "uniform", "rademacher")


def draw(
    kind: str,
    shape: Sequence[int] | torch.Size,
    *,
    like: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw a tensor of ``shape`` from a standard distribution.

    Args:
        kind: ``"normal"`` (N(0, 1)), ``"uniform"`` (U[0, 1)) or ``"rademacher"`` (+-1 with
            probability 1/2 each).
        shape: the shape of the result.
        like: take ``dtype`` and ``device`` from this tensor (explicit arguments win).
        dtype: the floating dtype of the result (default: ``like``'s, else the default dtype).
        device: where the result lives (default: ``like``'s, else the CPU).
        generator: a ``torch.Generator``; the draw happens on its device.

    Raises:
        ValueError: an unknown ``kind`` or a generator that is not a ``torch.Generator``.
    """
    if kind not in DRAW_KINDS:
        raise ValueError(f"draw: kind must be one of {DRAW_KINDS}, got {kind!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    if dtype is None:
        dtype = like.dtype if like is not None else torch.get_default_dtype()
    if device is None:
        device = like.device if like is not None else torch.device("cpu")
    source = generator.device if generator is not None else device
    shape = tuple(shape)
    if kind == "normal":
        out = torch.randn(shape, generator=generator, dtype=dtype, device=source)
    elif kind == "uniform":
        out = torch.rand(shape, generator=generator, dtype=dtype, device=source)
    else:
        bits = torch.randint(0, 2, shape, generator=generator, device=source)
        out = bits.to(dtype) * 2.0 - 1.0
    return out.to(device)


__all__ = ["DRAW_KINDS", "draw"]
