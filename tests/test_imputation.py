"""ebflow_lite.imputation: MCMC imputation with clamped observed entries, its checks, the
official sampler's additions, and the closed-form Gaussian conditional it must reproduce."""

from __future__ import annotations

import math

import pytest
import torch

import ebflow_lite
from ebflow_lite import diagnostics
from ebflow_lite.imputation import (
    check_mask,
    gaussian_blur,
    gaussian_conditional,
    impute,
    linear_flow_gaussian,
)
from ebflow_lite.layers import Dense
from ebflow_lite.models import fc_flow
from ebflow_lite.preprocessing import image_preprocessing


def _linear_flow(dim: int = 5, seed: int = 0) -> ebflow_lite.EBFlow:
    """A Gaussian: two random dense layers (well conditioned), with biases."""
    gen = torch.Generator().manual_seed(seed)
    layers = [Dense(dim), Dense(dim)]
    with torch.no_grad():
        for layer in layers:
            layer.weight.copy_(torch.eye(dim) + 0.4 * torch.randn(dim, dim, generator=gen))
            layer.bias.copy_(torch.randn(dim, generator=gen))
    return ebflow_lite.EBFlow(layers).double()


# ----------------------------------------------------------------------------- closed forms


def test_linear_flow_gaussian_reads_off_mean_and_covariance() -> None:
    model = _linear_flow()
    w1, b1 = model.layers[0].weight, model.layers[0].bias
    w2, b2 = model.layers[1].weight, model.layers[1].bias
    a, b = w2 @ w1, w2 @ b1 + b2
    mean, cov = linear_flow_gaussian(model)
    with torch.no_grad():
        torch.testing.assert_close(mean, -torch.linalg.solve(a, b))
        torch.testing.assert_close(cov, torch.linalg.inv(a.T @ a))
        # and the density it implies is the model's
        x = torch.randn(7, 5, dtype=torch.float64)
        gauss = torch.distributions.MultivariateNormal(mean, cov)
        torch.testing.assert_close(gauss.log_prob(x), model.log_prob(x))


def test_linear_flow_gaussian_refuses_a_non_linear_flow() -> None:
    with pytest.raises(ValueError, match="linear"):
        linear_flow_gaussian(fc_flow(4))


def test_gaussian_conditional_matches_the_precision_form() -> None:
    # The conditional of N(mu, S) given x_O has covariance (P_MM)^{-1}, P = S^{-1}, and mean
    # mu_M - P_MM^{-1} P_MO (x_O - mu_O): an independent formula.
    model = _linear_flow(6, seed=1)
    mean, cov = linear_flow_gaussian(model)
    mask = torch.tensor([True, False, True, False, False, True])
    x = torch.randn(4, 6, dtype=torch.float64)
    cond_mean, cond_cov = gaussian_conditional(mean, cov, x, mask)
    p = torch.linalg.inv(cov)
    p_mm, p_mo = p[mask][:, mask], p[mask][:, ~mask]
    expected_cov = torch.linalg.inv(p_mm)
    expected_mean = mean[mask] - (x[:, ~mask] - mean[~mask]) @ (expected_cov @ p_mo).T
    torch.testing.assert_close(cond_cov, expected_cov)
    torch.testing.assert_close(cond_mean, expected_mean)
    with pytest.raises(ValueError, match="no missing"):
        gaussian_conditional(mean, cov, x, torch.zeros(6, dtype=torch.bool))


# ----------------------------------------------------------------------------- the Gaussian check


def test_mala_imputation_reproduces_the_gaussian_conditional() -> None:
    """The library's imputation must reproduce the closed-form conditional of a linear flow:
    mean and covariance within Monte-Carlo error, from chains that have mixed."""
    model = _linear_flow(5, seed=2)
    mean, cov = linear_flow_gaussian(model)
    mask = torch.tensor([True, False, True, True, False])
    x_obs = torch.tensor([[0.0, 1.5, 0.0, 0.0, -0.7]], dtype=torch.float64)
    cond_mean, cond_cov = gaussian_conditional(mean, cov, x_obs, mask)
    n_chains = 3000
    result = impute(model, x_obs.expand(n_chains, 5).clone(), mask, step_size=0.15,
                    n_steps=1000, method="mala", keep_trace=True, thin=5,
                    generator=torch.Generator().manual_seed(3))
    samples = result.samples[:, mask]
    assert 0.4 < result.acceptance_rate < 0.99
    # observed entries are untouched
    assert torch.equal(result.samples[:, ~mask], x_obs.expand(n_chains, 5)[:, ~mask])
    # the chains have mixed: R-hat near 1 and plenty of effective draws (after burn-in)
    summary = diagnostics.summarize(result.energies[:, :64], burn_in=60)
    assert summary.rhat < 1.02 and min(summary.ess_bulk, summary.ess_tail) > 400
    # mean: within 4 standard errors, entry by entry
    se_mean = (cond_cov.diagonal() / n_chains).sqrt()
    assert torch.all((samples.mean(0) - cond_mean[0]).abs() < 4 * se_mean)
    # covariance: Var of a sample covariance entry is (S_ii S_jj + S_ij^2) / n
    emp = torch.cov(samples.T)
    d = cond_cov.diagonal()
    se_cov = ((d[:, None] * d[None, :] + cond_cov**2) / n_chains).sqrt()
    assert torch.all((emp - cond_cov).abs() < 4 * se_cov)


