"""MCMC samplers for any model with an ``energy``: Langevin, MALA and random-walk Metropolis.

Every sampler works in *model space*, the variable ``E`` is defined on (for an
:class:`ebflow_lite.EBFlow` with preprocessing, the preprocessed variable), runs ``B``
independent chains in parallel from ``x0`` of shape ``(B, *event_shape)`` (vectors or
images), never touches the model's parameter gradients, and is deterministic given a
``torch.Generator``.

A run stops cleanly and says why: arguments are checked first (a model whose parameters
hold NaN is refused before any step), chains that turn NaN or inf raise a ValueError that
names the step size, and Ctrl-C raises :class:`SamplingInterrupted` (a KeyboardInterrupt)
carrying the chains so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ebflow_lite import validation
from ebflow_lite.autodiff import energy_and_grad
from ebflow_lite.draws import draw
from ebflow_lite.validation import (
    check_batch,
    check_finite_parameters,
    check_generator,
    check_positive,
    check_positive_int,
    check_same_device,
    check_shape,
    model_event_shape,
)


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


class SamplingInterrupted(KeyboardInterrupt):
    """A sampler was interrupted (Ctrl-C); ``result`` holds the chains after the last
    complete step (with the trace so far) and ``step`` the number of steps done."""

    def __init__(self, message: str, result: SamplerResult, step: int) -> None:
        super().__init__(message)
        self.result = result
        self.step = step


def _check_common(
    model: nn.Module, x0: torch.Tensor, n_steps: int, thin: int, where: str,
    generator: torch.Generator | None = None,
) -> int:
    if not callable(getattr(model, "energy", None)):
        raise ValueError(f"{where}: the model must have an energy(x) method")
    shape = model_event_shape(model)
    check_shape(x0, shape, where=f"{where}: x0")
    if isinstance(model, nn.Module):
        check_same_device(x0, model, where=f"{where}: x0", dtype=False)
    check_batch(x0, shape, where=f"{where}: x0", nonempty=True)
    n_steps = check_positive_int(n_steps, "n_steps", where, minimum=0)
    check_positive_int(thin, "thin", where)
    check_generator(generator, where)
    check_finite_parameters(model, where)
    return n_steps


def _normal(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return draw("normal", like.shape, like=like, generator=generator)


def _uniform(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return draw("uniform", (like.shape[0],), like=like, generator=generator)


def _energy(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        energy = model.energy(x)
    if not isinstance(energy, torch.Tensor) or energy.shape != (x.shape[0],):
        got = tuple(energy.shape) if isinstance(energy, torch.Tensor) else type(energy).__name__
        raise ValueError(
            f"energy must return a tensor of shape ({x.shape[0]},), one value per sample, "
            f"got {got}"
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
    cause: str,
) -> SamplerResult:
    """Run the chains; stop cleanly, saying why, when they break or on Ctrl-C.

    ``cause`` names the likely reason chains turn NaN or inf (the step size)."""
    x = x0.detach().clone()
    kept = [x.clone()] if keep_trace else []
    accepted = 0.0
    done = 0

    def result() -> SamplerResult:
        trace = torch.stack(kept) if keep_trace else None
        rate = accepted / done if done > 0 else None
        return SamplerResult(samples=x, trace=trace, acceptance_rate=rate)

    try:
        for t in tqdm(range(n_steps), disable=not progress, desc=desc, leave=False,
                      mininterval=1.0):
            try:
                new, accept = step(x)
            except ValueError as err:
                if validation.CHECK_FINITE and not bool(torch.isfinite(x).all()):
                    raise ValueError(
                        f"{desc}: the chains became NaN or inf before step {t + 1} of "
                        f"{n_steps}: {cause}"
                    ) from err
                raise
            if accept is not None:
                accepted += float(accept.to(new.dtype).mean())
            x = new
            done = t + 1
            if keep_trace and (t + 1) % thin == 0:
                kept.append(x.clone())
    except KeyboardInterrupt:
        raise SamplingInterrupted(
            f"{desc}: interrupted after step {done} of {n_steps}; the chains so far are "
            "attached as .result", result(), done,
        ) from None
    if validation.CHECK_FINITE and n_steps > 0 and not bool(torch.isfinite(x).all()):
        broken = int((~torch.isfinite(x.flatten(1))).any(1).sum())
        raise ValueError(
            f"{desc}: {broken} of {x.shape[0]} chains ended NaN or inf after {n_steps} "
            f"steps: {cause}"
        )
    return result()


def _check_start(energy: torch.Tensor, desc: str) -> None:
    """Refuse starting points whose energy is not finite (they could never move)."""
    if validation.CHECK_FINITE and not bool(torch.isfinite(energy).all()):
        bad = int((~torch.isfinite(energy)).sum())
        raise ValueError(f"{desc}: the energy is NaN or inf at {bad} of {energy.shape[0]} "
                         "starting points x0")


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
    n_steps = _check_common(model, x0, n_steps, thin, "langevin", generator)
    h = check_positive(step_size, "step_size", "langevin")
    scale = math.sqrt(2.0 * h)

    def step(x: torch.Tensor) -> tuple[torch.Tensor, None]:
        _, grad = energy_and_grad(model, x)
        x = x - h * grad
        if noise:
            x = x + scale * _normal(x, generator)
        return x, None

    cause = (f"step_size={h:g} is too large for this energy (or its gradient is not finite "
             "there)")
    result = _run(x0, n_steps, step, keep_trace, thin, progress, "langevin", cause)
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
    n_steps = _check_common(model, x0, n_steps, thin, "mala", generator)
    h = check_positive(step_size, "step_size", "mala")
    scale = math.sqrt(2.0 * h)
    state: dict[str, torch.Tensor] = {}

    def log_q(to: torch.Tensor, frm: torch.Tensor, grad_frm: torch.Tensor) -> torch.Tensor:
        return -((to - frm + h * grad_frm) ** 2).flatten(1).sum(1) / (4.0 * h)

    def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if "energy" not in state:
            state["energy"], state["grad"] = energy_and_grad(model, x)
            _check_start(state["energy"], "mala")
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

    return _run(x0, n_steps, step, keep_trace, thin, progress, "mala",
                "the energy or its gradient is not finite there")


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
    n_steps = _check_common(model, x0, n_steps, thin, "metropolis_hastings", generator)
    std = check_positive(proposal_std, "proposal_std", "metropolis_hastings")
    state: dict[str, torch.Tensor] = {}

    def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if "energy" not in state:
            state["energy"] = _energy(model, x)
            _check_start(state["energy"], "metropolis_hastings")
        e_x = state["energy"]
        y = x + std * _normal(x, generator)
        e_y = _energy(model, y)
        u = _uniform(x, generator)
        accept = torch.log(u) < e_x - e_y
        state["energy"] = torch.where(accept, e_y, e_x)
        return torch.where(_per_chain(accept, x), y, x), accept

    return _run(x0, n_steps, step, keep_trace, thin, progress, "metropolis_hastings",
                "the energy is not finite there")


# Conditional sampling (imputation: x_M given a clamped x_O) lives in its own module, which
# builds on the samplers above; it is re-exported here as ebflow_lite.sampling.impute.
from ebflow_lite.imputation import impute  # noqa: E402, F401
