"""Checkers for the exercises of chapter 1 (change of variables).

Each checker compares the learner's function with an independent computation: a closed-form
Gaussian density (``torch.distributions``), the bisection inverse and the log-det of the
library's :class:`ebflow_lite.layers.Planar` (checked against an autograd Jacobian), or the
exact area of a mapped square.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.autograd.functional import jacobian
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ebflow_lite.exercises import CheckResult, checker, failed, passed
from ebflow_lite.flow import standard_normal_log_prob
from ebflow_lite.layers import Planar

DTYPE = torch.float64


def _as_batch_values(value: object, batch: int, what: str) -> torch.Tensor | CheckResult:
    """The learner's per-sample output as a float64 tensor of shape (batch,), or a hint."""
    if not isinstance(value, torch.Tensor):
        return failed(f"{what} must be a torch.Tensor, got {type(value).__name__}")
    value = value.detach().to(DTYPE)
    if value.shape != (batch,):
        return failed(f"{what} must have one value per sample, shape ({batch},); got "
                      f"{tuple(value.shape)}. Sum over the feature axis, not the batch axis.")
    return value


# ----------------------------------------------------------------------------- exercise 1
def _affine_cases() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(y, A, c) triples: a 1-D map with a negative slope and a 3-D map."""
    gen = torch.Generator().manual_seed(101)
    cases = []
    a_1d = torch.tensor([[-2.5]], dtype=DTYPE)
    c_1d = torch.tensor([0.7], dtype=DTYPE)
    cases.append((torch.randn(50, 1, generator=gen, dtype=DTYPE) * 2, a_1d, c_1d))
    a_3d = torch.tensor([[1.5, 0.3, 0.0], [-0.4, 0.8, 0.2], [0.1, -0.6, -1.2]], dtype=DTYPE)
    c_3d = torch.tensor([1.0, -2.0, 0.5], dtype=DTYPE)
    cases.append((torch.randn(50, 3, generator=gen, dtype=DTYPE) * 2 + c_3d, a_3d, c_3d))
    return cases


@checker
def affine_log_density(
    learner: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> CheckResult:
    """Check ``learner(y, A, c)`` = log-density of ``y = A x + c`` with ``x ~ N(0, I)``.

    The reference is ``torch.distributions.MultivariateNormal(c, A A^T)``.
    """
    for y, a, c in _affine_cases():
        dim = a.shape[0]
        reference = torch.distributions.MultivariateNormal(c, a @ a.T).log_prob(y)
        value = _as_batch_values(learner(y.clone(), a.clone(), c.clone()), y.shape[0],
                                 "the log-density")
        if isinstance(value, CheckResult):
            return value
        if not bool(torch.isfinite(value).all()):
            return failed(f"NaN or inf in your log-density for D = {dim} with det A = "
                          f"{float(torch.linalg.det(a)):.3g} < 0: take the log of |det A| "
                          "(torch.linalg.slogdet), a flip of orientation still stretches "
                          "volume by |det A|.")
        if torch.allclose(value, reference, rtol=1e-8, atol=1e-8):
            continue
        log_abs_det = torch.linalg.slogdet(a)[1]
        diff = value - reference
        if torch.allclose(diff, torch.full_like(diff, 2 * float(log_abs_det)), atol=1e-8):
            return failed("the log-det has the wrong sign. The data -> latent map is "
                          "x = A^{-1}(y - c); its log|det| is -log|det A|, and log-dets of "
                          "the data -> latent map are added.")
        if torch.allclose(diff, torch.full_like(diff, float(log_abs_det)), atol=1e-8):
            return failed("the Jacobian term is missing: subtract log|det A|, the volume "
                          "change of y = A x + c.")
        if torch.allclose(diff, torch.full_like(diff, 0.5 * dim * math.log(2 * math.pi)),
                          atol=1e-8):
            return failed("off by the constant (D/2) log(2 pi): include the normalising "
                          "constant of the standard normal.")
        wrong_latent = (y - c) @ a.T
        wrong = (torch.distributions.Normal(0.0, 1.0).log_prob(wrong_latent).sum(1)
                 - log_abs_det)
        if torch.allclose(value, wrong, atol=1e-8):
            return failed("the latent is x = A^{-1}(y - c), not A (y - c): solve the linear "
                          "system (torch.linalg.solve) instead of multiplying by A.")
        return failed(f"for D = {dim} your log-density differs from the Gaussian "
                      f"N(c, A A^T) by up to {float(diff.abs().max()):.3g}.")
    return passed("your density equals N(y; c, A A^T) in 1 and 3 dimensions, also for a "
                  "negative determinant.")


# ----------------------------------------------------------------------------- exercise 2
class _LargestTensor(TorchDispatchMode):
    """Records the shape of the largest tensor that any operator returns (views included)."""

    def __init__(self) -> None:
        super().__init__()
        self.numel, self.shape = 0, ()

    def __torch_dispatch__(self, func: Callable[..., object], types: object,
                           args: tuple = (), kwargs: dict | None = None) -> object:
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.numel() > self.numel:
                self.numel, self.shape = value.numel(), tuple(value.shape)
        return out


def _generative_planar_case(
    dim: int, w_dot_u_hat: float, b: float, batch: int, seed: int,
) -> tuple[Planar, torch.Tensor]:
    """A :class:`Planar` layer with ``w^T u_hat`` set to ``w_dot_u_hat``, and data ``x = f(u)``.

    The layer's forward map is the generator ``f`` of the exercise (the same formula). The
    latents are Gaussian, shifted along ``w`` so that ``w^T u + b`` runs over a grid.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # leave the learner's random stream untouched
        layer = Planar(dim).to(DTYPE)
    w = torch.randn(dim, generator=gen, dtype=DTYPE)
    r = torch.randn(dim, generator=gen, dtype=DTYPE)
    # Planar.u_hat() maps w.u to m(w.u) = -1 + softplus(w.u); invert m to hit w_dot_u_hat
    wanted = math.log(math.expm1(w_dot_u_hat + 1.0))
    with torch.no_grad():
        layer.w.copy_(w)
        layer.u.copy_(r + (wanted - w @ r) * w / (w @ w))
        layer.b.fill_(b)
        latent = torch.randn(batch, dim, generator=gen, dtype=DTYPE)
        # move each latent along w so that a = w^T u + b covers [-3, 3], the ridge included
        a_grid = torch.linspace(-3.0, 3.0, batch, dtype=DTYPE)
        latent = latent + (a_grid - latent @ w - b).unsqueeze(1) * w / (w @ w)
        x = layer(latent)[0]
    return layer, x


