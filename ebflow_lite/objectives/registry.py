"""One table from objective names to the library's objectives, for every driver and CLI."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
from torch import nn

from ebflow_lite.objectives.likelihood import ml
from ebflow_lite.objectives.nce import nce
from ebflow_lite.objectives.score_matching import dsm, exact_sm, fdssm, ssm
from ebflow_lite.objectives.sml import sml

Objective = Callable[[nn.Module, torch.Tensor], torch.Tensor]

OBJECTIVES: dict[str, Callable[..., torch.Tensor]] = {
    "ml": ml,
    "sml": sml,
    "ssm": ssm,
    "dsm": dsm,
    "fdssm": fdssm,
    "exact_sm": exact_sm,
    "nce": nce,
}

#: The objectives that train without any determinant or inverse.
SCORE_MATCHING = ("ssm", "dsm", "fdssm", "exact_sm")


def get(name: str, **options: object) -> Objective:
    """``objective(model, x)`` for a name, with keyword options bound.

    For example ``get("dsm", sigma=0.1)`` or ``get("fdssm", eps=1.0)``.

    Args:
        name: one of :data:`OBJECTIVES` (``ml``, ``sml``, ``ssm``, ``dsm``, ``fdssm``,
            ``exact_sm``, ``nce``).
        **options: keyword arguments of that objective.

    Raises:
        ValueError: an unknown name or an option the objective does not take.
    """
    if not isinstance(name, str) or name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; expected one of {tuple(OBJECTIVES)}")
    function = OBJECTIVES[name]
    accepted = set(inspect.signature(function).parameters) - {"model", "x"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"objective {name!r} takes no option(s) {unknown}; it accepts {sorted(accepted)}"
        )
    return functools.partial(function, **options) if options else function


__all__ = ["OBJECTIVES", "SCORE_MATCHING", "Objective", "get"]
