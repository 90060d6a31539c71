"""EBFlow: the energy / log Z split, densities, scores, caching, sampling, preprocessing."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.utils._python_dispatch import TorchDispatchMode

from ebflow_lite import EBFlow, standard_normal_log_prob
from ebflow_lite.layers import (
    ActNorm,
    Affine,
    AffineCoupling,
    Dense,
    Logit,
    LUDense,
    Planar,
    SmoothLeakyReLU,
)
from ebflow_lite.objectives import ml

DTYPE = torch.float64


# ---------------------------------------------------------------------- builders
def _dense(dim: int, scale: float = 0.2) -> Dense:
    layer = Dense(dim, init="orthogonal")
    with torch.no_grad():
        layer.weight.add_(scale * torch.randn(dim, dim))
        layer.bias.normal_(0.0, 0.2)
    return layer


def _coupling(dim: int, parity: int, scale: float = 0.3) -> AffineCoupling:
    layer = AffineCoupling(dim, hidden=16, depth=2, parity=parity)
    with torch.no_grad():
        layer.net[-1].weight.normal_(0.0, scale)
        layer.net[-1].bias.normal_(0.0, scale)
    return layer


def _actnorm(dim: int) -> ActNorm:
    layer = ActNorm(dim)
    with torch.no_grad():
        layer.loc.normal_(0.0, 0.3)
        layer.log_scale.normal_(0.0, 0.2)
        layer.initialized.fill_(True)
    return layer


def _expanding_dense(dim: int) -> Dense:
    """A well-conditioned dense layer that stretches by about 1.5 (so p(x) has light tails)."""
    layer = Dense(dim, init="orthogonal")
    with torch.no_grad():
        layer.weight.mul_(1.5 * torch.exp(0.2 * torch.randn(dim)))
        layer.bias.normal_(0.0, 0.2)
    return layer


def flow_2d(**kwargs) -> EBFlow:
    """Coupling + dense + smooth leaky ReLU + ActNorm on D = 2, in float64."""
    layers = [_coupling(2, 0, 0.1), _expanding_dense(2), SmoothLeakyReLU(0.5, dim=2),
              _actnorm(2), _coupling(2, 1, 0.1), _expanding_dense(2)]
    return EBFlow(layers, **kwargs).to(DTYPE)


def flow_all_layers(dim: int = 3) -> EBFlow:
    """Every trainable layer kind, in float64."""
    ludense = LUDense(dim)
    with torch.no_grad():
        for p in ludense.parameters():
            p.normal_(0.0, 0.3)
    in_energy = _actnorm(dim)
    layers = [_coupling(dim, 0), _dense(dim), SmoothLeakyReLU(0.3, dim=dim),
              in_energy, ludense, Planar(dim), _coupling(dim, 1),
              _actnorm(dim), _dense(dim)]
    return EBFlow(layers, keep_in_energy=[in_energy]).to(DTYPE)


class OpRecorder(TorchDispatchMode):
    """Record the name of every aten operator that runs (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func._overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


_DETERMINANT_OPS = {"det", "logdet", "slogdet", "inverse", "triangular_solve", "cholesky",
                    "cholesky_solve", "cholesky_inverse"}


def determinant_ops(ops: set[str]) -> set[str]:
    """The recorded operators that compute a determinant, an inverse or a solve."""
    found = set()
    for name in ops:
        bare = name.lstrip("_")
        if (bare.startswith(("linalg_", "lu")) or bare in _DETERMINANT_OPS
                or "solve" in bare or "slogdet" in bare):
            found.add(name)
    return found


# ---------------------------------------------------------------------- the split
def test_log_prob_is_minus_energy_minus_log_z() -> None:
    model = flow_all_layers()
    x = torch.randn(32, 3, dtype=DTYPE)
    torch.testing.assert_close(model.log_prob(x), -model.energy(x) - model.log_z(),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model(x), model.log_prob(x), rtol=0, atol=0)


def test_log_z_is_minus_the_linear_log_dets() -> None:
    model = flow_all_layers()
    linear = model.linear_layers()
    assert linear and all(layer.is_linear and model.in_log_z(layer) for layer in linear)
    # one constant-Jacobian layer, the first ActNorm, was kept in the energy
    assert len(linear) == sum(layer.is_linear for layer in model.layers) - 1
    assert not model.in_log_z(model.layers[3]) and model.layers[3].is_linear
    kinds = {type(layer) for layer in linear}
    assert kinds == {Dense, LUDense, ActNorm}
    expected = torch.zeros((), dtype=DTYPE)
    for layer in linear:
        if isinstance(layer, Dense):
            weight = layer.weight
        elif isinstance(layer, LUDense):
            weight = layer.weight()
        else:
            weight = torch.diag(layer.log_scale.exp())
        expected = expected - torch.linalg.slogdet(weight)[1]
    torch.testing.assert_close(model.log_z(), expected)


def test_log_prob_matches_change_of_variables_with_autograd_jacobian() -> None:
    model = flow_all_layers(dim=3)
    x = torch.randn(5, 3, dtype=DTYPE)
    log_p = model.log_prob(x)
    for i in range(5):
        latent_of = lambda v: model.latent_and_energy(v.unsqueeze(0))[0].squeeze(0)  # noqa: E731
        full_jacobian = jacobian(latent_of, x[i])
        expected = (standard_normal_log_prob(latent_of(x[i]).unsqueeze(0))[0]
                    + torch.linalg.slogdet(full_jacobian)[1])
        torch.testing.assert_close(log_p[i], expected, rtol=1e-10, atol=1e-10)


def test_latent_is_the_composition_of_the_layers() -> None:
    model = flow_all_layers()
    x = torch.randn(7, 3, dtype=DTYPE)
    h, total = x, torch.zeros(7, dtype=DTYPE)
    for layer in model.layers:
        h, ld = layer(h)
        total = total + ld
    latent, energy = model.latent_and_energy(x)
    torch.testing.assert_close(latent, h)
    torch.testing.assert_close(-energy - model.log_z(), standard_normal_log_prob(h) + total)


def test_standard_normal_log_prob_matches_torch_distributions() -> None:
    u = torch.randn(10, 4, dtype=DTYPE)
    reference = torch.distributions.Normal(0.0, 1.0).log_prob(u).sum(1)
    torch.testing.assert_close(standard_normal_log_prob(u), reference)


def _trapezoid_2d(values: torch.Tensor, grid: torch.Tensor) -> float:
    return float(torch.trapezoid(torch.trapezoid(values, grid, dim=1), grid, dim=0))


def test_density_integrates_to_one_on_a_2d_grid() -> None:
    model = flow_2d()
    grid = torch.linspace(-10.0, 10.0, 201, dtype=DTYPE)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    with torch.no_grad():
        density = model.log_prob(points).exp().reshape(201, 201)
    assert abs(_trapezoid_2d(density, grid) - 1.0) < 1e-3
    # the mass is not at the grid's edges (else the test would be vacuous)
    assert float(density[[0, -1], :].max()) < 1e-8 and float(density[:, [0, -1]].max()) < 1e-8


# ---------------------------------------------------------------------- scores
def test_score_is_minus_grad_energy_and_grad_log_prob() -> None:
    model = flow_all_layers()
    x = torch.randn(6, 3, dtype=DTYPE, requires_grad=True)
    (grad_energy,) = torch.autograd.grad(model.energy(x).sum(), x)
    (grad_log_prob,) = torch.autograd.grad(model.log_prob(x).sum(), x)
    score = model.score(x.detach())
    torch.testing.assert_close(score, -grad_energy)
    torch.testing.assert_close(score, grad_log_prob)
    assert not score.requires_grad


def test_score_with_create_graph_is_differentiable() -> None:
    model = flow_all_layers()
    x = torch.randn(4, 3, dtype=DTYPE)
    score = model.score(x, create_graph=True)
    assert score.requires_grad
    score.pow(2).sum().backward()
    assert model.layers[0].net[-1].weight.grad is not None


# ---------------------------------------------------------------------- no determinant
def test_energy_and_its_backward_compute_no_determinant() -> None:
    model = flow_all_layers()
    x = torch.randn(8, 3, dtype=DTYPE)
    recorder = OpRecorder()
    with recorder:
        score = model.score(x, create_graph=True)
        loss = 0.5 * score.pow(2).sum() + model.energy(x).mean()
        loss.backward()
    assert "addmm" in recorder.ops or "mm" in recorder.ops  # the recorder does see the model
    assert not determinant_ops(recorder.ops), determinant_ops(recorder.ops)


def test_log_z_does_compute_a_determinant() -> None:
    model = flow_all_layers()
    recorder = OpRecorder()
    with recorder:
        model.log_z()
    assert determinant_ops(recorder.ops)


# ---------------------------------------------------------------------- log Z cache
def test_log_z_is_cached_when_parameters_do_not_change() -> None:
    model = flow_2d()
    with torch.no_grad():
        first = model.log_z()
        recorder = OpRecorder()
        with recorder:
            second = model.log_z()
    assert torch.equal(second, first)
    assert not determinant_ops(recorder.ops)


def test_an_in_place_edit_of_log_z_does_not_corrupt_the_cache() -> None:
    model = flow_2d()
    with torch.no_grad():
        value = model.log_z()
        expected = value.clone()
        value.add_(100.0)
        torch.testing.assert_close(model.log_z(), expected, rtol=0, atol=0)


def _fresh_log_z(model: EBFlow) -> torch.Tensor:
    with torch.no_grad():
        return -sum(layer.logabsdet() for layer in model.linear_layers())


def test_log_z_cache_is_refreshed_after_an_optimizer_step() -> None:
    model = flow_2d()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad():
        before = model.log_z().clone()
    ml(model, torch.randn(64, 2, dtype=DTYPE) * 3).backward()
    optimizer.step()
    with torch.no_grad():
        after = model.log_z()
    assert abs(float(after - before)) > 1e-4
    torch.testing.assert_close(after, _fresh_log_z(model))


def test_log_z_cache_is_refreshed_after_load_state_dict() -> None:
    model, other = flow_2d(), flow_2d()
    with torch.no_grad():
        before = model.log_z().clone()
        model.load_state_dict(other.state_dict())
        after = model.log_z()
    assert abs(float(after - before)) > 1e-4
    torch.testing.assert_close(after, other.log_z())


def test_log_z_cache_sees_writes_through_data() -> None:
    # ``p.data`` writes do not bump the autograd version counter; the cache must notice.
    model = flow_2d()
    with torch.no_grad():
        before = model.log_z().clone()
    model.layers[1].weight.data.mul_(2.0)
    with torch.no_grad():
        after = model.log_z()
    torch.testing.assert_close(after, before - 2 * math.log(2.0))


def test_log_z_follows_a_dtype_change() -> None:
    model = flow_2d().float()
    with torch.no_grad():
        assert model.log_z().dtype == torch.float32
        model.double()
        assert model.log_z().dtype == torch.float64


def test_log_z_is_differentiable_when_grad_is_enabled() -> None:
    dense = _dense(3)
    model = EBFlow([dense, SmoothLeakyReLU(dim=3)]).to(DTYPE)
    with torch.no_grad():
        model.log_z()  # fill the cache; it must not be returned when gradients are wanted
    log_z = model.log_z()
    assert log_z.requires_grad
    (grad,) = torch.autograd.grad(log_z, dense.weight)
    # d log|det W| / dW = W^{-T}
    torch.testing.assert_close(grad, -torch.linalg.inv(dense.weight.detach()).T)


def test_log_z_without_linear_layers_is_zero() -> None:
    model = EBFlow([SmoothLeakyReLU(dim=2), _coupling(2, 0)]).to(DTYPE)
    log_z = model.log_z()
    assert float(log_z) == 0.0 and log_z.dtype == DTYPE


# ---------------------------------------------------------------------- generation
def test_inverse_round_trip() -> None:
    model = flow_all_layers()
    x = torch.randn(20, 3, dtype=DTYPE)
    latent, _ = model.latent_and_energy(x)
    torch.testing.assert_close(model.inverse(latent), x, rtol=1e-8, atol=1e-8)


def test_sample_shape_dtype_device_and_generator() -> None:
    model = flow_2d()
    samples = model.sample(17)
    assert samples.shape == (17, 2)
    assert samples.dtype == DTYPE and samples.device == torch.device("cpu")
    a = model.sample(5, generator=torch.Generator().manual_seed(3))
    b = model.sample(5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not samples.requires_grad


def test_sample_temperature_scales_the_latent() -> None:
    model = EBFlow([Dense(2)]).to(DTYPE)  # identity map: samples are the latents
    cold = model.sample(20_000, temperature=0.5)
    torch.testing.assert_close(cold.std(0), torch.full((2,), 0.5, dtype=DTYPE),
                               atol=0.02, rtol=0)


def test_dense_flow_samples_have_covariance_inverse_of_w_transpose_w() -> None:
    dense = _dense(3, scale=0.5)
    model = EBFlow([dense]).to(DTYPE)
    samples = model.sample(100_000)
    w = dense.weight.detach()
    expected_cov = torch.linalg.inv(w.T @ w)
    expected_mean = -torch.linalg.solve(w, dense.bias.detach())
    scale = float(expected_cov.abs().max())
    torch.testing.assert_close(torch.cov(samples.T), expected_cov, atol=0.03 * scale, rtol=0)
    torch.testing.assert_close(samples.mean(0), expected_mean, atol=0.03 * scale**0.5, rtol=0)


def test_nonlinear_flow_samples_follow_its_density() -> None:
    """Sample moments agree with moments integrated from log_prob on a grid."""
    model = flow_2d()
    samples = model.sample(20_000)
    grid = torch.linspace(-10.0, 10.0, 201, dtype=DTYPE)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    with torch.no_grad():
        points = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
        density = model.log_prob(points).exp().reshape(201, 201)
    for f in (lambda p: p[..., 0], lambda p: p[..., 1], lambda p: p[..., 0] * p[..., 1],
              lambda p: p[..., 0] ** 2, lambda p: p[..., 1] ** 2):
        exact = _trapezoid_2d(density * f(torch.stack([xx, yy], -1)), grid)
        values = f(samples)
        tolerance = 5 * float(values.std()) / math.sqrt(len(values))  # five standard errors
        assert abs(float(values.mean()) - exact) < tolerance


# ---------------------------------------------------------------------- preprocessing
def test_log_prob_with_preprocessing_adds_the_preprocessing_log_det() -> None:
    logit = Logit(alpha=0.5, eps=1e-4)
    model = flow_2d(preprocessing=[logit])
    x = torch.rand(16, 2, dtype=DTYPE)
    z, pre_logdet = logit(x)
    torch.testing.assert_close(model.preprocess(x), z)
    torch.testing.assert_close(model.log_prob(x), model.log_prob_model_space(z) + pre_logdet)
    torch.testing.assert_close(model.log_prob_model_space(z), -model.energy(z) - model.log_z())


def test_logit_preprocessed_density_integrates_to_one_on_the_unit_square() -> None:
    model = flow_2d(preprocessing=[Logit(alpha=1.0, eps=1e-6)])
    n = 200
    centres = (torch.arange(n, dtype=DTYPE) + 0.5) / n  # midpoint rule on (0, 1)^2
    xx, yy = torch.meshgrid(centres, centres, indexing="ij")
    with torch.no_grad():
        density = model.log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).exp()
    assert abs(float(density.sum()) / n**2 - 1.0) < 1e-3


def test_preprocessing_runs_without_gradient() -> None:
    model = flow_2d(preprocessing=[Logit()])
    x = torch.rand(4, 2, dtype=DTYPE, requires_grad=True)
    z, logdet = model.preprocess_with_logdet(x)
    assert not z.requires_grad and not logdet.requires_grad


def test_inverse_through_preprocessing_returns_data_space() -> None:
    model = flow_2d(preprocessing=[Affine(0.25, dim=2), Logit()])
    x = torch.rand(10, 2, dtype=DTYPE) * 3 + 0.2  # data on [0, 4] before the rescaling
    z = model.preprocess(x)
    latent, _ = model.latent_and_energy(z)
    torch.testing.assert_close(model.inverse(latent), x, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(model.inverse(latent, through_preprocessing=False), z,
                               rtol=1e-7, atol=1e-7)
    samples = model.sample(100)
    assert bool(((samples >= 0) & (samples <= 4)).all())
    assert bool((model.sample(10, through_preprocessing=False) < 0).any())


def test_without_map_the_preprocessing_enters_the_energy() -> None:
    layers = [_coupling(2, 0), _dense(2), SmoothLeakyReLU(dim=2)]
    logit = Logit(alpha=0.5, eps=1e-4)
    with_map = EBFlow(layers, preprocessing=[logit]).to(DTYPE)
    without = EBFlow(layers, preprocessing=[logit], match_after_preprocessing=False).to(DTYPE)
    assert len(without.preprocessing) == 0 and without.layers[0] is logit
    assert len(without.layers) == len(layers) + 1
    x = torch.rand(12, 2, dtype=DTYPE)
    z, pre_logdet = logit(x)
    torch.testing.assert_close(without.preprocess(x), x)
    torch.testing.assert_close(without.energy(x), with_map.energy(z) - pre_logdet)
    torch.testing.assert_close(without.log_prob(x), with_map.log_prob(x))


def test_without_map_a_linear_preprocessing_enters_log_z() -> None:
    layers = [_dense(2), SmoothLeakyReLU(dim=2)]
    rescale = Affine(0.5, dim=2)
    with_map = EBFlow(layers, preprocessing=[rescale]).to(DTYPE)
    without = EBFlow(layers, preprocessing=[rescale], match_after_preprocessing=False)
    without = without.to(DTYPE)
    torch.testing.assert_close(without.log_z(), with_map.log_z() - 2 * math.log(0.5))
    x = torch.randn(5, 2, dtype=DTYPE)
    torch.testing.assert_close(without.log_prob(x), with_map.log_prob(x))


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.randn(4, 3, dtype=DTYPE), "feature dimension 2"),
        (torch.ones(4, 2, dtype=torch.int64), "floating-point"),
        (torch.randn(2, dtype=DTYPE), r"shape \(B, D\)"),
        (torch.tensor([[0.1, float("nan")]], dtype=DTYPE), "NaN"),
        (torch.tensor([[0.1, float("-inf")]], dtype=DTYPE), "inf"),
        (torch.randn(4, 2, dtype=torch.float32), "dtype"),
    ],
)
@pytest.mark.parametrize("method", ["log_prob", "energy", "score", "inverse", "preprocess"])
def test_flow_rejects_bad_batches(bad: torch.Tensor, message: str, method: str) -> None:
    model = flow_2d()
    if method == "preprocess" and message == "dtype":
        return  # preprocessing without layers has no parameters to disagree with
    with pytest.raises(ValueError, match=message):
        getattr(model, method)(bad)


