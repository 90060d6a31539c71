"""Checkers for the exercises of chapter 1 (change of variables).

Each checker compares the learner's function with an independent computation: a closed-form
Gaussian density (``torch.distributions``), the determinant of an autograd Jacobian and the
library's :class:`ebflow_lite.layers.Planar`, or the exact area of a mapped square.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.autograd.functional import jacobian

from ebflow_lite.exercises import CheckResult, checker, failed, passed
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
def _planar_map(x: torch.Tensor, u_hat: torch.Tensor, w: torch.Tensor,
                b: torch.Tensor) -> torch.Tensor:
    return x + u_hat * torch.tanh(x @ w + b).unsqueeze(-1)


@checker
def planar_forward(
    learner: Callable[..., tuple[torch.Tensor, torch.Tensor]],
) -> CheckResult:
    """Check ``learner(x, u_hat, w, b) -> (y, log|det J|)`` for the planar flow.

    References: the determinant of the autograd Jacobian of ``y`` (one sample at a time) and
    :class:`ebflow_lite.layers.Planar` with the same parameters.
    """
    gen = torch.Generator().manual_seed(202)
    for dim in (2, 5):
        with torch.random.fork_rng():  # leave the learner's random stream untouched
            layer = Planar(dim).to(DTYPE)
        with torch.no_grad():
            layer.u.copy_(torch.randn(dim, generator=gen, dtype=DTYPE) * 1.5)
            layer.w.copy_(torch.randn(dim, generator=gen, dtype=DTYPE))
            layer.b.fill_(0.4)
        u_hat, w, b = layer.u_hat().detach(), layer.w.detach(), layer.b.detach()
        x = torch.randn(8, dim, generator=gen, dtype=DTYPE) * 1.5
        out = learner(x.clone(), u_hat.clone(), w.clone(), b.clone())
        if not (isinstance(out, tuple) and len(out) == 2):
            return failed("return a pair (y, logdet)")
        y, logdet = out
        if not isinstance(y, torch.Tensor) or y.shape != x.shape:
            return failed(f"y must be a tensor shaped like x, {tuple(x.shape)}")
        y_ref, logdet_ref = layer(x)
        if not torch.allclose(y.detach().to(DTYPE), y_ref.detach(), rtol=1e-9, atol=1e-9):
            return failed("y is wrong: y = x + u_hat * tanh(w^T x + b), where w^T x + b is one "
                          "number per sample (x @ w + b, shape (B,)) that scales the vector "
                          "u_hat.")
        value = _as_batch_values(logdet, x.shape[0], "logdet")
        if isinstance(value, CheckResult):
            return value
        def planar_map(v: torch.Tensor, u_hat=u_hat, w=w, b=b) -> torch.Tensor:
            return _planar_map(v, u_hat, w, b)

        autograd_logdet = torch.stack([
            torch.linalg.slogdet(jacobian(planar_map, x[i]))[1] for i in range(x.shape[0])
        ])
        if not torch.allclose(autograd_logdet, logdet_ref.detach(), rtol=1e-9, atol=1e-9):
            raise RuntimeError("internal: ebflow_lite.layers.Planar disagrees with autograd")
        if torch.allclose(value, autograd_logdet, rtol=1e-9, atol=1e-9):
            continue
        a = x @ w + b
        uw = u_hat @ w
        if torch.allclose(value, torch.log(torch.abs(1 + torch.tanh(a) * uw)), atol=1e-8):
            return failed("you used tanh(a) where the lemma needs its derivative "
                          "tanh'(a) = 1 - tanh(a)^2.")
        if torch.allclose(value, torch.log(torch.abs((1 - torch.tanh(a) ** 2) * uw)),
                          atol=1e-8):
            return failed("the '1 +' is missing: det(I + v w^T) = 1 + w^T v, with "
                          "v = tanh'(a) u_hat.")
        if torch.allclose(value, torch.exp(autograd_logdet), rtol=1e-8, atol=1e-8):
            return failed("you returned |det J|; return its logarithm.")
        return failed(f"for D = {dim} your log-det differs from the autograd Jacobian's by up "
                      f"to {float((value - autograd_logdet).abs().max()):.3g}.")
    return passed("your O(D) log-det matches the O(D^3) determinant of the autograd Jacobian "
                  "and ebflow_lite.layers.Planar.")


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
