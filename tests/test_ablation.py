"""The chapter-8 ablation helpers: reflection, data-space scores, gradient norms, small runs."""

from __future__ import annotations

import math

import pytest
import torch

from ebflow_lite import metrics, objectives
from ebflow_lite.data.digits import digits, digits_preprocessing
from ebflow_lite.experiments.ablation import (
    AblationRun,
    DigitsAblationSettings,
    ReflectedEnergy,
    build_digits_model,
    dequantized_objective,
    digits_objective,
    gradient_norm_trace,
    median_logit_slope,
    reflect_into_box,
    run_digits_ablation,
    summarize_ablation,
)
from ebflow_lite.models import fc_flow
from ebflow_lite.testing import perturb_parameters


@pytest.fixture(scope="module")
def data():
    return digits(seed=0)


def _twins(eps: float) -> tuple:
    with_map = fc_flow(64, preprocessing=digits_preprocessing(0.5, eps)).double()
    without_map = fc_flow(64, preprocessing=digits_preprocessing(0.5, eps),
                          match_after_preprocessing=False).double()
    perturb_parameters(with_map, 0.05, torch.Generator().manual_seed(0))
    with torch.no_grad():  # the same parameters in the twin without MaP
        for p, q in zip(with_map.parameters(), without_map.parameters(), strict=True):
            q.copy_(p)
    return with_map, without_map


