"""Score-matching and sampling-based objectives: closed forms, unbiasedness, minimisers."""

from __future__ import annotations

import math

import pytest
import torch

from ebflow_lite import EBFlow
from ebflow_lite.ebm import GaussianEnergy, MLPEnergy
from ebflow_lite.layers import Affine, Dense, Logit, SmoothLeakyReLU
from ebflow_lite.objectives import dsm, exact_sm, fdssm, ml, sml, ssm
from ebflow_lite.testing import perturb_parameters

DTYPE = torch.float64


def _gaussian(dim: int = 3, seed: int = 1) -> GaussianEnergy:
    g = torch.Generator().manual_seed(seed)
    root = torch.randn(dim, dim, generator=g, dtype=DTYPE)
    cov = root @ root.T + 0.5 * torch.eye(dim, dtype=DTYPE)
    return GaussianEnergy(torch.randn(dim, generator=g, dtype=DTYPE), cov)


def _gaussian_sm(model: GaussianEnergy, x: torch.Tensor) -> float:
    """Closed form (1/D) mean[0.5 |A (x - mu)|^2 - tr A] for precision A."""
    with torch.no_grad():
        a = model.precision
        grad = (x - model.mean) @ a
        return float((0.5 * (grad**2).sum(1) - torch.trace(a)).mean() / x.shape[1])


def _nonlinear_flow(dim: int = 3) -> EBFlow:
    torch.manual_seed(3)
    flow = EBFlow([Dense(dim, init="orthogonal"), SmoothLeakyReLU(0.3), Dense(dim)]).to(DTYPE)
    return perturb_parameters(flow, 0.2)


def _repeat(fn, n: int) -> torch.Tensor:
    return torch.tensor([float(fn().detach()) for _ in range(n)], dtype=DTYPE)


def _assert_unbiased(draws: torch.Tensor, target: float, z: float = 4.5) -> None:
    half_width = z * float(draws.std()) / math.sqrt(len(draws))
    assert abs(float(draws.mean()) - target) < half_width, (
        f"mean {float(draws.mean()):.6f} vs target {target:.6f} (+- {half_width:.2e})"
    )


# ------------------------------------------------------------------ exact score matching
def test_exact_sm_equals_gaussian_closed_form():
    model = _gaussian(4)
    x = torch.randn(32, 4, dtype=DTYPE)
    assert float(exact_sm(model, x).detach()) == pytest.approx(_gaussian_sm(model, x), rel=1e-10)


def test_exact_sm_of_dense_flow_equals_closed_form():
    flow = EBFlow([Dense(3, init="orthogonal")]).to(DTYPE)
    with torch.no_grad():
        flow.layers[0].weight.add_(0.3 * torch.randn(3, 3, dtype=DTYPE))
        flow.layers[0].bias.normal_()
    w, b = flow.layers[0].weight.detach(), flow.layers[0].bias.detach()
    x = torch.randn(16, 3, dtype=DTYPE)
    grad = (x @ w.T + b) @ w  # grad E = W^T (W x + b), hess E = W^T W
    expected = (0.5 * (grad**2).sum(1) - (w**2).sum()).mean() / 3
    assert float(exact_sm(flow, x).detach()) == pytest.approx(float(expected), rel=1e-10)


def test_exact_sm_equals_brute_force_hessian_on_nonlinear_models():
    x = torch.randn(5, 3, dtype=DTYPE)
    for model in (_nonlinear_flow(3), MLPEnergy(3, hidden=16).to(DTYPE)):
        values = []

        def total_energy(p, model=model):
            return model.energy(p).sum()

        for row in x:
            point = row.unsqueeze(0)
            grad = torch.autograd.functional.jacobian(total_energy, point)
            hess = torch.autograd.functional.hessian(total_energy, point)
            values.append(0.5 * (grad**2).sum() - torch.diagonal(hess.reshape(3, 3)).sum())
        expected = torch.stack(values).mean() / 3
        assert float(exact_sm(model, x).detach()) == pytest.approx(float(expected), rel=1e-9)


