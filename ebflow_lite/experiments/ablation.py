"""The EMA / Match-after-Preprocessing ablation on the 8x8 digits (the paper's Table 4, small).

Chapter 8 ("Stabilizing score matching: MaP and EMA") trains the FC model
(:func:`ebflow_lite.models.fc_flow`) on :func:`ebflow_lite.data.digits` with SSM, DSM or
FDSSM in three variants, and ML as a baseline:

* ``"none"``: no EMA, no MaP (the logit preprocessing is the model's first layer, so scores
  are taken in data space, through the logit);
* ``"ema"``: an exponential moving average of the parameters, still without MaP;
* ``"ema_map"``: EMA and MaP (the preprocessing runs outside the model; scores are taken in
  logit space).

:func:`run_digits_ablation` runs one (objective, variant, seed); :func:`gradient_norm_trace`
records the global gradient norm of every step (the paper's Figure 3).

Without MaP the perturbations of DSM and FDSSM are added in data space, and a Gaussian step
can leave the box ``[0, K]^D`` outside of which the logit is undefined.
:class:`ReflectedEnergy` then evaluates the energy at the point mirrored back into the box.
With MaP the question never arises: the logit space is all of ``R^D``.

References:
    Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching Objectives",
    NeurIPS 2023 (Table 4, Figure 3, Section "Match after Preprocessing").
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ebflow_lite import objectives
from ebflow_lite.data.digits import DigitsSplit, digits, digits_preprocessing
from ebflow_lite.ema import EMA
from ebflow_lite.flow import EBFlow
from ebflow_lite.metrics import mean_confidence_interval, nll
from ebflow_lite.models import fc_flow
from ebflow_lite.training import fit

Objective = Callable[[nn.Module, torch.Tensor], torch.Tensor]

ABLATION_OBJECTIVES = ("ml", "ssm", "dsm", "fdssm")
ABLATION_VARIANTS = ("none", "ema", "ema_map")


@dataclass(frozen=True)
class DigitsAblationSettings:
    """Hyperparameters shared by every run of the ablation.

    Attributes:
        steps: optimiser steps per run.
        batch_size: samples per step.
        lr: Adam's learning rate.
        logit_alpha: the logit's smoothness (the paper's 0.5 for FC models).
        logit_eps: the logit's squeeze (the paper's ``1e-6``; the library's default
            preprocessing for the digits uses ``0.05``, which hides most of the effect).
        noise: DSM's sigma and FDSSM's eps in logit space (used with MaP).
        fdssm_grad_clip: gradient-norm clip for FDSSM (the paper clips FDSSM at 5).
        ema_decay: the EMA's largest momentum (the paper's 0.999, with warm-up).
        eval_every: evaluate the validation NLL every this many steps; the run reports the
            test NLL of the checkpoint with the best validation NLL.
        redequantize: redraw the dequantization noise ``U[0, 1)`` for every training batch,
            as the paper does (:func:`dequantized_objective`); else train on the split's
            single fixed draw. Validation and test always use the split's fixed draw.
    """

    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    logit_alpha: float = 0.5
    logit_eps: float = 1e-6
    noise: float = 0.3
    fdssm_grad_clip: float = 5.0
    ema_decay: float = 0.999
    eval_every: int = 100
    redequantize: bool = True


@dataclass
class AblationRun:
    """One run of the ablation and its scores (NLL in nats per image on the [0, 17) scale)."""

    objective: str
    variant: str
    seed: int
    test_nll: float
    val_nll: float
    best_step: int
    seconds: float
    skipped_steps: int
    diverged: bool
    losses: list[float] = field(default_factory=list)


def reflect_into_box(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Mirror ``x`` into ``[low, high]`` element-wise (a reflection at each wall, repeated)."""
    if not high > low:
        raise ValueError(f"need low < high, got [{low}, {high}]")
    width = high - low
    t = torch.remainder(x - low, 2.0 * width)
    return low + torch.where(t > width, 2.0 * width - t, t)


class ReflectedEnergy(nn.Module):
    """``E(reflect(x))``: a data-space energy made defined on all of ``R^D``.

    Wraps a model whose energy is only defined on a box (an :class:`EBFlow` without MaP,
    whose first layers are the rescaling and the logit) so that DSM's and FDSSM's data-space
    perturbations that leave the box are mirrored back instead of raising. It has no
    ``preprocess`` method, so the objectives perturb ``x`` itself. The parameters are the
    wrapped model's.

    Args:
        model: a module with ``energy(x) -> (B,)`` and a ``dim`` attribute.
        low: the lower wall.
        high: the upper wall (the reflected points are kept a relative ``1e-6`` inside).
    """

    def __init__(self, model: nn.Module, low: float, high: float) -> None:
        super().__init__()
        if not high > low:
            raise ValueError(f"need low < high, got [{low}, {high}]")
        self.model = model
        self.dim = getattr(model, "dim", None)
        margin = 1e-6 * (high - low)
        self.low, self.high = float(low) + margin, float(high) - margin

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.energy(reflect_into_box(x, self.low, self.high))