@pytest.mark.parametrize("eps", [0.05, 1e-6])
def test_data_space_score_is_the_chain_rule_of_the_map_score(data, eps: float) -> None:
    with_map, without_map = _twins(eps)
    x = data.train[:64].double()
    k, alpha = data.num_levels, 0.5
    p = eps + (1 - 2 * eps) * x / k
    slope = (1 - 2 * eps) / (k * alpha * p * (1 - p))
    d_log_slope = -(1 - 2 * eps) * (1 - 2 * p) / (k * p * (1 - p))
    expected = slope * with_map.score(with_map.preprocess(x)) + d_log_slope
    torch.testing.assert_close(without_map.score(x), expected, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(metrics.data_space_score(with_map, x), expected,
                               rtol=1e-7, atol=1e-7)


def test_reflect_into_box() -> None:
    x = torch.tensor([-0.5, 0.0, 0.3, 1.0, 1.25, 2.5, -3.2])
    out = reflect_into_box(x, 0.0, 1.0)
    torch.testing.assert_close(out, torch.tensor([0.5, 0.0, 0.3, 1.0, 0.75, 0.5, 0.8]))
    assert bool(((out >= 0) & (out <= 1)).all())
    with pytest.raises(ValueError, match="low < high"):
        reflect_into_box(x, 1.0, 1.0)


def test_reflected_energy_is_the_energy_inside_and_defined_outside(data) -> None:
    # the gentle squeeze: at 1e-6 the wall's margin (1e-6 of the range) moves float32
    # energies near x = 0 by more than assert_close allows
    model = build_digits_model("none", DigitsAblationSettings(logit_eps=0.05))
    wrapped = ReflectedEnergy(model, 0.0, 17.0)
    x = data.train[:16]
    torch.testing.assert_close(wrapped.energy(x), model.energy(x))
    outside = x.clone()
    outside[:, 0] = -0.3
    mirrored = outside.clone()
    mirrored[:, 0] = 0.3
    torch.testing.assert_close(wrapped.energy(outside), model.energy(mirrored))
    with pytest.raises(ValueError):
        model.energy(outside)  # the logit is undefined below 0
    assert list(wrapped.parameters()) == list(model.parameters())
    loss = objectives.dsm(wrapped, x, sigma=0.5)  # data-space noise leaves the box
    assert math.isfinite(float(loss.detach()))


def test_median_logit_slope_matches_autograd(data) -> None:
    x = data.train[:200].double().requires_grad_(True)
    y = x
    for layer in digits_preprocessing(0.5, 0.05):
        y, _ = layer(y)
    (grad,) = torch.autograd.grad(y.sum(), x)
    value = median_logit_slope(data.train[:200], 0.5, 0.05, 17)
    assert value == pytest.approx(float(grad.median()), rel=1e-9)


def test_without_map_the_noise_is_converted_to_data_space(data) -> None:
    settings = DigitsAblationSettings()
    for variant, expected_type in [("ema_map", "EBFlow"), ("none", "ReflectedEnergy")]:
        model = build_digits_model(variant, settings)
        _, target = digits_objective("dsm", model, settings, data)
        assert type(target).__name__ == expected_type
    assert model.match_after_preprocessing is False
    with pytest.raises(ValueError, match="unknown objective"):
        digits_objective("nce", model, settings, data)
    with pytest.raises(ValueError, match="unknown variant"):
        build_digits_model("map_only", settings)


def test_gradient_norm_trace_records_the_raw_gradient_norm(data) -> None:
    x = data.train[:256]
    model = fc_flow(64, preprocessing=digits_preprocessing())
    reference = fc_flow(64, preprocessing=digits_preprocessing())
    reference.load_state_dict(model.state_dict())
    loss = objectives.ml(reference, x)
    loss.backward()
    first = math.sqrt(sum(float((p.grad**2).sum()) for p in reference.parameters()))
    # one full batch: the ML loss does not depend on the order of the samples
    norms = gradient_norm_trace(model, objectives.ml, x, steps=3, batch_size=256)
    assert len(norms) == 3 and all(math.isfinite(v) for v in norms)
    assert norms[0] == pytest.approx(first, rel=1e-5)


def test_small_ablation_runs(data) -> None:
    settings = DigitsAblationSettings(steps=20, eval_every=10)
    for objective, variant in [("ssm", "ema_map"), ("dsm", "none"), ("fdssm", "ema")]:
        run = run_digits_ablation(objective, variant, seed=0, settings=settings, data=data)
        assert isinstance(run, AblationRun)
        assert math.isfinite(run.test_nll) and math.isfinite(run.val_nll)
        assert run.best_step in (10, 20) and len(run.losses) == 20 and not run.diverged
    again = run_digits_ablation("fdssm", "ema", seed=0, settings=settings, data=data)
    assert again.test_nll == run.test_nll  # deterministic for a seed
    with pytest.raises(ValueError, match="eval_every"):
        run_digits_ablation("ssm", "none", settings=DigitsAblationSettings(steps=5,
                                                                           eval_every=10))


def test_best_checkpoint_is_the_one_reported(data) -> None:
    settings = DigitsAblationSettings(steps=30, eval_every=10)
    run = run_digits_ablation("ml", "ema_map", seed=1, settings=settings, data=data)
    # ML improves the NLL steadily over the first steps, so the last checkpoint is the best
    assert run.best_step == 30
    assert run.test_nll < 400.0


def test_summarize_ablation() -> None:
    runs = [AblationRun("ssm", "none", s, v, v, 10, 1.0, 0, False)
            for s, v in enumerate([10.0, 12.0, 14.0])]
    runs.append(AblationRun("dsm", "ema", 0, 5.0, 5.0, 10, 1.0, 0, False))
    table = summarize_ablation(runs)
    mean, half = table["ssm", "none"]
    assert mean == pytest.approx(12.0)
    assert half == pytest.approx(4.302652729911275 * 2.0 / math.sqrt(3), rel=1e-5)
    assert table["dsm", "ema"][0] == 5.0 and math.isnan(table["dsm", "ema"][1])


def test_dequantized_objective_redraws_the_noise_every_batch(data) -> None:
    seen = []

    def record(model, x):
        seen.append(x.clone())
        return x.sum() * 0.0

    levels = data.train[:32].floor()
    wrapped = dequantized_objective(record)
    torch.manual_seed(0)
    wrapped(None, levels)
    wrapped(None, levels)
    first, second = seen
    assert torch.equal(first.floor(), levels) and torch.equal(second.floor(), levels)
    assert not torch.equal(first, second)  # a fresh U[0, 1) draw per call
    torch.manual_seed(0)
    wrapped(None, levels)
    assert torch.equal(seen[-1], first)  # from the global RNG, which fit checkpoints


def test_ablation_defaults_follow_the_paper() -> None:
    settings = DigitsAblationSettings()
    assert settings.logit_eps == 1e-6 and settings.redequantize
    fixed = DigitsAblationSettings(steps=20, eval_every=10, redequantize=False)
    fresh = DigitsAblationSettings(steps=20, eval_every=10)
    a = run_digits_ablation("ml", "ema_map", seed=0, settings=fixed)
    b = run_digits_ablation("ml", "ema_map", seed=0, settings=fresh)
    assert math.isfinite(a.test_nll) and math.isfinite(b.test_nll)
    assert a.losses != b.losses  # the training batches differ