def _single_jacobian(layer: Planar, point: torch.Tensor) -> torch.Tensor:
    """The autograd Jacobian of the layer's map at one point, shape (D, D)."""
    return jacobian(lambda v: layer(v.unsqueeze(0))[0].squeeze(0), point)


# (D, w^T u_hat, b, batch): a ridge that almost folds, a mild one, a steep one on a fine grid
# of a = w^T u + b (where Newton's method can cycle), and a steep one in a dimension where a
# D x D matrix is much larger than the batch (B D = 768 < D^2 = 4096)
_GENERATIVE_CASES = [(2, -0.95, 0.3, 41), (5, 0.5, -0.4, 41), (3, 6.0, 0.2, 601),
                     (64, 6.0, 0.2, 12)]


@checker
def generative_planar_density(
    learner: Callable[..., tuple[torch.Tensor, torch.Tensor]],
) -> CheckResult:
    """Check ``learner(x, u_hat, w, b) -> (u, log p(x))`` for the generative planar flow.

    The generator is ``x = f(u) = u + u_hat tanh(w^T u + b)`` with ``u ~ N(0, I)``. The
    references are the bisection of :meth:`ebflow_lite.layers.Planar.inverse` for ``u`` and
    ``log N(u) - log|det J_f(u)|`` with the log-det of ``Planar.forward`` (checked against an
    autograd Jacobian). A dispatch mode watches every tensor the learner's function creates
    and rejects a ``D x D`` one.
    """
    for seed, (dim, w_dot_u_hat, b, batch) in enumerate(_GENERATIVE_CASES):
        layer, x = _generative_planar_case(dim, w_dot_u_hat, b, batch, 505 + seed)
        with torch.no_grad():
            u_hat, w, b_tensor = layer.u_hat(), layer.w.clone(), layer.b.clone()
            u_ref = layer.inverse(x)
            log_det_ref = layer(u_ref)[1]
        autograd = torch.stack([torch.linalg.slogdet(_single_jacobian(layer, u_ref[i]))[1]
                                for i in range(4)])
        if not torch.allclose(autograd, log_det_ref[:4], rtol=1e-9, atol=1e-9):
            raise RuntimeError("internal: ebflow_lite.layers.Planar disagrees with autograd")
        log_p_ref = standard_normal_log_prob(u_ref) - log_det_ref

        watch = _LargestTensor()
        with watch:
            out = learner(x.clone(), u_hat.clone(), w.clone(), b_tensor.clone())
        if not (isinstance(out, tuple) and len(out) == 2):
            return failed("return a pair (u, log_p)")
        u, log_p = out
        if not isinstance(u, torch.Tensor) or u.shape != x.shape:
            return failed(f"u must be a tensor shaped like x, {tuple(x.shape)}")
        log_p = _as_batch_values(log_p, batch, "log_p")
        if isinstance(log_p, CheckResult):
            return log_p
        if dim * dim > 4 * batch * dim and watch.numel >= dim * dim:
            return failed(f"for D = {dim} your function created a tensor of shape "
                          f"{watch.shape}, as large as a D x D matrix: a dense Jacobian (or a "
                          "solve with it) costs O(D^2) to O(D^3). The map only moves x along "
                          "u_hat, so project onto w (one number per sample), solve the scalar "
                          "equation, and subtract the ridge: O(D) in all.")
        u = u.detach().to(DTYPE)
        with torch.no_grad():
            round_trip = float((layer(u)[0] - x).abs().max())
        if round_trip > 1e-9 or not torch.allclose(u, u_ref, rtol=1e-8, atol=1e-8):
            if w_dot_u_hat > 1:
                hint = (f"here w^T u_hat = {w_dot_u_hat:g}: the scalar map a -> a + "
                        f"{w_dot_u_hat:g} tanh(a) is steep near 0 and flat far away, so a plain "
                        "Newton step can jump across the root and cycle. The root lies in "
                        "[T - |w^T u_hat|, T + |w^T u_hat|] (T = w^T x + b): keep that "
                        "bracket, shrink it with the sign of each residual, and bisect when a "
                        "Newton step leaves it or is longer than half of it.")
            elif w_dot_u_hat < 0:
                hint = (f"here w^T u_hat = {w_dot_u_hat:g} is close to -1: the slope "
                        f"1 + w^T u_hat tanh'(a) drops to {1 + w_dot_u_hat:.2g}, where a "
                        "fixed-point iteration u = x - u_hat tanh(w^T u + b) crawls or "
                        "diverges; use Newton's method on the scalar equation.")
            else:
                hint = ("solve a + (w^T u_hat) tanh(a) = w^T x + b for a (one number per "
                        "sample), then u = x - u_hat tanh(a).")
            return failed(f"for D = {dim} your u is not the latent of x: f(u) misses x by up "
                          f"to {round_trip:.2g}. {hint}")
        if torch.allclose(log_p, log_p_ref, rtol=1e-9, atol=1e-9):
            continue
        if torch.allclose(log_p, standard_normal_log_prob(u_ref) + log_det_ref, atol=1e-8):
            return failed("the log-det has the wrong sign: f maps latent -> data, so its "
                          "log|det J_f(u)| is subtracted (the inverse g = f^{-1} has log-det "
                          "-log|det J_f(u)|, and the data -> latent log-det is added).")
        c = u_hat @ w
        at_x = torch.log(torch.abs(1 + c * (1 - torch.tanh(x @ w + b_tensor) ** 2)))
        if torch.allclose(log_p, standard_normal_log_prob(u_ref) - at_x, atol=1e-8):
            return failed("the log-det is evaluated at x: J_f is the Jacobian at the latent, "
                          "1 + tanh'(w^T u + b) w^T u_hat, with the a you solved for.")
        if torch.allclose(log_p, standard_normal_log_prob(x) - log_det_ref, atol=1e-8):
            return failed("the prior is evaluated at x; evaluate N(0, I) at the latent u.")
        if torch.allclose(log_p, standard_normal_log_prob(u_ref), atol=1e-8):
            return failed("the Jacobian term is missing: subtract log|1 + tanh'(a) w^T u_hat|.")
        return failed(f"for D = {dim} your log-density differs from log N(u) - log|det J_f(u)| "
                      f"by up to {float((log_p - log_p_ref).abs().max()):.3g}.")
    return passed("your latents reproduce x and your log-densities match the bisection of "
                  "Planar.inverse and the log-det of Planar.forward, for a ridge that almost "
                  "folds, a mild one and a steep one, without any D x D matrix.")


