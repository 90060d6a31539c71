"""A small training loop with a progress bar, checkpoints and resumption.

Checkpoints are safe to load: :func:`load_checkpoint` reads them with
``torch.load(weights_only=True)``, so a file can hold tensors and plain Python values only
and cannot run code; it checks that a checkpoint fits the model and the optimizer before it
changes either, so a checkpoint of another architecture leaves them untouched. Writes are
atomic (a temporary file, then a rename), so an interrupted save leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import os
import random
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import TqdmWarning

from ebflow_lite import validation
from ebflow_lite.validation import (
    ArgumentTypeError,
    check_batch,
    check_callable,
    check_finite_parameters,
    check_generator,
    check_method,
    check_module,
    check_positive,
    check_positive_int,
    check_shape,
    describe_non_finite_parameters,
    model_event_shape,
    non_finite_parameters,
)

with warnings.catch_warnings():
    # Without ipywidgets, tqdm.auto warns in notebooks and falls back to a text bar: fine.
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

Objective = Callable[[nn.Module, torch.Tensor], torch.Tensor]

# After this many skipped steps in a row, fit() gives up: the run has diverged.
_MAX_BAD_IN_A_ROW = 20

# The keys every checkpoint written by save_checkpoint has.
_CHECKPOINT_KEYS = ("model", "optimizer", "history", "torch_rng", "extra")


@dataclass
class History:
    """What :func:`fit` records: the loss of every step and the steps skipped for NaN."""

    losses: list[float] = field(default_factory=list)
    skipped: int = 0
    step: int = 0


class TrainingDiverged(ValueError):
    """:func:`fit` stopped because the run diverged; ``history`` holds what it recorded."""

    def __init__(self, message: str, history: History) -> None:
        super().__init__(message)
        self.history = history


class FitInterrupted(KeyboardInterrupt):
    """:func:`fit` was interrupted (Ctrl-C); nothing trained is lost.

    The model (and the EMA) hold the training so far; ``history`` is what was recorded;
    ``checkpoint`` is the file saved on the interrupt (None without ``checkpoint=``), and
    ``exact`` tells whether resuming from it reproduces the uninterrupted run exactly.
    """

    def __init__(self, message: str, history: History, checkpoint: Path | None,
                 exact: bool) -> None:
        super().__init__(message)
        self.history = history
        self.checkpoint = checkpoint
        self.exact = exact


# ---------------------------------------------------------------------------- batches
def data_fingerprint(data: torch.Tensor) -> dict:
    """Shape, dtype and two float64 sums of ``data`` (one of them weighted by the row index),
    so that a resumed run can tell whether it sees the data it was started on."""
    rows = data.reshape(data.shape[0], -1).sum(1, dtype=torch.float64)
    weights = torch.arange(1, data.shape[0] + 1, dtype=torch.float64, device=rows.device)
    return {
        "shape": [int(s) for s in data.shape],
        "dtype": str(data.dtype),
        "sum": float(rows.sum()),
        "weighted_sum": float((rows * weights).sum() / data.shape[0]),
        "scale": float(rows.abs().sum()),
    }


def _same_fingerprint(a: dict, b: dict) -> bool:
    if a.get("shape") != b.get("shape") or a.get("dtype") != b.get("dtype"):
        return False
    # The sums may differ in the last bits between thread counts or devices.
    tolerance = 1e-6 * max(float(a.get("scale", 0.0)), float(b.get("scale", 0.0))) + 1e-12
    return all(abs(float(a.get(key, 0.0)) - float(b.get(key, 0.0))) <= tolerance
               for key in ("sum", "weighted_sum"))


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
            hint = "; convert with torch.as_tensor(data)" if isinstance(data, np.ndarray) else ""
            raise ArgumentTypeError(
                f"data must be a torch.Tensor, got {type(data).__name__}{hint}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise ArgumentTypeError(
                f"batch_size must be a positive int, got {batch_size!r} "
                f"({type(batch_size).__name__})"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if data.dim() == 0 or data.shape[0] == 0:
            raise ValueError(f"data is empty (shape {tuple(data.shape)})")
        check_generator(generator, "BatchStream")
        self.data = data
        self.batch_size = min(int(batch_size), data.shape[0])
        if generator is None:
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
            generator = torch.Generator().manual_seed(seed)
        self.generator = generator
        self.order: torch.Tensor | None = None
        self.position = 0
        self._fingerprint: dict | None = None

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

    def fingerprint(self) -> dict:
        """:func:`data_fingerprint` of the data (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = data_fingerprint(self.data)
        return self._fingerprint

    def state_dict(self) -> dict:
        """The generator state, the current order, the position in it, the batch size and
        a fingerprint of the data."""
        return {
            "generator": self.generator.get_state(),
            "order": None if self.order is None else self.order.clone(),
            "position": self.position,
            "num_rows": self.data.shape[0],
            "batch_size": self.batch_size,
            "fingerprint": self.fingerprint(),
        }

    def check_state_dict(self, state: object, where: str = "BatchStream.load_state_dict"
                         ) -> None:
        """Raise ValueError unless ``state`` is a stream state for this data and batch size."""
        if not isinstance(state, dict) or not {"generator", "order", "position",
                                               "num_rows"} <= set(state):
            raise ValueError(f"{where}: not a batch-stream state")
        if state["num_rows"] != self.data.shape[0]:
            raise ValueError(
                f"{where}: the checkpoint's batch stream ran over {state['num_rows']} rows, but "
                f"the data has {self.data.shape[0]}: resume with the same data"
            )
        if "batch_size" in state and state["batch_size"] != self.batch_size:
            raise ValueError(
                f"{where}: the checkpoint's run drew batches of {state['batch_size']} rows, but "
                f"batch_size is {self.batch_size}: resume with the same batch size (or start "
                "a new run with another checkpoint path)"
            )
        saved = state.get("fingerprint")
        if saved is not None and not _same_fingerprint(saved, self.fingerprint()):
            raise ValueError(
                f"{where}: the checkpoint's run was trained on other data (same number of "
                f"rows, different values or order): resume with the same data (or start a "
                "new run with another checkpoint path)"
            )
        order = state["order"]
        if order is not None and (not isinstance(order, torch.Tensor)
                                  or order.shape != (self.data.shape[0],)):
            raise ValueError(f"{where}: the saved order does not fit the data")

    def load_state_dict(self, state: dict) -> None:
        """Continue from what :meth:`state_dict` returned (for the same data)."""
        self.check_state_dict(state)
        self.generator.set_state(state["generator"])
        self.order = None if state["order"] is None else state["order"].clone()
        self.position = int(state["position"])


def batches(data: torch.Tensor, batch_size: int, generator: torch.Generator | None = None):
    """Yield random mini-batches from ``data`` forever (see :class:`BatchStream`)."""
    return BatchStream(data, batch_size, generator)


# ---------------------------------------------------------------------------- checkpoints
def _rng_states() -> dict:
    """Every global RNG state, as tensors and plain Python values (no NumPy objects)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy_rng": {
            "kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(position), "has_gauss": int(has_gauss), "cached_gaussian": float(cached),
        },
        "python_rng": random.getstate(),
    }


def _numpy_state(saved: object) -> tuple | None:
    """The tuple ``np.random.set_state`` takes, from a saved state (new or older format)."""
    if saved is None:
        return None
    if isinstance(saved, dict):
        keys = saved["keys"]
        keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
        return (str(saved["kind"]), keys.astype(np.uint32), int(saved["pos"]),
                int(saved["has_gauss"]), float(saved["cached_gaussian"]))
    return tuple(saved)  # older checkpoints pickled NumPy's own tuple


def _check_plain(value: object, where: str, seen: int = 0) -> None:
    """Refuse values that ``torch.load(weights_only=True)`` would not read back."""
    if seen > 100:
        raise ValueError(f"{where}: nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.Tensor,
                                           torch.dtype, torch.device, torch.Size)):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, where, seen + 1)
            _check_plain(item, f"{where}[{key!r}]", seen + 1)
        return
    if isinstance(value, (list, tuple, set)):
        for item in value:
            _check_plain(item, where, seen + 1)
        return
    raise ArgumentTypeError(
        f"{where}: a checkpoint may hold tensors and plain Python values (numbers, strings, "
        f"lists, tuples, dicts) only, got {type(value).__name__}; convert it first"
    )


def _check_path(path: object, where: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(
            f"{where}: the checkpoint path must be a str or os.PathLike, got "
            f"{type(path).__name__}"
        )
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"{where}: the checkpoint path {path} is a directory; pass a file path such as "
            f"{path / 'checkpoint.pt'}"
        )
    return path


def _check_writable(path: Path, where: str) -> None:
    """Create the checkpoint's folder and make sure a file can be written there, now."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as err:
        raise ValueError(f"{where}: cannot write the checkpoint {path}: {err}") from err


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
    history: History | None = None, extra: dict | None = None,
) -> None:
    """Write model, optimizer, history and every RNG state to ``path`` (atomically).

    The file is written next to ``path`` under a temporary name and renamed over it once
    complete, so an interrupted save leaves the previous checkpoint as it was (and no
    temporary file). Everything is stored as tensors and plain Python values, which
    :func:`load_checkpoint` reads with ``weights_only=True``; ``extra`` must hold such values
    too.

    Raises:
        ValueError: a bad argument, or a path that is a directory.
        OSError: the file cannot be written.
    """
    where = "save_checkpoint"
    path = _check_path(path, where)
    check_module(model, where)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise ArgumentTypeError(
            f"{where}: optimizer must be a torch.optim.Optimizer or None, got "
            f"{type(optimizer).__name__}"
        )
    if history is not None and not isinstance(history, History):
        raise ArgumentTypeError(
            f"{where}: history must be a History or None, got {type(history).__name__}"
        )
    if extra is not None and not isinstance(extra, dict):
        raise ArgumentTypeError(f"{where}: extra must be a dict or None, got "
                                f"{type(extra).__name__}")
    extra = extra or {}
    _check_plain(extra, f"{where}: extra")
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "optimizer_class": type(optimizer).__name__ if optimizer is not None else None,
        "history": copy.deepcopy(vars(history)) if history is not None else None,
        **_rng_states(),
        "extra": extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _legacy_numpy_globals() -> list:
    """What an older checkpoint's pickled NumPy RNG state refers to: NumPy's array
    reconstruction, which builds data and runs no code. Allowed for those files only."""
    core = np._core if hasattr(np, "_core") else np.core
    rebuild = core.multiarray._reconstruct
    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)),
            (rebuild, "numpy.core.multiarray._reconstruct"),
            (rebuild, "numpy._core.multiarray._reconstruct")]


