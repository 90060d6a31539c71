"""Small plotting helpers for 2-D densities and samples, shared by the chapters.

Every 2-D model in the book exposes a log-density ``log_prob_fn(x) -> (B,)`` on a batch of
shape ``(B, 2)``. :func:`density_grid` evaluates it on a regular grid (also the basis for
checking numerically that a density integrates to one), :func:`grid_log_z` integrates it (as
a float, or as a tensor that autograd differentiates), :func:`grid_points` returns the grid's
cell centres, :func:`plot_density` draws a density and :func:`plot_samples` draws a point
cloud with the same conventions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

LogProbFn = Callable[[torch.Tensor], torch.Tensor]


def _check_limits(lim: tuple[float, float], name: str) -> tuple[float, float]:
    if len(lim) != 2 or not np.all(np.isfinite(lim)) or not lim[0] < lim[1]:
        raise ValueError(f"{name} must be a pair (low, high) with low < high, got {lim!r}")
    return float(lim[0]), float(lim[1])


def _cell_centres(xlim: tuple[float, float], ylim: tuple[float, float], n: int
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """The cell centres of an ``n x n`` grid on the box along each axis, and a cell's area."""
    x_lo, x_hi = _check_limits(xlim, "xlim")
    y_lo, y_hi = _check_limits(ylim, "ylim")
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    n = int(n)
    dx, dy = (x_hi - x_lo) / n, (y_hi - y_lo) / n
    xs = np.linspace(x_lo + dx / 2, x_hi - dx / 2, n)
    ys = np.linspace(y_lo + dy / 2, y_hi - dy / 2, n)
    return xs, ys, dx * dy


def grid_points(
    xlim: tuple[float, float] = (-4.0, 4.0),
    ylim: tuple[float, float] = (-4.0, 4.0),
    n: int = 200,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, float]:
    """The centres of an ``n x n`` grid of cells on a box, and the area of one cell.

    The points are ordered as the arrays of :func:`density_grid` flattened row by row (the
    first coordinate varies fastest), so ``values.reshape(n, n)`` lines up with ``X, Y``.

    Args:
        xlim: the box's extent along the first coordinate.
        ylim: the box's extent along the second coordinate.
        n: the number of cells per axis (at least 2).
        dtype: the tensor dtype (default: torch's default dtype).

    Returns:
        ``(points, cell_area)``: a ``(n * n, 2)`` tensor and a float.

    Raises:
        ValueError: bad limits or ``n``.
    """
    _, _, points, cell_area = _grid(xlim, ylim, n, dtype)
    return points, cell_area


def _grid(xlim: tuple[float, float], ylim: tuple[float, float], n: int,
          dtype: torch.dtype | None) -> tuple[np.ndarray, np.ndarray, torch.Tensor, float]:
    """``X, Y`` (float64 meshgrids), the flattened points as a tensor, and a cell's area."""
    xs, ys, cell_area = _cell_centres(xlim, ylim, n)
    X, Y = np.meshgrid(xs, ys)
    points = torch.as_tensor(
        np.stack([X.ravel(), Y.ravel()], axis=1), dtype=dtype or torch.get_default_dtype()
    )
    return X, Y, points, cell_area


def _evaluate(fn: LogProbFn, points: torch.Tensor, batch_size: int, name: str,
              differentiable: bool = False) -> torch.Tensor:
    """``fn`` on ``points`` in chunks as one float64 CPU tensor (with autograd if asked)."""
    values = []
    with torch.set_grad_enabled(differentiable):
        for start in range(0, points.shape[0], batch_size):
            chunk = points[start : start + batch_size]
            out = fn(chunk)
            if not isinstance(out, torch.Tensor) or out.shape != (chunk.shape[0],):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(
                    f"{name} must return a tensor of shape ({chunk.shape[0]},), got {shape}"
                )
            out = out if differentiable else out.detach()
            values.append(out.to("cpu", torch.float64))
    return torch.cat(values)


