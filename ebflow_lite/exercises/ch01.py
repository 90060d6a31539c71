"""Checkers for the exercises of chapter 1 (change of variables).

Each checker compares the learner's function with an independent computation: a closed-form
Gaussian density (``torch.distributions``), the bisection inverse and the log-det of the
library's :class:`ebflow_lite.layers.Planar` (checked against an autograd Jacobian), or
SciPy's (non-central) chi-square densities and a hand-derived Jacobian for maps that fold.
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
Branch = Callable[[torch.Tensor], torch.Tensor]
LogDensity = Callable[[torch.Tensor], torch.Tensor]


def _sqrt_branches() -> list[Branch]:
    """The local inverses ``+sqrt(x)`` and ``-sqrt(x)`` of ``f(u) = u^2`` (batches ``(B, 1)``)."""
    return [torch.sqrt, lambda x: -torch.sqrt(x)]


def _fold_branches() -> list[Branch]:
    """The local inverses ``(+-sqrt(x1), x2)`` of the fold ``f(u) = (u1^2, u2)``."""
    return [lambda x, sign=sign: torch.stack([sign * torch.sqrt(x[:, 0]), x[:, 1]], 1)
            for sign in (1.0, -1.0)]


def _complex_sqrt(x: torch.Tensor) -> torch.Tensor:
    """The principal square root of ``x1 + i x2``, as a real batch ``(B, 2)``."""
    half_angle = 0.5 * torch.atan2(x[:, 1], x[:, 0])
    return torch.sqrt(x.norm(dim=1)).unsqueeze(1) * torch.stack(
        [torch.cos(half_angle), torch.sin(half_angle)], 1)


def _complex_square_branches() -> list[Branch]:
    """The local inverses ``+-sqrt(z)`` of the complex square ``f(z) = z^2`` on ``R^2``."""
    return [_complex_sqrt, lambda x: -_complex_sqrt(x)]


def _gaussian(mean: list[float], cov: list[list[float]]) -> torch.distributions.Distribution:
    return torch.distributions.MultivariateNormal(torch.tensor(mean, dtype=DTYPE),
                                                  torch.tensor(cov, dtype=DTYPE))


def _chi2_reference(x: torch.Tensor) -> torch.Tensor:
    """``u ~ N(0, 1)``, ``x = u^2``: the chi-square density with one degree of freedom."""
    from scipy.stats import chi2  # imported here: scipy.stats loads slowly

    return torch.as_tensor(chi2(df=1).logpdf(x[:, 0].numpy()), dtype=DTYPE)


def _scaled_ncx2_logpdf(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """log-density of ``v^2`` with ``v ~ N(mean, std^2)``: a scaled non-central chi-square."""
    from scipy.stats import ncx2

    nc = (mean / std) ** 2
    return torch.as_tensor(ncx2(df=1, nc=nc.numpy(), scale=std**2).logpdf(x.numpy()),
                           dtype=DTYPE)


def _shifted_square_reference(x: torch.Tensor) -> torch.Tensor:
    """``u ~ N(0.8, 0.6^2)``, ``x = u^2``."""
    return _scaled_ncx2_logpdf(x[:, 0], torch.full_like(x[:, 0], 0.8), 0.6)


_FOLD_MEAN, _FOLD_COV = [0.5, -0.3], [[1.0, 0.6], [0.6, 0.8]]


def _fold_reference(x: torch.Tensor) -> torch.Tensor:
    """``u ~ N(m, S)`` correlated, ``x = (u1^2, u2)``: ``p(x2)`` times ``p(u1^2 | u2 = x2)``."""
    (m1, m2), ((s11, s12), (_, s22)) = _FOLD_MEAN, _FOLD_COV
    marginal = torch.distributions.Normal(m2, math.sqrt(s22)).log_prob(x[:, 1])
    conditional_mean = m1 + s12 / s22 * (x[:, 1] - m2)
    conditional_std = math.sqrt(s11 - s12**2 / s22)
    return marginal + _scaled_ncx2_logpdf(x[:, 0], conditional_mean, conditional_std)


_SQUARE_MEAN, _SQUARE_STD = [0.7, 0.4], 0.8


def _complex_square_reference(x: torch.Tensor) -> torch.Tensor:
    """``u ~ N(m, s^2 I)``, ``x = u^2`` as complex numbers: ``|f'(u)|^2 = 4 |u|^2 = 4 |x|``."""
    prior = _gaussian(_SQUARE_MEAN, [[_SQUARE_STD**2, 0.0], [0.0, _SQUARE_STD**2]])
    root = _complex_sqrt(x)
    both = torch.stack([prior.log_prob(root), prior.log_prob(-root)])
    return torch.logsumexp(both, 0) - torch.log(4 * x.norm(dim=1))


