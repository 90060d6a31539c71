"""A small training loop with a progress bar, checkpoints and resumption."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

Objective = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass
class History:
    """What :func:`fit` records: the loss of every step and the steps skipped for NaN."""

    losses: list[float] = field(default_factory=list)
    skipped: int = 0
    step: int = 0


def batches(data: torch.Tensor, batch_size: int, generator: torch.Generator | None = None):
    """Yield random mini-batches from ``data`` forever (reshuffling after each epoch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = data.shape[0]
    if n == 0:
        raise ValueError("data is empty")
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - min(batch_size, n) + 1, min(batch_size, n)):
            yield data[order[start : start + batch_size]]


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
    history: History | None = None, extra: dict | None = None,
) -> None:
    """Write model, optimizer, history and RNG state to ``path`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "history": vars(history) if history is not None else None,
        "torch_rng": torch.get_rng_state(),
        "extra": extra or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
) -> tuple[History, dict]:
    """Restore what :func:`save_checkpoint` wrote; return the history and the extra dict."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    history = History(**state["history"]) if state["history"] else History()
    return history, state["extra"]


def fit(
    model: nn.Module,
    objective: Objective,
    data: torch.Tensor,
    steps: int,
    batch_size: int = 128,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    grad_clip: float | None = None,
    ema: object | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
) -> History:
    """Minimise ``objective(model, batch)`` by mini-batch gradient descent.

    Args:
        model: the module to train.
        objective: ``(model, batch) -> scalar loss``.
        data: a tensor of shape ``(N, ...)``; batches are drawn at random.
        steps: the total number of optimiser steps (including ones already done when
            resuming from ``checkpoint``).
        batch_size: samples per step.
        optimizer: defaults to Adam with learning rate ``lr``.
        lr: Adam's learning rate when no optimizer is given.
        grad_clip: clip the gradient norm to this value (None: no clipping).
        ema: an object with ``update(model)`` (e.g. :class:`ebflow_lite.EMA`), updated
            after every step.
        checkpoint: a file to save to every ``checkpoint_every`` steps and at the end; if it
            exists, training resumes from it.
        checkpoint_every: see ``checkpoint``.
        progress: show a tqdm progress bar with the running loss.
        callback: called as ``callback(step, loss)`` after every step.

    Returns:
        The :class:`History`. A step whose loss is NaN or inf is skipped (no update) and
        counted in ``history.skipped``; if every one of 20 steps in a row is skipped the
        run stops with a ValueError, since it has diverged.
    """
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = History()
    if checkpoint is not None and Path(checkpoint).is_file():
        history, extra = load_checkpoint(checkpoint, model, optimizer)
        if ema is not None and "ema" in extra:
            ema.load_state_dict(extra["ema"])  # type: ignore[attr-defined]
    device = next(model.parameters()).device
    stream = batches(data, batch_size)
    bad_in_a_row = 0
    model.train()
    bar = tqdm(
        total=steps, initial=history.step, disable=not progress, leave=False,
        mininterval=1.0, desc="fit",
    )
    while history.step < steps:
        batch = next(stream).to(device)
        loss = objective(model, batch)
        if not math.isfinite(float(loss)):
            history.skipped += 1
            bad_in_a_row += 1
            if bad_in_a_row >= 20:
                bar.close()
                raise ValueError(f"training diverged: 20 non-finite losses in a row at step "
                                 f"{history.step}")
            optimizer.zero_grad(set_to_none=True)
            continue
        bad_in_a_row = 0
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(model)  # type: ignore[attr-defined]
        value = float(loss.detach())
        history.losses.append(value)
        history.step += 1
        bar.update(1)
        if history.step % 50 == 0:
            bar.set_postfix(loss=f"{value:.4g}")
        if callback is not None:
            callback(history.step, value)
        if checkpoint is not None and (history.step % checkpoint_every == 0 or
                                       history.step == steps):
            extra = {"ema": ema.state_dict()} if ema is not None else None  # type: ignore
            save_checkpoint(checkpoint, model, optimizer, history, extra)
    bar.close()
    return history
