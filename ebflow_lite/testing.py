"""Helpers for checking identities on models, in the chapters and in ``tests/``.

A new flow layer usually starts at the identity (a coupling's last weights are zero, a
dense layer may start orthogonal or at ``-I``), where many wrong formulas still give the
right number. :func:`perturb_parameters` moves every parameter away from its initial value,
so that a check of a log-determinant, an inverse or an energy means something.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from ebflow_lite.validation import check_generator, check_module, check_positive

M = TypeVar("M", bound=nn.Module)


def perturb_parameters(module: M, scale: float, generator: torch.Generator | None = None) -> M:
    """Add ``scale`` times standard normal noise to every parameter of ``module``, in place.

    Buffers (an ActNorm's initialisation flag, a fixed permutation) are left alone. The
    noise is drawn on the generator's device in each parameter's dtype, parameter after
    parameter in the order of ``module.parameters()``, so the same seed gives the same
    module on every device.

    Args:
        module: the module to move away from its initial (often identity) parameters.
        scale: the noise's standard deviation, positive and finite.
        generator: the random stream; None draws from torch's global one.

    Returns:
        ``module`` itself, so that a call can wrap a constructor:
        ``layer = perturb_parameters(Dense(3), 0.3, gen).double()``.

    Raises:
        TypeError: ``module`` is not a ``torch.nn.Module``, ``scale`` is not a number or
            ``generator`` is not a ``torch.Generator`` (a ``ValueError`` too).
        ValueError: ``scale`` is zero, negative, NaN or infinite.
    """
    where = "perturb_parameters"
    check_module(module, where, name="module")
    scale = check_positive(scale, "scale", where)
    check_generator(generator, where)
    with torch.no_grad():
        for p in module.parameters():
            device = p.device if generator is None else generator.device
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype, device=device)
            p.add_(scale * noise.to(p.device))
    return module
