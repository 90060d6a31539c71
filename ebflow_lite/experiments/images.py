"""Training and scoring image EBFlows on real images (chapter 9, the Glow experiment).

Chapter 9 ("Glow-style EBFlow") trains one multi-scale model,
:func:`ebflow_lite.models.glow_flow`, on small Fashion-MNIST images by maximum likelihood
and by score matching, and compares test bits per dimension over seeds. This module holds
the pieces of that experiment that are not specific to one notebook:

* :func:`small_fashion_mnist`: Fashion-MNIST pooled to 14x14 and centre-cropped to 12x12,
  so that two 2x2 squeezes fit (12 -> 6 -> 3) and a CPU step takes a fraction of a second;
  :func:`center_crop` does the cropping for any :class:`ebflow_lite.data.ImageSplit`.
* :class:`IndependentPixels`: the best model that ignores every correlation between
  pixels, one smoothed histogram of the levels per pixel. Its bits per dimension are the
  bar a flow must clear to show that it has learned how pixels depend on each other.
* :func:`train_image_model`: one training run (an objective, a seed), with a fresh
  dequantization noise for every batch, an EMA of the parameters, the exact validation bits
  per dimension every ``eval_every`` steps, and the test score of the best EMA checkpoint.
* :func:`summarize_runs`: mean and 95% confidence interval of the test bits per dimension
  over seeds, per objective.
* :func:`op_counts` and :func:`interleaved_times`: what one training step dispatches (to
  show that a score-matching step computes no determinant) and its time, measured in
  interleaved repeats so that a change of machine load affects every objective alike.

Bits per dimension are ``NLL / (D ln 2)`` with the NLL of the *dequantized* data on the
``[0, K)`` scale (``K = 256`` levels): the density :meth:`ebflow_lite.EBFlow.log_prob`
returns, preprocessing log-det included. Forgetting that log-det, or rescaling by the
wrong number of levels, gives a number that looks plausible and is wrong; chapter 9 shows
both mistakes.

References:
    Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching Objectives",
    NeurIPS 2023 (Glow on MNIST, Figure 4; EMA and MaP; best-validation checkpoints);
    Kingma and Dhariwal, "Glow", NeurIPS 2018; Xiao, Rasul and Vollgraf, "Fashion-MNIST",
    arXiv:1708.07747, 2017; Theis, van den Oord and Bethge, "A note on the evaluation of
    generative models", ICLR 2016 (dequantization and bits per dimension).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ebflow_lite import objectives
from ebflow_lite.data.images import ImageSplit, dequantize, fashion_mnist
from ebflow_lite.ema import EMA
from ebflow_lite.experiments.bench import CUBIC_OPS
from ebflow_lite.metrics import bits_per_dim, mean_confidence_interval, nll
from ebflow_lite.training import fit

Objective = Callable[[nn.Module, torch.Tensor], torch.Tensor]

#: The objectives :func:`train_image_model` knows (``ml`` needs every log-det). ``energy``
#: is the low-energy term alone, ``energy_weight * mean E(z)``, for ablations.
IMAGE_OBJECTIVES = ("ml", "ssm", "dsm", "fdssm", "energy")
#: The side of the images :func:`small_fashion_mnist` returns.
SMALL_FASHION_SIDE = 12


# ---------------------------------------------------------------------------------- data
def center_crop(split: ImageSplit, size: int) -> ImageSplit:
    """Keep the central ``size x size`` pixels of every image of a split.

    Args:
        split: an :class:`ebflow_lite.data.ImageSplit`.
        size: the side of the crop; at most the images' height and width, and of the same
            parity as each, so that the crop is centred exactly.

    Returns:
        A new split (the tensors are copies) with ``event_shape = (C, size, size)``.

    Raises:
        ValueError: a crop larger than the images or off-centre by half a pixel.
    """
    c, h, w = split.event_shape
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= min(h, w):
        raise ValueError(f"center_crop: size must be an int in 1..{min(h, w)}, got {size!r}")
    if (h - size) % 2 or (w - size) % 2:
        raise ValueError(f"center_crop: a {size}x{size} crop of {h}x{w} images is not "
                         "centred; use a size of the same parity as the image sides")
    top, left = (h - size) // 2, (w - size) // 2

    def crop(x: torch.Tensor) -> torch.Tensor:
        return x[:, :, top:top + size, left:left + size].contiguous()

    return replace(split, train=crop(split.train), val=crop(split.val), test=crop(split.test),
                   event_shape=(c, size, size))


def small_fashion_mnist(
    n_train: int | None = None, n_val: int = 5000, n_test: int | None = None, seed: int = 0,
    root: str | os.PathLike[str] | None = None,
) -> ImageSplit:
    """Fashion-MNIST at 12x12: pooled 2x2 (to 14x14, levels rounded), then centre-cropped.

    The crop drops the outer ring of the 14x14 images (two pixels of the 28x28 ones), which
    is background in most images; 12 is divisible by 4, so a two-level Glow squeezes
    ``(1, 12, 12) -> (4, 6, 6) -> (8, 3, 3)`` (after the split). The images keep 256 levels.

    Args:
        n_train, n_val, n_test, seed: see :func:`ebflow_lite.data.split_images`.
        root: the folder with the IDX files (None: see :func:`ebflow_lite.data.fashion_mnist`).
    """
    data = fashion_mnist(root, seed=seed, n_val=n_val, n_train=n_train, n_test=n_test,
                         downscale=2)
    return center_crop(data, SMALL_FASHION_SIDE)


def fixed_dequantization(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Dequantize once with a private generator: the same noisy copy for every evaluation.

    Validation and test scores of different runs and steps are then computed on the very
    same points, so they differ only through the models.
    """
    return dequantize(x, generator=torch.Generator(device=x.device).manual_seed(seed))


