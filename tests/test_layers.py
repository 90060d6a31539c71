"""Every flow layer against autograd: log-dets, inverses, linearity (in float64)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.autograd.functional import jacobian

from ebflow_lite.layers import (
    ActNorm,
    Affine,
    AffineCoupling,
    Dense,
    FlowLayer,
    LinearFlowLayer,
    Logit,
    LUDense,
    Planar,
    SmoothLeakyReLU,
)

DTYPE = torch.float64


def _perturb(module: torch.nn.Module, scale: float) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def make_dense(dim: int) -> Dense:
    layer = Dense(dim, init="orthogonal").to(DTYPE)
    _perturb(layer, 0.3)
    return layer


def make_dense_no_bias(dim: int) -> Dense:
    layer = Dense(dim, bias=False, init="neg_identity").to(DTYPE)
    _perturb(layer, 0.3)
    return layer


def make_ludense(dim: int) -> LUDense:
    layer = LUDense(dim).to(DTYPE)
    _perturb(layer, 0.5)
    return layer


def make_actnorm(dim: int, in_energy: bool) -> ActNorm:
    layer = ActNorm(dim, in_energy=in_energy).to(DTYPE)
    _perturb(layer, 0.5)
    layer.initialized.fill_(True)
    return layer


def make_coupling(dim: int, parity: int) -> AffineCoupling:
    layer = AffineCoupling(dim, hidden=16, depth=2, parity=parity).to(DTYPE)
    # The conditioner's last layer starts at zero (an identity map); make it non-trivial.
    last = layer.net[-1]
    with torch.no_grad():
        last.weight.normal_(0.0, 0.5)
        last.bias.normal_(0.0, 0.5)
    return layer


def make_planar(dim: int) -> Planar:
    layer = Planar(dim).to(DTYPE)
    with torch.no_grad():
        layer.b.fill_(0.3)
    return layer


def _gaussian(batch: int, dim: int) -> torch.Tensor:
    return torch.randn(batch, dim, dtype=DTYPE)


def _unit_interval(batch: int, dim: int) -> torch.Tensor:
    return 0.05 + 0.9 * torch.rand(batch, dim, dtype=DTYPE)


# name -> (factory(dim), data sampler, expected is_linear, Jacobian constant in x)
LAYERS: dict[str, tuple[Callable[[int], FlowLayer], Callable, bool, bool]] = {
    "dense": (make_dense, _gaussian, True, True),
    "dense_no_bias": (make_dense_no_bias, _gaussian, True, True),
    "ludense": (make_ludense, _gaussian, True, True),
    "smooth_leaky_relu": (lambda d: SmoothLeakyReLU(0.3, dim=d), _gaussian, False, False),
    "affine": (lambda d: Affine(2.5, -0.3, dim=d), _gaussian, True, True),
    "logit": (lambda d: Logit(alpha=0.5, eps=1e-3, dim=d), _unit_interval, False, False),
    "actnorm": (lambda d: make_actnorm(d, in_energy=False), _gaussian, True, True),
    # ActNorm's Jacobian is constant, but in_energy=True keeps its log-det inside E(x).
    "actnorm_in_energy": (lambda d: make_actnorm(d, in_energy=True), _gaussian, False, True),
    "coupling_even": (lambda d: make_coupling(d, 0), _gaussian, False, False),
    "coupling_odd": (lambda d: make_coupling(d, 1), _gaussian, False, False),
    "planar": (make_planar, _gaussian, False, False),
}
DIMS = [2, 3, 5]


def _jacobian(layer: FlowLayer, x: torch.Tensor) -> torch.Tensor:
    """The (D, D) Jacobian of the layer's map at one sample ``x`` of shape (D,)."""
    return jacobian(lambda v: layer(v.unsqueeze(0))[0].squeeze(0), x)


@pytest.fixture(params=sorted(LAYERS))
def layer_case(request):
    return request.param