# ----------------------------------------------------------------------------- exercise 3
def _wavy_map(x: torch.Tensor) -> torch.Tensor:
    """``(x1 + 0.3 sin x2, x2 + 0.3 sin x1)``: injective, det J = 1 - 0.09 cos x1 cos x2."""
    return torch.stack([x[:, 0] + 0.3 * torch.sin(x[:, 1]),
                        x[:, 1] + 0.3 * torch.sin(x[:, 0])], 1)


def _wavy_area(center: tuple[float, float], h: float) -> float:
    (c1, c2), r = center, h / 2
    return h * h - 0.09 * ((math.sin(c1 + r) - math.sin(c1 - r))
                           * (math.sin(c2 + r) - math.sin(c2 - r)))


def _shear_map(x: torch.Tensor) -> torch.Tensor:
    """``(x1, x2 exp(0.8 x1) + x1^2)``: a coupling layer, det J = exp(0.8 x1)."""
    return torch.stack([x[:, 0], x[:, 1] * torch.exp(0.8 * x[:, 0]) + x[:, 0] ** 2], 1)


def _shear_area(center: tuple[float, float], h: float) -> float:
    c1, r = center[0], h / 2
    return h * (math.exp(0.8 * (c1 + r)) - math.exp(0.8 * (c1 - r))) / 0.8


