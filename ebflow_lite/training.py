"""A small training loop with a progress bar, checkpoints and resumption."""

from __future__ import annotations

import copy
import math
import os
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import TqdmWarning

with warnings.catch_warnings():
    # Without ipywidgets, tqdm.auto warns in notebooks and falls back to a text bar: fine.
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

Objective = Callable[[nn.Module, torch.Tensor], torch.Tensor]

# After this many skipped steps in a row, fit() gives up: the run has diverged.
_MAX_BAD_IN_A_ROW = 20


@dataclass
class History:
    """What :func:`fit` records: the loss of every step and the steps skipped for NaN."""

    losses: list[float] = field(default_factory=list)
    skipped: int = 0
    step: int = 0


class BatchStream:
    """Random mini-batches from ``data`` forever, reshuffled after each epoch, resumable.

    The order comes from the stream's own ``torch.Generator`` (seeded from the global RNG
    when none is given, so :func:`ebflow_lite.seed_everything` fixes it). Its state, the
    current epoch's order and the position in it are saved by :meth:`state_dict`, so a run
    resumed from a checkpoint sees exactly the batches an uninterrupted run would see.
    Every batch has ``min(batch_size, N)`` rows; the last incomplete batch of an epoch is
    dropped.

    Args:
        data: a tensor of shape ``(N, ...)``.
        batch_size: rows per batch.
        generator: the source of the shuffles.
    """

    def __init__(
        self, data: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"data must be a torch.Tensor, got {type(data).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if data.dim() == 0 or data.shape[0] == 0:
            raise ValueError("data is empty")
        self.data = data
        self.batch_size = min(int(batch_size), data.shape[0])
        if generator is None:
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
            generator = torch.Generator().manual_seed(seed)
        self.generator = generator
        self.order: torch.Tensor | None = None
        self.position = 0

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> torch.Tensor:
        n = self.data.shape[0]
        if self.order is None or self.position + self.batch_size > n:
            self.order = torch.randperm(n, generator=self.generator)
            self.position = 0
        index = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return self.data[index.to(self.data.device)]

    def state_dict(self) -> dict:
        """The generator state, the current order and the position in it."""
        return {
            "generator": self.generator.get_state(),
            "order": None if self.order is None else self.order.clone(),
            "position": self.position,
            "num_rows": self.data.shape[0],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from what :meth:`state_dict` returned (for the same data)."""
        if state["num_rows"] != self.data.shape[0]:
            raise ValueError(
                f"the checkpoint's batch stream ran over {state['num_rows']} rows, but the data "
                f"has {self.data.shape[0]}: resume with the same data"
            )
        self.generator.set_state(state["generator"])
        self.order = None if state["order"] is None else state["order"].clone()
        self.position = int(state["position"])


def batches(data: torch.Tensor, batch_size: int, generator: torch.Generator | None = None):
    """Yield random mini-batches from ``data`` forever (see :class:`BatchStream`)."""
    return BatchStream(data, batch_size, generator)


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
    history: History | None = None, extra: dict | None = None,
) -> None:
    """Write model, optimizer, history and every RNG state to ``path`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "history": copy.deepcopy(vars(history)) if history is not None else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "extra": extra or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
) -> tuple[History, dict]:
    """Restore what :func:`save_checkpoint` wrote; return the history and the extra dict.

    The global RNG states (torch, CUDA, NumPy, Python) are restored too, so random draws
    made after resuming (e.g. the projections of sliced score matching) match those of an
    uninterrupted run.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if state.get("numpy_rng") is not None:
        np.random.set_state(state["numpy_rng"])
    if state.get("python_rng") is not None:
        random.setstate(state["python_rng"])
    history = History(**state["history"]) if state["history"] else History()
    return history, state["extra"]


def _gradient_is_finite(parameters: list[torch.Tensor]) -> bool:
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return True
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if total_norm is None:
        return all(bool(torch.isfinite(g).all()) for g in grads)
    return bool(torch.isfinite(total_norm(grads)))


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
        The :class:`History`. A step whose loss or gradient is NaN or inf is skipped (no
        update; its batch is consumed) and counted in ``history.skipped``; if 20 steps in a
        row are skipped the run stops with a ValueError, since it has diverged. Resuming
        from ``checkpoint`` restores the model, optimizer, EMA, history, the batch order
        and the global RNG states, so it ends with the same parameters as an uninterrupted
        run with the same seed (on the CPU).
    """
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be positive, got {checkpoint_every}")
    parameters = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        optimizer = torch.optim.Adam(parameters, lr=lr)
    # The stream draws its seed from the global RNG *before* a checkpoint restores that RNG,
    # so a resumed run consumes random numbers exactly as an uninterrupted one.
    stream = BatchStream(data, batch_size)
    history = History()
    if checkpoint is not None and Path(checkpoint).is_file():
        history, extra = load_checkpoint(checkpoint, model, optimizer)
        if ema is not None and "ema" in extra:
            ema.load_state_dict(extra["ema"])  # type: ignore[attr-defined]
        if "batch_stream" in extra:
            stream.load_state_dict(extra["batch_stream"])
    first = next(model.parameters(), None)
    device = first.device if first is not None else data.device
    bad_in_a_row = 0
    model.train()
    bar = tqdm(
        total=steps, initial=history.step, disable=not progress, leave=False,
        mininterval=1.0, desc="fit",
    )
    try:
        while history.step < steps:
            batch = next(stream).to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = objective(model, batch)
            finite = math.isfinite(float(loss.detach()))
            if finite:
                # Only the parameters' gradients: score-matching losses also depend on the
                # batch (made differentiable inside the objective), and its gradient is waste.
                loss.backward(inputs=parameters)
                finite = _gradient_is_finite(parameters)
            if not finite:
                history.skipped += 1
                bad_in_a_row += 1
                optimizer.zero_grad(set_to_none=True)
                if bad_in_a_row >= _MAX_BAD_IN_A_ROW:
                    raise ValueError(
                        f"training diverged: {_MAX_BAD_IN_A_ROW} steps in a row with a "
                        f"non-finite loss or gradient at step {history.step}; lower the "
                        "learning rate or set grad_clip"
                    )
                continue
            bad_in_a_row = 0
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
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
            if checkpoint is not None and (
                history.step % checkpoint_every == 0 or history.step == steps
            ):
                extra = {"batch_stream": stream.state_dict()}
                if ema is not None:
                    extra["ema"] = ema.state_dict()  # type: ignore[attr-defined]
                save_checkpoint(checkpoint, model, optimizer, history, extra)
    finally:
        bar.close()
    return history
