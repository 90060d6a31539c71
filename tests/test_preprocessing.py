"""Densities through preprocessing (Affine + Logit), and MaP on versus off."""

from __future__ import annotations

import pytest
import torch

from ebflow_lite import EBFlow, objectives
from ebflow_lite.layers import Affine, Dense, Logit, SmoothLeakyReLU
from ebflow_lite.metrics import data_space_score
from ebflow_lite.models import fc_flow
from ebflow_lite.testing import perturb_parameters

DT = torch.float64


def _model(map_on: bool, scale: float = 1.0, eps: float = 0.01, seed: int = 0) -> EBFlow:
    torch.manual_seed(seed)
    d = 2
    pre = [Affine(1.0 / scale, dim=d), Logit(alpha=0.5, eps=eps, dim=d)]
    model = fc_flow(d, init="orthogonal", preprocessing=pre, match_after_preprocessing=map_on)
    return perturb_parameters(model, 0.2).double()


@pytest.mark.parametrize("map_on", [True, False])
def test_density_integrates_to_one_in_data_space(map_on: bool) -> None:
    scale = 3.0  # data on the box (0, 3)^2, mapped to (0, 1)^2 and through the logit
    model = _model(map_on, scale, eps=0.0)
    n = 600
    edges = torch.linspace(0, scale, n + 1, dtype=DT)
    mids = 0.5 * (edges[1:] + edges[:-1])
    xx, yy = torch.meshgrid(mids, mids, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    with torch.no_grad():
        mass = model.log_prob(pts).exp().sum() * (scale / n) ** 2
    assert float(mass) == pytest.approx(1.0, abs=0.01)


def test_a_squeezed_logit_loses_the_mass_outside_its_range() -> None:
    # With eps > 0 the box maps onto (-c, c)^2, c = logit(1 - eps) / alpha: the data-space
    # density integrates to the model's mass on that square, not to one.
    scale, eps, n = 1.0, 0.01, 600
    model = _model(True, scale, eps=eps)
    edges = torch.linspace(0, scale, n + 1, dtype=DT)
    mids = 0.5 * (edges[1:] + edges[:-1])
    pts = torch.cartesian_prod(mids, mids)
    c = float(torch.logit(torch.tensor(1 - eps, dtype=DT))) / 0.5
    zs = torch.linspace(-c, c, n + 1, dtype=DT)
    zmid = 0.5 * (zs[1:] + zs[:-1])
    with torch.no_grad():
        data_mass = model.log_prob(pts).exp().sum() * (scale / n) ** 2
        z_mass = model.log_prob_model_space(torch.cartesian_prod(zmid, zmid)).exp().sum() * (
            2 * c / n) ** 2
    assert float(data_mass) == pytest.approx(float(z_mass), abs=2e-3)
    assert float(data_mass) < 0.999


def test_log_prob_is_model_space_log_prob_plus_preprocessing_log_det() -> None:
    model = _model(True, scale=17.0)
    x = 17 * torch.rand(50, 2, dtype=DT)
    z, pre_logdet = model.preprocess_with_logdet(x)
    expected_z = torch.logit(0.01 + 0.98 * x / 17) / 0.5
    torch.testing.assert_close(z, expected_z)
    # log|dz/dx| per feature: log(0.98 / (17 * 0.5 * p (1 - p))).
    p = 0.01 + 0.98 * x / 17
    torch.testing.assert_close(pre_logdet, torch.log(0.98 / (17 * 0.5 * p * (1 - p))).sum(1))
    torch.testing.assert_close(model.log_prob(x), model.log_prob_model_space(z) + pre_logdet)


def test_map_on_and_off_give_the_same_density_but_different_scores() -> None:
    on, off = _model(True), _model(False)  # the same seed: the same parameters
    for a, b in zip(on.parameters(), off.parameters(), strict=True):
        assert torch.equal(a, b)
    x = torch.rand(64, 2, dtype=DT)
    torch.testing.assert_close(on.log_prob(x), off.log_prob(x))
    # Scores: MaP differentiates in the logit variable z, no MaP in the data variable x.
    score_on = on.score(on.preprocess(x))
    score_off = off.score(x)
    assert not torch.allclose(score_on, score_off)
    # Both are the same density: the data-space scores agree.
    torch.testing.assert_close(data_space_score(on, x), score_off)
    # ML's gradient does not depend on MaP (the preprocessing has no parameters) ...
    g_on = torch.autograd.grad(objectives.ml(on, x), list(on.parameters()))
    g_off = torch.autograd.grad(objectives.ml(off, x), list(off.parameters()))
    for a, b in zip(g_on, g_off, strict=True):
        torch.testing.assert_close(a, b)


def test_map_changes_the_score_matching_gradient() -> None:
    exact_sm = getattr(objectives, "exact_sm", None)
    if exact_sm is None:
        pytest.fail("ebflow_lite.objectives.exact_sm is not available yet")
    on, off = _model(True), _model(False)  # the same seed: the same parameters
    for a, b in zip(on.parameters(), off.parameters(), strict=True):
        assert torch.equal(a, b)
    x = torch.rand(64, 2, dtype=DT)
    g_on = torch.autograd.grad(exact_sm(on, x), list(on.parameters()))
    g_off = torch.autograd.grad(exact_sm(off, x), list(off.parameters()))
    differ = [not torch.allclose(a, b, rtol=1e-3, atol=1e-8) for a, b in zip(
        g_on, g_off, strict=True)]
    assert all(differ)


def test_preprocessing_must_be_parameter_free_and_in_domain() -> None:
    with pytest.raises(ValueError, match="trainable"):
        EBFlow([SmoothLeakyReLU(0.3, dim=2)], preprocessing=[Dense(2)])
    model = _model(True)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.log_prob(torch.full((3, 2), 1.5, dtype=DT))
