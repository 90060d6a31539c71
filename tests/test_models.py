"""The ready-made architectures: the FC model, its LU variant and the 2-D toy flow."""

from __future__ import annotations

import pytest
import torch

from ebflow_lite.layers import ActNorm, AffineCoupling, Dense, LUDense, SmoothLeakyReLU
from ebflow_lite.models import fc_flow, lu_fc_flow, toy_flow
from ebflow_lite.testing import perturb_parameters


def test_fc_flow_structure_and_parameter_count() -> None:
    d = 7
    model = fc_flow(d)
    kinds = [type(layer) for layer in model.layers]
    assert kinds == [Dense, SmoothLeakyReLU, Dense]
    assert [layer.is_linear for layer in model.layers] == [True, False, True]
    assert sum(p.numel() for p in model.parameters()) == 2 * (d * d + d)  # paper-facts 1.1
    torch.testing.assert_close(model.layers[0].weight, -torch.eye(d))
    torch.testing.assert_close(model.layers[2].bias, torch.ones(d))
    assert model.layers[1].alpha == 0.3


def test_fc_flow_energy_by_hand() -> None:
    d = 4
    model = fc_flow(d, init="orthogonal").double()
    x = torch.randn(6, d, dtype=torch.float64)
    w1, b1 = model.layers[0].weight, model.layers[0].bias
    w2, b2 = model.layers[2].weight, model.layers[2].bias
    a = x @ w1.T + b1
    h = 0.3 * a + 0.7 * torch.nn.functional.softplus(a)
    u = h @ w2.T + b2
    log_slope = torch.log(0.3 + 0.7 * torch.sigmoid(a)).sum(1)
    energy = 0.5 * (u**2).sum(1) + 0.5 * d * torch.log(torch.tensor(2 * torch.pi)) - log_slope
    torch.testing.assert_close(model.energy(x), energy)
    log_z = -(torch.linalg.slogdet(w1)[1] + torch.linalg.slogdet(w2)[1])
    torch.testing.assert_close(model.log_prob(x), -energy - log_z)


def test_lu_fc_flow_starts_as_fc_flow_and_has_cheap_log_det() -> None:
    d = 6
    fc, lu = fc_flow(d).double(), lu_fc_flow(d).double()
    assert [type(layer) for layer in lu.layers] == [LUDense, SmoothLeakyReLU, LUDense]
    x = torch.randn(5, d, dtype=torch.float64)
    torch.testing.assert_close(lu.log_prob(x), fc.log_prob(x))
    torch.testing.assert_close(lu.layers[0].weight(), -torch.eye(d, dtype=torch.float64))
    perturb_parameters(lu, 0.1)
    for layer in lu.linear_layers():
        torch.testing.assert_close(layer.logabsdet(),
                                   torch.linalg.slogdet(layer.weight())[1])
    permuted = lu_fc_flow(d, permute=True, init="identity")
    assert sorted(permuted.layers[0].permutation.tolist()) == list(range(d))


def test_toy_flow_structure_seed_and_rng_isolation() -> None:
    model = toy_flow(n_blocks=3, hidden=16, seed=1)
    kinds = [type(layer) for layer in model.layers]
    assert kinds == [Dense, AffineCoupling, ActNorm] * 3 + [Dense]
    kept = [layer.keep.tolist() for layer in model.layers if isinstance(layer, AffineCoupling)]
    assert kept == [[0], [1], [0]]  # the parity alternates
    state = torch.get_rng_state()
    again = toy_flow(n_blocks=3, hidden=16, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # a seeded build leaves the RNG alone
    for p, q in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)
    no_actnorm = toy_flow(n_blocks=2, actnorm=False)
    assert not any(isinstance(layer, ActNorm) for layer in no_actnorm.layers)


def test_toy_flow_density_integrates_to_one() -> None:
    model = toy_flow(n_blocks=2, hidden=16, seed=0).double()
    for layer in model.layers:  # move the couplings away from their near-identity start
        if isinstance(layer, AffineCoupling):
            perturb_parameters(layer, 0.3)
    model.eval()
    grid = torch.linspace(-8, 8, 401, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    with torch.no_grad():
        mass = model.log_prob(pts).exp().sum() * (grid[1] - grid[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=0.02)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="init"):
        fc_flow(3, init="zeros")
    with pytest.raises(ValueError, match="init"):
        lu_fc_flow(3, init="orthogonal")
    with pytest.raises(ValueError, match="dim >= 2"):
        toy_flow(dim=1)
    with pytest.raises(ValueError, match="n_blocks"):
        toy_flow(n_blocks=0)