def _det_at(g: Callable[[torch.Tensor], torch.Tensor], center: tuple[float, float]) -> float:
    point = torch.tensor(center, dtype=DTYPE)
    jac = jacobian(lambda v: g(v.unsqueeze(0)).squeeze(0), point)
    return abs(float(torch.linalg.det(jac)))


_AREA_CASES = [
    (_wavy_map, _wavy_area, (0.3, -0.5), 2.0),
    (_wavy_map, _wavy_area, (1.0, 1.0), 0.5),
    (_shear_map, _shear_area, (0.5, 0.2), 1.5),
    (_shear_map, _shear_area, (-1.0, 2.0), 0.25),
]


@checker
def image_area(
    learner: Callable[[Callable[[torch.Tensor], torch.Tensor], tuple[float, float], float],
                      float],
) -> CheckResult:
    """Check ``learner(g, center, h)`` = area of the image under ``g`` of the square of side
    ``h`` centred at ``center``, against closed forms of ``int |det J_g|`` over the square.
    """
    report = []
    for g, exact_area, center, h in _AREA_CASES:
        exact = exact_area(center, h)
        value = float(learner(g, center, h))
        if not math.isfinite(value):
            return failed("the area is NaN or inf")
        if abs(value - exact) <= 1e-4 * exact:
            report.append((h, exact / h**2 - _det_at(g, center)))
            continue
        if abs(value + exact) <= 1e-4 * exact:
            return failed("the area is negative: the shoelace formula gives a signed area, "
                          "positive for a counter-clockwise boundary; go round the square "
                          "counter-clockwise or take the absolute value.")
        if abs(value - h * h) <= 1e-9:
            return failed("you returned the area of the square itself: map its boundary "
                          "through g first.")
        if abs(value - _det_at(g, center) * h * h) <= 1e-6 * exact:
            return failed("you returned the linear approximation |det J_g(center)| h^2; the "
                          "exercise asks for the area of the curved image, so map many "
                          "points along the boundary and apply the shoelace formula.")
        return failed(f"for the square of side {h} at {center} the image has area "
                      f"{exact:.6f}, you found {value:.6f}. If the error shrinks when you use "
                      "more points per edge, use more: the image's edges are curved.")
    details = ", ".join(f"h = {h}: {err:+.2e}" for h, err in report)
    return passed(f"your areas match the exact ones. area / h^2 - |det J(center)|: {details}; "
                  "the linear approximation is good to O(h^2).")
