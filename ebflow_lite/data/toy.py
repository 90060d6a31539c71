"""Two-dimensional toy densities, generated in code, with exact log-densities and scores.

The paper's three toy sets (sine, swirl, checkerboard) are defined as in its code and then
smoothed by ``N(0, 0.375^2 I)``, exactly as the paper trains on them, so each has a smooth
density and a score everywhere. Their log-densities are exact: the checkerboard in closed
form (error functions over its squares), sine, swirl and two moons as a one-dimensional
mixture over the curve's parameter evaluated by composite Gauss-Legendre quadrature. With the
default number of nodes the log-density agrees with a 5x finer quadrature to 1e-5 wherever
``log p > -25`` (the error grows far out in the tails, where ``p < 1e-11``). Scores are the
autograd gradient of the log-density unless a closed form is given.

Use :func:`toy` to build one by name; :data:`TOY_DENSITIES` lists the names.

References:
    Chao et al., NeurIPS 2023 (Section 5.1 and the toy code); Gresele et al., "Relative
    Gradient Optimization of the Jacobian Term in Unsupervised Deep Learning", NeurIPS 2020
    (the sine and swirl sets).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from ebflow_lite.draws import draw
from ebflow_lite.validation import ArgumentTypeError, check_batch, check_generator

TOY_DENSITIES: tuple[str, ...] = (
    "sine", "swirl", "checkerboard", "two_moons", "rings", "gaussian_mixture", "gaussian",
)

_LOG_2PI = math.log(2.0 * math.pi)
_CHUNK_ELEMENTS = 2_000_000  # points x quadrature nodes per chunk


# ---------------------------------------------------------------------------- helpers
def _log_normal_1d(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * _LOG_2PI


def log_ndtr_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(Phi(b) - Phi(a))`` for ``a < b``, stable in both tails."""
    upper = a > 0
    lo = torch.where(upper, -b, a)
    hi = torch.where(upper, -a, b)
    log_hi = torch.special.log_ndtr(hi)
    log_lo = torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp(log_lo - log_hi))


def log_box_blur(x: torch.Tensor, lo: float | torch.Tensor, hi: float | torch.Tensor,
                 std: float) -> torch.Tensor:
    """Log-density at ``x`` of ``U[lo, hi] + N(0, std^2)`` (one dimension)."""
    return log_ndtr_diff((x - hi) / std, (x - lo) / std) - torch.log(
        torch.as_tensor(hi - lo, dtype=x.dtype)
    )