def dequantized_objective(objective: Objective) -> Objective:
    """``objective(model, dequantize(x))``: fresh ``U[0, 1)`` noise on every batch of levels.

    ``x`` holds integer levels (``0..16`` for the digits); the noise comes from the global
    torch RNG, which :func:`ebflow_lite.fit` saves and restores with its checkpoints, so a
    resumed run redraws exactly the same noise. Uses :func:`ebflow_lite.data.dequantize`.
    """
    from ebflow_lite.data import dequantize

    def wrapped(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return objective(model, dequantize(x))

    return wrapped


def median_logit_slope(data: torch.Tensor, alpha: float, eps: float, num_levels: int) -> float:
    """The median over the pixels of ``P'(x)``, the derivative of the logit preprocessing.

    ``P(x) = logit(eps + (1 - 2 eps) x / K) / alpha`` has
    ``P'(x) = (1 - 2 eps) / (K alpha x_bar (1 - x_bar))`` with ``x_bar = eps + (1 - 2 eps) x / K``.
    A noise level ``sigma`` in logit space corresponds to ``sigma / P'(x)`` in data space.
    """
    p = eps + (1.0 - 2.0 * eps) * data.double() / num_levels
    return float(((1.0 - 2.0 * eps) / (num_levels * alpha * p * (1.0 - p))).median())


def build_digits_model(variant: str, settings: DigitsAblationSettings) -> EBFlow:
    """The FC model on the digits, with MaP for ``"ema_map"`` and without it otherwise."""
    if variant not in ABLATION_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {ABLATION_VARIANTS}")
    return fc_flow(
        64, preprocessing=digits_preprocessing(settings.logit_alpha, settings.logit_eps),
        match_after_preprocessing=(variant == "ema_map"),
    )


def digits_objective(
    objective: str, model: EBFlow, settings: DigitsAblationSettings, data: DigitsSplit,
) -> tuple[Objective, nn.Module]:
    """The objective for one run and the module it is applied to.

    With MaP the objectives perturb in logit space by ``settings.noise``. Without MaP they
    perturb in data space by ``settings.noise / median h'(x)`` (the same noise, for a typical
    pixel) and see the model through :class:`ReflectedEnergy`.
    """
    if objective not in ABLATION_OBJECTIVES:
        raise ValueError(
            f"unknown objective {objective!r}; expected one of {ABLATION_OBJECTIVES}"
        )
    if objective in ("ml", "ssm"):
        return objectives.get(objective), model
    target: nn.Module = model
    noise = settings.noise
    if not model.match_after_preprocessing:
        target = ReflectedEnergy(model, 0.0, float(data.num_levels))
        noise = noise / median_logit_slope(data.train, settings.logit_alpha,
                                           settings.logit_eps, data.num_levels)
    option = {"dsm": "sigma", "fdssm": "eps"}[objective]
    return objectives.get(objective, **{option: noise}), target


def run_digits_ablation(
    objective: str,
    variant: str,
    seed: int = 0,
    settings: DigitsAblationSettings | None = None,
    data: DigitsSplit | None = None,
    progress: bool = False,
) -> AblationRun:
    """Train the FC model on the digits with one objective and variant; score it.

    Adam with ``settings.lr``; FDSSM's gradient is clipped at ``settings.fdssm_grad_clip``.
    With ``settings.redequantize`` every training batch is dequantized afresh.
    Every ``settings.eval_every`` steps the validation NLL is computed (with the EMA weights
    swapped in when the variant has EMA); the run reports the test NLL of the best
    validation checkpoint, as the paper does. A run that diverges (20 non-finite losses in a
    row) keeps its best checkpoint so far and is marked ``diverged``.

    Args:
        objective: ``"ml"``, ``"ssm"``, ``"dsm"`` or ``"fdssm"``.
        variant: ``"none"``, ``"ema"`` or ``"ema_map"``.
        seed: seeds the mini-batches and the objectives' random draws (the model's
            initialisation is deterministic: ``-I`` weights, unit biases).
        settings: the hyperparameters (default :class:`DigitsAblationSettings`).
        data: the split (default ``digits(seed=0)``, the same for every run).
        progress: show a progress bar.

    Returns:
        An :class:`AblationRun`.
    """
    settings = settings or DigitsAblationSettings()
    data = data or digits(seed=0)
    if settings.eval_every < 1 or settings.steps < settings.eval_every:
        raise ValueError("need 1 <= eval_every <= steps")
    model = build_digits_model(variant, settings)
    loss_fn, trained = digits_objective(objective, model, settings, data)
    train = data.train
    if settings.redequantize:
        # the split's training pixels are levels + one fixed U[0, 1) draw; floor() recovers
        # the levels exactly (the dequantized values lie in [k, k + 1))
        train = data.train.floor()
        loss_fn = dequantized_objective(loss_fn)
    ema = EMA(model, decay=settings.ema_decay) if variant in ("ema", "ema_map") else None
    best = {"val": math.inf, "step": 0, "state": copy.deepcopy(model.state_dict())}

    def evaluate(step: int, loss: float) -> None:
        if step % settings.eval_every:
            return
        if ema is not None:
            with ema.average_parameters(model):
                value, state = _safe_nll(model, data.val), _state(model)
        else:
            value, state = _safe_nll(model, data.val), _state(model)
        if value < best["val"]:
            best.update(val=value, step=step, state=state)

    torch.manual_seed(seed)
    start = time.perf_counter()
    diverged = False
    clip = settings.fdssm_grad_clip if objective == "fdssm" else None
    try:
        history = fit(trained, loss_fn, train, steps=settings.steps,
                      batch_size=settings.batch_size, lr=settings.lr, grad_clip=clip,
                      ema=_ModelEMA(ema, model) if ema is not None else None,
                      progress=progress, callback=evaluate)
        losses, skipped = history.losses, history.skipped
    except ValueError as err:
        if "diverged" not in str(err):
            raise
        diverged, losses, skipped = True, [], 20
    seconds = time.perf_counter() - start
    model.load_state_dict(best["state"])
    return AblationRun(objective, variant, seed, _safe_nll(model, data.test), best["val"],
                       best["step"], seconds, skipped, diverged, losses)


class _ModelEMA:
    """Let :func:`fit` update an EMA of the inner model when it trains a wrapper."""

    def __init__(self, ema: EMA, model: nn.Module) -> None:
        self.ema, self.model = ema, model

    def update(self, _: nn.Module) -> None:
        self.ema.update(self.model)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _safe_nll(model: nn.Module, x: torch.Tensor) -> float:
    try:
        value = nll(model, x)
    except ValueError:  # non-finite parameters make the input checks fail downstream
        return math.inf
    return value if math.isfinite(value) else math.inf


def gradient_norm_trace(
    model: nn.Module,
    objective: Objective,
    data: torch.Tensor,
    steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
) -> list[float]:
    """Train with :func:`ebflow_lite.fit` and return the global gradient norm of every step.

    The norm is ``sqrt(sum over parameters of |grad|^2)`` of the loss gradient, read from the
    parameters' ``.grad`` that :func:`fit` leaves in place after each step (no clipping is
    used here, so it is the raw gradient).

    Args:
        model: the module to train (modified in place).
        objective: ``(model, batch) -> scalar``.
        data: training data, shape ``(N, D)``.
        steps: optimiser steps.
        batch_size: samples per step.
        lr: Adam's learning rate.
        seed: seeds the mini-batches and the objective's random draws.

    References:
        Chao et al., NeurIPS 2023, Figure 3 (the norm of the SSM gradient with and without
        MaP).
    """
    norms: list[float] = []

    def record(step: int, loss: float) -> None:
        total = sum(float((p.grad.detach() ** 2).sum()) for p in model.parameters()
                    if p.grad is not None)
        norms.append(math.sqrt(total))

    torch.manual_seed(seed)
    fit(model, objective, data, steps=steps, batch_size=batch_size, lr=lr, progress=False,
        callback=record)
    return norms


def summarize_ablation(
    runs: Sequence[AblationRun], level: float = 0.95,
) -> dict[tuple[str, str], tuple[float, float]]:
    """``(objective, variant) -> (mean test NLL, CI half-width)`` over seeds (NaN for one seed)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        groups.setdefault((run.objective, run.variant), []).append(run.test_nll)
    table = {}
    for key, values in groups.items():
        if len(values) == 1 or not all(math.isfinite(v) for v in values):
            table[key] = (sum(values) / len(values), math.nan)
        else:
            table[key] = mean_confidence_interval(values, level)
    return table


__all__ = [
    "ABLATION_OBJECTIVES",
    "ABLATION_VARIANTS",
    "AblationRun",
    "DigitsAblationSettings",
    "ReflectedEnergy",
    "build_digits_model",
    "dequantized_objective",
    "digits_objective",
    "gradient_norm_trace",
    "median_logit_slope",
    "reflect_into_box",
    "run_digits_ablation",
    "summarize_ablation",
]