# ------------------------------------------------------------------ sliced score matching
@pytest.mark.parametrize("projection", ["rademacher", "gaussian"])
@pytest.mark.parametrize("variance_reduced", [True, False])
def test_ssm_is_unbiased_for_exact_sm_on_a_gaussian(projection, variance_reduced):
    model = _gaussian(4)
    x = torch.randn(20, 4, dtype=DTYPE)
    draws = _repeat(
        lambda: ssm(model, x, n_slices=20, projection=projection,
                    variance_reduced=variance_reduced), 200,
    )
    assert float(draws.std()) > 0  # a genuinely random estimator
    _assert_unbiased(draws, _gaussian_sm(model, x))


def test_ssm_is_unbiased_on_a_nonlinear_flow():
    flow = _nonlinear_flow(3)
    x = torch.randn(20, 3, dtype=DTYPE)
    draws = _repeat(lambda: ssm(flow, x, n_slices=20), 200)
    _assert_unbiased(draws, float(exact_sm(flow, x).detach()))


def test_ssm_variance_falls_like_one_over_n_slices():
    model = _gaussian(4)
    x = torch.randn(10, 4, dtype=DTYPE)
    var_1 = float(_repeat(lambda: ssm(model, x, n_slices=1), 400).var())
    var_8 = float(_repeat(lambda: ssm(model, x, n_slices=8), 400).var())
    # F(399, 399) fluctuations are about +-15%; the ratio should be 8.
    assert 5.5 < var_1 / var_8 < 11.5, var_1 / var_8


def test_ssm_with_many_slices_approaches_exact_sm():
    flow = _nonlinear_flow(3)
    x = torch.randn(20, 3, dtype=DTYPE)
    exact = float(exact_sm(flow, x).detach())
    errors = [abs(float(ssm(flow, x, n_slices=k).detach()) - exact) for k in (1, 4000)]
    assert errors[1] < 0.05 * abs(exact) + 1e-3
    assert errors[1] < errors[0] or errors[0] < 1e-3


def test_ssm_gradient_matches_exact_sm_gradient_on_average():
    model = _gaussian(3)
    x = torch.randn(20, 3, dtype=DTYPE)
    params = list(model.parameters())

    def flat_grad(loss):
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])

    exact = flat_grad(exact_sm(model, x))
    draws = torch.stack([flat_grad(ssm(model, x, n_slices=10)) for _ in range(100)])
    assert float(draws.std(0).max()) > 0  # the precision's gradient is random
    half_width = 5.0 * draws.std(0) / math.sqrt(len(draws)) + 1e-10
    assert bool(((draws.mean(0) - exact).abs() < half_width).all())


# ------------------------------------------------------------------ finite differences
def test_fdssm_is_unbiased_on_a_gaussian_for_any_eps():
    model = _gaussian(4)
    x = torch.randn(20, 4, dtype=DTYPE)
    draws = _repeat(lambda: fdssm(model, x, eps=0.7, n_slices=20), 200)
    _assert_unbiased(draws, _gaussian_sm(model, x))


def test_fdssm_with_small_eps_matches_exact_sm_on_a_nonlinear_flow():
    flow = _nonlinear_flow(3)
    x = torch.randn(20, 3, dtype=DTYPE)
    draws = _repeat(lambda: fdssm(flow, x, eps=0.01, n_slices=50), 100)
    _assert_unbiased(draws, float(exact_sm(flow, x).detach()))


def test_fdssm_scaling_is_per_dimension():
    """With eps -> 0 the FD quantities equal the slice quantities with E[v v^T] = eps^2/D."""
    model = _gaussian(5)
    x = torch.randn(4, 5, dtype=DTYPE)
    draws = _repeat(lambda: fdssm(model, x, eps=0.1, n_slices=500), 40)
    target = _gaussian_sm(model, x)
    _assert_unbiased(draws, target)
    # a D-times larger target (the un-normalised objective) is far outside the tolerance
    assert abs(float(draws.mean()) - 5 * target) > 10 * float(draws.std())


