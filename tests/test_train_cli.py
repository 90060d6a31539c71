"""The training command line, ``python -m ebflow_lite.train``, on tiny synthetic files.

MNIST-layout IDX files and CIFAR-10 python batches are written to a temporary folder with
a few dozen random 8x8 (IDX) or 32x32 (CIFAR) images, so each run takes a second or two.
"""

from __future__ import annotations

import csv
import gzip
import json
import pickle
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ebflow_lite import train as cli
from ebflow_lite.experiments import image_training as it

ROOT = Path(__file__).resolve().parents[1]


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """Write ``array`` (uint8) as an IDX file: zero bytes, type 0x08, ndim, sizes, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def smooth_images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Random images with some structure (a blurred blob per image), levels 0..255."""
    h, w = shape[-2:]
    yy, xx = np.mgrid[0:h, 0:w]
    centres = rng.uniform(1, min(h, w) - 1, size=(n, 2))
    blobs = np.exp(-((yy[None] - centres[:, :1, None]) ** 2
                     + (xx[None] - centres[:, 1:, None]) ** 2) / 4.0)
    images = 255 * blobs + rng.normal(0, 10, size=blobs.shape)
    images = np.clip(images, 0, 255).astype(np.uint8)
    if len(shape) == 3:
        images = np.repeat(images[:, None], shape[0], axis=1)
    return images


