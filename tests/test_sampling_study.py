"""ebflow_lite.experiments.sampling_study: chapter 10's cost, quality and imputation drivers."""

from __future__ import annotations

import math

import pytest
import torch

from ebflow_lite.data.images import ImageSplit
from ebflow_lite.ebm import GaussianEnergy
from ebflow_lite.experiments import sampling_study as study
from ebflow_lite.preprocessing import image_preprocessing

# ----------------------------------------------------------------------------- cost


def test_prepared_inverse_equals_the_model_inverse() -> None:
    model = study.benchmark_model(32, seed=3).double()
    prepared = study.PreparedInverse(model)
    u = torch.randn(7, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(prepared(u), model.inverse(u), rtol=1e-10, atol=1e-10)
        # through the preprocessing too
        with_pre = study.fc_image_model(16).double()
        torch.testing.assert_close(study.PreparedInverse(with_pre)(u[:, :16]),
                                   with_pre.inverse(u[:, :16]), rtol=1e-9, atol=1e-9)


def test_prepared_inverse_inverts_only_once() -> None:
    from torch.utils._python_dispatch import TorchDispatchMode

    from ebflow_lite.experiments.bench import CUBIC_OPS

    model = study.benchmark_model(16)
    prepared = study.PreparedInverse(model)
    seen: list[str] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with Record():
        prepared(torch.randn(4, 16))
    assert not [op for op in seen if op in CUBIC_OPS]     # no factorisation, no solve
    assert sum(op in ("mm", "addmm") for op in seen) == 2  # one product per dense layer


def test_predicted_crossover_is_the_flop_ratio() -> None:
    for dim, batch in ((64, 64), (4096, 64), (1024, 8)):
        inverse = 2 * (2 / 3 * dim**3 + 2 * batch * dim**2)
        step = 4 * 2 * batch * dim**2
        assert study.predicted_crossover(dim, batch) == pytest.approx(inverse / step)
        assert study.predicted_crossover(dim, batch) == pytest.approx(dim / (6 * batch) + 0.5)


def test_measure_costs_and_chain_times_return_positive_medians() -> None:
    point = study.measure_costs(32, batch_size=4, repeats=1, steps_per_call=2)
    for value in (point.langevin_step, point.sample, point.prepare, point.prepared_sample):
        assert value > 0 and math.isfinite(value)
    assert point.crossover_steps == pytest.approx(point.sample / point.langevin_step)
    sweep = study.cost_sweep([64, 16, 32], batch_size=2, repeats=1)
    assert [p.dim for p in sweep] == [16, 32, 64]
    assert math.isfinite(study.sweep_slope(sweep, "langevin_step", min_dim=16))
    with pytest.raises(ValueError, match="two dimensions"):
        study.sweep_slope(sweep, "sample", min_dim=64)
    times = study.chain_times(16, [1, 3], batch_size=2, repeats=1)
    assert set(times) == {1, 3} and all(t > 0 for t in times.values())


def test_interleaved_medians_times_every_callable() -> None:
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1
        return fn

    medians = study.interleaved_medians({"a": make("a"), "b": make("b")}, repeats=3, warmup=1)
    assert set(medians) == {"a", "b"} and calls == {"a": 4, "b": 4}


# ----------------------------------------------------------------------------- quality


def test_energy_ks_curve_measures_at_the_requested_steps() -> None:
    target = GaussianEnergy(torch.zeros(2), torch.eye(2), trainable=False)
    gen = torch.Generator().manual_seed(0)
    reference = target.energy(torch.randn(2000, 2, generator=gen))
    start = torch.randn(500, 2, generator=gen)
    curve = study.energy_ks_curve(target, start, reference, 0.2, 20, 5, "mala", gen)
    assert curve.steps == [0, 5, 10, 15, 20] and len(curve.ks) == 5
    assert curve.energies.shape == (5, 500) and 0 < curve.acceptance_rate < 1
    assert max(curve.ks) < 0.1      # exact starts, exact sampler
    far = study.energy_ks_curve(target, start + 10, reference, 0.01, 10, 5, "langevin", gen)
    assert far.ks[0] > 0.9 and far.acceptance_rate is None
    with pytest.raises(ValueError, match="method"):
        study.energy_ks_curve(target, start, reference, 0.1, 5, 5, "hmc")


# ----------------------------------------------------------------------------- masks and errors


def test_masks_have_the_promised_shapes_and_fractions() -> None:
    gen = torch.Generator().manual_seed(0)
    shape = (1, 14, 14)
    centre = study.make_mask("centre", 3, shape)
    assert centre.shape == (3, 1, 14, 14) and centre.dtype == torch.bool
    assert int(centre[0].sum()) == 49 and bool(centre[0, 0, 7, 7]) and not bool(centre[0, 0, 0, 0])
    half = study.make_mask("half", 2, shape)
    assert int(half[0].sum()) == 98 and bool(half[0, 0, 13].all()) and not bool(half[0, 0, 0].any())
    random = study.make_mask("random", 200, shape, generator=gen)
    assert abs(float(random.float().mean()) - 0.5) < 0.01
    assert not torch.equal(random[0], random[1])
    strokes = study.make_mask("strokes", 50, shape, generator=gen)
    fraction = float(strokes.float().mean())
    assert 0.1 < fraction < 0.6 and all(bool(m.any()) for m in strokes)
    with pytest.raises(ValueError, match="kind"):
        study.make_mask("circle", 2, shape)


def test_digit_stroke_masks_follow_the_digit_images() -> None:
    from sklearn.datasets import load_digits

    masks = study.digit_stroke_masks((8, 8), n=None, threshold=0.5, seed=0)
    assert masks.shape == (1797, 1, 8, 8)
    # at the digits' own size the upscaling is the identity: strokes = pixels above 8 of 16
    digits = torch.from_numpy(load_digits().images).float()
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    assert torch.equal(masks[:, 0], digits[order] / 16 > 0.5)


def test_nearest_neighbour_finds_a_training_image() -> None:
    gen = torch.Generator().manual_seed(1)
    train = torch.rand(50, 1, 4, 4, generator=gen) * 255
    x = train[[7, 21]].clone()
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[:, :, :2] = True
    x_missing = torch.where(mask, torch.zeros_like(x), x)
    filled = study.nearest_neighbour_fill(train, x_missing, mask, chunk=1)
    torch.testing.assert_close(filled, x)                   # the observed half identifies it
    mean_fill = study.mean_image_fill(train, x_missing, mask)
    torch.testing.assert_close(mean_fill[mask], train.mean(0).expand_as(x)[mask])
    assert torch.equal(mean_fill[~mask], x[~mask])


def test_masked_mse_and_psnr() -> None:
    truth = torch.zeros(2, 4)
    imputed = torch.tensor([[128.0, 0, 0, 5], [0, 0, 0, 0]])
    mask = torch.tensor([[True, False, False, False], [True, True, False, False]])
    mse = study.masked_mse(imputed, truth, mask, scale=256)
    torch.testing.assert_close(mse, torch.tensor([0.25, 0.0]))
    assert float(study.psnr(0.01)) == pytest.approx(20.0)


# ----------------------------------------------------------------------------- the model


def test_whitening_start_decorrelates_the_data() -> None:
    gen = torch.Generator().manual_seed(2)
    mixing = torch.randn(6, 6, generator=gen)
    z = torch.randn(5000, 6, generator=gen) @ mixing.T + 3.0
    model = study.whiten_fc_flow(study.fc_image_model(6), z)
    first, act, second = model.layers
    with torch.no_grad():
        a = first.linear_map(z)
        torch.testing.assert_close(a.mean(0), torch.zeros(6), atol=1e-4, rtol=0)
        torch.testing.assert_close(torch.cov(a.T), torch.eye(6), atol=1e-3, rtol=0)
        u = second.linear_map(act(a)[0])
        torch.testing.assert_close(u.std(0), torch.ones(6), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="more samples"):
        study.whiten_fc_flow(study.fc_image_model(6), z[:5])


def test_train_fc_model_runs_and_reports() -> None:
    gen = torch.Generator().manual_seed(3)
    levels = torch.randint(0, 256, (300, 1, 4, 4), generator=gen).float()
    split = ImageSplit(train=levels[:200], val=levels[200:250], test=levels[250:],
                       train_labels=torch.zeros(200, dtype=torch.long),
                       val_labels=torch.zeros(50, dtype=torch.long),
                       test_labels=torch.zeros(50, dtype=torch.long),
                       num_levels=256, event_shape=(1, 4, 4))
    trained = study.train_fc_model(split, steps=5, batch_size=20, n_eval=50)
    assert len(trained.history.losses) == 5 and trained.seconds > 0
    assert math.isfinite(trained.bits_per_dim_start) and math.isfinite(trained.bits_per_dim_end)
    assert not trained.model.training
    assert len(trained.model.preprocessing) == len(image_preprocessing(256))