def _folded_cases() -> list[tuple[str, torch.Tensor, LogDensity, list[Branch],
                                  Callable[[torch.Tensor], torch.Tensor]]]:
    """(name, data x, log p_u, local inverses, reference log p_x) for four maps."""
    gen = torch.Generator().manual_seed(303)
    line = torch.linspace(0.02, 9.0, 60, dtype=DTYPE).unsqueeze(1)
    plane = torch.randn(80, 2, generator=gen, dtype=DTYPE)
    fold_x = torch.stack([plane[:, 0] ** 2 + 0.02, 1.2 * plane[:, 1]], 1)
    square_x = 2.0 * plane
    unit = torch.distributions.Normal(torch.zeros(1, dtype=DTYPE), torch.ones(1, dtype=DTYPE))
    shifted = torch.distributions.Normal(torch.full((1,), 0.8, dtype=DTYPE),
                                         torch.full((1,), 0.6, dtype=DTYPE))
    square_cov = [[_SQUARE_STD**2, 0.0], [0.0, _SQUARE_STD**2]]
    # the shifted Gaussian comes first: its two branches differ, so that one branch, twice
    # one branch and the mean of the branches are told apart
    return [
        ("x = u^2, u ~ N(0.8, 0.6^2)", line, lambda u: shifted.log_prob(u).sum(1),
         _sqrt_branches(), _shifted_square_reference),
        ("x = u^2, u ~ N(0, 1)", line, lambda u: unit.log_prob(u).sum(1), _sqrt_branches(),
         _chi2_reference),
        ("the fold x = (u1^2, u2), u correlated Gaussian", fold_x,
         _gaussian(_FOLD_MEAN, _FOLD_COV).log_prob, _fold_branches(), _fold_reference),
        ("the complex square x = u^2", square_x, _gaussian(_SQUARE_MEAN, square_cov).log_prob,
         _complex_square_branches(), _complex_square_reference),
    ]