def _torch_load(path: Path) -> object:
    allow = getattr(torch.serialization, "safe_globals", None)
    context = allow(_legacy_numpy_globals()) if allow is not None else contextlib.nullcontext()
    with context:
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_checkpoint(path: str | os.PathLike, where: str) -> dict:
    """Read and check a checkpoint file; every failure is a ValueError naming the path."""
    path = _check_path(path, where)
    if not path.is_file():
        raise ValueError(f"{where}: no checkpoint at {path}")
    try:
        state = _torch_load(path)
    except Exception as err:
        text = str(err)
        if "GLOBAL" in text:  # the weights-only unpickler refused to import something
            detail = next(line.strip() for line in text.splitlines() if "GLOBAL" in line)
            raise ValueError(
                f"{where}: refused to load {path}: it holds Python objects other than tensors "
                f"and plain values, which could run code when loaded ({detail})"
            ) from err
        first = next((line.strip() for line in text.splitlines()
                      if line.strip() and "Weights only load failed" not in line), "")
        raise ValueError(
            f"{where}: {path} is not a readable checkpoint (truncated, or not written by "
            f"torch.save): {type(err).__name__}: {first}"
        ) from err
    if not isinstance(state, dict) or not set(_CHECKPOINT_KEYS) <= set(state):
        keys = sorted(map(str, state))[:8] if isinstance(state, dict) else None
        got = f"a dict with the keys {keys}" if keys is not None else type(state).__name__
        raise ValueError(
            f"{where}: {path} is not an ebflow_lite checkpoint: expected a dict with the keys "
            f"{list(_CHECKPOINT_KEYS)}, got {got}"
        )
    problems = []
    if not isinstance(state["model"], dict):
        problems.append("'model' is not a state dict")
    if state["history"] is not None:
        names = {f.name for f in fields(History)}
        if not isinstance(state["history"], dict) or not set(state["history"]) <= names:
            problems.append("'history' is not a History")
    if not isinstance(state["extra"], dict):
        problems.append("'extra' is not a dict")
    rng = state["torch_rng"]
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8:
        problems.append("'torch_rng' is not a torch RNG state")
    try:
        state["numpy_rng"] = _numpy_state(state.get("numpy_rng"))
    except (KeyError, TypeError, ValueError, AttributeError):
        problems.append("'numpy_rng' is not a NumPy RNG state")
    if problems:
        raise ValueError(f"{where}: {path} is a damaged checkpoint: {'; '.join(problems)}")
    return state


