"""The image-training driver (ebflow_lite.experiments.image_training) on tiny data."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ebflow_lite import objectives
from ebflow_lite.data import dequantize, digits_images
from ebflow_lite.experiments import image_training as it
from ebflow_lite.layers import Dense, SmoothLeakyReLU
from ebflow_lite.models import fc_flow


@pytest.fixture(scope="module")
def digits():
    return digits_images(seed=0)


def tiny(**overrides) -> it.TrainConfig:
    values = {"dataset": "digits", "model": "fc", "objective": "ml", "steps": 6,
              "batch_size": 32, "optimizer": "adam", "lr": 1e-3, "eval_every": 3,
              "device": "cpu"}
    return it.TrainConfig(**{**values, **overrides})


# ----------------------------------------------------------------------------- presets
def test_one_preset_per_table_2_cell_and_glow_run() -> None:
    cells = {f"{d}-{m}-{o}" for d in ("mnist", "cifar10") for m in ("fc", "cnn")
             for o in ("ml", "sml", "ssm", "dsm", "fdssm")}
    assert set(it.PRESETS) == cells | {"mnist-glow-ssm", "mnist-glow-dsm"}
    for name in it.PRESETS:  # every preset is a valid configuration
        it.preset(name)


def test_presets_hold_the_official_settings() -> None:
    fc = it.preset("mnist-fc-ssm")
    assert (fc.optimizer, fc.lr, fc.batch_size, fc.lr_gamma, fc.lr_epochs) == (
        "rmsprop", 1e-4, 100, 0.95, 50)
    assert (fc.sigma, fc.eps, fc.logit_alpha, fc.logit_eps, fc.grad_clip) == (
        1.0, 1.0, 0.5, 1e-6, None)
    assert fc.steps == 50 * 500 and fc.eval_every == 500 and fc.n_val == 10000
    assert it.preset("mnist-fc-fdssm").grad_clip == 5.0
    cnn_ml = it.preset("mnist-cnn-ml")
    assert (cnn_ml.weight_decay, cnn_ml.lr_gamma, cnn_ml.logit_alpha, cnn_ml.sigma) == (
        1e-5, 0.925, 0.75, 0.1)
    assert it.preset("mnist-cnn-ssm").weight_decay == 0.0
    assert it.preset("cifar10-fc-dsm").lr_gamma == 0.85 and it.preset("cifar10-fc-dsm").fc_residual
    assert it.preset("cifar10-cnn-fdssm").lr_epochs == 50
    # the official low-energy term: lambda / C for SSM and DSM, lambda / eps^2 for FDSSM
    assert it.preset("cifar10-cnn-ssm").energy_weight == pytest.approx(0.001 / 3)
    assert it.preset("cifar10-fc-fdssm").energy_weight == pytest.approx(0.001 / 0.1**2)
    assert it.preset("cifar10-fc-ml").energy_weight == 0.0
    glow = it.preset("mnist-glow-dsm")
    assert (glow.optimizer, glow.lr, glow.grad_clip, glow.sigma, glow.steps) == (
        "adam", 1e-5, 500.0, 0.1, 80 * 500)
    assert it.preset_name_for("fashion-mnist", "cnn", "dsm") == "mnist-cnn-dsm"
    assert it.preset_name_for("cifar10", "glow", "ssm") is None
    assert it.preset_notes("cifar10-cnn-ssm") and not it.preset_notes("mnist-fc-ml")
    with pytest.raises(ValueError, match="unknown preset"):
        it.preset("mnist-mlp-ml")
    with pytest.raises(ValueError, match="unknown configuration"):
        it.preset("mnist-fc-ml", learning_rate=1.0)


def test_learning_rate_schedule_is_the_papers_multistep() -> None:
    config = it.TrainConfig(lr=1e-4, lr_gamma=0.5, lr_epochs=3)
    rates = [it.learning_rate(config, step, steps_per_epoch=10) for step in (0, 9, 10, 25, 99)]
    assert rates == pytest.approx([1e-4, 1e-4, 5e-5, 2.5e-5, 2.5e-5])


@pytest.mark.parametrize("field, value", [
    ("dataset", "svhn"), ("model", "mlp"), ("objective", "kl"), ("steps", 0),
    ("batch_size", 1.5), ("lr", -1.0), ("kernel_size", 4), ("logit_eps", 0.5),
    ("ema_decay", 1.0), ("grad_clip", 0.0), ("n_val", 0), ("seed", -1), ("optimizer", "sgd"),
])
def test_config_rejects_bad_values(field, value) -> None:
    with pytest.raises(ValueError, match=field):
        it.TrainConfig(**{field: value})


def test_config_round_trips_through_a_dict() -> None:
    config = it.preset("cifar10-cnn-ssm", steps=7)
    assert it.TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        it.TrainConfig.from_dict({**config.to_dict(), "colour": "red"})


# ----------------------------------------------------------------------------- models
def test_fc_model_is_the_papers() -> None:
    config = it.preset("mnist-fc-ml")
    model = it.build_model(config, (1, 28, 28), 256)
    assert it.count_parameters(model) == 2 * (784**2 + 784) == 1_230_880
    first, activation, second = model.layers
    assert torch.equal(first.weight, -torch.eye(784)) and torch.equal(first.bias,
                                                                      torch.ones(784))
    assert isinstance(activation, SmoothLeakyReLU) and activation.alpha == 0.3
    assert not activation.residual and model.in_log_z(first) and model.in_log_z(second)
    reference = fc_flow(784)
    x = torch.randn(5, 784)
    torch.testing.assert_close(model.energy(x), reference.energy(x))
    residual = it.build_model(dataclasses.replace(config, fc_residual=True), (3, 4, 4), 256)
    assert residual.layers[1].residual and isinstance(residual.layers[0], Dense)
    assert residual.event_shape == (48,)


def test_cnn_and_glow_models() -> None:
    cnn = it.build_model(it.preset("mnist-cnn-ml"), (1, 28, 28), 256)
    assert it.count_parameters(cnn) == 26_796
    cifar = it.build_model(it.preset("cifar10-cnn-ml"), (3, 32, 32), 256)
    assert it.count_parameters(cifar) == 240_912
    glow = it.build_model(it.preset("mnist-glow-ssm", glow_depth=1, glow_hidden=8),
                          (1, 8, 8), 17)
    assert glow.event_shape == (1, 8, 8)
    # the preprocessing of the logit alpha in the configuration, as MaP
    assert cnn.match_after_preprocessing and cnn.preprocessing[1].alpha == 0.75


def test_objective_dequantizes_each_batch_and_adds_the_energy_term(digits) -> None:
    config = tiny(objective="dsm", sigma=0.3, energy_weight=0.01)
    model = it.build_model(config, digits.event_shape, digits.num_levels)
    loss_fn, trained = it.make_objective(config, model, digits.num_levels)
    assert trained is model
    levels = it.model_view(digits.train[:16], "fc")
    with torch.random.fork_rng():
        torch.manual_seed(3)
        loss = loss_fn(model, levels)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        x = dequantize(levels)
        expected = objectives.dsm(model, x, sigma=0.3)
        expected = expected + 0.01 * model.energy(model.preprocess(x)).mean()
    torch.testing.assert_close(loss, expected)
    # without MaP the noisy points are mirrored back into the box [0, K]
    no_map = dataclasses.replace(config, map=False)
    model = it.build_model(no_map, digits.event_shape, digits.num_levels)
    loss_fn, trained = it.make_objective(no_map, model, digits.num_levels)
    assert trained is not model and math.isfinite(float(loss_fn(trained, levels).detach()))


# ----------------------------------------------------------------------------- runs
def test_run_keeps_the_best_validation_checkpoint(digits) -> None:
    result = it.run(tiny(steps=7), data=digits)
    assert [e["step"] for e in result.evals] == [3, 6, 7]
    best = min(result.evals, key=lambda e: e["val_bpd"])
    assert (result.best_step, result.val_bpd) == (best["step"], best["val_bpd"])
    assert result.steps == 7 and len(result.losses) == 7 and len(result.seconds) == 7
    assert result.batches_per_second == pytest.approx(7 / result.train_seconds)
    # the reported test score is that of the best weights, on the fixed test noise
    model = it.build_model(result.config, digits.event_shape, digits.num_levels)
    model.load_state_dict(result.state)
    from ebflow_lite.experiments.images import fixed_dequantization

    test = it.model_view(fixed_dequantization(digits.test, result.config.eval_seed + 1), "fc")
    assert it.evaluate(model, test, digits.dim)["bpd"] == pytest.approx(result.test_bpd)
    assert result.test_bpd == pytest.approx(result.test_nll / (64 * math.log(2)))


def test_every_objective_and_model_trains(digits) -> None:
    for model in it.MODELS:
        for objective in it.OBJECTIVES:
            config = tiny(model=model, objective=objective, steps=2, eval_every=2,
                          glow_depth=1, glow_hidden=8, sigma=0.1, eps=0.1)
            result = it.run(config, data=digits)
            assert math.isfinite(result.test_bpd), (model, objective)
            assert result.num_parameters > 0


def test_checkpoints_resume_bit_for_bit(digits, tmp_path) -> None:
    config = tiny(objective="ssm", steps=6)
    straight = it.run(config, data=digits, checkpoint=tmp_path / "a.pt", log=tmp_path / "a.csv")
    first = it.run(dataclasses.replace(config, steps=3), data=digits,
                   checkpoint=tmp_path / "b.pt", log=tmp_path / "b.csv")
    assert first.steps == 3
    resumed = it.run(config, data=digits, checkpoint=tmp_path / "b.pt",
                     log=tmp_path / "b.csv")
    assert resumed.losses == straight.losses
    assert [e["val_bpd"] for e in resumed.evals] == [e["val_bpd"] for e in straight.evals]
    for key, value in straight.state.items():
        assert torch.equal(value, resumed.state[key]), key
    rows_a, rows_b = it.StepLog(tmp_path / "a.csv").read(), it.StepLog(tmp_path / "b.csv").read()
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    # the clock continues: training seconds grow across the resumption
    assert resumed.seconds[3] > resumed.seconds[2] > 0
    with pytest.raises(ValueError, match="cannot resume"):
        it.run(dataclasses.replace(config, lr=0.5), data=digits, checkpoint=tmp_path / "b.pt")


def test_a_time_limit_stops_at_a_checkpoint(digits, tmp_path) -> None:
    config = tiny(steps=9, max_minutes=1e-9)
    result = it.run(config, data=digits, checkpoint=tmp_path / "c.pt")
    assert result.stopped_early and result.steps == 3
    # without a checkpoint file a temporary one is used
    assert it.run(config, data=digits).steps == 3


def test_step_log_formats(tmp_path) -> None:
    rows = [{"step": 1, "loss": 0.5, "lr": 1e-3, "seconds": 0.1},
            {"step": 2, "loss": 0.25, "lr": 1e-3, "seconds": 0.2, "val_nll": 3.0,
             "val_bpd": 1.5}]
    for suffix in (".csv", ".jsonl"):
        log = it.StepLog(tmp_path / f"log{suffix}")
        log.truncate(0)
        log.append(rows[:1])
        log.append(rows[1:])
        assert log.read() == rows
        log.truncate(1)
        assert log.read() == rows[:1]
    with pytest.raises(ValueError, match="log file"):
        it.StepLog(tmp_path / "log.txt")


def test_save_and_load_best(digits, tmp_path) -> None:
    result = it.run(tiny(model="cnn", steps=2, eval_every=2), data=digits)
    it.save_best(tmp_path / "best.pt", result, digits)
    model, config, info = it.load_best(tmp_path / "best.pt")
    assert config == result.config and info["test_bpd"] == result.test_bpd
    samples = it.samples_as_images(model, 3, digits.event_shape, digits.num_levels,
                                   generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 8, 8)
    assert float(samples.min()) >= 0 and float(samples.max()) <= 17


def test_load_data_needs_a_root_for_local_files() -> None:
    with pytest.raises(ValueError, match="data_root"):
        it.load_data(it.TrainConfig(dataset="mnist"))
    data = it.load_data(it.TrainConfig(dataset="digits", n_train=100, n_val=20, n_test=30))
    assert (data.train.shape[0], data.val.shape[0], data.test.shape[0]) == (100, 20, 30)
