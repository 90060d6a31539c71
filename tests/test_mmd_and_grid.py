"""The MMD helper of ebflow_lite.metrics and the grid normaliser of ebflow_lite.plotting."""

from __future__ import annotations

import math

import pytest
import torch

from ebflow_lite.metrics import mmd
from ebflow_lite.plotting import grid_log_z


def test_mmd_is_small_for_one_distribution_and_sees_mode_weights() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])

    def mixture(n: int, weight_left: float) -> torch.Tensor:
        left = torch.rand(n, generator=g) < weight_left
        return centres[(~left).long()] + 0.3 * torch.randn(n, 2, generator=g)

    same = mmd(mixture(2000, 0.5), mixture(2000, 0.5))
    one_mode = mmd(mixture(2000, 0.5), mixture(2000, 1.0))
    wrong_weights = mmd(mixture(2000, 0.5), mixture(2000, 0.8))
    assert same < 0.01
    assert one_mode > 20 * same and wrong_weights > 5 * same
    assert one_mode > wrong_weights


def test_mmd_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="shapes"):
        mmd(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(ValueError, match="bandwidths"):
        mmd(torch.randn(5, 2), torch.randn(5, 2), bandwidths=(0.0,))


def test_grid_log_z_of_a_gaussian_energy() -> None:
    cov = torch.tensor([[1.0, 0.4], [0.4, 0.5]], dtype=torch.float64)
    precision = torch.linalg.inv(cov)

    def minus_energy(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((x @ precision) * x).sum(1) + 300.0   # a large constant: no overflow

    log_z = grid_log_z(minus_energy, (-8, 8), (-8, 8), n=300, dtype=torch.float64)
    expected = math.log(2 * math.pi * math.sqrt(float(torch.linalg.det(cov)))) + 300.0
    assert abs(log_z - expected) < 1e-6
    with pytest.raises(ValueError, match="shape"):
        grid_log_z(lambda x: x, n=10)
