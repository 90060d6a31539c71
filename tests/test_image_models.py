"""Whole image models on the new contract: multi-scale latents, log p against autograd,
the paper's CNN and Glow architectures, the FFT log-det, ActNorm on images, bits/dim."""

from __future__ import annotations

import math

import pytest
import torch

from ebflow_lite import EBFlow, metrics, objectives
from ebflow_lite.autodiff import batch_jacobian
from ebflow_lite.draws import draw
from ebflow_lite.layers import (
    ActNorm,
    Affine,
    AffineCoupling,
    Conv1x1,
    ConvKxK,
    SmoothLeakyReLU,
    Split,
    Squeeze,
    circular_conv_logabsdet,
)
from ebflow_lite.models import cnn_flow, glow_flow
from ebflow_lite.preprocessing import image_preprocessing
from ebflow_lite.prior import StandardNormal, standard_normal_log_prob
from ebflow_lite.testing import perturb_parameters

DTYPE = torch.float64


def small_glow() -> EBFlow:
    model = glow_flow((1, 4, 4), n_levels=2, depth=2, hidden=6, seed=0).to(DTYPE)
    perturb_parameters(model, 0.1, torch.Generator().manual_seed(0))
    for layer in model.layers:
        if isinstance(layer, ActNorm):
            layer.initialized.fill_(True)
    return model.eval()


def small_cnn(padding_mode: str = "zeros") -> EBFlow:
    model = cnn_flow((1, 4, 4), kernel_size=3, n_blocks=2, padding_mode=padding_mode,
                     seed=0).to(DTYPE)
    perturb_parameters(model, 0.1, torch.Generator().manual_seed(0))
    return model.eval()


def _change_of_variables(model: EBFlow, x: torch.Tensor) -> torch.Tensor:
    """log N(g(x)) + log|det dg/dx| by autograd over the whole map (no layer log-dets)."""
    def flat_latent(v: torch.Tensor) -> torch.Tensor:
        latents, _ = model.latents_and_energy(v.view(-1, *model.event_shape))
        return torch.cat([u.flatten(1) for u in latents], dim=1)

    flat = x.flatten(1)
    jac = batch_jacobian(flat_latent, flat)
    with torch.no_grad():
        return standard_normal_log_prob(flat_latent(flat)) + torch.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("make", [small_glow, small_cnn, lambda: small_cnn("circular")],
                         ids=["glow", "cnn", "cnn_circular"])