def test_flow_rejects_data_outside_the_logit_domain() -> None:
    model = flow_2d(preprocessing=[Logit()])
    with pytest.raises(ValueError, match=r"data must lie in \[0, 1\]"):
        model.log_prob(torch.tensor([[0.5, 1.2]], dtype=DTYPE))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: EBFlow([torch.nn.Linear(2, 2)]), "FlowLayer"),
        (lambda: EBFlow([Dense(2)], preprocessing=[torch.nn.Identity()]), "FlowLayer"),
        (lambda: EBFlow([Dense(2)], preprocessing=[ActNorm(2)]), "trainable parameters"),
        (lambda: EBFlow([Dense(2), Dense(3)]), r"expects events of shape \(3,\)"),
        (lambda: EBFlow([Dense(2)], preprocessing=[Affine(2.0, dim=3)]), "expects events"),
        (lambda: EBFlow([Dense(2)], keep_in_energy=[Dense(2)]), "not a layer of this model"),
        (lambda: EBFlow([]), "at least one layer"),
    ],
)
def test_flow_constructor_rejects_bad_arguments(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_sample_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n must be positive"):
        flow_2d().sample(0)
    with pytest.raises(ValueError, match="declares its feature dimension"):
        EBFlow([SmoothLeakyReLU()]).sample(3)


def test_actnorm_on_either_side_of_the_split_gives_the_same_density() -> None:
    """ActNorm in log Z (the default) or in E (keep_in_energy): same log p and score; E and
    log Z move by the constant sum(log_scale) in opposite directions."""
    dim = 3
    torch.manual_seed(3)
    in_z = _actnorm(dim).double()
    in_e = ActNorm(dim).double()
    in_e.load_state_dict(in_z.state_dict())
    coupling = _coupling(dim, 0).double()
    a = EBFlow([in_z, coupling]).eval()
    b = EBFlow([in_e, coupling], keep_in_energy=(ActNorm,)).eval()
    x = torch.randn(7, dim, dtype=torch.float64)
    torch.testing.assert_close(a.log_prob(x), b.log_prob(x))
    torch.testing.assert_close(a.score(x), b.score(x))
    shift = in_z.log_scale.detach().sum()
    torch.testing.assert_close(a.energy(x) - b.energy(x), shift.expand(7))
    torch.testing.assert_close(b.log_z() - a.log_z(), shift)
