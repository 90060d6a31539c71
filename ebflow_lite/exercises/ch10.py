"""Checkers for the exercises of chapter 10 (sampling an EBFlow: inverse, MCMC, imputation).

Each checker compares a learner's function with an independent computation: the library's
covariance-form Gaussian conditional, a reference MALA acceptance ratio on the missing
entries, and the chapter's own cost measurement. The crossover checker runs and times the
learner's function.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ebflow_lite.autodiff import energy_and_grad
from ebflow_lite.exercises import CheckResult, checker, failed, passed
from ebflow_lite.imputation import gaussian_conditional

# ----------------------------------------------------------------------------- exercise 1


def _flow_matrices(dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.eye(dim, dtype=torch.float64) + 0.4 * torch.randn(dim, dim, generator=gen,
                                                               dtype=torch.float64)
    b = torch.randn(dim, generator=gen, dtype=torch.float64)
    return a, b


def _conditional_cases():
    for dim, seed, missing in ((6, 0, [0, 3, 4]), (5, 1, [2]), (7, 2, [1, 2, 3, 4, 5])):
        a, b = _flow_matrices(dim, seed)
        mask = torch.zeros(dim, dtype=torch.bool)
        mask[missing] = True
        x = torch.randn(4, dim, generator=torch.Generator().manual_seed(seed + 10),
                        dtype=torch.float64)
        yield a, b, x, mask


@checker
def precision_conditional(
    learner: Callable[..., tuple[torch.Tensor, torch.Tensor]],
) -> CheckResult:
    """Check ``learner(A, b, x, mask) -> (mean_M (B, |M|), cov_M (|M|, |M|))``."""
    for a, b, x, mask in _conditional_cases():
        mean = -torch.linalg.solve(a, b)
        cov = torch.linalg.inv(a.T @ a)
        exp_mean, exp_cov = gaussian_conditional(mean, cov, x, mask)
        out = learner(a.clone(), b.clone(), x.clone(), mask.clone())
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            return failed("return a pair (conditional means, conditional covariance)")
        got_mean, got_cov = (torch.as_tensor(v, dtype=torch.float64) for v in out)
        m = int(mask.sum())
        if got_mean.shape != (x.shape[0], m) or got_cov.shape != (m, m):
            return failed(f"expected shapes ({x.shape[0]}, {m}) and ({m}, {m}) for "
                          f"{m} missing entries, got {tuple(got_mean.shape)} and "
                          f"{tuple(got_cov.shape)}")
        precision = a.T @ a
        p_mm = precision[mask][:, mask]
        if not torch.allclose(got_cov, exp_cov, rtol=1e-6, atol=1e-8):
            if torch.allclose(got_cov, p_mm, rtol=1e-6, atol=1e-8):
                return failed("your covariance is P_MM itself: the conditional covariance is "
                              "its inverse, (P_MM)^{-1}")
            if torch.allclose(got_cov, cov[mask][:, mask], rtol=1e-6, atol=1e-8):
                return failed("your covariance is the marginal Sigma_MM: conditioning on x_O "
                              "shrinks it (it is (P_MM)^{-1} with P = A^T A)")
            return failed("the conditional covariance is wrong: read the quadratic term of "
                          "E(x_O, x_M) = |A x + b|^2 / 2 in x_M")
        if torch.allclose(got_mean, exp_mean, rtol=1e-6, atol=1e-8):
            continue
        mu = mean
        flipped = mu[mask] + (x[:, ~mask] - mu[~mask]) @ (torch.linalg.inv(p_mm)
                                                          @ precision[mask][:, ~mask]).T
        if torch.allclose(got_mean, flipped, rtol=1e-6, atol=1e-8):
            return failed("the sign of the correction is flipped: the mean is "
                          "mu_M - P_MM^{-1} P_MO (x_O - mu_O)")
        if torch.allclose(got_mean, mu[mask].expand_as(got_mean), rtol=1e-6, atol=1e-8):
            return failed("your mean ignores x_O: it is the marginal mean mu_M")
        return failed("the conditional mean is wrong: set the gradient of E(x_O, x_M) in "
                      "x_M to zero")
    return passed("the precision form matches the Schur-complement conditional for three "
                  "flows and masks.")


# ----------------------------------------------------------------------------- exercise 2


class _ToyEnergy(torch.nn.Module):
    """A non-Gaussian energy on R^5: coupled quartic wells."""

    event_shape = (5,)

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(4)
        self.coupling = torch.randn(5, 5, generator=gen, dtype=torch.float64) * 0.3

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return (0.25 * x**4 - 0.5 * x**2).sum(1) + 0.5 * ((x @ self.coupling) ** 2).sum(1)


def reference_log_ratio(model: torch.nn.Module, z: torch.Tensor, y: torch.Tensor,
                        mask: torch.Tensor, h: float) -> torch.Tensor:
    """MALA's log acceptance ratio for a move ``z -> y`` of the missing entries only."""
    free = mask.to(z.dtype)
    e_z, g_z = energy_and_grad(model, z)
    e_y, g_y = energy_and_grad(model, y)

    def log_q(to, frm, grad):
        return -((free * (to - frm + h * grad)) ** 2).sum(1) / (4 * h)

    return e_z - e_y + log_q(z, y, g_y) - log_q(y, z, g_z)


