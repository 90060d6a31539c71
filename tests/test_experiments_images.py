"""The image-experiment driver of chapter 9: data, the independent-pixel baseline, training,
summaries over seeds, the operator census and interleaved timing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ebflow_lite import metrics, objectives
from ebflow_lite.data.images import FASHION_MNIST_DIR, ImageSplit
from ebflow_lite.experiments import images as im
from ebflow_lite.layers import ActNorm
from ebflow_lite.models import glow_flow
from ebflow_lite.preprocessing import image_preprocessing


def _split(n_train: int = 64, shape=(1, 4, 4), levels: int = 8, seed: int = 0) -> ImageSplit:
    gen = torch.Generator().manual_seed(seed)
    # correlated images: a random level per image plus a little pixel noise
    def part(n: int) -> torch.Tensor:
        base = torch.randint(1, levels - 1, (n, 1, 1, 1), generator=gen)
        noise = torch.randint(-1, 2, (n, *shape), generator=gen)
        return (base + noise).clamp(0, levels - 1).float()

    def labels(n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.int64)

    return ImageSplit(train=part(n_train), val=part(32), test=part(32),
                      train_labels=labels(n_train), val_labels=labels(32), test_labels=labels(32),
                      num_levels=levels, event_shape=shape)


def _build(shape=(1, 4, 4), levels: int = 8):
    def build():
        return glow_flow(shape, n_levels=2, depth=1, hidden=4, seed=0,
                         preprocessing=image_preprocessing(levels, alpha=1.0, eps=0.01,
                                                           event_shape=shape))
    return build


# ----------------------------------------------------------------------------- data


def test_center_crop_keeps_the_middle() -> None:
    data = _split(shape=(2, 6, 8))
    data.train = torch.arange(data.train.numel(), dtype=torch.float32).view(data.train.shape)
    cropped = im.center_crop(data, 4)
    assert cropped.event_shape == (2, 4, 4) and cropped.dim == 32
    assert torch.equal(cropped.train, data.train[:, :, 1:5, 2:6])
    assert cropped.test.shape == (32, 2, 4, 4) and torch.equal(cropped.val_labels, data.val_labels)
    assert data.event_shape == (2, 6, 8)  # the original is untouched
    with pytest.raises(ValueError, match="not centred"):
        im.center_crop(data, 3)
    with pytest.raises(ValueError, match="size must be"):
        im.center_crop(data, 7)


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="Fashion-MNIST not installed")
def test_small_fashion_mnist_is_12x12_with_256_levels() -> None:
    data = im.small_fashion_mnist(n_train=100, n_val=50, n_test=20)
    assert data.event_shape == (1, 12, 12) and data.num_levels == 256
    assert data.train.shape == (100, 1, 12, 12) and data.test.shape == (20, 1, 12, 12)
    assert data.train.min() >= 0 and data.train.max() <= 255
    assert torch.equal(data.train, data.train.round())


def test_fixed_dequantization_is_reproducible_and_in_the_cells() -> None:
    x = _split().test
    a, b = im.fixed_dequantization(x, 3), im.fixed_dequantization(x, 3)
    assert torch.equal(a, b) and not torch.equal(a, im.fixed_dequantization(x, 4))
    assert torch.equal(a.floor(), x)


# ----------------------------------------------------------------------------- baseline


def test_independent_pixels_is_the_per_pixel_histogram() -> None:
    data = _split(levels=4)
    model = im.IndependentPixels(data.train, 4, pseudo_count=0.5)
    flat = data.train.flatten(1).long()
    x = data.test[:5]
    expected = torch.zeros(5, dtype=torch.float64)
    for d in range(flat.shape[1]):
        counts = torch.bincount(flat[:, d], minlength=4).double() + 0.5
        expected += (counts / counts.sum()).log()[x.flatten(1)[:, d].long()]
    torch.testing.assert_close(model.log_prob(x.double()), expected, rtol=1e-12, atol=1e-12)
    # a density on the dequantized scale: constant on each cell
    torch.testing.assert_close(model.log_prob(x.double() + 0.999), expected)
    # it integrates to one: the probabilities of the levels sum to one per pixel
    torch.testing.assert_close(model.log_probs.exp().sum(1), torch.ones(16, dtype=torch.float64))


def test_no_data_gives_the_uniform_density() -> None:
    data = _split(levels=8)
    uniform = im.IndependentPixels(data.train[:0], 8)
    bpd = metrics.bits_per_dim(float(-uniform.log_prob(data.test.double()).mean()), data.dim)
    assert math.isclose(bpd, 3.0, rel_tol=1e-12)  # log2(8)
    assert im.independent_pixel_bpd(data) < 3.0


def test_independent_pixels_rejects_bad_levels() -> None:
    with pytest.raises(ValueError, match="levels"):
        im.IndependentPixels(torch.full((2, 1, 2, 2), 9.0), 8)
    with pytest.raises(ValueError, match="pseudo_count"):
        im.IndependentPixels(torch.zeros(2, 1, 2, 2), 8, pseudo_count=0.0)


# ----------------------------------------------------------------------------- objectives


def test_image_objective_dequantizes_every_batch() -> None:
    seen = []

    class Probe(torch.nn.Module):
        event_shape = (1, 4, 4)

        def energy(self, z: torch.Tensor) -> torch.Tensor:
            seen.append(z.detach().clone())
            return (z**2).flatten(1).sum(1) * self.w

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

    levels = _split().train[:4]
    settings = im.ImageTrainingSettings()
    objective = im.image_objective("dsm", settings)
    torch.manual_seed(0)
    objective(Probe(), levels)
    objective(Probe(), levels)
    # the same levels, two calls: two different dequantizations (and DSM noises)
    assert len(seen) == 2 and not torch.equal(seen[0], seen[1])
    with pytest.raises(ValueError, match="unknown objective"):
        im.image_objective("nce", settings)


def test_energy_weight_adds_the_mean_energy_to_score_matching_only() -> None:
    model = _build()()
    im.initialize_actnorm(model, _split().train[:16])
    levels = _split().train[:8]
    plain = im.ImageTrainingSettings()
    weighted = im.ImageTrainingSettings(energy_weight=0.5)
    for name in ("ssm", "ml"):
        torch.manual_seed(1)
        a = im.image_objective(name, plain)(model, levels)
        torch.manual_seed(1)
        b = im.image_objective(name, weighted)(model, levels)
        if name == "ml":
            torch.testing.assert_close(a, b)
            continue
        torch.manual_seed(1)
        x = levels + torch.rand(levels.shape)
        z = model.preprocess(x)
        expected = objectives.ssm(model, x) + 0.5 * model.energy(z).mean()
        torch.testing.assert_close(b, expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- training


def test_initialize_actnorm_sets_every_actnorm() -> None:
    model = _build()()
    im.initialize_actnorm(model, _split().train[:16])
    actnorms = [layer for layer in model.layers if isinstance(layer, ActNorm)]
    assert actnorms and all(bool(layer.initialized) for layer in actnorms)
    assert any(float(layer.log_scale.detach().abs().max()) > 0 for layer in actnorms)


def test_train_image_model_keeps_the_best_ema_checkpoint_and_is_deterministic() -> None:
    data = _split()
    settings = im.ImageTrainingSettings(steps=12, batch_size=16, eval_every=4, n_eval=32)
    run = im.train_image_model(_build(), "ml", data, settings, seed=3)
    again = im.train_image_model(_build(), "ml", data, settings, seed=3)
    assert run.test_bpd == again.test_bpd and run.curve == again.curve
    assert [step for step, _ in run.curve] == [4, 8, 12]
    best_step, best_val = min(run.curve, key=lambda item: item[1])
    assert run.best_step == best_step and run.val_bpd == best_val
    assert len(run.losses) == 12 and run.seconds_per_step > 0 and not run.diverged
    model = im.load_state(_build(), run)
    test = im.fixed_dequantization(data.test, settings.eval_seed + 1)
    expected = metrics.bits_per_dim(metrics.nll(model, test), data.dim)
    assert math.isclose(run.test_bpd, expected, rel_tol=1e-9)
    other = im.train_image_model(_build(), "ml", data, settings, seed=4)
    assert other.curve != run.curve


def test_train_image_model_runs_score_matching_with_the_energy_weight() -> None:
    data = _split()
    settings = im.ImageTrainingSettings(steps=6, batch_size=16, eval_every=3, n_eval=16,
                                        energy_weight=0.1)
    for name in ("ssm", "dsm", "fdssm"):
        run = im.train_image_model(_build(), name, data, settings, seed=0)
        assert math.isfinite(run.test_bpd) and len(run.curve) == 2, name


def test_train_image_model_validates_settings() -> None:
    with pytest.raises(ValueError, match="steps"):
        im.train_image_model(_build(), "ml", _split(), im.ImageTrainingSettings(steps=0))


def _run(objective: str, seed: int, value: float) -> im.ImageRun:
    return im.ImageRun(objective, seed, value, value, 1, [(1, value)], 1.0, 1.0, 0, False)


def test_summarize_runs_gives_student_t_intervals_over_seeds() -> None:
    runs = [_run("ml", s, v) for s, v in enumerate([5.0, 5.2, 5.1])] + [_run("ssm", 0, 6.0)]
    table = im.summarize_runs(runs)
    assert table["ml"] == metrics.mean_confidence_interval([5.0, 5.2, 5.1])
    mean, half = table["ssm"]
    assert mean == 6.0 and math.isnan(half)
    assert im.summarize_runs(runs, attribute="seconds_per_step")["ml"][0] == 1.0


# ----------------------------------------------------------------------------- cost


def test_op_counts_see_the_determinants_of_ml_only() -> None:
    model = _build()()
    levels = _split().train[:8]
    im.initialize_actnorm(model, levels)
    x = levels + 0.5
    counts = {name: im.op_counts(im.training_step(model, objectives.get(name), x))
              for name in ("ml", "ssm", "dsm")}
    assert im.cubic_ops(counts["ml"])["_linalg_slogdet"] == 2  # one per Conv1x1
    assert not im.cubic_ops(counts["ssm"]) and not im.cubic_ops(counts["dsm"])
    assert counts["ssm"]["convolution"] > counts["dsm"]["convolution"] > 0


def test_interleaved_times_call_round_robin() -> None:
    calls = []
    steps = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = im.interleaved_times(steps, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    with pytest.raises(ValueError, match="repeats"):
        im.interleaved_times(steps, repeats=0)


def test_settings_learning_rates_and_the_energy_objective() -> None:
    settings = im.ImageTrainingSettings(lr={"ssm": 3e-4}, default_lr=1e-3)
    assert settings.learning_rate("ssm") == 3e-4 and settings.learning_rate("ml") == 1e-3
    with pytest.raises(ValueError, match="energy_weight"):
        im.image_objective("energy", settings)
    model = _build()()
    im.initialize_actnorm(model, _split().train[:16])
    levels = _split().train[:8]
    weighted = im.ImageTrainingSettings(energy_weight=0.2)
    torch.manual_seed(2)
    loss = im.image_objective("energy", weighted)(model, levels)
    torch.manual_seed(2)
    x = levels + torch.rand(levels.shape)
    torch.testing.assert_close(loss, 0.2 * model.energy(model.preprocess(x)).mean())