# ------------------------------------------------------------------ denoising
def test_dsm_expectation_is_smoothed_sm_plus_constant():
    model = _gaussian(3)
    x = torch.randn(20, 3, dtype=DTYPE)
    sigma = 0.3
    with torch.no_grad():
        a = model.precision
        grad = (x - model.mean) @ a
        smoothed = 0.5 * (grad**2).sum(1) + 0.5 * sigma**2 * torch.trace(a @ a) - torch.trace(a)
        target = float(smoothed.mean() / 3 + 0.5 / sigma**2)
    draws = _repeat(lambda: dsm(model, x.repeat(20, 1), sigma=sigma), 200)
    _assert_unbiased(draws, target)


def test_dsm_minimiser_on_gaussian_data_is_the_noised_gaussian():
    g = torch.Generator().manual_seed(5)
    cov = torch.tensor([[1.0, 0.4], [0.4, 0.6]], dtype=DTYPE)
    mean = torch.tensor([1.0, -2.0], dtype=DTYPE)
    data = mean + torch.randn(20000, 2, generator=g, dtype=DTYPE) @ torch.linalg.cholesky(cov).T
    sigma = 0.5
    model = GaussianEnergy(torch.zeros(2, dtype=DTYPE), torch.eye(2, dtype=DTYPE))
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = dsm(model, data, sigma=sigma, generator=torch.Generator().manual_seed(7))
        loss.backward()
        return loss

    optimizer.step(closure)
    learned = model.cov.detach()
    noised = cov + sigma**2 * torch.eye(2, dtype=DTYPE)
    torch.testing.assert_close(learned, noised, atol=0.04, rtol=0)
    assert (learned - cov).diagonal().min() > 0.15  # the sigma^2 = 0.25 bias is visible
    torch.testing.assert_close(model.mean.detach(), mean, atol=0.04, rtol=0)


def test_exact_sm_minimiser_on_gaussian_data_is_the_data_gaussian():
    g = torch.Generator().manual_seed(5)
    cov = torch.tensor([[1.0, 0.4], [0.4, 0.6]], dtype=DTYPE)
    data = torch.randn(5000, 2, generator=g, dtype=DTYPE) @ torch.linalg.cholesky(cov).T
    model = GaussianEnergy(torch.zeros(2, dtype=DTYPE), torch.eye(2, dtype=DTYPE))
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = exact_sm(model, data)
        loss.backward()
        return loss

    optimizer.step(closure)
    sample_cov = torch.cov(data.T, correction=0)
    torch.testing.assert_close(model.cov.detach(), sample_cov, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ sampling-based ML
def test_sml_gradient_equals_ml_gradient_in_expectation():
    flow = EBFlow([Dense(3, init="orthogonal")]).to(DTYPE)
    with torch.no_grad():
        flow.layers[0].weight.add_(0.3 * torch.randn(3, 3, dtype=DTYPE))
    x = 1.5 * torch.randn(64, 3, dtype=DTYPE) + 0.5
    params = list(flow.parameters())
    exact = torch.cat([g.flatten() for g in torch.autograd.grad(ml(flow, x), params)])
    draws = torch.stack([
        torch.cat([g.flatten() for g in torch.autograd.grad(sml(flow, x), params)])
        for _ in range(300)
    ])
    half_width = 5.0 * draws.std(0) / math.sqrt(len(draws)) + 1e-8
    assert bool(((draws.mean(0) - exact).abs() < half_width).all()), (draws.mean(0), exact)
    # and the check has teeth: dropping the negatives' term would be far off
    data_only = torch.cat([g.flatten() for g in torch.autograd.grad(
        flow.energy(x).mean(), params)])
    assert float((data_only - exact).abs().max()) > 10 * float(half_width.max())


def test_sml_accepts_explicit_negatives_for_a_plain_ebm():
    model = MLPEnergy(2, hidden=8)
    x, negatives = torch.randn(10, 2), torch.randn(30, 2)
    loss = sml(model, x, negatives=negatives)
    expected = model.energy(x).mean() - model.energy(negatives).mean()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    with pytest.raises(ValueError, match="sample"):
        sml(model, x)
    with pytest.raises(ValueError):
        sml(model, x, negatives=torch.randn(30, 3))


# ------------------------------------------------------------------ contract
def test_objectives_use_the_preprocessed_variable():
    layers = [Dense(3, init="orthogonal"), SmoothLeakyReLU(0.3), Dense(3)]
    pre = [Affine(0.5, 0.25, dim=3), Logit(alpha=0.5)]
    with_map = EBFlow(layers, preprocessing=pre).to(DTYPE)
    without = EBFlow(layers).to(DTYPE)
    x = torch.rand(8, 3, dtype=DTYPE)
    z = with_map.preprocess(x)
    for objective in (exact_sm, ssm, fdssm, dsm):
        kwargs = {} if objective is exact_sm else {"generator": torch.Generator().manual_seed(1)}
        a = objective(with_map, x, **kwargs)
        kwargs = {} if objective is exact_sm else {"generator": torch.Generator().manual_seed(1)}
        b = objective(without, z, **kwargs)
        assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-10), objective.__name__


