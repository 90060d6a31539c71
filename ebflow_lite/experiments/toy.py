"""The 2-D toy experiment: train one flow by ML, SML, SSM, DSM or FDSSM and score it.

Chapter 6 ("Training EBFlow on 2-D densities") runs :func:`train_toy` for every
(dataset, method, seed) and :func:`evaluate_toy` on each result; :func:`gaussian_baseline`
gives the reference a trained model must beat, and :func:`summarize` turns runs into
mean +- confidence-interval cells. Every model uses ONE base density, the standard normal,
for training, sampling and evaluation.

References:
    Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching Objectives",
    NeurIPS 2023 (Table 1: KL and Fisher divergences on Sine, Swirl and Checkerboard).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ebflow_lite import objectives
from ebflow_lite.flow import EBFlow
from ebflow_lite.layers import Dense
from ebflow_lite.training import History, fit

Objective = Callable[[nn.Module, torch.Tensor], torch.Tensor]

TOY_METHODS = ("ml", "sml", "ssm", "dsm", "fdssm")


@dataclass(frozen=True)
class ToyMethod:
    """How one method is trained on the toy densities.

    Attributes:
        lr: Adam's learning rate.
        grad_clip: the gradient-norm clip (None: off).
        options: keyword arguments of the objective (``sigma`` for DSM, ``eps`` and
            ``n_slices`` for FDSSM, ``n_slices`` for SSM).
        data_smoothing: None to train on samples of the target itself; else draw the
            training set from the same toy set with this smoothing width (the target's
            ``smoothing`` attribute and name are used). The paper trains DSM on (nearly)
            raw points with ``sigma`` equal to the target's smoothing, so that DSM's own
            noise is the smoothing and its optimum is the target.
    """

    lr: float
    grad_clip: float | None = 1.0
    options: dict = field(default_factory=dict)
    data_smoothing: float | None = None


def default_toy_methods(fdssm_eps: float = 0.1) -> dict[str, ToyMethod]:
    """The book's settings for the five methods on the smoothed toy densities.

    ML and SML use a learning rate of 5e-3, the score-matching objectives 2e-3 (their
    gradients are noisier); all clip the gradient norm at 1. DSM follows the paper's toy
    code: it trains on (nearly) raw points, ``data_smoothing=1e-3``, with noise ``sigma``
    equal to the target's smoothing 0.375, so that its own noise *is* the smoothing and its
    optimum is the target itself (no extra blur).

    Args:
        fdssm_eps: FDSSM's finite-difference step (the paper's 0.1).
    """
    return {
        "ml": ToyMethod(lr=5e-3),
        "sml": ToyMethod(lr=5e-3),
        "ssm": ToyMethod(lr=2e-3, options={"n_slices": 1}),
        "dsm": ToyMethod(lr=2e-3, options={"sigma": 0.375}, data_smoothing=1e-3),
        "fdssm": ToyMethod(lr=2e-3, options={"eps": fdssm_eps, "n_slices": 1}),
    }


def toy_objective(method: str, **options: float) -> Objective:
    """Return ``objective(model, x)`` for a method name in :data:`TOY_METHODS`.

    Args:
        method: ``"ml"``, ``"sml"``, ``"ssm"``, ``"dsm"`` or ``"fdssm"``.
        **options: keyword arguments passed to the objective (e.g. ``sigma=0.1``).
    """
    if method not in TOY_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {TOY_METHODS}")
    return objectives.get(method, **options)


RAW_SMOOTHING = 1e-3
"""The smoothing of the stored "raw" training points (the toy sets need a positive width)."""


def smoothed_objective(objective: Objective, std: float) -> Objective:
    """``objective(model, x + std * n)`` with fresh ``n ~ N(0, I)`` at every call.

    Draws from the global torch RNG, which :func:`ebflow_lite.fit` saves and restores with
    its checkpoints, so a resumed run redraws exactly the same noise. Applied to raw points
    it turns every batch into fresh samples of the Gaussian-smoothed density
    (equation eq-toy-smoothed of chapter 6), as the paper's toy code does.
    """
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}")

    def smoothed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return objective(model, x + std * torch.randn_like(x))

    return smoothed


def train_toy(
    target: object,
    method: str,
    seed: int = 0,
    steps: int = 2000,
    batch_size: int = 256,
    n_train: int = 20_000,
    settings: ToyMethod | None = None,
    n_blocks: int = 4,
    hidden: int = 64,
    ema_decay: float | None = 0.99,
    progress: bool = False,
    lr_schedule: str = "constant",
) -> tuple[EBFlow, History]:
    """Train :func:`ebflow_lite.models.toy_flow` on samples of a 2-D density.

    As in the paper's toy code, the training set is ``n_train`` *raw* points (the same toy
    set smoothed by only ``1e-3``), and the Gaussian smoothing noise ``N(0, s^2 I)`` with
    ``s = target.smoothing`` is redrawn for every batch (:func:`smoothed_objective`), so
    every method sees fresh samples of the smoothed target at every step. DSM
    (``settings.data_smoothing`` set) gets the raw points without that extra noise: its own
    noise ``sigma = s`` is the smoothing. A target without ``name``/``smoothing`` (any
    object with ``sample``) is sampled directly, once. The model, the data and the
    objective's randomness all follow ``seed``. With ``ema_decay`` the returned model
    carries the exponential moving average of its parameters (with warm-up). The optimiser
    is Adam; ``lr_schedule="cosine"`` decays its rate to zero along a half cosine.

    Args:
        target: an object with ``sample(n, generator)``, e.g. ``ebflow_lite.data.toy("sine")``.
        method: one of :data:`TOY_METHODS`.
        seed: the run's seed.
        steps: optimiser steps.
        batch_size: samples per step.
        n_train: size of the training set.
        settings: learning rate, clip and objective options (default: from
            :func:`default_toy_methods`).
        n_blocks: blocks of the toy flow.
        hidden: width of the couplings' conditioners.
        ema_decay: EMA momentum (None: no EMA).
        progress: show a progress bar.
        lr_schedule: ``"constant"`` or ``"cosine"`` (``lr * (1 + cos(pi t / steps)) / 2``
            at step ``t``).

    Returns:
        ``(model, history)``, the model in evaluation mode.
    """
    from ebflow_lite.ema import EMA
    from ebflow_lite.models import toy_flow

    if method not in TOY_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {TOY_METHODS}")
    if n_train < batch_size:
        raise ValueError(f"n_train ({n_train}) must be at least batch_size ({batch_size})")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    settings = settings or default_toy_methods()[method]
    generator = torch.Generator().manual_seed(seed)
    objective = toy_objective(method, **settings.options)
    name, width = getattr(target, "name", None), getattr(target, "smoothing", None)
    if name is not None and width is not None:
        from ebflow_lite.data import toy

        raw = settings.data_smoothing if settings.data_smoothing is not None else RAW_SMOOTHING
        data = toy(name, smoothing=raw).sample(n_train, generator=generator)
        if settings.data_smoothing is None:
            objective = smoothed_objective(objective, float(width))
    else:
        data = target.sample(n_train, generator=generator)  # type: ignore[attr-defined]
    model = toy_flow(dim=data.shape[1], n_blocks=n_blocks, hidden=hidden, seed=seed)
    ema = EMA(model, decay=ema_decay) if ema_decay is not None else None
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=settings.lr)
    callback = None
    if lr_schedule == "cosine":
        def callback(step: int, loss: float) -> None:
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
    torch.manual_seed(seed)  # batches, smoothing noise, projections, DSM's noise
    history = fit(
        model, objective, data, steps=steps, batch_size=batch_size, optimizer=optimizer,
        grad_clip=settings.grad_clip, ema=ema, progress=progress, callback=callback,
    )
    if ema is not None:
        ema.copy_to(model)
    return model.eval(), history


def evaluate_toy(
    target: object, model: nn.Module, n: int = 10_000, seed: int = 12345,
) -> dict[str, float]:
    """KL and Fisher divergences from the target to the model, on ``n`` fresh target samples.

    ``KL = E_p[log p - log q]`` and ``D_F = 1/2 E_p ||grad log p - grad log q||^2`` with the
    target's exact log-density and score (:func:`ebflow_lite.metrics.kl_divergence`,
    :func:`ebflow_lite.metrics.fisher_divergence`). The same test samples are used for every
    model (fixed ``seed``).
    """
    from ebflow_lite import metrics

    kl = metrics.kl_divergence(target, model, n=n,
                               generator=torch.Generator().manual_seed(seed))
    fisher = metrics.fisher_divergence(target, model, n=n,
                                       generator=torch.Generator().manual_seed(seed))
    return {"kl": kl, "fisher": fisher}


def gaussian_baseline(target: object, n: int = 20_000, seed: int = 0) -> EBFlow:
    """The Gaussian fitted to target samples by moment matching, as a one-layer EBFlow.

    ``u = W x + b`` with ``W = L^{-1}``, ``b = -L^{-1} mu``, ``Sigma = L L^T``: a single dense
    (linear) layer, so its energy is ``||W x + b||^2 / 2 + const`` and
    ``log Z = -log|det W|``. Among all Gaussians it minimises ``KL(p || q)``, so it is the
    yardstick a trained flow has to beat.
    """
    x = target.sample(n, generator=torch.Generator().manual_seed(seed))  # type: ignore
    x = x.double()
    mean = x.mean(0)
    chol = torch.linalg.cholesky(torch.cov(x.T))
    layer = Dense(x.shape[1])
    with torch.no_grad():
        weight = torch.linalg.inv(chol)
        layer.weight.copy_(weight.to(layer.weight))
        layer.bias.copy_((-weight @ mean).to(layer.bias))  # type: ignore[union-attr]
    return EBFlow([layer]).eval()


@dataclass
class ToyRun:
    """One training run of the toy experiment and its scores."""

    dataset: str
    method: str
    seed: int
    kl: float
    fisher: float
    seconds: float
    skipped_steps: int
    model: EBFlow | None = None


def run_toy_grid(
    targets: dict[str, object],
    methods: Sequence[str],
    seeds: Iterable[int],
    keep_models: bool = True,
    eval_samples: int = 10_000,
    **train_options: object,
) -> list[ToyRun]:
    """Train and evaluate every (dataset, method, seed); return the runs in that order.

    Args:
        targets: dataset name -> density object.
        methods: method names from :data:`TOY_METHODS`.
        seeds: run seeds.
        keep_models: keep each trained model in the result (for plots).
        eval_samples: test samples for :func:`evaluate_toy`.
        **train_options: passed to :func:`train_toy` (``steps``, ``batch_size``, ...).
    """
    seeds = list(seeds)
    runs = []
    for name, target in targets.items():
        for method in methods:
            for seed in seeds:
                start = time.perf_counter()
                model, history = train_toy(target, method, seed=seed,
                                           **train_options)  # type: ignore[arg-type]
                scores = evaluate_toy(target, model, n=eval_samples)
                runs.append(ToyRun(name, method, seed, scores["kl"], scores["fisher"],
                                   time.perf_counter() - start, history.skipped,
                                   model if keep_models else None))
    return runs


def summarize(runs: Sequence[ToyRun], metric: str, level: float = 0.95
              ) -> dict[tuple[str, str], tuple[float, float]]:
    """``(dataset, method) -> (mean, CI half-width)`` of a metric over seeds.

    The half-width is NaN when there is a single seed.
    """
    from ebflow_lite.metrics import mean_confidence_interval

    if metric not in ("kl", "fisher", "seconds"):
        raise ValueError(f"metric must be 'kl', 'fisher' or 'seconds', got {metric!r}")
    groups: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        groups.setdefault((run.dataset, run.method), []).append(getattr(run, metric))
    table = {}
    for key, values in groups.items():
        if len(values) == 1:
            table[key] = (values[0], math.nan)
        else:
            table[key] = mean_confidence_interval(values, level)
    return table


def markdown_table(summary: dict[tuple[str, str], tuple[float, float]],
                   datasets: Sequence[str], methods: Sequence[str], digits: int = 3) -> str:
    """Render :func:`summarize` output as a Markdown table, methods as rows."""
    lines = ["| method | " + " | ".join(datasets) + " |",
             "|---|" + "---|" * len(datasets)]
    for method in methods:
        cells = []
        for name in datasets:
            mean, half = summary[(name, method)]
            cells.append(f"{mean:.{digits}f}" if math.isnan(half)
                         else f"{mean:.{digits}f} ± {half:.{digits}f}")
        lines.append(f"| {method.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


LONG_CONFIG = {"steps": 20_000, "batch_size": 1024, "n_train": 50_000, "ema_decay": 0.999,
               "lr_schedule": "cosine", "n_blocks": 4}
"""The longer run of chapter 6 (``python -m ebflow_lite.experiments.toy --long``)."""


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the toy grid from the command line; print the tables and write a JSON file.

    ``--long`` uses :data:`LONG_CONFIG` (20 000 steps of 1024 points, 53x the chapter's
    budget in samples); the other flags override single settings. The JSON holds every
    run's KL, Fisher divergence and time, and the configuration.
    """
    import argparse
    import json
    from pathlib import Path

    from ebflow_lite.data import toy
    from ebflow_lite.experiments.claims import results_dir

    parser = argparse.ArgumentParser(prog="python -m ebflow_lite.experiments.toy",
                                     description=main.__doc__)
    parser.add_argument("--long", action="store_true", help="the longer configuration")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=["sine", "swirl", "checkerboard"])
    parser.add_argument("--methods", nargs="+", default=list(TOY_METHODS))
    parser.add_argument("--eval-samples", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default: <results dir>/toy-long.json or toy.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = dict(LONG_CONFIG) if args.long else {
        "steps": 1500, "batch_size": 256, "n_train": 50_000, "ema_decay": 0.999,
        "lr_schedule": "cosine", "n_blocks": 4}
    if args.steps is not None:
        config["steps"] = args.steps
    if args.batch_size is not None:
        config["batch_size"] = args.batch_size
    settings = default_toy_methods()
    targets = {name: toy(name) for name in args.datasets}
    start = time.perf_counter()
    runs = []
    for name, target in targets.items():
        for method in args.methods:
            runs += run_toy_grid({name: target}, [method], args.seeds, keep_models=False,
                                 eval_samples=args.eval_samples, settings=settings[method],
                                 **config)
            last = runs[-1]
            print(f"{name:>12} {method:>5} seed {last.seed}: KL {last.kl:.3f} "
                  f"Fisher {last.fisher:.3f} ({last.seconds:.0f} s)", flush=True)
    seconds = time.perf_counter() - start
    for metric in ("kl", "fisher"):
        print(f"\n{metric}:\n" + markdown_table(summarize(runs, metric), args.datasets,
                                                args.methods))
    print(f"\n{len(runs)} runs in {seconds:.0f} s")
    record = {"config": config, "seconds": seconds, "runs": [
        {"dataset": r.dataset, "method": r.method, "seed": r.seed, "kl": r.kl,
         "fisher": r.fisher, "seconds": r.seconds} for r in runs]}
    out = args.out or results_dir() / ("toy-long.json" if args.long else "toy.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(f"wrote {out}")
    return record


__all__ = [
    "LONG_CONFIG",
    "TOY_METHODS",
    "ToyMethod",
    "ToyRun",
    "RAW_SMOOTHING",
    "default_toy_methods",
    "evaluate_toy",
    "gaussian_baseline",
    "main",
    "markdown_table",
    "run_toy_grid",
    "smoothed_objective",
    "summarize",
    "toy_objective",
    "train_toy",
]


if __name__ == "__main__":
    main()
