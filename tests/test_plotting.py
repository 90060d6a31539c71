"""ebflow_lite.plotting: the density grid integrates a known density to one, its log Z is
differentiable on request, its points line up with the plotted arrays; bad input fails."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ebflow_lite import standard_normal_log_prob  # noqa: E402
from ebflow_lite.plotting import (  # noqa: E402
    density_grid,
    grid_log_z,
    grid_points,
    plot_density,
    plot_samples,
)


def test_density_grid_integrates_a_gaussian_to_one() -> None:
    X, Y, density = density_grid(standard_normal_log_prob, (-6, 6), (-6, 6), n=240)
    cell = (X[0, 1] - X[0, 0]) * (Y[1, 0] - Y[0, 0])
    assert density.shape == (240, 240)
    assert abs(density.sum() * cell - 1.0) < 1e-6


def test_density_grid_points_are_cell_centres_and_x_varies_along_columns() -> None:
    X, Y, density = density_grid(lambda x: x[:, 0] + 2 * x[:, 1], (0, 1), (0, 2), n=4)
    np.testing.assert_allclose(X[0], [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(Y[:, 0], [0.25, 0.75, 1.25, 1.75])
    np.testing.assert_allclose(np.log(density), X + 2 * Y, rtol=1e-6)


def test_density_grid_evaluates_in_chunks() -> None:
    full = density_grid(standard_normal_log_prob, n=30)[2]
    chunked = density_grid(standard_normal_log_prob, n=30, batch_size=7)[2]
    np.testing.assert_array_equal(full, chunked)


def test_grid_points_line_up_with_density_grid() -> None:
    X, Y, density = density_grid(lambda x: x[:, 0] - 3 * x[:, 1], (0, 1), (-2, 2), n=5,
                                 dtype=torch.float64)
    points, cell_area = grid_points((0, 1), (-2, 2), n=5, dtype=torch.float64)
    assert points.shape == (25, 2) and points.dtype == torch.float64
    np.testing.assert_allclose(points[:, 0].numpy().reshape(5, 5), X)
    np.testing.assert_allclose(points[:, 1].numpy().reshape(5, 5), Y)
    np.testing.assert_allclose(density.ravel(), np.exp((points[:, 0] - 3 * points[:, 1]).numpy()),
                               rtol=1e-12)
    assert cell_area == pytest.approx((1 / 5) * (4 / 5))
    with pytest.raises(ValueError, match="n must be"):
        grid_points(n=1)


def test_grid_log_z_differentiable_gives_the_gradient_of_log_z() -> None:
    # E(x) = |x|^2 / (2 sigma^2): log Z = log(2 pi sigma^2), d log Z / d sigma = 2 / sigma.
    sigma = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)

    def minus_energy(x: torch.Tensor) -> torch.Tensor:
        return -(x**2).sum(1) / (2 * sigma**2)

    log_z = grid_log_z(minus_energy, (-7, 7), (-7, 7), n=300, batch_size=1000,
                       dtype=torch.float64, differentiable=True)
    assert isinstance(log_z, torch.Tensor) and log_z.shape == () and log_z.requires_grad
    (grad,) = torch.autograd.grad(log_z, sigma)
    assert abs(float(log_z.detach()) - math.log(2 * math.pi * 0.8**2)) < 1e-8
    assert abs(float(grad) - 2 / 0.8) < 1e-6
    as_float = grid_log_z(minus_energy, (-7, 7), (-7, 7), n=300, dtype=torch.float64)
    assert isinstance(as_float, float)
    assert as_float == pytest.approx(float(log_z.detach()), abs=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"xlim": (1.0, 1.0)}, "xlim"),
        ({"ylim": (2.0, -2.0)}, "ylim"),
        ({"n": 1}, "n must be"),
        ({"log_prob_fn": lambda x: x}, "shape"),
    ],
)
def test_density_grid_rejects_bad_arguments(kwargs, message) -> None:
    args = {"log_prob_fn": standard_normal_log_prob, **kwargs}
    with pytest.raises(ValueError, match=message):
        density_grid(**args)


def test_plot_helpers_draw_and_check_shapes() -> None:
    fig, ax = plt.subplots()
    values = plot_density(ax, standard_normal_log_prob, n=20, title="t")
    assert values.shape == (20, 20) and ax.get_title() == "t"
    plot_samples(ax, torch.randn(50, 2))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plot_samples(ax, torch.randn(50, 3))
    plt.close(fig)