def _branch_terms(x: torch.Tensor, log_p_u: LogDensity,
                  branches: list[Branch]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per branch ``k``: ``log p_u(g_k(x))``, ``log|det J_{g_k}(x)|`` and the sign of the det.

    Each of shape ``(K, B)``; the Jacobians come from ``torch.func`` (one per sample).
    """
    log_priors, log_dets, signs = [], [], []
    for branch in branches:
        jac = torch.func.vmap(torch.func.jacrev(lambda v, g=branch: g(v.unsqueeze(0))[0]))(x)
        sign, log_det = torch.linalg.slogdet(jac)
        log_priors.append(log_p_u(branch(x)))
        log_dets.append(log_det)
        signs.append(sign)
    return torch.stack(log_priors), torch.stack(log_dets), torch.stack(signs)


def _folded_hint(value: torch.Tensor, log_prior: torch.Tensor, log_det: torch.Tensor,
                 sign: torch.Tensor) -> str | None:
    """A hint when ``value`` is one of the typical wrong answers, else ``None``."""
    terms = log_prior + log_det
    n_branches = terms.shape[0]

    def matches(candidate: torch.Tensor) -> bool:
        return bool(torch.isfinite(candidate).all()) and torch.allclose(
            value, candidate, rtol=1e-7, atol=1e-7)

    if any(matches(terms[k]) for k in range(n_branches)):
        return ("you kept a single branch. Every latent u with f(u) = x sends its probability "
                "to x: add the densities p_u(g_k(x)) |det J_{g_k}(x)| of all the local "
                "inverses g_k (torch.logsumexp over the branches in log space).")
    if any(matches(terms[k] + math.log(n_branches)) for k in range(n_branches)):
        return (f"you multiplied one branch by {n_branches}. That is right only when every "
                "branch carries the same density, as for x = u^2 with a centred, symmetric "
                "p_u; here the preimages have different latent densities, so evaluate "
                "p_u at each g_k(x) and add.")
    if matches(torch.logsumexp(terms, 0) - math.log(n_branches)):
        return ("you averaged the branches. Their probabilities add: the latent sets mapped "
                "onto a small neighbourhood of x are disjoint, so take the sum (logsumexp), "
                "not the mean.")
    if n_branches > 1 and matches(terms.sum(0)):
        return ("you added the log-densities of the branches, which multiplies their "
                "densities. Add the densities themselves: torch.logsumexp over the branches.")
    if matches(torch.logsumexp(log_prior - log_det, 0)):
        return ("the log-det has the wrong sign: it is the Jacobian of the generator f "
                "(latent -> data). Each local inverse g_k maps data -> latent, and its "
                "log|det J_{g_k}(x)| = -log|det J_f(g_k(x))| is added.")
    signed = (sign * terms.exp()).sum(0)
    if bool((sign < 0).any()) and bool((signed > 0).all()) and matches(signed.log()):
        return ("the absolute value is missing: on a decreasing branch (u = -sqrt(x)) the "
                "determinant is negative, but the branch still carries positive probability; "
                "use |det J_{g_k}| (torch.linalg.slogdet gives log|det|).")
    return None


@checker
def folded_log_density(
    learner: Callable[[torch.Tensor, LogDensity, list[Branch]], torch.Tensor],
) -> CheckResult:
    """Check ``learner(x, log_p_u, branches)`` = ``log sum_k p_u(g_k(x)) |det J_{g_k}(x)|``.

    The maps ``f`` are not injective; ``branches`` lists their local inverses ``g_k``. The
    references are closed forms that do not go through the branches: SciPy's chi-square and
    non-central chi-square densities for ``x = u^2`` and the fold ``(u1^2, u2)``, and the
    generator's Jacobian by hand for the complex square.
    """
    for name, x, log_p_u, branches, reference_fn in _folded_cases():
        reference = reference_fn(x)
        log_prior, log_det, sign = _branch_terms(x, log_p_u, branches)
        # SciPy's non-central chi-square is accurate to about 1e-7 in log-density
        if not torch.allclose(torch.logsumexp(log_prior + log_det, 0), reference,
                              rtol=1e-6, atol=1e-5):
            raise RuntimeError(f"internal: the branch sum disagrees with the closed form for "
                               f"{name}")
        value = _as_batch_values(learner(x.clone(), log_p_u, list(branches)), x.shape[0],
                                 "the log-density")
        if isinstance(value, CheckResult):
            return value
        if not bool(torch.isfinite(value).all()):
            if bool((sign < 0).any()):
                return failed(f"NaN or inf in your log-density for {name}. A branch here has "
                              "a negative Jacobian determinant (it reverses orientation), so "
                              "the log of det J is NaN, and signed terms can cancel to "
                              "log 0: use |det J_{g_k}| (torch.linalg.slogdet).")
            return failed(f"NaN or inf in your log-density for {name}.")
        if torch.allclose(value, reference, rtol=1e-6, atol=1e-5):
            continue
        hint = _folded_hint(value, log_prior, log_det, sign)
        if hint is not None:
            return failed(f"for {name}: {hint}")
        return failed(f"for {name} your log-density differs from the closed form by up to "
                      f"{float((value - reference).abs().max()):.3g}. Sum "
                      "p_u(g_k(x)) |det J_{g_k}(x)| over the branches, with each Jacobian "
                      "taken of g_k at the data point x.")
    return passed("your density matches the chi-square and non-central chi-square closed "
                  "forms for x = u^2 and for the fold (u1^2, u2), and the complex square in 2-D: "
                  "a map that is not injective adds the density of every preimage.")