def _check_model_state(saved: dict, model: nn.Module, path: Path, where: str) -> None:
    current = model.state_dict()
    missing = [k for k in current if k not in saved]
    unexpected = [k for k in saved if k not in current]
    mismatched = []
    for key, value in current.items():
        if key not in saved or not isinstance(value, torch.Tensor):
            continue
        old = saved[key]
        if not isinstance(old, torch.Tensor) or old.shape != value.shape:
            got = tuple(old.shape) if isinstance(old, torch.Tensor) else type(old).__name__
            mismatched.append(f"{key}: saved {got}, model {tuple(value.shape)}")
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", mismatched)):
            if items:
                more = f" and {len(items) - 4} more" if len(items) > 4 else ""
                parts.append(f"{label} {items[:4]}{more}")
        raise ValueError(
            f"{where}: the checkpoint {path} does not fit this model (another "
            f"architecture?): {'; '.join(parts)}. The model was left unchanged."
        )


def _check_optimizer_state(state: dict, optimizer: torch.optim.Optimizer, path: Path,
                           where: str) -> None:
    saved = state["optimizer"]
    if saved is None:
        return
    prefix = f"{where}: the checkpoint {path} does not fit this optimizer"
    kind = state.get("optimizer_class")
    if kind is not None and kind != type(optimizer).__name__:
        raise ValueError(f"{prefix}: it was saved from {kind}, this is "
                         f"{type(optimizer).__name__}. Nothing was changed.")
    if not isinstance(saved, dict) or not {"state", "param_groups"} <= set(saved):
        raise ValueError(f"{prefix}: its optimizer state is damaged. Nothing was changed.")
    groups, saved_groups = optimizer.param_groups, saved["param_groups"]
    sizes = [len(g["params"]) for g in groups]
    saved_sizes = [len(g.get("params", ())) for g in saved_groups]
    if sizes != saved_sizes:
        raise ValueError(f"{prefix}: parameter groups of sizes {saved_sizes}, the optimizer "
                         f"has {sizes}. Nothing was changed.")
    params = {index: p for g, sg in zip(groups, saved_groups, strict=True)
              for index, p in zip(sg["params"], g["params"], strict=True)}
    for index, entry in saved["state"].items():
        param = params.get(index)
        if param is None or not isinstance(entry, dict):
            raise ValueError(f"{prefix}: state for an unknown parameter. Nothing was changed.")
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise ValueError(
                    f"{prefix}: its {key!r} has shape {tuple(value.shape)} for a parameter of "
                    f"shape {tuple(param.shape)}. Nothing was changed."
                )