def density_grid(
    log_prob_fn: LogProbFn,
    xlim: tuple[float, float] = (-4.0, 4.0),
    ylim: tuple[float, float] = (-4.0, 4.0),
    n: int = 200,
    batch_size: int = 8192,
    dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate ``exp(log_prob_fn)`` at the centres of an ``n x n`` grid of cells.

    The grid points are cell centres, so ``density.sum() * cell_area`` (with
    ``cell_area = (X[0, 1] - X[0, 0]) * (Y[1, 0] - Y[0, 0])``) is the midpoint-rule estimate
    of the probability mass inside the box.

    Args:
        log_prob_fn: maps a ``(B, 2)`` tensor to ``(B,)`` log-densities.
        xlim: the box's extent along the first coordinate.
        ylim: the box's extent along the second coordinate.
        n: the number of cells per axis (at least 2).
        batch_size: how many points to evaluate at once.
        dtype: the tensor dtype (default: torch's default dtype).

    Returns:
        ``(X, Y, density)``, three ``(n, n)`` NumPy arrays, ``X`` varying along columns.

    Raises:
        ValueError: bad limits or ``n``, or a ``log_prob_fn`` that returns the wrong shape.
    """
    X, Y, points, _ = _grid(xlim, ylim, n, dtype)
    values = _evaluate(log_prob_fn, points, batch_size, "log_prob_fn")
    return X, Y, values.exp().numpy().reshape(X.shape)


def grid_log_z(
    log_unnormalised: LogProbFn,
    xlim: tuple[float, float] = (-4.0, 4.0),
    ylim: tuple[float, float] = (-4.0, 4.0),
    n: int = 200,
    batch_size: int = 8192,
    dtype: torch.dtype | None = None,
    differentiable: bool = False,
) -> float | torch.Tensor:
    """``log`` of the midpoint-rule integral of ``exp(log_unnormalised)`` over a 2-D box.

    The normalising constant of a 2-D energy, ``log Z = log sum exp(-E) * cell_area``,
    computed with a log-sum-exp (no overflow for large ``-E``). Only possible in low
    dimension: the grid has ``n^2`` points. Arguments as in :func:`density_grid`, and

    Args:
        differentiable: if True, evaluate with autograd enabled and return ``log Z`` as a
            0-dim float64 tensor whose gradient flows back to the parameters that
            ``log_unnormalised`` uses (``torch.autograd.grad(log_z, theta)``); if False
            (default), return a float computed without gradients.
    """
    points, cell_area = grid_points(xlim, ylim, n, dtype)
    values = _evaluate(log_unnormalised, points, batch_size, "log_unnormalised",
                       differentiable)
    log_z = torch.logsumexp(values, 0) + math.log(cell_area)
    return log_z if differentiable else float(log_z)


def plot_density(
    ax,
    log_prob_fn: LogProbFn,
    xlim: tuple[float, float] = (-4.0, 4.0),
    ylim: tuple[float, float] = (-4.0, 4.0),
    n: int = 200,
    title: str | None = None,
    cmap: str = "viridis",
) -> np.ndarray:
    """Draw the density ``exp(log_prob_fn)`` on ``ax`` as an image; return the grid values.

    Args:
        ax: a Matplotlib axes.
        log_prob_fn: maps a ``(B, 2)`` tensor to ``(B,)`` log-densities.
        xlim: the box's extent along the first coordinate.
        ylim: the box's extent along the second coordinate.
        n: the grid resolution per axis.
        title: the axes title (None: leave it).
        cmap: a Matplotlib colormap name.

    Returns:
        The ``(n, n)`` density array from :func:`density_grid`.
    """
    X, Y, density = density_grid(log_prob_fn, xlim, ylim, n)
    ax.pcolormesh(X, Y, density, cmap=cmap, shading="auto")
    _finish(ax, xlim, ylim, title)
    return density


def plot_samples(
    ax,
    x: torch.Tensor | np.ndarray,
    xlim: tuple[float, float] | None = (-4.0, 4.0),
    ylim: tuple[float, float] | None = (-4.0, 4.0),
    title: str | None = None,
    size: float = 2.0,
    alpha: float = 0.5,
    color: str = "C0",
) -> None:
    """Scatter a ``(N, 2)`` point cloud on ``ax`` with equal axes.

    Args:
        ax: a Matplotlib axes.
        x: the points, shape ``(N, 2)``.
        xlim: the horizontal extent (None: automatic).
        ylim: the vertical extent (None: automatic).
        title: the axes title (None: leave it).
        size: the marker size.
        alpha: the marker opacity.
        color: the marker colour.

    Raises:
        ValueError: ``x`` is not of shape ``(N, 2)``.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu").numpy()
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"plot_samples expects points of shape (N, 2), got {x.shape}")
    ax.scatter(x[:, 0], x[:, 1], s=size, alpha=alpha, color=color, linewidths=0)
    _finish(ax, xlim, ylim, title)


def _finish(ax, xlim, ylim, title) -> None:
    if xlim is not None:
        ax.set_xlim(*xlim)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title is not None:
        ax.set_title(title)
