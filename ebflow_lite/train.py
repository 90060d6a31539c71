"""``python -m ebflow_lite.train`` (the ``ebflow-train`` script): train an image EBFlow.

A thin argparse front end over :mod:`ebflow_lite.experiments.image_training`, which does
the work (and which chapter 11 calls directly). Examples::

    # the paper's MNIST FC model trained by SSM, on a GPU, with the paper's settings
    python -m ebflow_lite.train --preset mnist-fc-ssm --data-root ~/data/mnist \\
        --device cuda --out runs/mnist-fc-ssm

    # the CNN model on Fashion-MNIST (Debian's package) by DSM, 2000 steps on the CPU
    python -m ebflow_lite.train --dataset fashion-mnist --model cnn --objective dsm \\
        --steps 2000 --eval-every 200 --n-eval 2000 --threads 2 --out runs/fmnist-cnn-dsm

    # continue a run that stopped (bit-exact on the CPU), now for 4000 steps
    python -m ebflow_lite.train ... --steps 4000 --out runs/fmnist-cnn-dsm --resume

Every setting starts from a preset, the paper's configuration for one cell of its Table 2
(``--list-presets``); without ``--preset`` the one matching ``--dataset``, ``--model`` and
``--objective`` is used (MNIST's for the 28x28 grey data sets and the digits). Each flag
below overrides one setting. The run writes, under ``--out``: ``checkpoint.pt`` (resumable),
``best.pt`` (the best weights on validation bits/dim; reload with
:func:`ebflow_lite.experiments.image_training.load_best`), ``log.csv`` or ``log.jsonl``
(loss, learning rate and training time of every step, validation NLL and bits/dim at each
evaluation), ``result.json`` and, with ``--samples``, ``samples.png``. At the end it prints
the test NLL (nats per image) and bits per dimension of the best checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ebflow_lite.experiments import image_training as it

_NONE_WORDS = ("none", "off", "0")


def _integer(text: str, minimum: int) -> int:
    """``text`` as an int of at least ``minimum``, else an argparse type error."""
    wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _integer(text, 1)


def _non_negative_int(text: str) -> int:
    return _integer(text, 0)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_number(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _optional_positive(text: str) -> float | None:
    if text.strip().lower() in _NONE_WORDS:
        return None
    return _positive_number(text)


def _optional_positive_int(text: str) -> int | None:
    if text.strip().lower() in ("none", "all"):
        return None
    return _positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every flag documented in ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m ebflow_lite.train",
        description=(
            "Train the paper's FC, CNN or Glow EBFlow on images by ML, SML, SSM, DSM or "
            "FDSSM, evaluating the exact validation NLL every N steps, keeping the best "
            "checkpoint, and reporting its test NLL and bits/dim. Settings start from the "
            "paper's preset for the chosen data set, model and objective; every flag "
            "overrides one of them."),
        epilog=("Defaults marked 'preset' come from the preset (see --list-presets); "
                "NLL is in nats per image on the dequantized [0, 256) scale, bits/dim = "
                "NLL / (D ln 2)."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # a setting that is not given keeps the preset's value (see config_from_args)
        argument_default=argparse.SUPPRESS,
    )
    what = parser.add_argument_group("what to train")
    what.add_argument("--preset", choices=sorted(it.PRESETS), metavar="NAME", default=None,
                      help="the paper's settings for one Table 2 cell, e.g. mnist-fc-ssm "
                           "(default: the one for --dataset/--model/--objective)")
    what.add_argument("--list-presets", action="store_true", default=False,
                      help="print the presets and their settings, then exit")
    what.add_argument("--dataset", choices=it.DATASETS,
                      help="the images (default: the preset's, else fashion-mnist)")
    what.add_argument("--data-root", metavar="DIR",
                      help="folder with the data files: MNIST/KMNIST's four IDX files "
                           "(plain or .gz), CIFAR-10's python batches; Fashion-MNIST "
                           "defaults to /usr/share/datasets/fashion-mnist")
    what.add_argument("--model", choices=it.MODELS,
                      help="fc (Dense-SmoothLeakyReLU-Dense), cnn (6 KxK convolutions) or "
                           "glow (default: preset, else fc)")
    what.add_argument("--objective", choices=it.OBJECTIVES,
                      help="training objective (default: preset, else ml)")
    data = parser.add_argument_group("data")
    data.add_argument("--n-train", type=_optional_positive_int, metavar="N",
                      help="training images to use ('all': every one; default: preset)")
    data.add_argument("--n-val", type=_positive_int, metavar="N",
                      help="validation images split off the training set (default: preset, "
                           "10000)")
    data.add_argument("--n-test", type=_optional_positive_int, metavar="N",
                      help="test images to score ('all'; default: all)")
    data.add_argument("--downscale", type=_positive_int, metavar="F",
                      help="average-pool the images by F x F first (default: 1)")
    data.add_argument("--data-seed", type=_non_negative_int, metavar="S",
                      help="seed of the validation split (default: 0)")
    opt = parser.add_argument_group("optimisation")
    length = opt.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_positive_int, metavar="N",
                        help="optimiser steps (default: preset, to the end of the "
                             "learning-rate schedule)")
    length.add_argument("--epochs", type=_positive_number, metavar="E",
                        help="train for E epochs of the training set instead of --steps")
    opt.add_argument("--batch-size", type=_positive_int, metavar="B",
                     help="images per step (default: preset, 100)")
    opt.add_argument("--optimizer", choices=it.OPTIMIZERS,
                     help="rmsprop (paper's FC/CNN) or adam (paper's Glow) (default: preset)")
    opt.add_argument("--lr", type=_positive_number, help="learning rate (default: preset)")
    opt.add_argument("--weight-decay", type=_number, metavar="WD",
                     help="L2 weight decay (default: preset)")
    opt.add_argument("--lr-gamma", type=_positive_number, metavar="G",
                     help="multiply the learning rate by G after each epoch ... "
                          "(default: preset)")
    opt.add_argument("--lr-epochs", type=_positive_int, metavar="M",
                     help="... of the first M - 1 epochs, then keep it (default: preset)")
    opt.add_argument("--grad-clip", type=_optional_positive, metavar="C",
                     help="clip the gradient norm at C ('none' to disable; default: preset)")
    obj = parser.add_argument_group("objective")
    obj.add_argument("--sigma", type=_positive_number,
                     help="DSM noise std, in logit space with MaP (default: preset)")
    obj.add_argument("--eps", type=_positive_number,
                     help="FDSSM finite-difference radius (default: preset)")
    obj.add_argument("--n-slices", type=_positive_int, metavar="K",
                     help="random directions per sample for SSM/FDSSM (default: 1)")
    obj.add_argument("--energy-weight", type=_number, metavar="W",
                     help="add W * mean energy to score-matching losses (default: preset)")
    model = parser.add_argument_group("model")
    model.add_argument("--logit-alpha", type=_positive_number, metavar="A",
                       help="logit smoothness of the preprocessing (default: preset: 0.5 "
                            "FC, 0.75 CNN, 1.0 Glow)")
    model.add_argument("--logit-eps", type=_number, metavar="E",
                       help="squeeze before the logit (default: 1e-6)")
    model.add_argument("--slr-alpha", type=_positive_number, metavar="A",
                       help="slope of the smooth leaky ReLU (default: 0.3)")
    model.add_argument("--fc-residual", action=argparse.BooleanOptionalAction,
                       help="FC activation adds the identity (default: preset; on for CIFAR)")
    model.add_argument("--kernel-size", type=_positive_int, metavar="K",
                       help="CNN kernel size, odd (default: 7)")
    model.add_argument("--glow-levels", type=_positive_int, metavar="L",
                       help="Glow levels (default: 2)")
    model.add_argument("--glow-depth", type=_positive_int, metavar="N",
                       help="Glow steps per level (default: 16)")
    model.add_argument("--glow-hidden", type=_positive_int, metavar="H",
                       help="Glow coupling width (default: 512)")
    model.add_argument("--data-init", action=argparse.BooleanOptionalAction,
                       help="rescale the dense/convolution layers on the first batch to "
                            "standardised outputs (not in the paper; chapter 11 uses it for "
                            "the CNN; default: off)")
    stab = parser.add_argument_group("stabilisers")
    stab.add_argument("--ema", action=argparse.BooleanOptionalAction,
                      help="evaluate an EMA of the parameters (default: on)")
    stab.add_argument("--ema-decay", type=_number, metavar="M",
                      help="EMA momentum, with warm-up (default: 0.999)")
    stab.add_argument("--map", action=argparse.BooleanOptionalAction,
                      help="Match after Preprocessing: scores in logit space (default: on)")
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--eval-every", type=_positive_int, metavar="N",
                    help="exact validation NLL every N steps and at the end (default: "
                         "preset, once per epoch)")
    ev.add_argument("--n-eval", type=_optional_positive_int, metavar="N",
                    help="validation images per evaluation ('all'; default: all)")
    ev.add_argument("--eval-batch-size", type=_positive_int, metavar="B",
                    help="images per forward pass when evaluating (default: 500)")
    ev.add_argument("--eval-seed", type=_non_negative_int, metavar="S",
                    help="seed of the fixed dequantization of the evaluation images "
                         "(default: 12345)")
    ev.add_argument("--samples", type=_non_negative_int, default=0, metavar="N",
                    help="write N samples of the best model to samples.png (default: 0)")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=_non_negative_int, metavar="S",
                     help="seed of the model, the batches and the objective's noise "
                          "(default: 0)")
    run.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cpu)")
    run.add_argument("--threads", type=_positive_int, metavar="T", default=None,
                     help="CPU threads for torch (default: torch's choice)")
    run.add_argument("--out", metavar="DIR", type=Path, default=None,
                     help="output folder (default: runs/<dataset>-<model>-<objective>-seed<S>)")
    run.add_argument("--resume", action="store_true", default=False,
                     help="continue from --out/checkpoint.pt (same settings; --steps, "
                          "--device may change)")
    run.add_argument("--checkpoint-every", type=_positive_int, metavar="N",
                     help="save the resumable checkpoint every N steps (default: at each "
                          "evaluation)")
    run.add_argument("--max-minutes", type=_positive_number, metavar="T",
                     help="stop at the first checkpoint after T minutes of training (default: no "
                          "limit)")
    run.add_argument("--log-format", choices=("csv", "json"), default="csv",
                     help="per-step log: log.csv, or JSON Lines in log.jsonl (default: csv)")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                     help="show a progress bar (default: on)")
    return parser


#: Flags whose value is copied into the configuration field of the same name. Their parser
#: default is ``argparse.SUPPRESS``: a flag that was not given leaves the preset's value.
_CONFIG_FLAGS = (
    "dataset", "data_root", "model", "objective", "n_train", "n_val", "n_test", "downscale",
    "data_seed", "steps", "batch_size", "optimizer", "lr", "weight_decay", "lr_gamma",
    "lr_epochs", "grad_clip", "sigma", "eps", "n_slices", "energy_weight", "logit_alpha",
    "logit_eps", "slr_alpha", "fc_residual", "kernel_size", "glow_levels", "glow_depth",
    "glow_hidden", "data_init", "ema", "ema_decay", "map", "eval_every", "n_eval",
    "eval_batch_size", "eval_seed", "checkpoint_every", "max_minutes", "seed", "device",
)


def base_preset(args: argparse.Namespace) -> str:
    """The preset the run starts from: ``--preset``, else the one for the data set, model
    and objective (a Glow run without one of its own starts from ``mnist-glow-ssm``)."""
    if args.preset is not None:
        return args.preset
    dataset = getattr(args, "dataset", "fashion-mnist")
    model = getattr(args, "model", "fc")
    objective = getattr(args, "objective", "ml")
    return (it.preset_name_for(dataset, model, objective)
            or it.preset_name_for(dataset, model, "ssm") or "mnist-glow-ssm")


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser,
                     ) -> tuple[it.TrainConfig, str]:
    """The :class:`TrainConfig` the flags describe, and the preset it started from.

    A bad combination (one the configuration rejects) exits through ``parser.error``.
    """
    name = base_preset(args)
    values: dict[str, Any] = {**it.PRESETS[name], "device": "cpu"}
    if args.preset is None:
        values.update(dataset="fashion-mnist", model=getattr(args, "model", "fc"),
                      objective=getattr(args, "objective", "ml"))
    values.update({flag: getattr(args, flag) for flag in _CONFIG_FLAGS if hasattr(args, flag)})
    try:
        return it.TrainConfig(**values), name
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits


def _list_presets() -> str:
    lines = []
    keys = ("dataset", "model", "objective", "steps", "batch_size", "optimizer", "lr",
            "weight_decay", "lr_gamma", "lr_epochs", "grad_clip", "sigma", "eps",
            "energy_weight", "logit_alpha", "fc_residual")
    for name in sorted(it.PRESETS):
        row = it.PRESETS[name]
        settings = ", ".join(f"{k}={row[k]}" for k in keys if k in row)
        notes = "; ".join(it.preset_notes(name))
        lines.append(f"{name}: {settings}" + (f" [{notes}]" if notes else ""))
    return "\n".join(lines)


def _save_samples(path: Path, model, n: int, event_shape, num_levels: int, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    images = it.samples_as_images(model.cpu(), n, event_shape, num_levels,
                                  generator=torch.Generator().manual_seed(seed))
    cols = min(n, 10)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image in zip(axes.flat, images, strict=False):
        picture = image.permute(1, 2, 0).squeeze(-1) / num_levels
        ax.imshow(picture.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (argparse errors exit with 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        print(_list_presets())
        return 0
    config, name = config_from_args(args, parser)
    if hasattr(args, "device"):
        from ebflow_lite.device import pick_device

        try:
            pick_device(args.device)
        except ValueError as err:
            parser.error(f"--device: {err}")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    out = args.out or Path("runs") / (f"{config.dataset}-{config.model}-{config.objective}"
                                      f"-seed{config.seed}")
    checkpoint = out / "checkpoint.pt"
    if args.resume and not checkpoint.is_file():
        parser.error(f"--resume: no checkpoint at {checkpoint}")
    if not args.resume and checkpoint.is_file():
        parser.error(f"{checkpoint} exists: pass --resume to continue that run, or choose "
                     "another --out")
    try:
        data = it.load_data(config)
    except (FileNotFoundError, ValueError, TypeError) as err:
        parser.error(f"cannot load {config.dataset}: {err}")
    if getattr(args, "epochs", None) is not None:
        steps = max(1, round(args.epochs * (data.train.shape[0] // config.batch_size)))
        config = it.TrainConfig(**{**config.to_dict(), "steps": steps})
    if data.train.shape[0] < config.batch_size:
        parser.error(f"--batch-size {config.batch_size} exceeds the {data.train.shape[0]} "
                     "training images")
    for note in it.preset_notes(name):
        print(f"note: {note}", file=sys.stderr)
    print(f"{config.dataset} {tuple(data.event_shape)}: {data.train.shape[0]} train, "
          f"{data.val.shape[0]} val, {data.test.shape[0]} test; {config.model} model, "
          f"{config.objective}, {config.steps} steps (from preset {name}) -> {out}",
          file=sys.stderr)
    log = out / ("log.csv" if args.log_format == "csv" else "log.jsonl")
    try:
        result = it.run(config, data=data, checkpoint=checkpoint, log=log,
                        progress=args.progress)
    except ValueError as err:
        if "cannot resume" in str(err):
            parser.error(str(err))
        raise
    it.save_best(out / "best.pt", result, data)
    summary = result.summary()
    (out / "result.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    if args.samples:
        model, _, _ = it.load_best(out / "best.pt")
        _save_samples(out / "samples.png", model, args.samples, data.event_shape,
                      data.num_levels, config.seed)
    state = " (diverged)" if result.diverged else (
        " (stopped by --max-minutes)" if result.stopped_early else "")
    print(f"steps {result.steps}{state}, {result.train_seconds:.1f} s of training, "
          f"{result.batches_per_second:.2f} batches/s; best validation {result.val_bpd:.4f} "
          f"bits/dim at step {result.best_step}")
    print(f"test NLL {result.test_nll:.2f} nats, {result.test_bpd:.4f} bits/dim")
    return 0


if __name__ == "__main__":
    sys.exit(main())