def _set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if state.get("numpy_rng") is not None:
        np.random.set_state(state["numpy_rng"])
    if state.get("python_rng") is not None:
        random.setstate(tuple(state["python_rng"]))


def _apply_checkpoint(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                      others: list[tuple[object, dict]] = ()) -> None:
    """Load a checked checkpoint into everything, or into nothing (rolled back on failure)."""
    backups = [(model, {k: v.detach().clone() if isinstance(v, torch.Tensor) else v
                        for k, v in model.state_dict().items()})]
    targets: list[tuple[object, dict]] = [(model, state["model"])]
    if optimizer is not None and state["optimizer"] is not None:
        backups.append((optimizer, copy.deepcopy(optimizer.state_dict())))
        targets.append((optimizer, state["optimizer"]))
    for obj, saved in others:
        backups.append((obj, copy.deepcopy(obj.state_dict())))  # type: ignore[attr-defined]
        targets.append((obj, saved))
    rng = _rng_states()
    rng["numpy_rng"] = _numpy_state(rng["numpy_rng"])
    try:
        for obj, saved in targets:
            obj.load_state_dict(saved)  # type: ignore[attr-defined]
        _set_rng_states(state)
    except BaseException:
        for obj, saved in backups:
            obj.load_state_dict(saved)  # type: ignore[attr-defined]
        _set_rng_states(rng)
        raise