@pytest.mark.parametrize("dim", DIMS)
def test_logdet_matches_autograd_jacobian(layer_case: str, dim: int) -> None:
    factory, sample, _, _ = LAYERS[layer_case]
    layer = factory(dim)
    x = sample(4, dim)
    y, logdet = layer(x)
    assert y.shape == x.shape and logdet.shape == (4,)
    for i in range(x.shape[0]):
        expected = torch.linalg.slogdet(_jacobian(layer, x[i]))[1]
        torch.testing.assert_close(logdet[i], expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dim", DIMS)
def test_inverse_of_forward_is_identity(layer_case: str, dim: int) -> None:
    factory, sample, _, _ = LAYERS[layer_case]
    layer = factory(dim)
    x = sample(16, dim)
    y, _ = layer(x)
    torch.testing.assert_close(layer.inverse(y), x, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("dim", DIMS)
def test_forward_of_inverse_is_identity(layer_case: str, dim: int) -> None:
    factory, sample, _, _ = LAYERS[layer_case]
    layer = factory(dim)
    # A point in the image: for most layers any y, for the logit any real number too.
    y = _gaussian(16, dim) * 2.0
    x = layer.inverse(y)
    torch.testing.assert_close(layer(x)[0], y, rtol=1e-8, atol=1e-8)


def test_is_linear_flag_matches_the_jacobian(layer_case: str) -> None:
    factory, sample, expected_linear, constant_jacobian = LAYERS[layer_case]
    layer = factory(3)
    assert layer.is_linear is expected_linear
    assert isinstance(layer, LinearFlowLayer) or not expected_linear
    x1, x2 = sample(2, 3)
    same = torch.allclose(_jacobian(layer, x1), _jacobian(layer, x2), rtol=1e-10, atol=1e-12)
    assert same is constant_jacobian


@pytest.mark.parametrize("name", [k for k, v in LAYERS.items() if v[2]])
def test_linear_layer_apply_and_logabsdet_agree_with_forward(name: str) -> None:
    factory, sample, _, _ = LAYERS[name]
    layer = factory(4)
    assert isinstance(layer, LinearFlowLayer)
    x = sample(6, 4)
    y, logdet = layer(x)
    torch.testing.assert_close(layer.apply(x), y, rtol=0, atol=0)
    torch.testing.assert_close(layer.logabsdet().to(DTYPE).expand(6), logdet)
    assert layer.logabsdet().dim() == 0


def test_ludense_weight_matches_apply_and_logdet() -> None:
    layer = make_ludense(4)
    x = _gaussian(5, 4)
    w = layer.weight()
    torch.testing.assert_close(layer.apply(x), x @ w.T + layer.bias)
    torch.testing.assert_close(layer.logabsdet(), torch.linalg.slogdet(w)[1])


@pytest.mark.parametrize("init", ["identity", "neg_identity", "orthogonal"])
def test_dense_inits_are_invertible(init: str) -> None:
    layer = Dense(3, init=init)
    if init == "identity":
        torch.testing.assert_close(layer.weight, torch.eye(3))
    if init == "neg_identity":
        torch.testing.assert_close(layer.weight, -torch.eye(3))
    # identity, -identity and orthogonal matrices all have |det| = 1
    torch.testing.assert_close(layer.logabsdet(), torch.zeros(()), atol=1e-5, rtol=0)
    torch.testing.assert_close(layer.weight @ layer.weight.T, torch.eye(3), atol=1e-5, rtol=0)


def test_new_coupling_is_the_identity() -> None:
    layer = AffineCoupling(4)
    x = torch.randn(5, 4)
    y, logdet = layer(x)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(logdet, torch.zeros(5))


@pytest.mark.parametrize("parity", [0, 1])
def test_coupling_keeps_its_half(parity: int) -> None:
    layer = make_coupling(5, parity)
    x = _gaussian(3, 5)
    y, _ = layer(x)
    kept = torch.arange(5) % 2 == parity
    torch.testing.assert_close(y[:, kept], x[:, kept], rtol=0, atol=0)
    assert not torch.allclose(y[:, ~kept], x[:, ~kept])


def test_coupling_scale_is_bounded() -> None:
    layer = make_coupling(4, 0)
    with torch.no_grad():
        layer.net[-1].weight.mul_(100.0)
    _, logdet = layer(_gaussian(64, 4) * 10)
    assert bool((logdet.abs() <= 2 * layer.scale_bound + 1e-12).all())


def test_planar_stays_invertible_for_an_adversarial_u() -> None:
    layer = Planar(3).to(DTYPE)
    with torch.no_grad():
        layer.w.copy_(torch.tensor([1.0, 0.0, 0.0]))
        layer.u.copy_(torch.tensor([-5.0, 0.0, 0.0]))  # w^T u = -5 would fold the map
    assert float(layer.u_hat().detach() @ layer.w.detach()) > -1.0
    x = _gaussian(32, 3) * 3
    y, logdet = layer(x)
    assert bool(torch.isfinite(logdet).all())
    torch.testing.assert_close(layer.inverse(y), x, rtol=1e-8, atol=1e-8)


def test_smooth_leaky_relu_inverse_at_extreme_values() -> None:
    layer = SmoothLeakyReLU(0.1)
    y = torch.tensor([[-300.0, -20.0, 0.0, 1e-4, 40.0, 500.0]])
    x = layer.inverse(y)
    torch.testing.assert_close(layer(x)[0], y, rtol=1e-5, atol=1e-5)


def test_logit_ends_of_the_interval_are_finite() -> None:
    layer = Logit(alpha=1.0, eps=1e-6)
    y, logdet = layer(torch.tensor([[0.0, 1.0]]))
    assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(logdet).all())


def test_actnorm_initialises_on_the_first_training_batch() -> None:
    layer = ActNorm(2)
    x = torch.randn(500, 2) * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, -2.0])
    y, _ = layer(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(2), atol=1e-5, rtol=0)
    assert bool(layer.initialized)
    before = layer.loc.detach().clone()
    layer(torch.randn(100, 2))  # a second batch does not re-initialise
    torch.testing.assert_close(layer.loc.detach(), before)


