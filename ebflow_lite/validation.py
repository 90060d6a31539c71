"""Input checks that turn silent wrong numbers into clear errors.

Two levels, so that a GPU is not synchronised once per layer:

* :func:`check_shape` looks at metadata only (type, dtype, shape): free, used inside layers.
* :func:`check_batch` adds the finiteness check (one device synchronisation): used once, at a
  public boundary such as :meth:`ebflow_lite.EBFlow.energy` or an objective.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# Checking for NaN costs a device synchronisation; a hot loop may switch it off.
CHECK_FINITE = True

Shape = tuple[int, ...]


def as_event_shape(value: int | Sequence[int] | torch.Size | None, name: str = "event_shape"
                   ) -> Shape | None:
    """Normalise an event shape: an int D means ``(D,)``; None stays None.

    Raises:
        ValueError: a non-positive or non-integer size.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a tuple of ints, got {value!r}")
    if isinstance(value, int):
        value = (value,)
    try:
        shape = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be an int or a tuple of ints, got {value!r}") from None
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"{name} must be a non-empty tuple of positive ints, got {value!r}")
    return shape


def numel(shape: Shape) -> int:
    """The number of features of one event of this shape."""
    return math.prod(shape)


def _describe(shape: Shape | None) -> str:
    if shape is None:
        return "(B, ...)"
    if len(shape) == 1:
        return f"(B, {shape[0]})"
    return "(B, " + ", ".join(str(s) for s in shape) + ")"


def check_shape(x: object, event_shape: int | Shape | None = None, where: str = "input"
                ) -> torch.Tensor:
    """Check that ``x`` is a floating batch of shape ``(B, *event_shape)``; metadata only.

    Args:
        x: the candidate tensor.
        event_shape: the expected shape of one sample (an int D means ``(D,)``), or None to
            accept any shape with a batch axis.
        where: a name for error messages (the layer or function doing the check).

    Returns:
        ``x`` itself.

    Raises:
        ValueError: not a tensor, not floating point, no batch axis, the wrong event shape.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{where}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(
            f"{where}: expected a floating-point tensor, got dtype {x.dtype}; "
            "convert with x.float()"
        )
    shape = event_shape if isinstance(event_shape, tuple) else as_event_shape(event_shape)
    if x.dim() < 2:
        raise ValueError(
            f"{where}: expected a batch of shape "
            f"{'(B, D)' if shape is None or len(shape) == 1 else _describe(shape)}, "
            f"got shape {tuple(x.shape)}; add a batch axis with x.unsqueeze(0)"
        )
    if shape is not None and tuple(x.shape[1:]) != shape:
        if len(shape) == 1 and x.dim() == 2:
            raise ValueError(
                f"{where}: expected feature dimension {shape[0]}, got shape {tuple(x.shape)}"
            )
        hint = "; flatten the feature axes with x.flatten(1)" if len(shape) == 1 else ""
        raise ValueError(
            f"{where}: expected a batch of shape {_describe(shape)}, got shape "
            f"{tuple(x.shape)}{hint}"
        )
    return x


def check_batch(x: object, event_shape: int | Shape | None = None, where: str = "input"
                ) -> torch.Tensor:
    """:func:`check_shape`, and that every entry is finite (one device synchronisation).

    Args:
        x: the candidate tensor.
        event_shape: the expected shape of one sample (an int D means ``(D,)``), or None.
        where: a name for error messages.

    Returns:
        ``x`` itself, so the call can be used inline.

    Raises:
        ValueError: as :func:`check_shape`, or NaN/inf entries.
    """
    check_shape(x, event_shape, where)
    if CHECK_FINITE and not bool(torch.isfinite(x).all()):  # type: ignore[union-attr]
        raise ValueError(f"{where}: input contains NaN or inf")
    return x  # type: ignore[return-value]


def model_event_shape(model: object) -> Shape | None:
    """The event shape a model declares: ``model.event_shape``, else ``(model.dim,)``."""
    shape = getattr(model, "event_shape", None)
    if shape is not None:
        return tuple(shape)
    dim = getattr(model, "dim", None)
    return (dim,) if isinstance(dim, int) else None


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


def check_positive_int(value: object, name: str, where: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an int (not a bool) of at least ``minimum``; else raise.

    Raises:
        ValueError: naming ``where``, the argument, the value received and what was expected.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {value!r}")
    return value