def gauss_legendre(lo: float, hi: float, n_panels: int, order: int = 8
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes and weights on ``[lo, hi]`` (float64 NumPy arrays)."""
    base_nodes, base_weights = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(lo, hi, n_panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    nodes = (mid[:, None] + half[:, None] * base_nodes[None, :]).ravel()
    weights = (half[:, None] * base_weights[None, :]).ravel()
    return nodes, weights


def _uniform(n: int, generator: torch.Generator | None) -> torch.Tensor:
    return draw("uniform", (n,), dtype=torch.float64, generator=generator).cpu()


def _normal(n: int, generator: torch.Generator | None, dim: int = 1) -> torch.Tensor:
    shape = (n,) if dim == 1 else (n, dim)
    return draw("normal", shape, dtype=torch.float64, generator=generator).cpu()


# ---------------------------------------------------------------------------- base class
class ToyDensity:
    """A 2-D distribution that can be sampled and, where ``has_density``, evaluated.

    Attributes:
        name: the name :func:`toy` knows it by.
        has_density: whether :meth:`log_prob` and :meth:`score` exist.
        xlim, ylim: a plotting window holding essentially all the mass.
    """

    name: str = "toy"
    has_density: bool = True
    xlim: tuple[float, float] = (-6.0, 6.0)
    ylim: tuple[float, float] = (-6.0, 6.0)

    # subclasses implement these two
    def _sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    #: quadrature nodes per point (sets the chunk size); 1 for closed forms
    _nodes_per_point: int = 1

    def sample(
        self, n: int, generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw ``n`` points, shape ``(n, 2)`` (computed in float64, returned in ``dtype``)."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"{self.name}: n must be a positive int, got {n!r}")
        check_generator(generator, f"{self.name}.sample")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"{self.name}: dtype must be a floating torch.dtype, got {dtype!r}")
        return self._sample(int(n), generator).to(dtype)

    def _check(self, x: torch.Tensor) -> None:
        if not self.has_density:
            raise ValueError(f"{self.name}: this toy set has no closed-form density")
        check_batch(x, 2, where=f"toy density {self.name!r}")
        if x.dim() != 2:
            raise ValueError(f"{self.name}: expected shape (n, 2), got {tuple(x.shape)}")

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The exact log-density, shape ``(n,)``, in the dtype of ``x``."""
        self._check(x)
        chunk = max(1, _CHUNK_ELEMENTS // self._nodes_per_point)
        return torch.cat([self._log_prob(part) for part in x.split(chunk)])

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        """``exp(log_prob(x))``."""
        return self.log_prob(x).exp()

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``grad_x log p(x)``, shape ``(n, 2)``, by autograd of :meth:`log_prob`."""
        self._check(x)
        chunk = max(1, _CHUNK_ELEMENTS // self._nodes_per_point)
        parts = []
        for part in x.detach().split(chunk):
            with torch.enable_grad():
                part = part.clone().requires_grad_(True)
                (grad,) = torch.autograd.grad(self._log_prob(part).sum(), part)
            parts.append(grad)
        return torch.cat(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class _CurveMixture(ToyDensity):
    """A mixture over a 1-D curve parameter, evaluated by quadrature (log-sum-exp)."""

    def _nodes(self, dtype: torch.dtype, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
        nodes, log_w = self._nodes64
        return nodes.to(dtype=dtype, device=device), log_w.to(dtype=dtype, device=device)

    def _set_nodes(self, nodes: np.ndarray, log_weights: np.ndarray) -> None:
        self._nodes64 = (torch.from_numpy(nodes), torch.from_numpy(log_weights))
        self._nodes_per_point = len(nodes)


# ---------------------------------------------------------------------------- paper sets
class Sine(_CurveMixture):
    """``t ~ U[-2, 2]``, point ``4 (t, sin 3t + 0.25 n)``, smoothed by ``N(0, s^2 I)``.

    The exact density is ``int U(t) N(x; 4t, s^2) N(y; 4 sin 3t, 1 + s^2) dt``, evaluated by
    composite Gauss-Legendre quadrature over t.

    Args:
        smoothing: the smoothing standard deviation ``s`` (the paper's 0.375).
        n_panels: quadrature panels (8 nodes each) over ``[-2, 2]``.
    """

    name = "sine"
    xlim = (-10.0, 10.0)
    ylim = (-9.0, 9.0)

    def __init__(self, smoothing: float = 0.375, n_panels: int = 40) -> None:
        self.smoothing = _positive(smoothing, "smoothing")
        self.y_std = math.sqrt(1.0 + self.smoothing**2)
        nodes, weights = gauss_legendre(-2.0, 2.0, _count(n_panels, "n_panels"))
        self._set_nodes(nodes, np.log(weights / 4.0))

    def _sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        t = 4.0 * _uniform(n, generator) - 2.0
        x = 4.0 * t
        y = 4.0 * (torch.sin(3.0 * t) + 0.25 * _normal(n, generator))
        return torch.stack([x, y], 1) + self.smoothing * _normal(n, generator, 2)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        t, log_w = self._nodes(x.dtype, x.device)
        lx = _log_normal_1d(x[:, :1], 4.0 * t, self.smoothing)
        ly = _log_normal_1d(x[:, 1:], 4.0 * torch.sin(3.0 * t), self.y_std)
        return torch.logsumexp(log_w + lx + ly, dim=1)


class Swirl(_CurveMixture):
    """The swirl: ``r = sqrt(U) 3 pi``, point ``c (r cos r + 1 - a, -r sin r + 2 - b)``.

    ``c = 2.5 / 3`` and ``a, b ~ U[0, 0.5)`` independent jitters, then smoothing by
    ``N(0, s^2 I)``. Given r each coordinate is a box convolved with a Gaussian (closed
    form); the mixture over r (density ``2 r / (3 pi)^2``) is done by quadrature.

    Args:
        smoothing: the smoothing standard deviation ``s`` (the paper's 0.375).
        n_panels: quadrature panels (8 nodes each) over ``[0, 3 pi]``.
    """

    name = "swirl"
    xlim = (-9.5, 8.5)
    ylim = (-7.5, 8.5)
    _scale = 2.5 / 3.0
    _r_max = 3.0 * math.pi

    def __init__(self, smoothing: float = 0.375, n_panels: int = 60) -> None:
        self.smoothing = _positive(smoothing, "smoothing")
        nodes, weights = gauss_legendre(0.0, self._r_max, _count(n_panels, "n_panels"))
        self._set_nodes(nodes, np.log(weights * 2.0 * nodes / self._r_max**2))

    def _sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        r = torch.sqrt(_uniform(n, generator)) * self._r_max
        a = 0.5 * _uniform(n, generator)
        b = 0.5 * _uniform(n, generator)
        x = self._scale * (r * torch.cos(r) + 1.0 - a)
        y = self._scale * (-r * torch.sin(r) + 2.0 - b)
        return torch.stack([x, y], 1) + self.smoothing * _normal(n, generator, 2)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r, log_w = self._nodes(x.dtype, x.device)
        c, s = self._scale, self.smoothing
        # x - c (r cos r + 1) = -c a + noise, with -c a uniform on (-c/2, 0]
        dx = x[:, :1] - c * (r * torch.cos(r) + 1.0)
        dy = x[:, 1:] - c * (-r * torch.sin(r) + 2.0)
        lx = log_box_blur(dx, -0.5 * c, 0.0, s)
        ly = log_box_blur(dy, -0.5 * c, 0.0, s)
        return torch.logsumexp(log_w + lx + ly, dim=1)


class Checkerboard(ToyDensity):
    """Eight unit squares of a 4x4 checkerboard scaled by 3, smoothed by ``N(0, s^2 I)``.

    ``x1 ~ U[-2, 2]``, ``x2 = U[0, 1) - 2 Bernoulli(1/2) + (floor(x1) mod 2)``, both times 3.
    The density is a closed form: a sum over the squares of products of error-function
    differences.

    Args:
        smoothing: the smoothing standard deviation ``s`` (the paper's 0.375).
    """

    name = "checkerboard"
    xlim = (-8.0, 8.0)
    ylim = (-8.0, 8.0)

    def __init__(self, smoothing: float = 0.375) -> None:
        self.smoothing = _positive(smoothing, "smoothing")
        squares = []
        for col in (-2, -1, 0, 1):
            parity = col % 2
            for row in (parity, parity - 2):
                squares.append((3.0 * col, 3.0 * row))
        self.squares = tuple(squares)

    def _sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        x1 = 4.0 * _uniform(n, generator) - 2.0
        flip = (_uniform(n, generator) < 0.5).to(torch.float64)
        x2 = _uniform(n, generator) - 2.0 * flip + torch.remainder(torch.floor(x1), 2.0)
        return 3.0 * torch.stack([x1, x2], 1) + self.smoothing * _normal(n, generator, 2)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        s = self.smoothing
        terms = [
            log_box_blur(x[:, 0], lo1, lo1 + 3.0, s) + log_box_blur(x[:, 1], lo2, lo2 + 3.0, s)
            for lo1, lo2 in self.squares
        ]
        return torch.logsumexp(torch.stack(terms, 1), dim=1) - math.log(len(self.squares))


# ---------------------------------------------------------------------------- extra sets
class TwoMoons(_CurveMixture):
    """Two interleaved half circles (scikit-learn's moons, centred, scaled by 3), smoothed.

    Upper moon ``3 (cos t - 0.5, sin t - 0.25)``, lower moon its mirror image through the
    origin, ``t ~ U[0, pi]``, then ``N(0, s^2 I)``. Exact density by quadrature over t.

    Args:
        smoothing: the smoothing standard deviation ``s``.
        n_panels: quadrature panels (8 nodes each) over ``[0, pi]``.
    """

    name = "two_moons"
    xlim = (-6.0, 6.0)
    ylim = (-5.0, 5.0)

    def __init__(self, smoothing: float = 0.375, n_panels: int = 20) -> None:
        self.smoothing = _positive(smoothing, "smoothing")
        nodes, weights = gauss_legendre(0.0, math.pi, _count(n_panels, "n_panels"))
        self._set_nodes(nodes, np.log(weights / math.pi))

    @staticmethod
    def _upper(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 3.0 * (torch.cos(t) - 0.5), 3.0 * (torch.sin(t) - 0.25)

    def _sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        t = math.pi * _uniform(n, generator)
        sign = 1.0 - 2.0 * (_uniform(n, generator) < 0.5).to(torch.float64)
        cx, cy = self._upper(t)
        points = sign.unsqueeze(1) * torch.stack([cx, cy], 1)
        return points + self.smoothing * _normal(n, generator, 2)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        t, log_w = self._nodes(x.dtype, x.device)
        cx, cy = self._upper(t)
        s = self.smoothing
        moons = [
            log_w + _log_normal_1d(x[:, :1], sign * cx, s) + _log_normal_1d(x[:, 1:], sign * cy, s)
            for sign in (1.0, -1.0)
        ]
        return torch.logsumexp(torch.cat(moons, 1), dim=1) - math.log(2.0)


class Rings(ToyDensity):
    """Concentric circles of equal mass, uniform in angle, smoothed by ``N(0, s^2 I)``.

    Averaging ``N(x; r u(theta), s^2 I)`` over the angle gives the closed form
    ``exp(-(|x| - r)^2 / (2 s^2)) i0e(r |x| / s^2) / (2 pi s^2)`` with the scaled Bessel
    function ``i0e(z) = exp(-z) I_0(z)``.

    Args:
        radii: the ring radii.
        smoothing: the smoothing standard deviation ``s``.
    """

    name = "rings"
    xlim = (-6.5, 6.5)
    ylim = (-6.5, 6.5)

    def __init__(self, radii: tuple[float, ...] = (1.5, 3.0, 4.5),
                 smoothing: float = 0.375) -> None:
        if (isinstance(radii, (str, bytes)) or not isinstance(radii, (tuple, list))
                or len(radii) == 0):
            raise ValueError(f"radii must be a non-empty tuple of positive numbers, got "
                             f"{radii!r}")
        radii = tuple(_positive(r, "radii") for r in radii)
        self.radii = tuple(float(r) for r in radii)
        self.smoothing = _positive(smoothing, "smoothing")

    def _sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        which = torch.randint(len(self.radii), (n,), generator=generator)
        r = torch.tensor(self.radii, dtype=torch.float64)[which]
        theta = 2.0 * math.pi * _uniform(n, generator)
        points = r.unsqueeze(1) * torch.stack([torch.cos(theta), torch.sin(theta)], 1)
        return points + self.smoothing * _normal(n, generator, 2)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        s2 = self.smoothing**2
        rho = torch.sqrt((x**2).sum(1, keepdim=True) + torch.finfo(x.dtype).tiny)
        r = torch.tensor(self.radii, dtype=x.dtype, device=x.device)
        terms = (-(rho - r) ** 2 / (2.0 * s2) + torch.log(torch.special.i0e(r * rho / s2))
                 - math.log(2.0 * math.pi * s2))
        return torch.logsumexp(terms, dim=1) - math.log(len(self.radii))


class GaussianMixture(ToyDensity):
    """``n_modes`` equally weighted isotropic Gaussians evenly spaced on a circle.

    Args:
        n_modes: the number of components.
        radius: the circle's radius.
        std: each component's standard deviation.
    """

    name = "gaussian_mixture"
    xlim = (-6.5, 6.5)
    ylim = (-6.5, 6.5)

    def __init__(self, n_modes: int = 8, radius: float = 4.0, std: float = 0.5) -> None:
        self.n_modes = _count(n_modes, "n_modes")
        self.radius = _positive(radius, "radius")
        self.std = _positive(std, "std")
        angles = 2.0 * math.pi * torch.arange(self.n_modes, dtype=torch.float64) / self.n_modes
        self.means = self.radius * torch.stack([torch.cos(angles), torch.sin(angles)], 1)

    def _sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        which = torch.randint(self.n_modes, (n,), generator=generator)
        return self.means[which] + self.std * _normal(n, generator, 2)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        means = self.means.to(dtype=x.dtype, device=x.device)
        sq = ((x.unsqueeze(1) - means) ** 2).sum(-1)
        log_comp = -0.5 * sq / self.std**2 - 2.0 * math.log(self.std) - _LOG_2PI
        return torch.logsumexp(log_comp, dim=1) - math.log(self.n_modes)


class CorrelatedGaussian(ToyDensity):
    """A correlated 2-D Gaussian ``N(mean, cov)`` with closed-form density and score.

    Args:
        mean: a length-2 sequence.
        cov: a symmetric positive-definite 2x2 matrix.
    """

    name = "gaussian"
    xlim = (-6.0, 7.0)
    ylim = (-6.5, 5.5)

    def __init__(
        self,
        mean: tuple[float, float] = (0.5, -0.5),
        cov: tuple[tuple[float, float], tuple[float, float]] = ((2.0, 1.2), (1.2, 1.5)),
    ) -> None:
        try:
            self.mean = torch.as_tensor(mean, dtype=torch.float64)
            self.cov = torch.as_tensor(cov, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ArgumentTypeError(f"mean and cov must be numbers ({err})") from None
        if self.mean.shape != (2,) or self.cov.shape != (2, 2):
            raise ValueError("mean must have 2 entries and cov shape (2, 2)")
        if not bool(torch.isfinite(self.mean).all() & torch.isfinite(self.cov).all()):
            raise ValueError(f"mean and cov must be finite, got mean {mean!r}, cov {cov!r}")
        if not bool(torch.allclose(self.cov, self.cov.T)):
            raise ValueError("cov must be symmetric")
        chol, info = torch.linalg.cholesky_ex(self.cov)
        if int(info) != 0:
            raise ValueError("cov must be positive definite")
        self._chol = chol
        self.precision = torch.linalg.inv(self.cov)
        self._log_norm = -_LOG_2PI - torch.log(torch.diagonal(chol)).sum().item()

    def _sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        return self.mean + _normal(n, generator, 2) @ self._chol.T

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        d = x - self.mean.to(x)
        return -0.5 * ((d @ self.precision.to(x)) * d).sum(1) + self._log_norm

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``-cov^{-1} (x - mean)`` in closed form."""
        self._check(x)
        return -(x - self.mean.to(x)) @ self.precision.to(x)


# ---------------------------------------------------------------------------- factory
_REGISTRY: dict[str, type[ToyDensity]] = {
    "sine": Sine,
    "swirl": Swirl,
    "checkerboard": Checkerboard,
    "two_moons": TwoMoons,
    "rings": Rings,
    "gaussian_mixture": GaussianMixture,
    "gaussian": CorrelatedGaussian,
}


def toy(name: str, **kwargs) -> ToyDensity:
    """Build the toy density called ``name`` (one of :data:`TOY_DENSITIES`).

    Keyword arguments go to its constructor (e.g. ``smoothing=0.375``, ``n_panels``).

    Raises:
        ValueError: an unknown name.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown toy density {name!r}; expected one of {TOY_DENSITIES}")
    return _REGISTRY[name](**kwargs)


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)