def test_langevin_imputation_is_close_with_a_small_step_and_biased_with_a_large_one() -> None:
    # ULA's stationary covariance on a Gaussian with precision P is P^{-1} (I - h P / 2)^{-1}.
    model = _linear_flow(4, seed=4)
    mean, cov = linear_flow_gaussian(model)
    mask = torch.tensor([True, True, False, False])
    x_obs = torch.zeros(1, 4, dtype=torch.float64)
    _, cond_cov = gaussian_conditional(mean, cov, x_obs, mask)
    precision = torch.linalg.inv(cond_cov)
    n = 4000
    for h in (0.02, 0.6):
        result = impute(model, x_obs.expand(n, 4).clone(), mask, step_size=h, n_steps=300,
                        generator=torch.Generator().manual_seed(5))
        assert result.acceptance_rate is None
        emp = torch.cov(result.samples[:, mask].T)
        biased = cond_cov @ torch.linalg.inv(torch.eye(2, dtype=torch.float64)
                                             - h * precision / 2)
        d = biased.diagonal()
        se = ((d[:, None] * d[None, :] + biased**2) / n).sqrt()
        assert torch.all((emp - biased).abs() < 4 * se)
    # the large step's bias is far outside the Monte-Carlo error of the exact covariance
    d = cond_cov.diagonal()
    assert float((emp.diagonal() - d).min()) > 6 * float(((2 * d**2) / n).sqrt().max())


# ----------------------------------------------------------------------------- the chain


def test_masked_langevin_matches_a_from_scratch_step_and_keeps_observed_entries() -> None:
    model = _linear_flow(5, seed=6)
    x = torch.randn(3, 5, dtype=torch.float64)
    mask = torch.tensor([[True, False, False, True, False],
                         [False, True, True, True, False],
                         [True, True, True, True, True]])
    h, steps = 0.05, 7
    init = torch.randn(3, 5, dtype=torch.float64)
    result = impute(model, x, mask, step_size=h, n_steps=steps, init=init, keep_trace=True,
                    generator=torch.Generator().manual_seed(9))
    gen = torch.Generator().manual_seed(9)
    z = torch.where(mask, init, x)
    for _ in range(steps):
        zg = z.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.energy(zg).sum(), zg)
        noise = torch.randn(z.shape, generator=gen, dtype=z.dtype)
        z = z - h * grad * mask + math.sqrt(2 * h) * noise * mask
    torch.testing.assert_close(result.samples, z)
    assert result.trace.shape == (steps + 1, 3, 5)
    assert torch.equal(result.trace[:, ~mask], x[~mask].expand(steps + 1, -1))
    torch.testing.assert_close(result.energies[-1], model.energy(z).detach())


def test_imputation_in_data_space_through_map_preprocessing() -> None:
    torch.manual_seed(0)
    model = fc_flow(16, preprocessing=image_preprocessing(256, alpha=0.5))
    x = torch.randint(0, 256, (4, 16)).double() + 0.5
    model = model.double()
    mask = torch.rand(4, 16) < 0.5
    mask[:, 0] = True
    x_missing = torch.where(mask, torch.full_like(x, float("nan")), x)  # NaN: unknown
    result = impute(model, x_missing, mask, step_size=0.01, n_steps=20, method="mala",
                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(result.samples[~mask], x[~mask])
    assert bool(torch.isfinite(result.samples).all())
    assert float(result.samples.min()) >= 0 and float(result.samples.max()) <= 256
    # the chain ran in model space: the trace is in logit space
    with_trace = impute(model, x, mask, step_size=0.01, n_steps=4, keep_trace=True,
                        init="given", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(with_trace.trace[0], model.preprocess(x))


def test_image_shaped_batches_and_a_shared_mask() -> None:
    from ebflow_lite.ebm import GaussianEnergy

    class ImageGaussian(torch.nn.Module):
        event_shape = (1, 3, 3)

        def __init__(self):
            super().__init__()
            self.flat = GaussianEnergy(torch.zeros(9), torch.eye(9), trainable=False)

        def energy(self, x):
            return self.flat.energy(x.flatten(1))

    x = torch.randn(6, 1, 3, 3)
    mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    mask[0, 1, 1] = True
    result = impute(ImageGaussian(), x, mask, step_size=0.1, n_steps=3, method="mala",
                    progress=True, generator=torch.Generator().manual_seed(0))
    assert result.samples.shape == x.shape and result.mask.shape == x.shape
    changed = result.samples != x
    assert not bool(changed[~result.mask].any())


# ----------------------------------------------------------------------------- errors


def test_mask_errors_are_clear() -> None:
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="does not match"):
        check_mask(torch.ones(3, 5, dtype=torch.bool), x)
    with pytest.raises(ValueError, match="does not match"):
        check_mask(torch.ones(4, dtype=torch.bool)[None, None], x)
    with pytest.raises(ValueError, match="binary"):
        check_mask(torch.full((4,), 0.5), x)
    with pytest.raises(ValueError, match="no missing entry"):
        check_mask(torch.zeros(4), x)
    per_sample = torch.ones(3, 4)
    per_sample[1] = 0
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\]"):
        check_mask(per_sample, x)
    with pytest.raises(ValueError, match="torch.Tensor"):
        check_mask([1, 0, 0, 1], x)
    # accepted forms: bool, 0/1 numbers, shared or per sample
    shared = check_mask(torch.tensor([1, 0, 0, 1]), x)
    assert shared.dtype == torch.bool and shared.shape == x.shape
    assert torch.equal(check_mask(torch.tensor([1.0, 0.0, 0.0, 1.0]), x), shared)