# ---------------------------------------------------------------------------------- baseline
class IndependentPixels(nn.Module):
    """A product of per-pixel histograms: ``p(x) = prod_d q_d(floor(x_d))`` on ``[0, K)^D``.

    Each pixel gets its own distribution over the ``K`` levels, the training counts plus a
    pseudo-count ``pseudo_count`` per level (add-one smoothing by default, so that a level
    unseen in training has a finite cost), spread uniformly over the level's unit cell. It
    is the maximum-likelihood model among all that treat pixels as independent, up to the
    smoothing, and it is a density on the same dequantized scale as a flow's, so the two
    bits per dimension compare directly.

    Args:
        train: integer levels, shape ``(N, *event_shape)``.
        num_levels: K.
        pseudo_count: added to every level's count (> 0).
    """

    def __init__(self, train: torch.Tensor, num_levels: int, pseudo_count: float = 1.0) -> None:
        super().__init__()
        if not pseudo_count > 0:
            raise ValueError(f"pseudo_count must be positive, got {pseudo_count}")
        levels = train.flatten(1).long()
        if levels.numel() and (levels.min() < 0 or levels.max() >= num_levels):
            raise ValueError(f"IndependentPixels: levels must lie in 0..{num_levels - 1}")
        counts = torch.full((levels.shape[1], num_levels), float(pseudo_count),
                            dtype=torch.float64)
        counts.scatter_add_(1, levels.T, torch.ones(levels.T.shape, dtype=torch.float64))
        self.num_levels = int(num_levels)
        self.event_shape = tuple(train.shape[1:])
        self.register_buffer("log_probs", (counts / counts.sum(1, keepdim=True)).log())

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` for dequantized images (any value in ``[k, k + 1)`` has level k)."""
        levels = x.flatten(1).floor().long().clamp(0, self.num_levels - 1)
        return self.log_probs.gather(1, levels.T).sum(0).to(x.dtype)


def independent_pixel_bpd(split: ImageSplit, part: str = "test",
                          pseudo_count: float = 1.0) -> float:
    """Bits per dimension of :class:`IndependentPixels` fitted on ``split.train``.

    The value does not depend on the dequantization noise (the density is constant on each
    cell), so the integer levels are scored directly.
    """
    model = IndependentPixels(split.train, split.num_levels, pseudo_count)
    x = getattr(split, part)
    return bits_per_dim(float(-model.log_prob(x.double()).mean()), split.dim)


# ---------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class ImageTrainingSettings:
    """Hyperparameters of one run of :func:`train_image_model`.

    Attributes:
        steps: optimiser steps.
        batch_size: images per step.
        lr: Adam's learning rate, per objective (a name missing from the mapping uses
            ``default_lr``).
        default_lr: see ``lr``.
        ema_decay: the EMA's largest momentum (with warm-up; the paper: 0.999).
        eval_every: validation every this many steps (and at the last step).
        n_eval: validation images scored each time (the first ones of ``data.val``).
        dsm_sigma: DSM's noise in logit space (the paper's Glow: 0.1).
        fdssm_eps: FDSSM's sphere radius in logit space.
        grad_clip: gradient-norm clip for every objective (None: none; the paper's Glow
            clips at 500).
        eval_seed: seeds the fixed dequantization of the validation and test images.
        energy_weight: for the score-matching objectives, add ``energy_weight * mean E(z)``
            to the loss (the paper's low-energy regulariser; 0: none).
    """

    steps: int = 400
    batch_size: int = 64
    lr: Mapping[str, float] = field(default_factory=dict)
    default_lr: float = 1e-3
    ema_decay: float = 0.999
    eval_every: int = 50
    n_eval: int = 1000
    dsm_sigma: float = 0.1
    fdssm_eps: float = 0.1
    grad_clip: float | None = None
    eval_seed: int = 12345
    energy_weight: float = 0.0

    def learning_rate(self, objective: str) -> float:
        """The learning rate of ``objective``."""
        return float(self.lr.get(objective, self.default_lr))


def image_objective(name: str, settings: ImageTrainingSettings) -> Objective:
    """``(model, levels) -> loss``: dequantize the batch of levels, then the objective.

    The noise is drawn inside the objective, from the global random state, so
    :func:`ebflow_lite.fit` (whose checkpoints restore that state) replays it exactly. For the
    score-matching objectives ``settings.energy_weight * mean E(z)`` is added when the weight
    is positive (the paper's Glow: 0.1); ``"energy"`` is that term alone.

    The term needs no determinant either, but note what it does: its parameter gradient is
    that of ``-mean log p`` minus that of ``log Z``, so every layer whose log-det is in the
    energy (couplings, ActNorm) receives the maximum-likelihood gradient.
    """
    if name not in IMAGE_OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; expected one of {IMAGE_OBJECTIVES}")
    weight = float(settings.energy_weight) if name != "ml" else 0.0
    if name == "energy" and not weight > 0:
        raise ValueError("the 'energy' objective needs settings.energy_weight > 0")
    options = {"dsm": {"sigma": settings.dsm_sigma},
               "fdssm": {"eps": settings.fdssm_eps}}.get(name, {})
    inner = None if name == "energy" else objectives.get(name, **options)

    def objective(model: nn.Module, levels: torch.Tensor) -> torch.Tensor:
        x = dequantize(levels)
        loss = inner(model, x) if inner is not None else 0.0
        if weight:
            loss = loss + weight * model.energy(model.preprocess(x)).mean()
        return loss

    objective.__name__ = f"dequantized_{name}"
    return objective


@dataclass
class ImageRun:
    """One training run and its scores (bits per dimension on the dequantized scale).

    Attributes:
        objective, seed: what was run.
        test_bpd: test bits/dim of the checkpoint with the best validation bits/dim.
        val_bpd: that best validation value; ``best_step`` its step.
        curve: ``(step, validation bits/dim)`` of every evaluation (inf where not finite).
        seconds: wall time of the training loop, evaluations excluded.
        seconds_per_step: ``seconds / steps done``.
        skipped: steps skipped for a non-finite loss or gradient.
        diverged: the run stopped after 20 non-finite steps in a row.
        state: the best checkpoint's ``state_dict`` (EMA weights when EMA is used).
        losses: the training loss of every step.
    """

    objective: str
    seed: int
    test_bpd: float
    val_bpd: float
    best_step: int
    curve: list[tuple[int, float]]
    seconds: float
    seconds_per_step: float
    skipped: int
    diverged: bool
    state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    losses: list[float] = field(repr=False, default_factory=list)


def _bpd(model: nn.Module, x: torch.Tensor, dim: int) -> float:
    """Exact bits/dim, or inf when the model gives a non-finite or invalid value."""
    try:
        value = nll(model, x, batch_size=500)
    except ValueError:  # non-finite parameters make the model's input checks fail
        return math.inf
    return bits_per_dim(value, dim) if math.isfinite(value) else math.inf


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def initialize_actnorm(model: nn.Module, levels: torch.Tensor) -> None:
    """Run one forward pass in training mode so data-dependent layers (ActNorm) set up.

    Done before the EMA is created, so the average starts from the initialised values and
    not from ActNorm's placeholder zeros.
    """
    model.train()
    with torch.no_grad():
        x = dequantize(levels)
        preprocess = getattr(model, "preprocess", None)
        model.energy(preprocess(x) if callable(preprocess) else x)


def train_image_model(
    build: Callable[[], nn.Module],
    objective: str,
    data: ImageSplit,
    settings: ImageTrainingSettings | None = None,
    seed: int = 0,
    progress: bool = False,
) -> ImageRun:
    """Train ``build()`` on ``data.train`` with one objective and score it.

    Every batch of levels is dequantized afresh (:func:`image_objective`). ActNorm layers
    are initialised on the first batch, then an EMA (decay ``settings.ema_decay``, with
    warm-up) tracks the parameters. Every ``settings.eval_every`` steps the exact validation
    bits/dim of the EMA weights is computed on ``settings.n_eval`` fixed dequantized images;
    the run keeps the best such checkpoint and reports its test bits/dim on ``data.test``
    (dequantized once, with ``settings.eval_seed``). Score matching can drift away from a
    good likelihood late in training, or diverge (20 non-finite steps in a row stop
    :func:`ebflow_lite.fit`); the best checkpoint is kept either way.

    Args:
        build: returns a new model; it should build deterministically (e.g.
            ``glow_flow(..., seed=0)``) so that seeds differ only in the data order and the
            objectives' noise.
        objective: one of :data:`IMAGE_OBJECTIVES`.
        data: integer-level images.
        settings: see :class:`ImageTrainingSettings`.
        seed: seeds the batches, the dequantization and the objective's random draws.
        progress: show :func:`ebflow_lite.fit`'s progress bar.

    Returns:
        An :class:`ImageRun`; ``state`` holds the best checkpoint, load it with
        ``model.load_state_dict(run.state)``.
    """
    settings = settings or ImageTrainingSettings()
    if settings.eval_every < 1 or settings.steps < 1:
        raise ValueError("need steps >= 1 and eval_every >= 1")
    loss_fn = image_objective(objective, settings)
    val = fixed_dequantization(data.val[:settings.n_eval], settings.eval_seed)
    test = fixed_dequantization(data.test, settings.eval_seed + 1)
    model = build()
    torch.manual_seed(seed)
    first = torch.randperm(data.train.shape[0])[:settings.batch_size]
    initialize_actnorm(model, data.train[first])
    ema = EMA(model, decay=settings.ema_decay)
    best = {"val": math.inf, "step": 0, "state": _snapshot(model)}
    curve: list[tuple[int, float]] = []
    eval_seconds = 0.0

    def evaluate(step: int, loss: float) -> None:
        nonlocal eval_seconds
        if step % settings.eval_every and step != settings.steps:
            return
        start = time.perf_counter()
        with ema.average_parameters(model):
            value = _bpd(model, val, data.dim)
            if value < best["val"]:
                best.update(val=value, step=step, state=_snapshot(model))
        model.train()
        curve.append((step, value))
        eval_seconds += time.perf_counter() - start

    start = time.perf_counter()
    diverged, done, skipped, losses = False, settings.steps, 0, []
    try:
        history = fit(model, loss_fn, data.train, steps=settings.steps,
                      batch_size=settings.batch_size, lr=settings.learning_rate(objective),
                      grad_clip=settings.grad_clip, ema=ema, progress=progress,
                      callback=evaluate)
        skipped, losses = history.skipped, history.losses
    except ValueError as err:
        if "diverged" not in str(err):
            raise
        diverged, skipped = True, 20
        done = curve[-1][0] if curve else 0
    seconds = time.perf_counter() - start - eval_seconds
    model.load_state_dict(best["state"])
    return ImageRun(objective=objective, seed=seed, test_bpd=_bpd(model, test, data.dim),
                    val_bpd=best["val"], best_step=best["step"], curve=curve, seconds=seconds,
                    seconds_per_step=seconds / max(done, 1), skipped=skipped,
                    diverged=diverged, state=best["state"], losses=losses)


def summarize_runs(
    runs: Sequence[ImageRun], level: float = 0.95, attribute: str = "test_bpd",
) -> dict[str, tuple[float, float]]:
    """``objective -> (mean, CI half-width)`` of ``attribute`` over the runs' seeds.

    The interval is Student's t (:func:`ebflow_lite.metrics.mean_confidence_interval`);
    with a single seed, or a non-finite value, the half-width is NaN.
    """
    groups: dict[str, list[float]] = {}
    for run in runs:
        groups.setdefault(run.objective, []).append(float(getattr(run, attribute)))
    table = {}
    for name, values in groups.items():
        if len(values) < 2 or not all(math.isfinite(v) for v in values):
            table[name] = (sum(values) / len(values), math.nan)
        else:
            table[name] = mean_confidence_interval(values, level)
    return table


# ---------------------------------------------------------------------------------- cost
def training_step(model: nn.Module, objective: Objective, batch: torch.Tensor,
                  lr: float = 1e-4) -> Callable[[], float]:
    """A closure doing one Adam step of ``objective`` on a fixed batch (for timing/census).

    Like :func:`ebflow_lite.fit`, only the parameters' gradients are computed.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    model.train()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = objective(model, batch)
        loss.backward(inputs=params)
        optimizer.step()
        return float(loss.detach())

    return step


def op_counts(fn: Callable[[], object]) -> Counter:
    """Count the aten operators that one call of ``fn`` dispatches (forward and backward).

    Works on the CPU through a ``TorchDispatchMode``. ``cubic_ops(op_counts(step))`` lists
    the operators that factorise or invert a matrix.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    counts: Counter = Counter()

    class _Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            counts[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    with _Count():
        fn()
    return counts


def cubic_ops(counts: Counter) -> Counter:
    """The operators of ``counts`` that factorise or invert a matrix (a determinant's work;
    :data:`ebflow_lite.experiments.bench.CUBIC_OPS`)."""
    return Counter({op: n for op, n in counts.items() if op in CUBIC_OPS})


def interleaved_times(
    steps: Mapping[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
) -> dict[str, list[float]]:
    """Seconds per call of each function, timed round-robin ``repeats`` times.

    Each round calls every function once, in the mapping's order, so a change of the
    machine's load during the measurement slows all of them alike and their ratios stay
    meaningful. ``warmup`` untimed rounds come first.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(warmup + repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                times[name].append(elapsed)
    return times


def load_state(build: Callable[[], nn.Module], run: ImageRun) -> nn.Module:
    """A new model from ``build()`` with the run's best checkpoint loaded, in eval mode."""
    model = build()
    model.load_state_dict(copy.deepcopy(run.state))
    return model.eval()


__all__ = [
    "IMAGE_OBJECTIVES",
    "SMALL_FASHION_SIDE",
    "ImageRun",
    "ImageTrainingSettings",
    "IndependentPixels",
    "center_crop",
    "cubic_ops",
    "fixed_dequantization",
    "image_objective",
    "independent_pixel_bpd",
    "initialize_actnorm",
    "interleaved_times",
    "load_state",
    "op_counts",
    "small_fashion_mnist",
    "summarize_runs",
    "train_image_model",
]
