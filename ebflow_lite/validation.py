"""Input checks that turn silent wrong numbers into clear errors.

Two levels, so that a GPU is not synchronised once per layer:

* :func:`check_shape` looks at metadata only (type, dtype, shape): free, used inside layers.
* :func:`check_batch` adds the finiteness check (one device synchronisation): used once, at a
  public boundary such as :meth:`ebflow_lite.EBFlow.energy` or an objective.

Arguments that are not tensors are checked by :func:`check_positive_int` (sizes and
counts), :func:`check_real` and :func:`check_positive` (numbers), :func:`check_generator`,
:func:`check_callable` and :func:`check_method` (objects). Every message starts with the
function that refused the argument, then names the argument, the value received and what
was expected. A value of the wrong type raises :class:`ArgumentTypeError`, which is both a
``TypeError`` and a ``ValueError``, so ``except ValueError`` catches every refused argument.
No check is an ``assert``: they all hold under ``python -O``.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable, Sequence

import torch

# Checking for NaN costs a device synchronisation; a hot loop may switch it off.
CHECK_FINITE = True

Shape = tuple[int, ...]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type: a ``TypeError`` that is also a ``ValueError``."""


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


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


def check_batch(x: object, event_shape: int | Shape | None = None, where: str = "input",
                *, nonempty: bool = False) -> torch.Tensor:
    """:func:`check_shape`, and that every entry is finite (one device synchronisation).

    Args:
        x: the candidate tensor.
        event_shape: the expected shape of one sample (an int D means ``(D,)``), or None.
        where: a name for error messages.
        nonempty: also refuse a batch without samples or samples without entries (where a
            mean over the batch or the features would be NaN).

    Returns:
        ``x`` itself, so the call can be used inline.

    Raises:
        ValueError: as :func:`check_shape`, NaN/inf entries, or (``nonempty``) no entries.
    """
    check_shape(x, event_shape, where)
    if nonempty:
        check_nonempty(x, where)  # type: ignore[arg-type]
    if CHECK_FINITE and not bool(torch.isfinite(x).all()):  # type: ignore[union-attr]
        bad = int((~torch.isfinite(x)).sum())  # type: ignore[union-attr]
        raise ValueError(
            f"{where}: input contains NaN or inf ({bad} of {x.numel()} entries)"  # type: ignore[union-attr]
        )
    return x  # type: ignore[return-value]


def check_nonempty(x: torch.Tensor, where: str) -> torch.Tensor:
    """Refuse a batch with no samples, or whose samples have no entries (metadata only)."""
    if x.shape[0] == 0:
        raise ValueError(f"{where}: the batch is empty (shape {tuple(x.shape)})")
    if x.numel() == 0:
        raise ValueError(
            f"{where}: every sample has zero entries (shape {tuple(x.shape)})"
        )
    return x


def model_event_shape(model: object) -> Shape | None:
    """The event shape a model declares: ``model.event_shape``, else ``(model.dim,)``."""
    shape = getattr(model, "event_shape", None)
    if shape is not None:
        return tuple(shape)
    dim = getattr(model, "dim", None)
    return (dim,) if isinstance(dim, int) else None


def check_same_device(x: torch.Tensor, module: torch.nn.Module, where: str, *,
                      dtype: bool = True) -> None:
    """Raise ValueError when ``x`` and the module's parameters live on different devices (or,
    with ``dtype``, have different dtypes)."""
    param = next(module.parameters(), None)
    if param is not None and param.device != x.device:
        raise ValueError(
            f"{where}: input is on {x.device} but the parameters are on {param.device}; "
            "move one with .to(device)"
        )
    if dtype and param is not None and param.dtype != x.dtype:
        raise ValueError(
            f"{where}: input dtype {x.dtype} differs from the parameters' dtype {param.dtype}"
        )


def check_positive_int(value: object, name: str, where: str, minimum: int = 1) -> int:
    """Return ``value`` as an int if it is an integer (not a bool) of at least ``minimum``.

    Any integer type is accepted (``int``, a NumPy integer); a float, even ``2.0``, ``nan``
    or ``inf``, is not, so a size is never rounded silently.

    Raises:
        ArgumentTypeError: not an integer (naming ``where``, the argument and the value).
        ValueError: below ``minimum``.
    """
    message = f"{_prefix(where)}{name} must be an int >= {minimum}, got {value!r}"
    if isinstance(value, bool) or isinstance(value, torch.Tensor):
        raise ArgumentTypeError(message)
    try:
        number = operator.index(value)  # type: ignore[call-overload]
    except TypeError:
        raise ArgumentTypeError(f"{message} ({type(value).__name__})") from None
    if number < minimum:
        raise ValueError(message)
    return number


