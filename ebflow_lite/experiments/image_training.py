"""Density estimation on images with the paper's FC, CNN and Glow models: the Table 2 driver.

This module is what ``python -m ebflow_lite.train`` (the ``ebflow-train`` script) runs, and
what chapter 11 ("Density estimation on real images") calls for its CPU-sized version of the
paper's main table. One *run* trains one model with one objective and one seed:

* **data**: an :class:`ebflow_lite.data.ImageSplit` of integer levels (the digits,
  Fashion-MNIST, MNIST, KMNIST or CIFAR-10; :func:`load_data`); each training batch is
  dequantized afresh inside the objective (:func:`make_objective`), so the noise is drawn
  from the global random state that :func:`ebflow_lite.fit`'s checkpoints restore;
* **model**: :func:`build_model`, the paper's FC (``Dense -> SmoothLeakyReLU -> Dense``,
  ``W_0 = -I``, biases 1), CNN (:func:`ebflow_lite.models.cnn_flow`) or Glow
  (:func:`ebflow_lite.models.glow_flow`) model behind the paper's preprocessing (``/K``, the
  ``1e-6`` squeeze, a logit with the model's ``alpha``), applied as MaP or inside the model;
* **training**: :func:`ebflow_lite.fit` with RMSprop or Adam, the paper's step-wise learning
  rate decay (``lr * gamma ** min(epoch, M - 1)``), an optional gradient clip and EMA;
* **evaluation**: every ``eval_every`` steps (and at the last step) the exact validation NLL
  and bits/dim of the EMA weights on a fixed dequantization of the validation images; the
  best checkpoint on validation bits/dim is kept and scored on the test images at the end;
* **log**: the loss, learning rate and training time of every step and each evaluation, as
  CSV or JSON Lines; a checkpoint every ``checkpoint_every`` steps from which a run resumes
  bit for bit (on the CPU).

:data:`PRESETS` holds the paper's hyper-parameters, one preset per cell of its Table 2
(``mnist-fc-ml`` ... ``cifar10-cnn-fdssm``) and for its Glow runs (``mnist-glow-ssm``,
``mnist-glow-dsm``), from the official configuration files (see :func:`preset`).

Conventions: NLL in nats per image of the dequantized data on the ``[0, K)`` scale
(:meth:`ebflow_lite.EBFlow.log_prob`, preprocessing log-det included), bits/dim
``NLL / (D ln 2)``; throughput in training steps (batches) per second of training time,
evaluations excluded.

References:
    Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching Objectives",
    NeurIPS 2023 (Table 2, Figure 2(b), the official configurations); Gresele et al.,
    NeurIPS 2020 (the FC model); Kingma and Dhariwal, "Glow", NeurIPS 2018.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ebflow_lite import objectives as objective_registry
from ebflow_lite.data.digits import digits_images
from ebflow_lite.data.images import ImageSplit, cifar10, dequantize, fashion_mnist, kmnist, mnist
from ebflow_lite.ema import EMA
from ebflow_lite.experiments.ablation import ReflectedEnergy
from ebflow_lite.experiments.images import fixed_dequantization, initialize_actnorm
from ebflow_lite.flow import EBFlow
from ebflow_lite.layers import Dense, SmoothLeakyReLU
from ebflow_lite.metrics import bits_per_dim, nll
from ebflow_lite.models import cnn_flow, fc_flow, glow_flow
from ebflow_lite.preprocessing import image_preprocessing
from ebflow_lite.training import fit

Objective = Callable[[nn.Module, torch.Tensor], torch.Tensor]

DATASETS = ("digits", "fashion-mnist", "mnist", "kmnist", "cifar10")
#: Data sets read from a folder the user passes (``data_root``).
DATASETS_WITH_ROOT = ("mnist", "kmnist", "cifar10")
MODELS = ("fc", "cnn", "glow")
OBJECTIVES = ("ml", "sml", "ssm", "dsm", "fdssm")
SCORE_MATCHING = ("ssm", "dsm", "fdssm")
OPTIMIZERS = ("rmsprop", "adam")
LOG_FORMATS = (".csv", ".jsonl", ".json")


# ---------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run (the CLI's flags, one field each).

    Attributes:
        dataset: one of :data:`DATASETS`.
        data_root: the folder with the files (MNIST, KMNIST: the four IDX files; CIFAR-10:
            the python batches); Fashion-MNIST defaults to Debian's package.
        model: ``"fc"``, ``"cnn"`` or ``"glow"``.
        objective: one of :data:`OBJECTIVES`.
        n_train, n_val, n_test: data sizes (None: all; validation is a seeded random part
            of the official training set, the test set the official one).
        downscale: average-pool the images by this factor first (1: full size).
        data_seed: seeds the validation split.
        steps: optimiser steps in all.
        batch_size: images per step.
        optimizer: ``"rmsprop"`` (the paper's FC and CNN runs) or ``"adam"`` (its Glow).
        lr: the initial learning rate.
        weight_decay: the optimiser's L2 weight decay.
        lr_gamma, lr_epochs: the paper's schedule, ``lr * lr_gamma ** min(e, lr_epochs - 1)``
            in epoch ``e`` (an epoch is ``n_train // batch_size`` steps).
        grad_clip: clip the gradient norm (None: no clipping).
        sigma: DSM's noise standard deviation (in the model's input space: logit space with
            MaP).
        eps: FDSSM's finite-difference radius (same space).
        n_slices: SSM's and FDSSM's random directions per sample.
        energy_weight: add ``energy_weight * mean E(z)`` to the score-matching losses (the
            paper's low-energy regulariser; see :data:`PRESETS` for its effective values).
        logit_alpha, logit_eps: the logit preprocessing (the paper: alpha 0.5 FC, 0.75 CNN,
            1.0 Glow; eps 1e-6).
        slr_alpha: the smooth leaky ReLU's slope.
        fc_residual: the FC model's activation adds the identity (the paper's CIFAR FC).
        kernel_size: the CNN's K.
        glow_levels, glow_depth, glow_hidden: the Glow model's size (the paper: 2, 16, 512).
        data_init: rescale the dense and convolution layers on the first batch so that each
            one's output has zero mean and unit variance per channel
            (:func:`standardize_linear_layers`; not in the paper, off in the presets).
        ema, ema_decay: an EMA of the parameters (with warm-up) for evaluation.
        map: Match after Preprocessing (else the preprocessing is the model's first layers).
        eval_every: evaluate every this many steps (and at the last step).
        n_eval: validation images per evaluation (None: all).
        eval_batch_size: images per forward pass during evaluation.
        eval_seed: seeds the fixed dequantization of the validation and test images.
        checkpoint_every: save the resumable checkpoint every this many steps (None: at
            every evaluation).
        max_minutes: stop at the first checkpoint after this much training time (None: run
            all ``steps``); needs checkpoints, a temporary file is used when none is given.
        seed: seeds the model, the batches and every random draw of the objectives.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (None: the best available).
    """

    dataset: str = "fashion-mnist"
    data_root: str | None = None
    model: str = "fc"
    objective: str = "ml"
    n_train: int | None = None
    n_val: int = 10000
    n_test: int | None = None
    downscale: int = 1
    data_seed: int = 0
    steps: int = 25000
    batch_size: int = 100
    optimizer: str = "rmsprop"
    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_gamma: float = 1.0
    lr_epochs: int = 1
    grad_clip: float | None = None
    sigma: float = 1.0
    eps: float = 1.0
    n_slices: int = 1
    energy_weight: float = 0.0
    logit_alpha: float = 0.5
    logit_eps: float = 1e-6
    slr_alpha: float = 0.3
    fc_residual: bool = False
    kernel_size: int = 7
    glow_levels: int = 2
    glow_depth: int = 16
    glow_hidden: int = 512
    data_init: bool = False
    ema: bool = True
    ema_decay: float = 0.999
    map: bool = True
    eval_every: int = 500
    n_eval: int | None = None
    eval_batch_size: int = 500
    eval_seed: int = 12345
    checkpoint_every: int | None = None
    max_minutes: float | None = None
    seed: int = 0
    device: str | None = "cpu"

    def __post_init__(self) -> None:
        check_config(self)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dictionary."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise a ValueError."""
        unknown = sorted(set(values) - set(config_fields()))
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}")
        return cls(**values)


