"""Every flow layer against autograd: log-dets, inverses, linearity (in float64)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.autograd.functional import jacobian

from ebflow_lite import EBFlow
from ebflow_lite.layers import (
    IAF,
    MAF,
    ActNorm,
    Affine,
    AffineCoupling,
    Conv1x1,
    ConvKxK,
    Dense,
    FlowLayer,
    LinearFlowLayer,
    Logit,
    LUConv1x1,
    LUDense,
    Planar,
    SmoothLeakyReLU,
    Squeeze,
)
from ebflow_lite.testing import perturb_parameters

DTYPE = torch.float64


def make_dense(dim: int) -> Dense:
    layer = Dense(dim, init="orthogonal").to(DTYPE)
    perturb_parameters(layer, 0.3)
    return layer


def make_dense_no_bias(dim: int) -> Dense:
    layer = Dense(dim, bias=False, init="neg_identity").to(DTYPE)
    perturb_parameters(layer, 0.3)
    return layer


def make_ludense(dim: int) -> LUDense:
    layer = LUDense(dim).to(DTYPE)
    perturb_parameters(layer, 0.5)
    return layer


def make_actnorm(dim: int) -> ActNorm:
    layer = ActNorm(dim).to(DTYPE)
    perturb_parameters(layer, 0.5)
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


def make_autoregressive(kind: type, dim: int, reverse: bool = False) -> FlowLayer:
    layer = kind(dim, hidden=16, depth=2, reverse=reverse).to(DTYPE)
    # MADE's last layer starts at zero (an identity map); make it non-trivial.
    perturb_parameters(layer, 0.5)
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


def make_image_actnorm(shape: tuple[int, ...]) -> ActNorm:
    return make_actnorm(shape[0])


def make_conv1x1(shape: tuple[int, ...], lu: bool = False) -> FlowLayer:
    layer = (LUConv1x1(shape[0]) if lu else Conv1x1(shape[0])).to(DTYPE)
    perturb_parameters(layer, 0.3)
    return layer


def make_conv(shape: tuple[int, ...], padding_mode: str, kernel_size: int = 3) -> ConvKxK:
    layer = ConvKxK(shape[0], kernel_size, padding_mode).to(DTYPE)
    perturb_parameters(layer, 0.2)
    return layer


def make_image_coupling(shape: tuple[int, ...], mask: str, parity: int) -> AffineCoupling:
    layer = AffineCoupling(shape, hidden=8, mask=mask, parity=parity).to(DTYPE)
    with torch.no_grad():
        layer.net[-1].weight.normal_(0.0, 0.2)
        layer.net[-1].bias.normal_(0.0, 0.2)
    return layer


def _unit_images(batch: int, shape: tuple[int, ...]) -> torch.Tensor:
    return 0.05 + 0.9 * torch.rand(batch, *shape, dtype=DTYPE)


def _gaussian_images(batch: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(batch, *shape, dtype=DTYPE)


# The one list of every layer: name -> (factory(event_shape), event shapes, data sampler).
# Each test below runs over all of them (vectors and images), as zuko's test_transforms does.
VECTOR_SHAPES = [(2,), (3,), (5,)]
IMAGE_SHAPES = [(2, 4, 4), (3, 2, 6)]
LAYERS: dict[str, tuple[Callable, list[tuple[int, ...]], Callable]] = {
    "dense": (lambda s: make_dense(s[0]), VECTOR_SHAPES, _gaussian_images),
    "dense_no_bias": (lambda s: make_dense_no_bias(s[0]), VECTOR_SHAPES, _gaussian_images),
    "ludense": (lambda s: make_ludense(s[0]), VECTOR_SHAPES, _gaussian_images),
    "smooth_leaky_relu": (lambda s: SmoothLeakyReLU(0.3, event_shape=s),
                          VECTOR_SHAPES + IMAGE_SHAPES, _gaussian_images),
    "smooth_leaky_relu_residual": (lambda s: SmoothLeakyReLU(0.3, residual=True),
                                   VECTOR_SHAPES + IMAGE_SHAPES, _gaussian_images),
    "affine": (lambda s: Affine(2.5, -0.3, event_shape=s), VECTOR_SHAPES + IMAGE_SHAPES,
               _gaussian_images),
    "logit": (lambda s: Logit(alpha=0.5, eps=1e-3, event_shape=s),
              VECTOR_SHAPES + IMAGE_SHAPES, _unit_images),
    "actnorm": (lambda s: make_actnorm(s[0]), VECTOR_SHAPES + IMAGE_SHAPES, _gaussian_images),
    "coupling_even": (lambda s: make_coupling(s[0], 0), VECTOR_SHAPES, _gaussian_images),
    "coupling_odd": (lambda s: make_coupling(s[0], 1), VECTOR_SHAPES, _gaussian_images),
    "coupling_channel": (lambda s: make_image_coupling(s, "channel", 0), IMAGE_SHAPES,
                         _gaussian_images),
    "coupling_channel_odd": (lambda s: make_image_coupling(s, "channel", 1), IMAGE_SHAPES,
                             _gaussian_images),
    "coupling_checkerboard": (lambda s: make_image_coupling(s, "checkerboard", 1),
                              IMAGE_SHAPES, _gaussian_images),
    "planar": (lambda s: make_planar(s[0]), VECTOR_SHAPES, _gaussian_images),
    "maf": (lambda s: make_autoregressive(MAF, s[0]), VECTOR_SHAPES, _gaussian_images),
    "maf_reversed": (lambda s: make_autoregressive(MAF, s[0], True), VECTOR_SHAPES,
                     _gaussian_images),
    "iaf": (lambda s: make_autoregressive(IAF, s[0]), VECTOR_SHAPES, _gaussian_images),
    "conv1x1": (make_conv1x1, IMAGE_SHAPES, _gaussian_images),
    "lu_conv1x1": (lambda s: make_conv1x1(s, lu=True), IMAGE_SHAPES, _gaussian_images),
    "conv3x3_zeros": (lambda s: make_conv(s, "zeros"), IMAGE_SHAPES, _gaussian_images),
    "conv3x3_circular": (lambda s: make_conv(s, "circular"), IMAGE_SHAPES, _gaussian_images),
    "conv5x5_zeros": (lambda s: make_conv(s, "zeros", 5), [(2, 4, 4)], _gaussian_images),
    "squeeze": (lambda s: Squeeze(), [(2, 4, 4), (1, 2, 6)], _gaussian_images),
}
CASES = [(name, shape) for name, (_, shapes, _) in sorted(LAYERS.items()) for shape in shapes]


def _build(name: str, shape: tuple[int, ...]) -> tuple[FlowLayer, Callable]:
    factory, _, sample = LAYERS[name]
    return factory(shape), sample


def _jacobian(layer: FlowLayer, x: torch.Tensor) -> torch.Tensor:
    """The (D_out, D_in) Jacobian of the layer's map at one sample ``x`` (any shape)."""
    shape = x.shape
    return jacobian(lambda v: layer(v.view(1, *shape))[0].flatten(), x.flatten())


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_logdet_matches_autograd_jacobian(name: str, shape: tuple[int, ...]) -> None:
    layer, sample = _build(name, shape)
    x = sample(3, shape)
    y, logdet = layer(x)
    assert tuple(y.shape[1:]) == layer.output_shape(shape) and logdet.shape == (3,)
    for i in range(x.shape[0]):
        expected = torch.linalg.slogdet(_jacobian(layer, x[i]))[1]
        torch.testing.assert_close(logdet[i], expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_inverse_of_forward_is_identity(name: str, shape: tuple[int, ...]) -> None:
    layer, sample = _build(name, shape)
    x = sample(8, shape)
    y, _ = layer(x)
    torch.testing.assert_close(layer.inverse(y), x, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_forward_of_inverse_is_identity(name: str, shape: tuple[int, ...]) -> None:
    layer, _ = _build(name, shape)
    # A point in the image: for most layers any y, for the logit any real number too.
    y = torch.randn(8, *layer.output_shape(shape), dtype=DTYPE) * 2.0
    x = layer.inverse(y)
    torch.testing.assert_close(layer(x)[0], y, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_is_linear_exactly_when_the_jacobian_is_constant(name: str, shape) -> None:
    layer, sample = _build(name, shape)
    x1, x2 = sample(2, shape)
    same = torch.allclose(_jacobian(layer, x1), _jacobian(layer, x2), rtol=1e-10, atol=1e-12)
    assert layer.is_linear is same
    assert isinstance(layer, LinearFlowLayer) is layer.is_linear


@pytest.mark.parametrize(("name", "shape"), [c for c in CASES if _build(*c)[0].is_linear])
def test_linear_map_and_logabsdet_agree_with_forward(name: str, shape) -> None:
    layer, sample = _build(name, shape)
    x = sample(6, shape)
    y, logdet = layer(x)
    torch.testing.assert_close(layer.linear_map(x), y, rtol=0, atol=0)
    constant = layer.logabsdet(shape)
    assert constant.dim() == 0
    torch.testing.assert_close(constant.to(DTYPE).expand(6), logdet)


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_state_dict_round_trip_through_a_safe_load(name: str, shape, tmp_path) -> None:
    layer, sample = _build(name, shape)
    path = tmp_path / "layer.pt"
    torch.save(layer.state_dict(), path)
    torch.manual_seed(123)  # a fresh layer with other random parameters
    fresh, _ = _build(name, shape)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    x = sample(4, shape)
    torch.testing.assert_close(fresh(x)[0], layer(x)[0], rtol=0, atol=0)
    torch.testing.assert_close(fresh(x)[1], layer(x)[1], rtol=0, atol=0)


def test_module_apply_is_not_shadowed() -> None:
    seen = []
    EBFlow([Dense(2), SmoothLeakyReLU(), Dense(2)]).apply(lambda m: seen.append(type(m)))
    assert Dense in seen and SmoothLeakyReLU in seen


def test_ludense_weight_matches_apply_and_logdet() -> None:
    layer = make_ludense(4)
    x = _gaussian(5, 4)
    w = layer.weight()
    torch.testing.assert_close(layer.linear_map(x), x @ w.T + layer.bias)
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
        ([[0.0, 1.0]], "torch.Tensor"),
    ],
)
@pytest.mark.parametrize("name", sorted(n for n, v in LAYERS.items() if (2,) in v[1]))
def test_bad_input_raises_value_error(name: str, bad, message: str) -> None:
    if name in ("smooth_leaky_relu_residual", "actnorm"):
        pytest.skip("accepts any shape")
    layer = LAYERS[name][0]((2,)).float()
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
        (lambda: Dense(0), "dim must be an int >= 1"),
        (lambda: Dense(2.5), "dim must be an int >= 1, got 2.5"),
        (lambda: Dense(3, init="random"), "unknown init"),
        (lambda: LUDense(0), "dim must be an int >= 1"),
        (lambda: Affine(0.0, dim=2), "scale must be finite and non-zero"),
        (lambda: Affine(float("inf"), dim=2), "scale must be a finite number"),
        (lambda: Affine(1.0, dim=0), "dim must be"),
        (lambda: Logit(alpha=float("nan")), "alpha must be a finite number"),
        (lambda: Logit(alpha=0.0), "alpha must be positive"),
        (lambda: Logit(eps=0.5), "eps must lie in"),
        (lambda: Logit(dim=-1), "dim must be"),
        (lambda: ActNorm(0), "num_features must be an int >= 1"),
        (lambda: ConvKxK(2, 4), "kernel_size must be odd"),
        (lambda: ConvKxK(2, 3, "reflect"), "padding_mode must be one of"),
        (lambda: Conv1x1(0), "channels must be an int >= 1"),
        (lambda: AffineCoupling((3, 4, 4), mask="alternate"), "for vectors"),
        (lambda: AffineCoupling((1, 4, 4), mask="channel"), "at least 2 channels"),
        (lambda: AffineCoupling(1), "dim >= 2"),
        (lambda: AffineCoupling(4, parity=2), "parity must be 0 or 1"),
        (lambda: AffineCoupling(4, hidden=0), "hidden must be an int >= 1"),
        (lambda: AffineCoupling(4, scale_bound=0.0), "scale_bound must be positive"),
        (lambda: Planar(0), "dim must be an int >= 1"),
    ],
)
def test_bad_constructor_arguments_raise(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()