def test_impute_argument_errors() -> None:
    model = _linear_flow(4).float()
    x = torch.randn(2, 4)
    mask = torch.tensor([True, False, False, False])
    with pytest.raises(ValueError, match="method"):
        impute(model, x, mask, 0.1, 5, method="hmc")
    with pytest.raises(ValueError, match="cannot be combined"):
        impute(model, x, mask, 0.1, 5, method="mala", snr=0.1)
    with pytest.raises(ValueError, match="n_steps"):
        impute(model, x, mask, 0.1, 0)
    with pytest.raises(ValueError, match="step_size"):
        impute(model, x, mask, -0.1, 3)
    with pytest.raises(ValueError, match="init"):
        impute(model, x, mask, 0.1, 3, init="zeros")
    with pytest.raises(ValueError, match="image_shape"):
        impute(model, x, mask, 0.1, 3, blur=0.1, image_shape=(1, 3, 3))
    with pytest.raises(ValueError, match="energy"):
        impute(object(), x, mask, 0.1, 3)
    with pytest.raises(ValueError, match="too large"):
        impute(model, x, mask, 1e6, 50, generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- the additions


def test_official_additions_do_what_they_say() -> None:
    model = _linear_flow(4, seed=7).float()
    x = torch.randn(8, 4)
    mask = torch.tensor([True, True, False, False])
    init = torch.randn(8, 4)
    h = 0.1
    # noise-free last step: one step is pure drift
    one = impute(model, x, mask, h, 1, init=init, noise_free_last=True)
    z = torch.where(mask, init, x).requires_grad_(True)
    (grad,) = torch.autograd.grad(model.energy(z).sum(), z)
    torch.testing.assert_close(one.samples, (z - h * grad * mask).detach())
    # snr: the noise is scaled by snr * (mean |n| / mean |s|)^2, the score-to-noise ratio
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    scaled = impute(model, x, mask, h, 1, init=init, snr=0.1, generator=gen_a)
    noise = torch.randn(x.shape, generator=gen_b)
    factor = 0.1 * float(noise.norm(dim=1).mean() / grad.norm(dim=1).mean()) ** 2
    expected = z - h * grad * mask + factor * math.sqrt(2 * h) * noise * mask
    torch.testing.assert_close(scaled.samples, expected.detach())


def test_gaussian_blur_is_a_normalised_smoothing() -> None:
    z = torch.full((2, 36), 3.0)
    torch.testing.assert_close(gaussian_blur(z, (1, 6, 6)), z)  # constants are kept
    spike = torch.zeros(1, 1, 7, 7)
    spike[0, 0, 3, 3] = 1.0
    blurred = gaussian_blur(spike, (1, 7, 7), kernel_size=5, sigma=1.0)
    assert float(blurred.sum()) == pytest.approx(1.0)
    assert float(blurred[0, 0, 3, 3]) < 0.2 and float(blurred[0, 0, 3, 4]) > 0.05
    # the blur drift vanishes on a constant image, so the chain is plain Langevin there
    model = _linear_flow(4, seed=8).float()
    x = torch.ones(2, 4)
    mask = torch.tensor([True, False, False, True])
    plain = impute(model, x, mask, 0.05, 3, init="given",
                   generator=torch.Generator().manual_seed(2))
    with_blur = impute(model, x, mask, 0.05, 1, init="given", blur=0.5,
                       image_shape=(1, 2, 2), generator=torch.Generator().manual_seed(2))
    plain_one = impute(model, x, mask, 0.05, 1, init="given",
                       generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(with_blur.samples, plain_one.samples)
    assert plain.samples.shape == x.shape
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(z, (1, 6, 6), kernel_size=4)


def test_impute_is_reexported_from_sampling() -> None:
    from ebflow_lite import imputation

    assert ebflow_lite.sampling.impute is imputation.impute