def config_fields() -> dict[str, dataclasses.Field]:
    """The fields of :class:`TrainConfig` by name, in order."""
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _positive(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def check_config(config: TrainConfig) -> None:
    """Raise a ValueError naming the first field of ``config`` that is out of range."""
    c = config
    _need(c.dataset in DATASETS, f"dataset must be one of {DATASETS}, got {c.dataset!r}")
    _need(c.model in MODELS, f"model must be one of {MODELS}, got {c.model!r}")
    _need(c.objective in OBJECTIVES,
          f"objective must be one of {OBJECTIVES}, got {c.objective!r}")
    _need(c.optimizer in OPTIMIZERS,
          f"optimizer must be one of {OPTIMIZERS}, got {c.optimizer!r}")
    for name in ("steps", "batch_size", "lr_epochs", "n_slices", "kernel_size", "glow_levels",
                 "glow_depth", "glow_hidden", "eval_every", "eval_batch_size", "downscale"):
        _need(_positive_int(getattr(c, name)),
              f"{name} must be a positive int, got {getattr(c, name)!r}")
    for name in ("n_train", "n_test", "n_eval", "checkpoint_every"):
        value = getattr(c, name)
        _need(value is None or _positive_int(value),
              f"{name} must be a positive int or None, got {value!r}")
    _need(isinstance(c.n_val, int) and not isinstance(c.n_val, bool) and c.n_val >= 1,
          f"n_val must be a positive int (validation selects the best checkpoint), got "
          f"{c.n_val!r}")
    for name in ("seed", "data_seed", "eval_seed"):
        value = getattr(c, name)
        _need(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
              f"{name} must be a non-negative int, got {value!r}")
    for name in ("lr", "sigma", "eps", "logit_alpha", "lr_gamma"):
        _need(_positive(getattr(c, name)), f"{name} must be positive, got {getattr(c, name)!r}")
    _need(c.grad_clip is None or _positive(c.grad_clip),
          f"grad_clip must be positive or None, got {c.grad_clip!r}")
    _need(c.max_minutes is None or _positive(c.max_minutes),
          f"max_minutes must be positive or None, got {c.max_minutes!r}")
    _need(isinstance(c.weight_decay, (int, float)) and c.weight_decay >= 0,
          f"weight_decay must be >= 0, got {c.weight_decay!r}")
    _need(isinstance(c.energy_weight, (int, float)) and c.energy_weight >= 0,
          f"energy_weight must be >= 0, got {c.energy_weight!r}")
    _need(0 <= c.logit_eps < 0.5, f"logit_eps must lie in [0, 0.5), got {c.logit_eps!r}")
    _need(0 < c.slr_alpha < 1, f"slr_alpha must lie in (0, 1), got {c.slr_alpha!r}")
    _need(0 <= c.ema_decay < 1, f"ema_decay must lie in [0, 1), got {c.ema_decay!r}")
    _need(c.kernel_size % 2 == 1, f"kernel_size must be odd, got {c.kernel_size}")
    _need(c.data_root is None or isinstance(c.data_root, str),
          f"data_root must be a path or None, got {c.data_root!r}")
    _need(c.device is None or isinstance(c.device, str),
          f"device must be a name or None, got {c.device!r}")


# ---------------------------------------------------------------------------------- presets
#: Iterations per epoch of the paper's runs: 50,000 MNIST and 40,000 CIFAR-10 training
#: images in batches of 100.
_PAPER_TRAIN = {"mnist": 50000, "cifar10": 40000}


def _paper_rows() -> dict[str, dict[str, Any]]:
    """The official configurations (paper-facts 3.5), one entry per Table 2 cell and Glow run.

    Each preset runs ``lr_epochs`` epochs, to the end of the learning-rate schedule; the
    official files name 1000 to 10000 epochs, beyond what the paper's runs reached (its
    Figure 2(b) shows 3 hours of MNIST FC training), so ``steps`` is meant to be set.
    """
    rows: dict[str, dict[str, Any]] = {}
    common = {"batch_size": 100, "optimizer": "rmsprop", "lr": 1e-4, "slr_alpha": 0.3,
              "logit_eps": 1e-6, "ema": True, "ema_decay": 0.999, "map": True}
    # MNIST FC: one config for ml/sml/ssm/dsm, FDSSM clips at 5.
    for objective in OBJECTIVES:
        rows[f"mnist-fc-{objective}"] = {
            **common, "dataset": "mnist", "model": "fc", "objective": objective,
            "lr_gamma": 0.95, "lr_epochs": 50, "sigma": 1.0, "eps": 1.0, "logit_alpha": 0.5,
            "grad_clip": 5.0 if objective == "fdssm" else None}
    # MNIST CNN.
    cnn = {"ml": (1e-5, 0.925, None), "sml": (1e-5, 0.925, None), "dsm": (1e-5, 0.95, None),
           "ssm": (0.0, 0.95, None), "fdssm": (0.0, 0.95, 5.0)}
    for objective, (wd, gamma, clip) in cnn.items():
        rows[f"mnist-cnn-{objective}"] = {
            **common, "dataset": "mnist", "model": "cnn", "objective": objective,
            "weight_decay": wd, "lr_gamma": gamma, "lr_epochs": 50, "sigma": 0.1, "eps": 0.1,
            "logit_alpha": 0.75, "kernel_size": 7, "grad_clip": clip}
    # CIFAR-10 FC (residual activation; lambda 0.001).
    for objective in OBJECTIVES:
        gamma, epochs = (0.85, 30) if objective in ("ssm", "dsm") else (0.7, 20)
        rows[f"cifar10-fc-{objective}"] = {
            **common, "dataset": "cifar10", "model": "fc", "objective": objective,
            "lr_gamma": gamma, "lr_epochs": epochs, "sigma": 0.1, "eps": 0.1,
            "logit_alpha": 0.5, "fc_residual": True,
            "energy_weight": _effective_lambda(objective, 0.001, channels=3, eps=0.1)}
    # CIFAR-10 CNN.
    cifar_cnn = {"ml": (0.8, 20), "sml": (0.8, 20), "dsm": (0.8, 20), "ssm": (0.9, 20),
                 "fdssm": (0.85, 50)}
    for objective, (gamma, epochs) in cifar_cnn.items():
        rows[f"cifar10-cnn-{objective}"] = {
            **common, "dataset": "cifar10", "model": "cnn", "objective": objective,
            "lr_gamma": gamma, "lr_epochs": epochs, "sigma": 0.1, "eps": 0.1,
            "logit_alpha": 0.75, "kernel_size": 7,
            "energy_weight": _effective_lambda(objective, 0.001, channels=3, eps=0.1)}
    # MNIST Glow (the paper's Figure 4): Adam 1e-5, clip 500, lambda 0.1, 80 epochs.
    for objective, sigma in (("ssm", 1.0), ("dsm", 0.1)):
        rows[f"mnist-glow-{objective}"] = {
            **common, "dataset": "mnist", "model": "glow", "objective": objective,
            "optimizer": "adam", "lr": 1e-5, "lr_gamma": 1.0, "lr_epochs": 10, "sigma": sigma,
            "eps": 1.0, "grad_clip": 500.0, "logit_alpha": 1.0, "glow_levels": 2,
            "glow_depth": 16, "glow_hidden": 512,
            "energy_weight": _effective_lambda(objective, 0.1, channels=1, eps=1.0),
            "_epochs": 80}
    for name, row in rows.items():
        dataset = row["dataset"]
        epochs = row.pop("_epochs", row["lr_epochs"])
        iterations = _PAPER_TRAIN[dataset] // row["batch_size"]
        row.update(n_val=10000, steps=epochs * iterations, eval_every=iterations)
        rows[name] = row
    return rows


def _effective_lambda(objective: str, lam: float, channels: int, eps: float) -> float:
    """The official low-energy coefficient on ``mean E`` in our per-dimension losses.

    The official code adds ``lam * mean E`` to a per-pixel loss before reducing it, which
    amounts to ``lam / C`` for SSM and DSM (C channels) and ``lam / eps**2`` for FDSSM
    (paper-facts 3.2); it does not regularise ML or SML.
    """
    if objective in ("ssm", "dsm"):
        return lam / channels
    if objective == "fdssm":
        return lam / eps**2
    return 0.0


#: What the paper's runs also did that this driver does not (printed by the CLI).
PRESET_NOTES = {
    "cifar10-fc": "the paper augments CIFAR-10 (flips, pad, translate, crop); not done here",
    "cifar10-cnn-ml": "the paper's run used spectral normalisation; not done here",
    "cifar10-cnn-ssm": "the paper's run used spectral normalisation; not done here",
    "cifar10-cnn-dsm": "the paper's run used spectral normalisation; not done here",
    "cifar10-cnn": "the paper augments CIFAR-10 (flips, pad, translate, crop); not done here",
}

#: The paper's presets by name: ``{dataset}-{model}-{objective}`` (see :func:`preset`).
PRESETS: dict[str, dict[str, Any]] = _paper_rows()


def preset(name: str, **overrides: Any) -> TrainConfig:
    """The paper's configuration for one row of its Table 2 (or a Glow run), with overrides.

    ``preset("mnist-fc-ssm", steps=1000, device="cuda")``. The MNIST presets apply to any
    28x28 grey data set: pass ``dataset="fashion-mnist"`` (or ``"kmnist"``) to keep every
    other setting.

    Raises:
        ValueError: an unknown name or field.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    unknown = sorted(set(overrides) - set(config_fields()))
    if unknown:
        raise ValueError(f"unknown configuration keys {unknown}")
    return TrainConfig(**{**PRESETS[name], **overrides})


def preset_notes(name: str) -> list[str]:
    """What the paper's run of preset ``name`` did that this driver leaves out."""
    return [note for key, note in PRESET_NOTES.items() if name.startswith(key)]


def preset_name_for(dataset: str, model: str, objective: str) -> str | None:
    """The paper's preset for a data set, model and objective (MNIST's for any 28x28 grey
    data set and the digits), or None where the paper has none (Glow with ML, SML, FDSSM)."""
    family = "cifar10" if dataset == "cifar10" else "mnist"
    name = f"{family}-{model}-{objective}"
    return name if name in PRESETS else None


# ---------------------------------------------------------------------------------- data
def load_data(config: TrainConfig) -> ImageSplit:
    """The data set of ``config`` as integer levels, split into train, validation and test.

    Raises:
        ValueError: a data set that needs ``data_root`` without one.
        FileNotFoundError: the files are missing (the message says where they were sought).
    """
    options = {"seed": config.data_seed, "n_val": config.n_val, "n_train": config.n_train,
               "n_test": config.n_test, "downscale": config.downscale}
    if config.dataset == "digits":
        data = digits_images(seed=config.data_seed)
        return _subset(data, config)
    if config.dataset == "fashion-mnist":
        return fashion_mnist(config.data_root, **options)
    if config.data_root is None:
        raise ValueError(f"dataset {config.dataset!r} is read from local files: pass "
                         "data_root (the CLI's --data-root) with the folder that holds them")
    loader = {"mnist": mnist, "kmnist": kmnist, "cifar10": cifar10}[config.dataset]
    return loader(config.data_root, **options)


def _subset(data: ImageSplit, config: TrainConfig) -> ImageSplit:
    """The digits have fixed fractions; ``n_train``, ``n_val``, ``n_test`` cut them down."""
    def cut(x: torch.Tensor, y: torch.Tensor, n: int | None) -> tuple[torch.Tensor, ...]:
        return (x, y) if n is None else (x[:n], y[:n])

    train, y_train = cut(data.train, data.train_labels, config.n_train)
    val, y_val = cut(data.val, data.val_labels, config.n_val)
    test, y_test = cut(data.test, data.test_labels, config.n_test)
    return replace(data, train=train, val=val, test=test, train_labels=y_train,
                   val_labels=y_val, test_labels=y_test)


def model_view(x: torch.Tensor, model: str) -> torch.Tensor:
    """Images ``(N, C, H, W)`` as the model reads them: flat ``(N, D)`` for the FC model."""
    return x.reshape(x.shape[0], -1) if model == "fc" else x


# ---------------------------------------------------------------------------------- model
def build_model(config: TrainConfig, event_shape: tuple[int, int, int],
                num_levels: int) -> EBFlow:
    """The model of ``config`` for images of ``event_shape`` with ``num_levels`` levels.

    FC: :func:`ebflow_lite.models.fc_flow` on ``D = C H W`` features (with a residual
    activation when ``fc_residual``); CNN: :func:`ebflow_lite.models.cnn_flow`; Glow:
    :func:`ebflow_lite.models.glow_flow`. All behind
    :func:`ebflow_lite.preprocessing.image_preprocessing` ``(num_levels, logit_alpha,
    logit_eps)``, as MaP when ``config.map``. Weights are drawn from ``config.seed`` without
    touching the global random state.
    """
    shape = tuple(int(v) for v in event_shape)
    dim = math.prod(shape)
    model_shape = (dim,) if config.model == "fc" else shape
    pre = image_preprocessing(num_levels, alpha=config.logit_alpha, eps=config.logit_eps,
                              event_shape=model_shape)
    if config.model == "fc" and not config.fc_residual:
        return fc_flow(dim, alpha=config.slr_alpha, preprocessing=pre,
                       match_after_preprocessing=config.map)
    if config.model == "fc":
        first, second = Dense(dim, init="neg_identity"), Dense(dim, init="neg_identity")
        with torch.no_grad():
            first.bias.fill_(1.0)  # type: ignore[union-attr]
            second.bias.fill_(1.0)  # type: ignore[union-attr]
        activation = SmoothLeakyReLU(config.slr_alpha, dim=dim, residual=True)
        return EBFlow([first, activation, second], preprocessing=pre,
                      match_after_preprocessing=config.map)
    if config.model == "cnn":
        return cnn_flow(shape, config.kernel_size, alpha=config.slr_alpha, preprocessing=pre,
                        match_after_preprocessing=config.map, seed=config.seed)
    return glow_flow(shape, n_levels=config.glow_levels, depth=config.glow_depth,
                     hidden=config.glow_hidden, preprocessing=pre,
                     match_after_preprocessing=config.map, seed=config.seed)


@torch.no_grad()
def standardize_linear_layers(model: EBFlow, levels: torch.Tensor) -> None:
    """Data-dependent initialisation: rescale every dense and KxK convolution layer in turn.

    The batch of levels is dequantized and preprocessed, then pushed through the layers in
    order; at each :class:`ebflow_lite.layers.Dense` or :class:`ebflow_lite.layers.ConvKxK`
    the output features (channels) are rescaled to unit standard deviation and shifted to
    zero mean over the batch, by scaling the rows of the weight (the output channels of the
    kernel) and setting the bias. Each layer stays the same kind of map, now
    ``diag(1/s) (W h + b) - m/s``, so the architecture is unchanged; only the starting point
    moves from ``-I`` (whose latents have the logit's large scale, tens of units) to one
    whose latents are standardised on the data, as an ActNorm would make them.
    """
    from ebflow_lite.layers import ConvKxK

    h = model.preprocess(dequantize(levels))
    for layer in model.layers:
        if isinstance(layer, (Dense, ConvKxK)) and layer.bias is not None:
            out = layer.linear_map(h)
            dims = (0,) if out.dim() == 2 else (0, 2, 3)
            mean, std = out.mean(dim=dims), out.std(dim=dims).clamp_min(1e-6)
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            layer.weight.div_(std.view(shape))
            layer.bias.sub_(mean).div_(std)
            h = layer.linear_map(h)
        elif getattr(layer, "is_linear", False):
            h = layer.linear_map(h)
        elif getattr(layer, "factors_out", False):
            h = layer.split(h)[0]
        else:
            h = layer(h)[0]


def count_parameters(model: nn.Module) -> int:
    """The number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------- objective
def make_objective(config: TrainConfig, model: EBFlow,
                   num_levels: int) -> tuple[Objective, nn.Module]:
    """``(objective, trained module)``: the loss on a batch of *levels*, and what it trains.

    The objective dequantizes the batch (``x + U[0, 1)``, from the global random state, so
    checkpoints replay it) and applies the library objective with the configured options;
    for the score-matching objectives ``energy_weight * mean E(z)`` is added when set. With
    MaP off, DSM's and FDSSM's perturbations are in data space and can leave the box
    ``[0, K]``, outside which the logit is undefined: the module trained is then an
    :class:`ebflow_lite.experiments.ablation.ReflectedEnergy` around the model (same
    parameters).
    """
    name = config.objective
    options: dict[str, Any] = {
        "ssm": {"n_slices": config.n_slices}, "dsm": {"sigma": config.sigma},
        "fdssm": {"eps": config.eps, "n_slices": config.n_slices}}.get(name, {})
    inner = objective_registry.get(name, **options)
    trained: nn.Module = model
    if not config.map and name in ("dsm", "fdssm"):
        trained = ReflectedEnergy(model, 0.0, float(num_levels))
        trained.event_shape = model.event_shape  # images, not flat vectors
    weight = float(config.energy_weight) if name in SCORE_MATCHING else 0.0

    def objective(module: nn.Module, levels: torch.Tensor) -> torch.Tensor:
        x = dequantize(levels)
        loss = inner(module, x)
        if weight > 0:
            loss = loss + weight * model.energy(model.preprocess(x)).mean()
        return loss

    objective.__name__ = f"dequantized_{name}"
    return objective, trained


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """RMSprop (torch defaults otherwise, as the paper) or Adam with ``config.lr``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of step ``step + 1`` after ``step`` steps: the paper's MultiStepLR.

    ``lr * gamma ** min(e, M - 1)`` with ``e = step // steps_per_epoch`` finished epochs and
    ``M = lr_epochs``: the rate falls by ``gamma`` after each of the first ``M - 1`` epochs
    and then stays.
    """
    epoch = step // max(1, steps_per_epoch)
    return config.lr * config.lr_gamma ** min(epoch, config.lr_epochs - 1)


# ---------------------------------------------------------------------------------- evaluation
def evaluate(model: nn.Module, x: torch.Tensor, dim: int, batch_size: int = 500) -> dict:
    """Exact ``{"nll", "bpd"}`` of dequantized images ``x`` (inf when not finite).

    ``nll`` is in nats per image (:func:`ebflow_lite.metrics.nll`), ``bpd`` its bits per
    dimension. A model whose parameters became non-finite scores inf instead of raising.
    """
    try:
        value = nll(model, x, batch_size=batch_size)
    except ValueError:  # non-finite parameters fail the model's input checks downstream
        value = math.inf
    if not math.isfinite(value):
        return {"nll": math.inf, "bpd": math.inf}
    return {"nll": value, "bpd": bits_per_dim(value, dim)}


# ---------------------------------------------------------------------------------- the run
@dataclass
class RunResult:
    """One run: its configuration, its scores and its curves.

    Attributes:
        config: the :class:`TrainConfig`.
        test_nll, test_bpd: of the best checkpoint on validation bits/dim (EMA weights when
            EMA is on), on all test images.
        val_nll, val_bpd, best_step: that checkpoint's validation scores and step.
        steps: steps done (fewer than ``config.steps`` after a divergence or time limit).
        train_seconds: training time, evaluations excluded.
        batches_per_second: ``steps / train_seconds``.
        evals: one dict per evaluation: ``step``, ``seconds`` (training time so far),
            ``val_nll``, ``val_bpd``.
        losses: the loss of every step; ``seconds``: the training time after every step.
        skipped: steps skipped for a non-finite loss or gradient.
        diverged: the run stopped after 20 non-finite steps in a row.
        stopped_early: the time limit stopped the run.
        num_parameters: trainable parameters of the model.
        state: the best checkpoint's ``state_dict``.
    """

    config: TrainConfig
    test_nll: float
    test_bpd: float
    val_nll: float
    val_bpd: float
    best_step: int
    steps: int
    train_seconds: float
    batches_per_second: float
    evals: list[dict]
    losses: list[float]
    seconds: list[float]
    skipped: int
    diverged: bool
    stopped_early: bool
    num_parameters: int
    state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The scalar results as a JSON-ready dictionary (no curves, no weights)."""
        keys = ("test_nll", "test_bpd", "val_nll", "val_bpd", "best_step", "steps",
                "train_seconds", "batches_per_second", "skipped", "diverged",
                "stopped_early", "num_parameters")
        return {"config": self.config.to_dict(), **{k: getattr(self, k) for k in keys}}


class _Tracker:
    """What the run keeps besides fit's own state: EMA, best checkpoint, curves, time.

    It is handed to :func:`ebflow_lite.fit` as its ``ema`` argument, so fit updates the EMA
    after every step and saves and restores :meth:`state_dict` inside its checkpoints,
    atomically with the model, the optimiser and the random states: a resumed run continues
    with the very best checkpoint, evaluations and clock it had.
    """

    def __init__(self, model: nn.Module, ema: EMA | None) -> None:
        self.model, self.ema = model, ema
        self.best = {"val_bpd": math.inf, "val_nll": math.inf, "step": 0,
                     "state": _snapshot(model)}
        self.evals: list[dict] = []
        self.seconds: list[float] = []
        self.train_seconds = 0.0
        self.skipped_before = 0
        self.restored_step: int | None = None

    def update(self, _: nn.Module) -> None:
        if self.ema is not None:
            self.ema.update(self.model)

    def state_dict(self) -> dict:
        return {"ema": None if self.ema is None else self.ema.state_dict(),
                "best": {**self.best, "state": {k: v.clone()
                                                for k, v in self.best["state"].items()}},
                "evals": copy.deepcopy(self.evals), "seconds": list(self.seconds),
                "train_seconds": self.train_seconds}

    def load_state_dict(self, state: dict) -> None:
        if (state["ema"] is None) != (self.ema is None):
            raise ValueError("the checkpoint was written with EMA "
                             f"{'off' if state['ema'] is None else 'on'}; resume with the "
                             "same setting")
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.best = {**state["best"],
                     "state": {k: v.clone() for k, v in state["best"]["state"].items()}}
        self.evals = copy.deepcopy(state["evals"])
        self.seconds = list(state["seconds"])
        self.train_seconds = float(state["train_seconds"])
        self.restored_step = len(self.seconds)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _OutOfTime(Exception):
    """Raised between fit segments when the time limit is reached."""


class StepLog:
    """The per-step log file: CSV (``.csv``) or JSON Lines (``.jsonl``, ``.json``).

    One row per step, ``step, loss, lr, seconds`` (training time so far), with ``val_nll``
    and ``val_bpd`` filled at evaluation steps. Rows are appended as training goes; on
    resumption the file is cut back to the checkpoint's step first, so it always matches
    the run.
    """

    COLUMNS = ("step", "loss", "lr", "seconds", "val_nll", "val_bpd")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.suffix not in LOG_FORMATS:
            raise ValueError(f"log file must end in one of {LOG_FORMATS}, got {self.path}")
        self.csv = self.path.suffix == ".csv"

    def read(self) -> list[dict]:
        """Every row as a dict (numbers as floats, ``step`` as an int, blanks left out)."""
        if not self.path.is_file():
            return []
        rows = []
        with open(self.path, encoding="utf-8", newline="") as handle:
            if self.csv:
                for row in csv.DictReader(handle):
                    rows.append({k: (int(v) if k == "step" else float(v))
                                 for k, v in row.items() if v not in ("", None)})
            else:
                rows = [json.loads(line) for line in handle if line.strip()]
        return rows

    def truncate(self, step: int) -> None:
        """Keep the rows up to ``step`` (rewrite the file; create it empty if missing)."""
        self._write([row for row in self.read() if row["step"] <= step], mode="w")

    def append(self, rows: list[dict]) -> None:
        self._write(rows, mode="a")

    def _write(self, rows: list[dict], mode: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = mode == "w" or not self.path.is_file() or self.path.stat().st_size == 0
        with open(self.path, mode, encoding="utf-8", newline="") as handle:
            if self.csv:
                writer = csv.DictWriter(handle, fieldnames=self.COLUMNS)
                if fresh:
                    writer.writeheader()
                for row in rows:
                    writer.writerow({k: row.get(k, "") for k in self.COLUMNS})
            else:
                for row in rows:
                    handle.write(json.dumps(row) + "\n")


def run(
    config: TrainConfig,
    data: ImageSplit | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    log: str | os.PathLike[str] | None = None,
    progress: bool = False,
    on_eval: Callable[[dict], None] | None = None,
) -> RunResult:
    """Train one model with one objective and seed; return its scores and curves.

    Args:
        config: the run (see :class:`TrainConfig`).
        data: the images (None: :func:`load_data`). The validation part is cut to
            ``config.n_eval`` images and dequantized once (seed ``config.eval_seed``), the
            test part dequantized once (``config.eval_seed + 1``): every evaluation of every
            run scores the same points.
        checkpoint: a file for :func:`ebflow_lite.fit`'s resumable checkpoint, written
            every ``config.checkpoint_every`` steps (default: at each evaluation) and at the
            end; if it exists, the run resumes from it, bit for bit on the CPU. Its
            configuration must then be the same, except ``steps`` and ``max_minutes``.
        log: a per-step log file (:class:`StepLog`: ``.csv``, ``.jsonl`` or ``.json``).
        progress: show a progress bar with the loss and the last validation bits/dim.
        on_eval: called with each evaluation's dict (``step``, ``seconds``, ``val_nll``,
            ``val_bpd``).

    Returns:
        A :class:`RunResult`. A run that diverges (20 non-finite steps in a row) keeps its
        best checkpoint and is marked ``diverged``.
    """
    from ebflow_lite.device import pick_device

    device = pick_device(config.device) if config.device is not None else pick_device()
    data = data if data is not None else load_data(config)
    if data.train.shape[0] < config.batch_size:
        raise ValueError(f"the training set has {data.train.shape[0]} images, fewer than "
                         f"batch_size={config.batch_size}")
    dim = data.dim
    n_eval = data.val.shape[0] if config.n_eval is None else min(config.n_eval,
                                                                  data.val.shape[0])
    val = model_view(fixed_dequantization(data.val[:n_eval], config.eval_seed),
                     config.model).to(device)
    test = model_view(fixed_dequantization(data.test, config.eval_seed + 1),
                      config.model).to(device)
    train = model_view(data.train, config.model).to(device)
    steps_per_epoch = train.shape[0] // config.batch_size

    torch.manual_seed(config.seed)
    model = build_model(config, data.event_shape, data.num_levels).to(device)
    first = torch.randperm(train.shape[0])[:config.batch_size].to(device)
    if config.data_init:
        standardize_linear_layers(model, train[first])
    if config.model == "glow":
        initialize_actnorm(model, train[first])
    loss_fn, trained = make_objective(config, model, data.num_levels)
    optimizer = make_optimizer(config, trained)
    ema = EMA(model, decay=config.ema_decay) if config.ema else None
    tracker = _Tracker(model, ema)
    step_log = StepLog(log) if log is not None else None
    every = config.checkpoint_every or config.eval_every

    temporary = None
    if config.max_minutes is not None and checkpoint is None:
        temporary = tempfile.TemporaryDirectory(prefix="ebflow-train-")
        checkpoint = Path(temporary.name) / "checkpoint.pt"
    bar = _progress_bar(config.steps, progress)
    # "logged": the last step in the log file (None: not known yet, read it on resumption)
    clock: dict[str, Any] = {"tick": 0.0, "pending": [], "logged": None}

    def on_step(step: int, loss: float) -> None:
        now = time.perf_counter()
        if tracker.restored_step is not None:  # the first step after fit loaded a checkpoint
            restored = tracker.restored_step
            if step_log is not None and (clock["logged"] is None or clock["logged"] > restored):
                step_log.truncate(restored)
            clock["logged"] = restored
            bar.update(restored - bar.n)
            tracker.restored_step = None
        tracker.train_seconds += now - clock["tick"]
        tracker.seconds.append(tracker.train_seconds)
        row = {"step": step, "loss": loss,
               "lr": optimizer.param_groups[0]["lr"], "seconds": tracker.train_seconds}
        next_lr = learning_rate(config, step, steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = next_lr
        if step % config.eval_every == 0 or step == config.steps:
            entry = _evaluate_tracked(model, ema, val, dim, config, step, tracker)
            row.update(val_nll=entry["val_nll"], val_bpd=entry["val_bpd"])
            bar.set_postfix(loss=f"{loss:.4g}", val_bpd=f"{entry['val_bpd']:.4f}")
            if on_eval is not None:
                on_eval(dict(entry))
        bar.update(1)
        clock["pending"].append(row)
        if step_log is not None and (step % every == 0 or step == config.steps
                                     or "val_bpd" in row):
            step_log.append(clock["pending"])
            clock["logged"], clock["pending"] = step, []
        clock["tick"] = time.perf_counter()

    diverged = stopped_early = False
    history_steps, skipped = 0, 0
    resuming = checkpoint is not None and Path(checkpoint).is_file()
    if resuming:
        _check_resumable(checkpoint, config)
    elif step_log is not None:
        step_log.truncate(0)
        clock["logged"] = 0
    _write_config(checkpoint, config)
    try:
        targets = _segments(config, every)
        for target in targets:
            clock["tick"] = time.perf_counter()
            history = fit(trained, loss_fn, train, steps=target, batch_size=config.batch_size,
                          optimizer=optimizer, grad_clip=config.grad_clip, ema=tracker,
                          checkpoint=checkpoint, checkpoint_every=every, progress=False,
                          callback=on_step)
            history_steps, skipped = history.step, history.skipped
            if (config.max_minutes is not None and target < config.steps
                    and tracker.train_seconds >= 60.0 * config.max_minutes):
                raise _OutOfTime
    except _OutOfTime:
        stopped_early = True
    except ValueError as err:
        if "diverged" not in str(err):
            raise
        diverged, skipped = True, 20
        history_steps = len(tracker.seconds)
    finally:
        bar.close()
        if step_log is not None and clock["pending"]:
            step_log.append(clock["pending"])
        if temporary is not None:
            temporary.cleanup()

    model.load_state_dict(tracker.best["state"])
    scores = evaluate(model, test, dim, config.eval_batch_size)
    done = max(history_steps, len(tracker.seconds))
    seconds = tracker.train_seconds
    losses = list(history.losses) if not diverged else []
    return RunResult(
        config=config, test_nll=scores["nll"], test_bpd=scores["bpd"],
        val_nll=tracker.best["val_nll"], val_bpd=tracker.best["val_bpd"],
        best_step=tracker.best["step"], steps=done, train_seconds=seconds,
        batches_per_second=done / seconds if seconds > 0 else math.nan,
        evals=tracker.evals, losses=losses, seconds=list(tracker.seconds), skipped=skipped,
        diverged=diverged, stopped_early=stopped_early,
        num_parameters=count_parameters(model), state=tracker.best["state"])


def training_step(config: TrainConfig, data: ImageSplit) -> Callable[[], float]:
    """One training step exactly as :func:`run` takes it, as a closure (for timing).

    The closure draws a batch of levels from ``data.train`` (its own generator), then does
    what :func:`ebflow_lite.fit` does per step with the model, objective, optimiser and EMA
    of ``config``: ``zero_grad``, the dequantized loss, ``backward`` for the parameters
    only, the optional gradient clip, the optimiser step and the EMA update. It returns the
    loss. Throughput is ``1 / seconds per call``; evaluation is not part of a step.
    """
    from ebflow_lite.device import pick_device
    from ebflow_lite.training import BatchStream

    device = pick_device(config.device) if config.device is not None else pick_device()
    train = model_view(data.train, config.model).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(config, data.event_shape, data.num_levels).to(device)
        if config.data_init:
            standardize_linear_layers(model, train[:config.batch_size])
        if config.model == "glow":
            initialize_actnorm(model, train[:config.batch_size])
    loss_fn, trained = make_objective(config, model, data.num_levels)
    optimizer = make_optimizer(config, trained)
    ema = EMA(model, decay=config.ema_decay) if config.ema else None
    params = [p for p in trained.parameters() if p.requires_grad]
    stream = BatchStream(train, config.batch_size,
                         generator=torch.Generator().manual_seed(config.seed))
    trained.train()

    def step() -> float:
        batch = next(stream)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(trained, batch)
        loss.backward(inputs=params)
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        return float(loss.detach())

    return step


def _segments(config: TrainConfig, every: int) -> list[int]:
    """Where fit stops: once at ``steps``, or at every checkpoint under a time limit."""
    if config.max_minutes is None:
        return [config.steps]
    return [*range(every, config.steps, every), config.steps]


def _evaluate_tracked(model: EBFlow, ema: EMA | None, val: torch.Tensor, dim: int,
                      config: TrainConfig, step: int, tracker: _Tracker) -> dict:
    """Score the (EMA) weights on the validation images; keep the best; log the entry."""
    def score() -> dict:
        return evaluate(model, val, dim, config.eval_batch_size)

    if ema is not None:
        with ema.average_parameters(model):
            scores = score()
            if scores["bpd"] < tracker.best["val_bpd"]:
                tracker.best = {"val_bpd": scores["bpd"], "val_nll": scores["nll"],
                                "step": step, "state": _snapshot(model)}
    else:
        scores = score()
        if scores["bpd"] < tracker.best["val_bpd"]:
            tracker.best = {"val_bpd": scores["bpd"], "val_nll": scores["nll"], "step": step,
                            "state": _snapshot(model)}
    model.train()
    entry = {"step": step, "seconds": tracker.train_seconds, "val_nll": scores["nll"],
             "val_bpd": scores["bpd"]}
    tracker.evals.append(entry)
    return entry


#: Fields that may change when a run is resumed (a longer run, another time budget).
RESUMABLE_CHANGES = ("steps", "max_minutes", "device")


def _config_file(checkpoint: str | os.PathLike[str]) -> Path:
    path = Path(checkpoint)
    return path.with_name(path.name + ".config.json")


def _write_config(checkpoint: str | os.PathLike[str] | None, config: TrainConfig) -> None:
    if checkpoint is None:
        return
    _config_file(checkpoint).write_text(json.dumps(config.to_dict(), indent=1),
                                        encoding="utf-8")


def _check_resumable(checkpoint: str | os.PathLike[str], config: TrainConfig) -> None:
    """Refuse to resume a checkpoint written with another configuration."""
    path = _config_file(checkpoint)
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    current = config.to_dict()
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES
                     and saved.get(k) != current[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(f"cannot resume {checkpoint}: it was written with another "
                         f"configuration ({details})")


def _progress_bar(total: int, enabled: bool):
    from ebflow_lite.training import tqdm

    return tqdm(total=total, disable=not enabled, mininterval=1.0, desc="train",
                dynamic_ncols=True)


def load_best(path: str | os.PathLike[str]) -> tuple[EBFlow, TrainConfig, dict]:
    """Rebuild the model saved by :func:`save_best` (``best.pt``) with its weights.

    Returns:
        ``(model, config, info)`` with the model in evaluation mode on the CPU; ``info``
        holds ``event_shape``, ``num_levels`` and the scores saved alongside.
    """
    saved = torch.load(path, map_location="cpu", weights_only=False)
    config = TrainConfig.from_dict(saved["config"])
    model = build_model(config, tuple(saved["event_shape"]), int(saved["num_levels"]))
    model.load_state_dict(saved["state"])
    return model.eval(), config, {k: v for k, v in saved.items() if k not in ("state",)}


def save_best(path: str | os.PathLike[str], result: RunResult, data: ImageSplit) -> None:
    """Write the best checkpoint with what is needed to rebuild the model (:func:`load_best`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": result.state, "config": result.config.to_dict(),
                "event_shape": list(data.event_shape), "num_levels": data.num_levels,
                **{k: v for k, v in result.summary().items() if k != "config"}}, path)


def samples_as_images(model: EBFlow, n: int, event_shape: tuple[int, ...],
                      num_levels: int, temperature: float = 1.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples by inverse generation, as images of levels in ``[0, K)``, shape
    ``(n, C, H, W)`` (values clamped to the box; the logit's inverse already lies in it)."""
    model.eval()
    with torch.no_grad():
        x = model.sample(n, temperature=temperature, generator=generator)
    return x.reshape(n, *event_shape).clamp(0.0, float(num_levels))


__all__ = [
    "DATASETS",
    "DATASETS_WITH_ROOT",
    "MODELS",
    "OBJECTIVES",
    "OPTIMIZERS",
    "PRESETS",
    "PRESET_NOTES",
    "RESUMABLE_CHANGES",
    "RunResult",
    "StepLog",
    "TrainConfig",
    "build_model",
    "check_config",
    "config_fields",
    "count_parameters",
    "evaluate",
    "learning_rate",
    "load_best",
    "load_data",
    "make_objective",
    "make_optimizer",
    "model_view",
    "preset",
    "preset_name_for",
    "preset_notes",
    "run",
    "samples_as_images",
    "save_best",
    "standardize_linear_layers",
    "training_step",
]