@pytest.mark.parametrize("objective", [exact_sm, ssm, fdssm, dsm, sml])
def test_objectives_train_parameters_and_are_deterministic(objective):
    flow = _nonlinear_flow(3)
    x = torch.randn(8, 3, dtype=DTYPE)
    kwargs = {} if objective in (exact_sm, sml) else {"generator": torch.Generator().manual_seed(2)}
    loss = objective(flow, x, **kwargs)
    grads = torch.autograd.grad(loss, list(flow.parameters()))
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert any(float(g.abs().max()) > 0 for g in grads)
    if kwargs:
        again = objective(flow, x, generator=torch.Generator().manual_seed(2))
        assert float(again.detach()) == float(loss.detach())


def test_objectives_work_on_a_plain_energy_network():
    model = MLPEnergy(2, hidden=16, confinement=0.1)
    x = torch.randn(16, 2)
    for objective in (exact_sm, ssm, fdssm, dsm):
        loss = objective(model, x)
        loss.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all())
               for p in model.parameters())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x: dsm(m, x, sigma=0.0), "sigma"),
        (lambda m, x: dsm(m, x, sigma=-1.0), "sigma"),
        (lambda m, x: dsm(m, x, sigma=float("nan")), "sigma"),
        (lambda m, x: fdssm(m, x, eps=0.0), "eps"),
        (lambda m, x: fdssm(m, x, n_slices=0), "n_slices"),
        (lambda m, x: ssm(m, x, n_slices=0), "n_slices"),
        (lambda m, x: ssm(m, x, n_slices=1.5), "n_slices"),
        (lambda m, x: ssm(m, x, projection="uniform"), "projection"),
        (lambda m, x: ssm(m, x[:, :2]), "dimension"),
        (lambda m, x: dsm(m, x[0]), "shape"),
        (lambda m, x: exact_sm(m, x.long()), "floating"),
        (lambda m, x: ssm(m, torch.full_like(x, float("nan"))), "NaN"),
        (lambda m, x: ssm(torch.nn.Linear(3, 1), x), "energy"),
    ],
)
def test_bad_arguments_raise_value_error(call, message):
    model = _nonlinear_flow(3)
    x = torch.randn(4, 3, dtype=DTYPE)
    with pytest.raises(ValueError, match=message):
        call(model, x)