def test_actnorm_does_not_initialise_in_eval_mode() -> None:
    layer = ActNorm(2).eval()
    x = torch.randn(10, 2) + 5
    y, _ = layer(x)
    torch.testing.assert_close(y, x)
    assert not bool(layer.initialized)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.randn(4, 3), "feature dimension 2"),
        (torch.ones(4, 2, dtype=torch.int64), "floating-point"),
        (torch.randn(2), r"shape \(B, D\)"),
        (torch.randn(4, 2, 1), r"shape \(B, 2\)"),
        (torch.tensor([[0.0, float("nan")]]), "NaN"),
        (torch.tensor([[0.0, float("inf")]]), "inf"),
        ([[0.0, 1.0]], "torch.Tensor"),
    ],
)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_bad_input_raises_value_error(name: str, bad, message: str) -> None:
    layer = LAYERS[name][0](2).float()
    with pytest.raises(ValueError, match=message):
        layer(bad)
    with pytest.raises(ValueError, match=message):
        layer.inverse(bad)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_logit_rejects_data_outside_the_unit_interval(value: float) -> None:
    with pytest.raises(ValueError, match=r"Logit: data must lie in \[0, 1\]"):
        Logit()(torch.tensor([[0.5, value]]))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SmoothLeakyReLU(alpha=0.0), "alpha must lie in"),
        (lambda: SmoothLeakyReLU(alpha=1.0), "alpha must lie in"),
        (lambda: SmoothLeakyReLU(alpha=0.3, dim=0), "dim must be"),
        (lambda: Dense(0), "dim must be positive"),
        (lambda: Dense(3, init="random"), "unknown init"),
        (lambda: LUDense(0), "dim must be positive"),
        (lambda: Affine(0.0, dim=2), "scale must be finite and non-zero"),
        (lambda: Affine(float("inf"), dim=2), "scale must be finite and non-zero"),
        (lambda: Affine(1.0, dim=0), "dim must be positive"),
        (lambda: Logit(alpha=0.0), "alpha must be positive"),
        (lambda: Logit(eps=0.5), "eps must lie in"),
        (lambda: Logit(dim=-1), "dim must be"),
        (lambda: ActNorm(0), "dim must be positive"),
        (lambda: AffineCoupling(1), "dim >= 2"),
        (lambda: AffineCoupling(4, parity=2), "parity must be 0 or 1"),
        (lambda: AffineCoupling(4, hidden=0), "hidden >= 1"),
        (lambda: AffineCoupling(4, scale_bound=0.0), "scale_bound must be positive"),
        (lambda: Planar(0), "dim must be positive"),
    ],
)
def test_bad_constructor_arguments_raise(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()