@pytest.fixture(scope="module")
def idx_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte", smooth_images(rng, 300, (8, 8)), gz=True)
    write_idx(root / "train-labels-idx1-ubyte", rng.integers(0, 10, 300))
    write_idx(root / "t10k-images-idx3-ubyte", smooth_images(rng, 60, (8, 8)))
    write_idx(root / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 60), gz=True)
    return root


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        images = smooth_images(rng, 30, (3, 32, 32)).reshape(30, -1)
        batch = {b"data": images, b"labels": rng.integers(0, 10, 30).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder.parent


def tiny(idx_root: Path, out: Path, *extra: str) -> list[str]:
    """Arguments of a tiny MNIST-layout run (8x8 images, FC model unless overridden)."""
    return ["--dataset", "mnist", "--data-root", str(idx_root), "--n-val", "50",
            "--batch-size", "20", "--eval-every", "2", "--out", str(out), "--no-progress",
            *extra]


def read_log(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------- help, errors
def test_help_documents_every_flag(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for field in it.config_fields():
        flag = "--" + field.replace("_", "-")
        assert flag in text, flag
    for flag in ("--preset", "--list-presets", "--epochs", "--threads", "--out", "--resume",
                 "--log-format", "--progress", "--samples"):
        assert flag in text, flag
    # every option has a help text
    parser = cli.build_parser()
    assert all(action.help for action in parser._actions if action.option_strings)


def test_module_runs_as_a_script() -> None:
    done = subprocess.run([sys.executable, "-m", "ebflow_lite.train", "--help"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and "--objective" in done.stdout


def test_console_script_is_declared() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^ebflow-train = "ebflow_lite\.train:main"$', scripts, re.M)


@pytest.mark.parametrize("argv, message", [
    (["--steps", "-3"], "positive integer"),
    (["--steps", "ten"], "positive integer"),
    (["--model", "mlp"], "invalid choice"),
    (["--lr", "fast"], "a number"),
    (["--lr", "0"], "positive number"),
    (["--kernel-size", "4"], "kernel_size must be odd"),
    (["--logit-eps", "0.7"], "logit_eps"),
    (["--steps", "5", "--epochs", "1"], "not allowed with"),
    (["--device", "quantum"], "--device"),
    (["--preset", "mnist-fc-xyz"], "invalid choice"),
])
def test_bad_arguments_exit_with_an_argparse_error(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.startswith("usage:")


def test_missing_data_is_an_argparse_error(tmp_path, capsys) -> None:
    for argv in (["--dataset", "mnist"], ["--dataset", "cifar10", "--data-root",
                                          str(tmp_path)]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([*argv, "--out", str(tmp_path / "run"), "--no-progress"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "cannot load" in err and "Traceback" not in err


def test_resume_needs_a_checkpoint_and_a_checkpoint_needs_resume(idx_root, tmp_path,
                                                                 capsys) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(tiny(idx_root, out, "--steps", "2", "--resume"))
    assert exit_info.value.code == 2 and "no checkpoint" in capsys.readouterr().err
    assert cli.main(tiny(idx_root, out, "--steps", "2")) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(tiny(idx_root, out, "--steps", "4"))
    assert exit_info.value.code == 2 and "--resume" in capsys.readouterr().err
    # resuming with another setting (here the learning rate) is refused
    with pytest.raises(SystemExit) as exit_info:
        cli.main(tiny(idx_root, out, "--steps", "4", "--lr", "0.5", "--resume"))
    assert exit_info.value.code == 2 and "lr" in capsys.readouterr().err


def test_list_presets(capsys) -> None:
    assert cli.main(["--list-presets"]) == 0
    text = capsys.readouterr().out
    for name in it.PRESETS:
        assert re.search(rf"^{re.escape(name)}:", text, re.M), name


# ----------------------------------------------------------------------------- runs
def test_a_tiny_run_writes_its_outputs_and_prints_the_test_score(idx_root, tmp_path,
                                                                 capsys) -> None:
    out = tmp_path / "run"
    assert cli.main(tiny(idx_root, out, "--objective", "ssm", "--steps", "5",
                         "--optimizer", "adam", "--lr", "1e-3", "--samples", "4")) == 0
    printed = capsys.readouterr().out
    match = re.search(r"test NLL (\S+) nats, (\S+) bits/dim", printed)
    assert match, printed
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 5 and result["config"]["objective"] == "ssm"
    assert float(match.group(1)) == pytest.approx(result["test_nll"], abs=0.01)
    assert float(match.group(2)) == pytest.approx(result["test_bpd"], abs=1e-4)
    # D = 64 on the [0, 256) scale
    assert result["test_bpd"] == pytest.approx(result["test_nll"] / (64 * np.log(2)))
    rows = read_log(out / "log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    evaluated = [int(r["step"]) for r in rows if r["val_bpd"]]
    assert evaluated == [2, 4, 5]  # every --eval-every steps and at the last step
    times = [float(r["seconds"]) for r in rows]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    best = min((float(r["val_bpd"]), int(r["step"])) for r in rows if r["val_bpd"])
    assert result["best_step"] == best[1]
    assert result["val_bpd"] == pytest.approx(best[0])
    for name in ("checkpoint.pt", "best.pt", "samples.png"):
        assert (out / name).is_file(), name
    # best.pt rebuilds the model; its test score is the printed one
    model, config, info = it.load_best(out / "best.pt")
    assert config.objective == "ssm" and info["best_step"] == result["best_step"]


def test_resuming_is_bit_exact(idx_root, tmp_path, capsys) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ("--objective", "dsm", "--optimizer", "adam", "--lr", "1e-3")
    assert cli.main(tiny(idx_root, straight, *common, "--steps", "8")) == 0
    assert cli.main(tiny(idx_root, split, *common, "--steps", "4")) == 0
    assert cli.main(tiny(idx_root, split, *common, "--steps", "8", "--resume")) == 0
    capsys.readouterr()
    a = torch.load(straight / "best.pt", weights_only=False)
    b = torch.load(split / "best.pt", weights_only=False)
    assert a["best_step"] == b["best_step"]
    for key, value in a["state"].items():
        assert torch.equal(value, b["state"][key]), key
    rows_a, rows_b = read_log(straight / "log.csv"), read_log(split / "log.csv")
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    assert [r["val_bpd"] for r in rows_a] == [r["val_bpd"] for r in rows_b]
    checkpoint_a = torch.load(straight / "checkpoint.pt", weights_only=False)
    checkpoint_b = torch.load(split / "checkpoint.pt", weights_only=False)
    for key, value in checkpoint_a["model"].items():
        assert torch.equal(value, checkpoint_b["model"][key]), key


def test_json_log_cifar_cnn_run(cifar_root, tmp_path, capsys) -> None:
    out = tmp_path / "cifar"
    argv = ["--preset", "cifar10-cnn-dsm", "--data-root", str(cifar_root), "--downscale", "4",
            "--n-val", "30", "--batch-size", "20", "--steps", "3", "--eval-every", "3",
            "--log-format", "json", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert "val_bpd" in rows[-1] and "val_bpd" not in rows[0]
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["model"] == "cnn" and result["config"]["energy_weight"] > 0
    assert np.isfinite(result["test_bpd"])


def test_glow_and_no_map_runs(tmp_path, capsys) -> None:
    out = tmp_path / "glow"
    argv = ["--dataset", "digits", "--model", "glow", "--objective", "dsm", "--glow-depth",
            "1", "--glow-hidden", "8", "--batch-size", "32", "--steps", "2",
            "--eval-every", "2", "--n-val", "50", "--no-map", "--no-ema", "--out", str(out),
            "--no-progress"]
    assert cli.main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["map"] is False and result["config"]["ema"] is False
    assert result["config"]["logit_alpha"] == 1.0  # from the Glow preset
    assert np.isfinite(result["test_bpd"])
    capsys.readouterr()


def test_epochs_sets_the_number_of_steps(idx_root, tmp_path, capsys) -> None:
    out = tmp_path / "epochs"
    # 250 training images (300 - 50 validation), batches of 20: 12 steps per epoch
    assert cli.main(tiny(idx_root, out, "--epochs", "0.5", "--eval-every", "100")) == 0
    assert json.loads((out / "result.json").read_text())["steps"] == 6
    capsys.readouterr()


def test_preset_flags_override_one_setting_each() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["--preset", "mnist-cnn-ml", "--lr", "0.01", "--grad-clip",
                              "none", "--n-train", "all"])
    config, name = cli.config_from_args(args, parser)
    expected = it.preset("mnist-cnn-ml", lr=0.01, grad_clip=None, n_train=None, device="cpu")
    assert name == "mnist-cnn-ml" and config == expected
    args = parser.parse_args(["--model", "cnn", "--objective", "fdssm"])
    config, name = cli.config_from_args(args, parser)
    assert name == "mnist-cnn-fdssm" and config.dataset == "fashion-mnist"
    assert config.grad_clip == 5.0 and config.logit_alpha == 0.75