def _history(state: dict) -> History:
    return History(**state["history"]) if state["history"] else History()


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
) -> tuple[History, dict]:
    """Restore what :func:`save_checkpoint` wrote; return the history and the extra dict.

    The global RNG states (torch, CUDA, NumPy, Python) are restored too, so random draws
    made after resuming (e.g. the projections of sliced score matching) match those of an
    uninterrupted run.

    The file is read with ``torch.load(weights_only=True)``: a checkpoint that holds other
    Python objects (which could run code) is refused. It is checked against the model (the
    same keys and shapes) and the optimizer before either is changed, so a checkpoint that
    does not fit leaves them as they were.

    Raises:
        ValueError: no file, a file that is not a readable checkpoint (naming the path), or
            a checkpoint that does not fit the model or the optimizer.
    """
    where = "load_checkpoint"
    check_module(model, where)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise ArgumentTypeError(
            f"{where}: optimizer must be a torch.optim.Optimizer or None, got "
            f"{type(optimizer).__name__}"
        )
    state = _read_checkpoint(path, where)
    path = Path(path)
    _check_model_state(state["model"], model, path, where)
    if optimizer is not None:
        _check_optimizer_state(state, optimizer, path, where)
    _apply_checkpoint(state, model, optimizer)
    return _history(state), state["extra"]


# ---------------------------------------------------------------------------- fit
def _gradient_is_finite(parameters: list[torch.Tensor]) -> bool:
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return True
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if total_norm is None:
        return all(bool(torch.isfinite(g).all()) for g in grads)
    return bool(torch.isfinite(total_norm(grads)))


