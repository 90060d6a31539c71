"""ebflow_lite.plotting: the density grid integrates a known density to one; bad input fails."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ebflow_lite import standard_normal_log_prob  # noqa: E402
from ebflow_lite.plotting import density_grid, plot_density, plot_samples  # noqa: E402


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
