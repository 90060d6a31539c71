"""Pick the compute device once: CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import os

import torch

_KNOWN = ("cpu", "cuda", "mps")


def pick_device(preferred: str | None = None) -> torch.device:
    """Return the device to run on.

    The choice, in order: the ``preferred`` argument, the environment variable
    ``EBFLOW_DEVICE``, then the best available of CUDA, MPS and CPU.

    Args:
        preferred: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or None for automatic.

    Raises:
        ValueError: the name is unknown, or names a device this machine does not have.
    """
    name = preferred or os.environ.get("EBFLOW_DEVICE", "").strip() or None
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in _KNOWN:
        raise ValueError(f"unknown device {name!r}; expected one of {_KNOWN}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("device 'mps' requested but MPS is not available here")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"malformed device name {name!r}: {err}") from None
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            raise ValueError(f"device {name!r} requested but this machine has {count} CUDA devices")
    return device
