"""MCMC samplers for any model with an ``energy``: Langevin, MALA and random-walk Metropolis.

Every sampler works in *model space*, the variable ``E`` is defined on (for an
:class:`ebflow_lite.EBFlow` with preprocessing, the preprocessed variable), runs ``B``
independent chains in parallel from ``x0`` of shape ``(B, *event_shape)`` (vectors or
images), never touches the model's parameter gradients, and is deterministic given a
``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ebflow_lite.autodiff import energy_and_grad
from ebflow_lite.draws import draw
from ebflow_lite.validation import check_batch, model_event_shape


@dataclass
class SamplerResult:
    """What a sampler returns.

    Attributes:
        samples: the final state of every chain, shape ``(B, *event_shape)``.
        trace: the states every ``thin`` steps, shape ``(n_kept, B, *event_shape)`` starting with
            ``x0`` (``n_steps // thin + 1`` rows), or None unless ``keep_trace=True``.
        acceptance_rate: the fraction of accepted proposals over all chains and steps
            (None for the unadjusted Langevin algorithm, which accepts everything).
    """

    samples: torch.Tensor
    trace: torch.Tensor | None = None
    acceptance_rate: float | None = None


def _check_common(
    model: nn.Module, x0: torch.Tensor, n_steps: int, thin: int, where: str,
) -> None:
    if not callable(getattr(model, "energy", None)):
        raise ValueError(f"{where}: the model must have an energy(x) method")
    check_batch(x0, model_event_shape(model), where=where)
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"{where}: n_steps must be an int >= 0, got {n_steps!r}")
    if isinstance(thin, bool) or not isinstance(thin, int) or thin < 1:
        raise ValueError(f"{where}: thin must be an int >= 1, got {thin!r}")


def _check_step(value: float, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: {name} must be positive and finite, got {value}")
    return float(value)


def _normal(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return draw("normal", like.shape, like=like, generator=generator)


def _uniform(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return draw("uniform", (like.shape[0],), like=like, generator=generator)


def _energy(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        energy = model.energy(x)
    if not isinstance(energy, torch.Tensor) or energy.shape != (x.shape[0],):
        raise ValueError(
            f"energy must return a tensor of shape ({x.shape[0]},), one value per sample"
        )
    return energy


def _per_chain(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``(B,)`` mask viewed so that it broadcasts over one chain's state."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


def _run(
    x0: torch.Tensor,
    n_steps: int,
    step: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
    keep_trace: bool,
    thin: int,
    progress: bool,
    desc: str,
) -> SamplerResult:
    x = x0.detach().clone()
    kept = [x.clone()] if keep_trace else []
    accepted = 0.0
    for t in tqdm(range(n_steps), disable=not progress, desc=desc, leave=False, mininterval=1.0):
        x, accept = step(x)
        if accept is not None:
            accepted += float(accept.to(x.dtype).mean())
        if keep_trace and (t + 1) % thin == 0:
            kept.append(x.clone())
    trace = torch.stack(kept) if keep_trace else None
    rate = accepted / n_steps if n_steps > 0 else None
    return SamplerResult(samples=x, trace=trace, acceptance_rate=rate)


def langevin(
    model: nn.Module,
    x0: torch.Tensor,
    step_size: float,
    n_steps: int,
    noise: bool = True,
    keep_trace: bool = False,
    thin: int = 1,
    progress: bool = False,
    generator: torch.Generator | None = None,
) -> SamplerResult:
    """The unadjusted Langevin algorithm (ULA): ``x <- x - h grad E(x) + sqrt(2 h) n``.

    Without a Metropolis correction its stationary law is only close to ``exp(-E)/Z``: the
    error grows with the step ``h``. For a Gaussian with variance ``s^2`` along some
    direction the chain's stationary variance there is ``s^2 / (1 - h / (2 s^2))``.

    Args:
        model: a module with ``energy(x) -> (B,)``.
        x0: the starting points, shape ``(B, *event_shape)`` (one chain each).
        step_size: ``h > 0``.
        n_steps: the number of steps (>= 0).
        noise: add the Gaussian noise (False gives gradient descent on E).
        keep_trace: also return the states every ``thin`` steps.
        thin: see ``keep_trace``.
        progress: show a tqdm progress bar.
        generator: a ``torch.Generator`` for the noise.

    Returns:
        A :class:`SamplerResult` with ``acceptance_rate=None``.

    References:
        Roberts and Tweedie, "Exponential convergence of Langevin distributions and their
        discrete approximations", Bernoulli 1996; Welling and Teh, ICML 2011.
    """
    _check_common(model, x0, n_steps, thin, "langevin")
    h = _check_step(step_size, "step_size", "langevin")
    scale = math.sqrt(2.0 * h)

    def step(x: torch.Tensor) -> tuple[torch.Tensor, None]:
        _, grad = energy_and_grad(model, x)
        x = x - h * grad
        if noise:
            x = x + scale * _normal(x, generator)
        return x, None

    result = _run(x0, n_steps, step, keep_trace, thin, progress, "langevin")
    result.acceptance_rate = None
    return result


def mala(
    model: nn.Module,
    x0: torch.Tensor,
    step_size: float,
    n_steps: int,
    keep_trace: bool = False,
    thin: int = 1,
    progress: bool = False,
    generator: torch.Generator | None = None,
) -> SamplerResult:
    """The Metropolis-adjusted Langevin algorithm: a Langevin proposal, then accept/reject.

    Proposal ``y = x - h grad E(x) + sqrt(2 h) n``, i.e. ``q(y | x) = N(y; x - h grad E(x),
    2 h I)``; each chain accepts with probability
    ``min(1, exp(E(x) - E(y)) q(x | y) / q(y | x))``. The asymmetric proposal densities make
    ``exp(-E)/Z`` exactly stationary for every step size.

    Args:
        model: a module with ``energy(x) -> (B,)``.
        x0: the starting points, shape ``(B, *event_shape)``.
        step_size: ``h > 0``.
        n_steps: the number of steps (>= 0).
        keep_trace: also return the states every ``thin`` steps.
        thin: see ``keep_trace``.
        progress: show a tqdm progress bar.
        generator: a ``torch.Generator`` for the noise and the accept/reject draws.

    Returns:
        A :class:`SamplerResult` with the acceptance rate.

    References:
        Roberts and Tweedie, Bernoulli 1996.
    """
    _check_common(model, x0, n_steps, thin, "mala")
    h = _check_step(step_size, "step_size", "mala")
    scale = math.sqrt(2.0 * h)
    state: dict[str, torch.Tensor] = {}

    def log_q(to: torch.Tensor, frm: torch.Tensor, grad_frm: torch.Tensor) -> torch.Tensor:
        return -((to - frm + h * grad_frm) ** 2).flatten(1).sum(1) / (4.0 * h)

    def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if "energy" not in state:
            state["energy"], state["grad"] = energy_and_grad(model, x)
        e_x, g_x = state["energy"], state["grad"]
        y = x - h * g_x + scale * _normal(x, generator)
        e_y, g_y = energy_and_grad(model, y)
        log_ratio = e_x - e_y + log_q(x, y, g_y) - log_q(y, x, g_x)
        u = _uniform(x, generator)
        accept = torch.log(u) < log_ratio
        keep = _per_chain(accept, x)
        state["energy"] = torch.where(accept, e_y, e_x)
        state["grad"] = torch.where(keep, g_y, g_x)
        return torch.where(keep, y, x), accept

    return _run(x0, n_steps, step, keep_trace, thin, progress, "mala")


def metropolis_hastings(
    model: nn.Module,
    x0: torch.Tensor,
    proposal_std: float,
    n_steps: int,
    keep_trace: bool = False,
    thin: int = 1,
    progress: bool = False,
    generator: torch.Generator | None = None,
) -> SamplerResult:
    """Random-walk Metropolis: propose ``y = x + proposal_std * n``, then accept or reject.

    Each chain accepts with probability ``min(1, exp(E(x) - E(y)))``.

    The proposal is symmetric, so only the energies enter the ratio; no gradient is needed.

    Args:
        model: a module with ``energy(x) -> (B,)``.
        x0: the starting points, shape ``(B, *event_shape)``.
        proposal_std: the random-walk step's standard deviation (> 0).
        n_steps: the number of steps (>= 0).
        keep_trace: also return the states every ``thin`` steps.
        thin: see ``keep_trace``.
        progress: show a tqdm progress bar.
        generator: a ``torch.Generator`` for the proposals and the accept/reject draws.

    Returns:
        A :class:`SamplerResult` with the acceptance rate.

    References:
        Roberts and Tweedie, Bernoulli 1996 (and Metropolis et al. 1953, Hastings 1970).
    """
    _check_common(model, x0, n_steps, thin, "metropolis_hastings")
    std = _check_step(proposal_std, "proposal_std", "metropolis_hastings")
    state: dict[str, torch.Tensor] = {}

    def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if "energy" not in state:
            state["energy"] = _energy(model, x)
        e_x = state["energy"]
        y = x + std * _normal(x, generator)
        e_y = _energy(model, y)
        u = _uniform(x, generator)
        accept = torch.log(u) < e_x - e_y
        state["energy"] = torch.where(accept, e_y, e_x)
        return torch.where(_per_chain(accept, x), y, x), accept

    return _run(x0, n_steps, step, keep_trace, thin, progress, "metropolis_hastings")