def _as_real(value: object, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(
            f"{_prefix(where)}{name} must be a number, got {type(value).__name__} ({value!r})"
        )
    return float(value)


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    left = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
    right = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
    return f"{left}, {right}"


def check_real(
    value: object, name: str, where: str, *, low: float | None = None,
    high: float | None = None, low_open: bool = False, high_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite real number in the given interval.

    Args:
        value: the candidate (an int, a float or a NumPy scalar; not a bool).
        name: the argument's name, for the message.
        where: the function checking it, for the message.
        low, high: the bounds (None: unbounded on that side).
        low_open, high_open: exclude the bound itself.

    Raises:
        ArgumentTypeError: not a real number.
        ValueError: NaN, infinite or outside the interval.
    """
    number = _as_real(value, name, where)
    if not math.isfinite(number):
        raise ValueError(f"{_prefix(where)}{name} must be finite, got {number}")
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        raise ValueError(
            f"{_prefix(where)}{name} must lie in {_interval(low, high, low_open, high_open)}, "
            f"got {number}"
        )
    return number


def check_positive(value: object, name: str, where: str) -> float:
    """Return ``value`` as a float if it is a finite real number > 0.

    Raises:
        ArgumentTypeError: not a real number.
        ValueError: zero, negative, NaN or infinite.
    """
    number = _as_real(value, name, where)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{_prefix(where)}{name} must be positive and finite, got {number}")
    return number


def check_generator(generator: object, where: str, name: str = "generator") -> None:
    """Refuse anything but a ``torch.Generator`` or None."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ArgumentTypeError(
            f"{_prefix(where)}{name} must be a torch.Generator or None, got "
            f"{type(generator).__name__}"
        )


def check_callable(value: object, name: str, where: str, signature: str = "") -> None:
    """Refuse an argument that cannot be called (``signature`` describes the expected call)."""
    if not callable(value):
        shape = f" {signature}" if signature else ""
        raise ArgumentTypeError(
            f"{_prefix(where)}{name} must be callable{shape}, got {type(value).__name__}"
        )


def check_method(obj: object, method: str, where: str, what: str = "the model",
                 signature: str = "") -> None:
    """Refuse an object without a callable attribute ``method`` (e.g. ``log_prob``)."""
    if not callable(getattr(obj, method, None)):
        call = signature or f"{method}(...)"
        raise ArgumentTypeError(
            f"{_prefix(where)}{what} must have a {call} method, got {type(obj).__name__}"
        )


def check_module(model: object, where: str, name: str = "model") -> torch.nn.Module:
    """Refuse anything but a ``torch.nn.Module``."""
    if not isinstance(model, torch.nn.Module):
        raise ArgumentTypeError(
            f"{_prefix(where)}{name} must be a torch.nn.Module, got {type(model).__name__}"
        )
    return model


def non_finite_parameters(module: torch.nn.Module) -> list[str]:
    """The names of the module's parameters that hold NaN or inf (one synchronisation)."""
    named = list(module.named_parameters())
    if not named:
        return []
    device = named[0][1].device
    flags = torch.stack([torch.isfinite(p.detach()).all().to(device) for _, p in named])
    if bool(flags.all()):
        return []
    return [name for (name, _), ok in zip(named, flags.tolist(), strict=True) if not ok]


def check_finite_parameters(module: object, where: str) -> None:
    """Raise ValueError naming the parameters that hold NaN or inf (skipped if
    :data:`CHECK_FINITE` is off, or for an object that is not a module)."""
    if not CHECK_FINITE or not isinstance(module, torch.nn.Module):
        return
    bad = non_finite_parameters(module)
    if bad:
        raise ValueError(f"{_prefix(where)}{describe_non_finite_parameters(bad)}")


def describe_non_finite_parameters(names: Iterable[str]) -> str:
    """``"the model's parameters contain NaN or inf (a, b, ...)"``, for messages."""
    names = list(names)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (f"the model's parameters contain NaN or inf ({shown}): it diverged, or was built "
            "or loaded with bad values")