def _mala_cases():
    model = _ToyEnergy()
    gen = torch.Generator().manual_seed(5)
    for h in (0.05, 0.3):
        z = torch.randn(16, 5, generator=gen, dtype=torch.float64)
        mask = torch.rand(16, 5, generator=gen) < 0.5
        mask[:, 0] = True
        _, g = energy_and_grad(model, z)
        noise = torch.randn(16, 5, generator=gen, dtype=torch.float64)
        y = z + mask * (-h * g + math.sqrt(2 * h) * noise)
        yield model, z, y, mask, h


def _log_q_all(to: torch.Tensor, frm: torch.Tensor, grad: torch.Tensor, h: float
               ) -> torch.Tensor:
    """The Langevin proposal density over *all* entries (the tempting mistake)."""
    return -((to - frm + h * grad) ** 2).sum(1) / (4 * h)


@checker
def masked_mala(learner: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``learner(model, z, y, mask, h) -> (B,)`` log acceptance ratios."""
    for model, z, y, mask, h in _mala_cases():
        expected = reference_log_ratio(model, z, y, mask, h)
        out = learner(model, z.clone(), y.clone(), mask.clone(), h)
        if not isinstance(out, torch.Tensor):
            return failed(f"return a torch.Tensor, got {type(out).__name__}")
        if out.shape != (z.shape[0],):
            return failed(f"return one log ratio per chain, shape ({z.shape[0]},), got "
                          f"{tuple(out.shape)}")
        out = out.detach().to(torch.float64)
        if torch.allclose(out, expected, rtol=1e-6, atol=1e-8):
            continue
        e_z = model.energy(z).detach()
        e_y = model.energy(y).detach()
        if torch.allclose(out, e_z - e_y, rtol=1e-6, atol=1e-8):
            return failed("this is the random-walk Metropolis ratio: the Langevin proposal is "
                          "not symmetric, add log q(z | y) - log q(y | z)")
        if torch.allclose(out, 2 * (e_z - e_y) - expected, rtol=1e-6, atol=1e-8):
            return failed("the proposal terms are swapped: the ratio has q(z | y) (the "
                          "reverse move) in the numerator")
        _, g_z = energy_and_grad(model, z)
        _, g_y = energy_and_grad(model, y)

        full = e_z - e_y + _log_q_all(z, y, g_y, h) - _log_q_all(y, z, g_z, h)
        if torch.allclose(out, full, rtol=1e-6, atol=1e-8):
            return failed("the observed entries' gradient entered the proposal density: the "
                          "proposal moves only x_M, so q is a Gaussian over the missing "
                          "entries (mask the gradient too)")
        return failed(f"wrong log ratio for h={h}: compare with E(z) - E(y) + log q(z | y) - "
                      "log q(y | z), q over the missing entries")
    return passed("your acceptance ratio matches the reference for two step sizes and "
                  "per-chain masks.")


# ----------------------------------------------------------------------------- exercise 3

#: The batch sizes and the dimension the crossover checker measures at.
CROSSOVER_BATCHES = (4, 32, 256)
CROSSOVER_DIM = 768
#: How many times a disagreement with the reference timing is measured before it counts.
CROSSOVER_ATTEMPTS = 3


@checker
def crossover_batch(learner: Callable[[int, tuple[int, ...]], dict]) -> CheckResult:
    """Run ``learner(dim, batch_sizes) -> {B: T*}`` and compare with a measurement.

    Timings taken on a shared machine move with its load, so a run that fails one of the
    timing checks is repeated (the learner's function and the reference, side by side), up to
    :data:`CROSSOVER_ATTEMPTS` times, before the failure counts: an answer that does not
    measure what it should fails every time.
    """
    from ebflow_lite.experiments.sampling_study import measure_costs, predicted_crossover

    problem = ""
    for _ in range(CROSSOVER_ATTEMPTS):
        out = learner(CROSSOVER_DIM, CROSSOVER_BATCHES)
        if not isinstance(out, dict) or set(out) != set(CROSSOVER_BATCHES):
            return failed(f"return a dict with one T* per batch size {CROSSOVER_BATCHES}")
        values = {b: float(out[b]) for b in CROSSOVER_BATCHES}
        if not all(math.isfinite(v) and v > 0 for v in values.values()):
            return failed(f"every T* must be positive and finite, got {values}")
        problem = _crossover_problem(values)
        if problem:
            continue
        measured = {b: measure_costs(CROSSOVER_DIM, b, repeats=3).crossover_steps
                    for b in CROSSOVER_BATCHES}
        off = [b for b in CROSSOVER_BATCHES if not 1 / 3 < values[b] / measured[b] < 3]
        if off:
            b = off[0]
            problem = (f"T*({b}) = {values[b]:.2f}, but measured here it is "
                       f"{measured[b]:.2f}: time one Langevin step (an energy and its "
                       "gradient) and one call of model.sample(B)")
            continue
        predicted = {b: round(predicted_crossover(CROSSOVER_DIM, b), 1)
                     for b in CROSSOVER_BATCHES}
        return passed(f"T* falls with the batch. Yours: "
                      f"{({b: round(v, 1) for b, v in values.items()})}; measured here: "
                      f"{({b: round(v, 1) for b, v in measured.items()})}; flop count: "
                      f"{predicted}.")
    return failed(f"{problem} (in each of {CROSSOVER_ATTEMPTS} tries)")


def _crossover_problem(values: dict[int, float]) -> str:
    """What is wrong with the learner's T* values on their own ('' if nothing)."""
    smallest, largest = values[CROSSOVER_BATCHES[0]], values[CROSSOVER_BATCHES[-1]]
    if smallest < 2:
        return (f"T*({CROSSOVER_BATCHES[0]}) = {smallest:.2f}: with a small batch one inverse "
                "should cost several Langevin steps; did you time the inverse without its "
                "factorisation (model.sample factorises on every call)?")
    if not largest < smallest:
        return (f"T* does not fall with the batch ({smallest:.2f} at B = "
                f"{CROSSOVER_BATCHES[0]}, {largest:.2f} at B = {CROSSOVER_BATCHES[-1]}): the "
                "factorisation is paid once per batch; did you invert sample by sample?")
    return ""


__all__ = [
    "CROSSOVER_BATCHES",
    "CROSSOVER_ATTEMPTS",
    "CROSSOVER_DIM",
    "crossover_batch",
    "masked_mala",
    "precision_conditional",
    "reference_log_ratio",
]