def test_log_prob_is_the_change_of_variables_of_the_whole_map(make) -> None:
    model = make()
    x = torch.randn(3, 1, 4, 4, dtype=DTYPE)
    with torch.no_grad():
        log_p = model.log_prob(x)
        torch.testing.assert_close(log_p, -model.energy(x) - model.log_z(), rtol=0, atol=1e-12)
    torch.testing.assert_close(log_p, _change_of_variables(model, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "make",
    [lambda: cnn_flow((1, 2, 2), kernel_size=3, n_blocks=1, seed=0),
     lambda: glow_flow((1, 2, 2), n_levels=1, depth=1, hidden=4, seed=0)],
    ids=["cnn", "glow"])
def test_image_model_density_integrates_to_one(make) -> None:
    """On 2x2 images (D = 4) a grid over [-7, 7]^4 integrates exp(log p) to 1."""
    model = make().double()
    perturb_parameters(model, 0.2, torch.Generator().manual_seed(0))
    for layer in model.layers:
        if isinstance(layer, ActNorm):
            layer.initialized.fill_(True)
    model.eval()
    grid = torch.linspace(-7.0, 7.0, 30, dtype=DTYPE)
    cell = float(grid[1] - grid[0]) ** 4
    points = torch.cartesian_prod(grid, grid, grid, grid)
    with torch.no_grad():
        total = sum(float(model.log_prob(chunk.view(-1, 1, 2, 2)).exp().sum())
                    for chunk in points.split(200_000)) * cell
    assert abs(total - 1.0) < 5e-3, total


def test_multiscale_energy_contains_the_factored_out_latents_prior() -> None:
    model = small_glow()
    x = torch.randn(5, 1, 4, 4, dtype=DTYPE)
    with torch.no_grad():
        latents, energy = model.latents_and_energy(x)
        assert [tuple(u.shape[1:]) for u in latents] == model.latent_shapes == [(2, 2, 2),
                                                                                  (8, 1, 1)]
        # E = -log p_u(every latent) - log-dets of the layers outside S_l (couplings, ActNorm)
        kept = torch.zeros(5, dtype=DTYPE)
        h = x
        for layer in model.layers:
            if isinstance(layer, Split):
                h, _ = layer.split(h)
            elif model.in_log_z(layer):
                h = layer.linear_map(h)
            else:
                h, ld = layer(h)
                kept = kept + ld
        prior = sum(standard_normal_log_prob(u) for u in latents)
        torch.testing.assert_close(energy, -prior - kept)
    assert {type(layer) for layer in model.linear_layers()} == {Squeeze, Conv1x1}


@pytest.mark.parametrize("make", [small_glow, small_cnn, lambda: small_cnn("circular")],
                         ids=["glow", "cnn", "cnn_circular"])
def test_image_models_invert(make) -> None:
    model = make()
    x = torch.randn(4, 1, 4, 4, dtype=DTYPE)
    with torch.no_grad():
        latents, _ = model.latents_and_energy(x)
        torch.testing.assert_close(model.inverse(latents), x, rtol=1e-8, atol=1e-8)
        flat = torch.cat([u.flatten(1) for u in latents], dim=1)
        torch.testing.assert_close(model.inverse(flat), x, rtol=1e-8, atol=1e-8)
        assert torch.equal(model.latent_and_energy(x)[0], flat) or len(latents) == 1


def test_sample_takes_a_count_or_a_torch_style_shape() -> None:
    model = small_glow()
    assert model.sample(3).shape == (3, 1, 4, 4)
    assert model.sample((2, 3)).shape == (2, 3, 1, 4, 4)
    a = model.sample(4, generator=torch.Generator().manual_seed(1))
    b = model.sample(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    cold = model.sample(256, temperature=0.5, through_preprocessing=False,
                        generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        latents, _ = model.latents_and_energy(cold)
    flat = torch.cat([u.flatten(1) for u in latents], dim=1)
    assert abs(float(flat.std()) - 0.5) < 0.05
    with pytest.raises(ValueError, match="n must be positive"):
        model.sample((2, 0))
    with pytest.raises(ValueError, match="temperature must be positive"):
        model.sample(2, temperature=float("nan"))


def test_the_paper_cnn_and_fc_parameter_counts() -> None:
    # paper-facts 1.1: CNN 0.027 M on MNIST and 0.241 M on CIFAR-10
    assert sum(p.numel() for p in cnn_flow((1, 28, 28)).parameters()) == 26_796
    assert sum(p.numel() for p in cnn_flow((3, 32, 32)).parameters()) == 240_912
    model = cnn_flow((1, 28, 28))
    shapes = [tuple(layer.weight.shape) for layer in model.layers if isinstance(layer, ConvKxK)]
    assert shapes == [(1, 1, 7, 7)] * 2 + [(4, 4, 7, 7)] * 2 + [(16, 16, 7, 7)] * 2
    assert model.latent_shapes == [(16, 7, 7)]
    n_slr = sum(isinstance(layer, SmoothLeakyReLU) and layer.residual for layer in model.layers)
    assert n_slr == 5


def test_the_paper_glow_shapes() -> None:
    model = glow_flow((1, 28, 28), depth=2, hidden=8)
    assert model.latent_shapes == [(2, 14, 14), (8, 7, 7)]
    assert all(not model.in_log_z(layer) for layer in model.layers if isinstance(layer, ActNorm))


def test_fft_log_det_is_exact_for_circular_and_wrong_for_zero_padding() -> None:
    torch.manual_seed(0)
    for shape in [(2, 5, 4), (3, 4, 6)]:
        for mode in ("circular", "zeros"):
            conv = ConvKxK(shape[0], 3, mode).double()
            perturb_parameters(conv, 0.3, torch.Generator().manual_seed(0))
            exact = torch.linalg.slogdet(conv.matrix(shape))[1]
            fft = circular_conv_logabsdet(conv.weight, shape[1], shape[2])
            if mode == "circular":
                torch.testing.assert_close(fft, exact, rtol=1e-10, atol=1e-10)
                torch.testing.assert_close(conv.logabsdet(shape), exact)
            else:
                # The zero-padded matrix is not block-circulant: the FFT formula is off by
                # several nats here (5.2 and 12.7 at these seeds), never a rounding error.
                assert abs(float((fft - exact).detach())) > 1.0
                torch.testing.assert_close(conv.logabsdet(shape), exact, rtol=0, atol=0)


def test_float32_conv_log_det_is_computed_in_float64() -> None:
    conv = ConvKxK(3, 5, "zeros")
    perturb_parameters(conv, 0.05, torch.Generator().manual_seed(0))
    shape = (3, 8, 8)
    reference = torch.linalg.slogdet(conv.double().matrix(shape))[1]
    conv.float()
    assert conv.logabsdet(shape).dtype == torch.float32
    torch.testing.assert_close(conv.logabsdet(shape).double(), reference, rtol=1e-6, atol=1e-4)


def test_actnorm_on_images_initialises_per_channel_and_survives_a_reload(tmp_path) -> None:
    layer = ActNorm(3)
    x = torch.randn(16, 3, 4, 4) * torch.tensor([2.0, 0.5, 1.0]).view(1, 3, 1, 1) + 3.0
    x[:, 2] = 7.0  # a constant channel must not give NaN or a huge scale
    y = layer.linear_map(x)
    assert bool(torch.isfinite(y).all())
    torch.testing.assert_close(y[:, :2].mean((0, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[:, :2].std((0, 2, 3)), torch.ones(2), atol=1e-4, rtol=0)
    assert float(layer.log_scale.detach()[2]) == 0.0
    torch.save(layer.state_dict(), tmp_path / "a.pt")
    fresh = ActNorm(3)
    fresh.load_state_dict(torch.load(tmp_path / "a.pt", weights_only=True))
    torch.testing.assert_close(fresh.linear_map(x + 1.0), layer.linear_map(x + 1.0))
    assert bool(fresh.initialized)
    assert fresh.logabsdet((3, 4, 4)) == 16 * fresh.log_scale.sum()


def test_keep_in_energy_accepts_classes_and_instances() -> None:
    a, b = ActNorm(2), ActNorm(2)
    model = EBFlow([a, SmoothLeakyReLU(dim=2), b], keep_in_energy=[b])
    assert model.in_log_z(a) and not model.in_log_z(b)
    model = EBFlow([a, SmoothLeakyReLU(dim=2), b], keep_in_energy=(ActNorm,))
    assert model.linear_layers() == []
    with pytest.raises(ValueError, match="not a layer of this model"):
        model.in_log_z(ActNorm(2))


def test_model_needs_an_event_shape_for_a_split() -> None:
    with pytest.raises(ValueError, match="event_shape"):
        EBFlow([Squeeze(), Split(2)])
    with pytest.raises(ValueError, match="needs more than 4 channels"):
        EBFlow([Squeeze(), Split(4)], event_shape=(1, 4, 4))
    with pytest.raises(ValueError, match="even H and W"):
        EBFlow([Squeeze()], event_shape=(1, 3, 4))
    with pytest.raises(ValueError, match=r"expects events of shape \(2, 4, 4\)"):
        EBFlow([AffineCoupling((2, 4, 4))], event_shape=(1, 4, 4))


def test_model_boundary_rejects_bad_image_batches() -> None:
    model = small_cnn()
    with pytest.raises(ValueError, match=r"expected a batch of shape \(B, 1, 4, 4\)"):
        model.energy(torch.randn(2, 1, 4, 5, dtype=DTYPE))
    with pytest.raises(ValueError, match="NaN or inf"):
        model.energy(torch.full((2, 1, 4, 4), float("nan"), dtype=DTYPE))
    with pytest.raises(ValueError, match="dtype"):
        model.energy(torch.randn(2, 1, 4, 4))


class _Logistic(StandardNormal):
    """The standard logistic prior: its push-forward through the sigmoid is uniform."""

    def log_prob(self, latents):
        u = latents[0].flatten(1)
        return (-u - 2.0 * torch.nn.functional.softplus(-u)).sum(1)


@pytest.mark.parametrize("levels", [17, 256])
def test_a_uniform_model_has_log2_levels_bits_per_dim(levels: int) -> None:
    """Through the preprocessing's log-dets, a model uniform on [0, K)^D scores log2 K."""
    shape = (1, 2, 3)
    model = EBFlow([Affine(1.0, event_shape=shape)], event_shape=shape, prior=_Logistic(),
                   preprocessing=image_preprocessing(levels, alpha=1.0, eps=0.0,
                                                     event_shape=shape)).double()
    x = torch.randint(0, levels, (64, *shape)).double() + torch.rand(64, *shape,
                                                                      dtype=DTYPE)
    nll = metrics.nll(model, x)
    torch.testing.assert_close(nll, 6 * math.log(levels), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(metrics.bits_per_dim(nll, 6), math.log2(levels))


def test_objective_registry() -> None:
    bound = objectives.get("dsm", sigma=0.5)
    model = small_cnn()
    x = torch.randn(4, 1, 4, 4, dtype=DTYPE)
    g = torch.Generator().manual_seed(0)
    value = bound(model, x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(value, objectives.dsm(model, x, sigma=0.5, generator=g))
    assert objectives.get("ml") is objectives.ml
    with pytest.raises(ValueError, match="unknown objective 'not_an_objective'"):
        objectives.get("not_an_objective")
    with pytest.raises(ValueError, match=r"takes no option\(s\) \['sigma'\]"):
        objectives.get("ssm", sigma=0.1)


def test_one_draw_helper_for_every_kind() -> None:
    a = draw("rademacher", (1000,), generator=torch.Generator().manual_seed(0))
    assert set(a.unique().tolist()) == {-1.0, 1.0}
    u = draw("uniform", (3, 2), dtype=DTYPE)
    assert u.dtype == DTYPE and bool(((u >= 0) & (u < 1)).all())
    n1 = draw("normal", (5,), generator=torch.Generator().manual_seed(3))
    n2 = draw("normal", (5,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(n1, n2)
    with pytest.raises(ValueError, match="kind must be one of"):
        draw("cauchy", (2,))
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        draw("normal", (2,), generator=0)  # type: ignore[arg-type]