class _DeferredInterrupt:
    """Hold the first Ctrl-C until the current training step is complete.

    Installed only in the main thread over Python's default SIGINT handler. The first
    SIGINT sets ``requested`` (fit stops cleanly after the step it is in); a second one
    raises KeyboardInterrupt at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: object = None

    def __enter__(self) -> _DeferredInterrupt:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("fit: interrupt received, stopping after the current step (press Ctrl-C "
              "again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._previous = None


def _check_fit_arguments(
    model: object, objective: object, data: object, steps: object, batch_size: object,
    optimizer: object, lr: object, grad_clip: object, ema: object, checkpoint: object,
    checkpoint_every: object, callback: object,
) -> tuple[int, int, Path | None]:
    where = "fit"
    check_module(model, where)
    check_callable(objective, "objective", where, "as objective(model, batch) -> loss")
    steps = check_positive_int(steps, "steps", where, minimum=0)
    batch_size = check_positive_int(batch_size, "batch_size", where)
    check_positive_int(checkpoint_every, "checkpoint_every", where)
    if optimizer is None:
        check_positive(lr, "lr", where)
    elif not isinstance(optimizer, torch.optim.Optimizer):
        raise ArgumentTypeError(
            f"{where}: optimizer must be a torch.optim.Optimizer or None, got "
            f"{type(optimizer).__name__}"
        )
    if grad_clip is not None:
        check_positive(grad_clip, "grad_clip", where)
    if callback is not None:
        check_callable(callback, "callback", where, "as callback(step, loss)")
    if ema is not None:
        check_method(ema, "update", where, "ema", "update(model)")
        if checkpoint is not None:
            check_method(ema, "state_dict", where, "with checkpoint=..., ema")
            check_method(ema, "load_state_dict", where, "with checkpoint=..., ema")
    _check_data(data, model_event_shape(model))
    path = None
    if checkpoint is not None:
        path = _check_path(checkpoint, where)
        _check_writable(path, where)
    return steps, batch_size, path


def _check_data(data: object, shape: tuple[int, ...] | None) -> None:
    """The training data: a finite floating tensor with rows (of the model's event shape)."""
    where = "fit: data"
    if not isinstance(data, torch.Tensor):
        hint = "; convert with torch.as_tensor(data)" if isinstance(data, np.ndarray) else ""
        raise ArgumentTypeError(
            f"fit: data must be a torch.Tensor, got {type(data).__name__}{hint}"
        )
    if data.dim() == 0 or data.shape[0] == 0:
        raise ValueError(f"fit: data is empty (shape {tuple(data.shape)})")
    if data.dim() >= 2 or shape is not None:
        check_batch(data, shape, where=where, nonempty=True)
    elif not data.is_floating_point():  # one value per row, no event shape to check
        check_shape(data.unsqueeze(1), None, where=where)
    elif validation.CHECK_FINITE and not bool(torch.isfinite(data).all()):
        raise ValueError(f"{where}: input contains NaN or inf")


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
        data: a floating tensor of shape ``(N, ...)`` (finite, and of the model's event shape
            when it declares one); batches are drawn at random.
        steps: the total number of optimiser steps (an int >= 0, including ones already
            done when resuming from ``checkpoint``).
        batch_size: samples per step.
        optimizer: defaults to Adam with learning rate ``lr``.
        lr: Adam's learning rate when no optimizer is given (> 0).
        grad_clip: clip the gradient norm to this value (> 0; None: no clipping).
        ema: an object with ``update(model)`` (e.g. :class:`ebflow_lite.EMA`), updated
            after every step.
        checkpoint: a file to save to every ``checkpoint_every`` steps, at the end and on an
            interrupt; if it exists, training resumes from it.
        checkpoint_every: see ``checkpoint``.
        progress: show a tqdm progress bar with the running loss.
        callback: called as ``callback(step, loss)`` after every step.

    Returns:
        The :class:`History`. A step whose loss or gradient is NaN or inf is skipped (no
        update; its batch is consumed) and counted in ``history.skipped``; if 20 steps in a
        row are skipped the run stops with :class:`TrainingDiverged` (a ValueError), since
        it has diverged. It stops at once, naming them, when the parameters themselves
        have become NaN or inf (no later step could be finite). Resuming from
        ``checkpoint`` restores the model, optimizer, EMA, history, the batch order and the
        global RNG states, so it ends with the same parameters as an uninterrupted run with
        the same seed (on the CPU); a checkpoint of a run on other data or with another
        batch size is refused.

    Raises:
        ValueError: a bad argument (a wrong type raises
            :class:`ebflow_lite.validation.ArgumentTypeError`, also a TypeError).
        TrainingDiverged: see above.
        FitInterrupted: on Ctrl-C (a KeyboardInterrupt). The first Ctrl-C lets the current
            step finish; then the checkpoint is saved (when ``checkpoint`` is given) and the
            history is attached to the exception, so nothing trained is lost.
    """
    steps, batch_size, path = _check_fit_arguments(
        model, objective, data, steps, batch_size, optimizer, lr, grad_clip, ema, checkpoint,
        checkpoint_every, callback)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("fit: the model has no trainable parameters")
    if optimizer is None:
        optimizer = torch.optim.Adam(parameters, lr=lr)
    else:
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if not any(id(p) in held for p in parameters):
            raise ValueError(
                "fit: the optimizer holds none of the model's trainable parameters (was it "
                "built for another model?)"
            )
    check_finite_parameters(model, "fit")
    # The stream draws its seed from the global RNG *before* a checkpoint restores that RNG,
    # so a resumed run consumes random numbers exactly as an uninterrupted one.
    stream = BatchStream(data, batch_size)
    history = History()
    saved_at: int | None = None  # the step of the checkpoint on disk, if it is this run's
    if path is not None and path.is_file():
        history = _resume(path, model, optimizer, ema, stream)
        saved_at = history.step
        if history.step > steps:
            warnings.warn(f"fit: the checkpoint {path} is already at step {history.step}, "
                          f"past steps={steps}; the model holds the longer run", stacklevel=2)
    first = next(model.parameters(), None)
    device = first.device if first is not None else data.device

    def save() -> None:
        # Never replace a good checkpoint by one of a diverged model.
        _stop_if_diverged(model, history, 0, kept=saved_at)
        extra = {"batch_stream": stream.state_dict()}
        if ema is not None:
            extra["ema"] = ema.state_dict()  # type: ignore[attr-defined]
        save_checkpoint(path, model, optimizer, history, extra)  # type: ignore[arg-type]

    bad_in_a_row = 0
    phase = "done"  # "compute" (no parameter changed yet), "update", or "done"
    model.train()
    bar = tqdm(
        total=steps, initial=history.step, disable=not progress, leave=False,
        mininterval=1.0, desc="fit",
    )
    try:
        with _DeferredInterrupt() as interrupt:
            while history.step < steps:
                phase = "compute"
                batch = next(stream).to(device)
                optimizer.zero_grad(set_to_none=True)
                loss = _loss(objective, model, batch, history)
                finite = math.isfinite(float(loss.detach()))
                if finite:
                    # Only the parameters' gradients: score-matching losses also depend on the
                    # batch (made differentiable inside the objective); its gradient is waste.
                    loss.backward(inputs=parameters)
                    finite = _gradient_is_finite(parameters)
                if not finite:
                    history.skipped += 1
                    bad_in_a_row += 1
                    optimizer.zero_grad(set_to_none=True)
                    _stop_if_diverged(model, history, bad_in_a_row)
                    phase = "done"
                    if interrupt.requested:
                        raise KeyboardInterrupt
                    continue
                bad_in_a_row = 0
                phase = "update"
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
                optimizer.step()
                if ema is not None:
                    ema.update(model)  # type: ignore[attr-defined]
                value = float(loss.detach())
                history.losses.append(value)
                history.step += 1
                phase = "done"
                bar.update(1)
                if history.step % 50 == 0:
                    bar.set_postfix(loss=f"{value:.4g}")
                if callback is not None:
                    callback(history.step, value)
                if path is not None and (
                    history.step % checkpoint_every == 0 or history.step == steps
                ):
                    save()
                    saved_at = history.step
                if interrupt.requested:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise _interrupted(history, steps, phase, path, saved_at, save) from None
    finally:
        bar.close()
    return history


def _loss(objective: Objective, model: nn.Module, batch: torch.Tensor, history: History
          ) -> torch.Tensor:
    """Run the objective; turn a failure caused by non-finite parameters into divergence."""
    try:
        loss = objective(model, batch)
    except Exception as err:
        bad = non_finite_parameters(model) if validation.CHECK_FINITE else []
        if bad:
            raise TrainingDiverged(
                f"training diverged at step {history.step}: {describe_non_finite_parameters(bad)}"
                "; lower the learning rate or set grad_clip", history,
            ) from err
        raise
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        got = (f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor)
               else type(loss).__name__)
        raise ValueError(f"fit: the objective must return a scalar tensor, got {got}")
    if not loss.requires_grad:
        raise ValueError(
            "fit: the objective's loss does not depend on the parameters (no gradient): was "
            "it computed under torch.no_grad() or from detached tensors?"
        )
    return loss.reshape(())


def _stop_if_diverged(model: nn.Module, history: History, bad_in_a_row: int,
                      kept: int | None = None) -> None:
    """Raise TrainingDiverged when the parameters are not finite (one synchronisation) or
    too many steps in a row were skipped; ``kept``: the step of the checkpoint on disk."""
    bad = non_finite_parameters(model) if validation.CHECK_FINITE else []
    if bad:
        note = "" if kept is None else f" (the checkpoint keeps step {kept})"
        raise TrainingDiverged(
            f"training diverged at step {history.step}: {describe_non_finite_parameters(bad)}"
            f"; lower the learning rate or set grad_clip{note}", history,
        )
    if bad_in_a_row >= _MAX_BAD_IN_A_ROW:
        raise TrainingDiverged(
            f"training diverged: {_MAX_BAD_IN_A_ROW} steps in a row with a "
            f"non-finite loss or gradient at step {history.step}; lower the "
            "learning rate or set grad_clip", history,
        )


def _resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: object,
            stream: BatchStream) -> History:
    """Check a checkpoint against everything :func:`fit` restores, then restore it all."""
    where = "fit"
    state = _read_checkpoint(path, where)
    _check_model_state(state["model"], model, path, where)
    _check_optimizer_state(state, optimizer, path, where)
    extra = state["extra"]
    others: list[tuple[object, dict]] = []
    if "batch_stream" in extra:
        stream.check_state_dict(extra["batch_stream"], where=f"fit: the checkpoint {path}")
        others.append((stream, extra["batch_stream"]))
    if ema is not None and "ema" in extra:
        check = getattr(ema, "check_state_dict", None)
        if callable(check):
            check(extra["ema"])
        others.append((ema, extra["ema"]))
    elif ema is not None:
        warnings.warn(f"fit: the checkpoint {path} has no EMA state; the EMA keeps its "
                      "current averages", stacklevel=3)
    _apply_checkpoint(state, model, optimizer, others)
    return _history(state)


def _interrupted(history: History, steps: int, phase: str, path: Path | None,
                 saved_at: int | None, save: Callable[[], None]) -> FitInterrupted:
    """Save what can be saved after a KeyboardInterrupt and describe it."""
    done = f"fit: interrupted after step {history.step} of {steps}"
    if history.skipped:
        done += f" ({history.skipped} skipped)"
    # "compute": no parameter changed since step history.step, but its batch (and random
    # numbers) were drawn; "update": the parameters may be half updated.
    exact = phase == "done" or (phase == "compute" and saved_at == history.step)
    if path is None:
        where = "; the model holds the training so far (pass checkpoint=... to save it)"
    elif saved_at == history.step and phase != "update":
        where = f"; the checkpoint {path} holds it"
    else:
        try:
            save()
        except BaseException as err:  # a second Ctrl-C, a full disk: keep what is on disk
            kept = f"the checkpoint of step {saved_at}" if saved_at is not None else "nothing"
            return FitInterrupted(
                f"{done}; saving the checkpoint failed ({type(err).__name__}), {path} keeps "
                f"{kept}; the history is attached as .history", history, path, False,
            )
        where = f"; saved the checkpoint {path}"
    note = "" if exact or path is None else (
        " (the interrupted step had drawn its batch, so resuming from it is not bit-identical "
        "to an uninterrupted run)" if phase == "compute" else
        " (the interrupt came during a parameter update, so it may be partly applied)")
    return FitInterrupted(f"{done}{where}{note}; the history is attached as .history",
                          history, path, exact)

