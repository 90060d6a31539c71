"""Convergence diagnostics for MCMC traces held in torch tensors, computed by ArviZ.

A sampler of :mod:`ebflow_lite.sampling` runs ``B`` chains side by side and, with
``keep_trace=True``, returns the states as one tensor of shape ``(n_draws, B, ...)``: time
first, chains second. The diagnostics of this module look at one scalar statistic of each
state, for example the energy ``E(x_t)`` of every kept state (:func:`energy_trace`), held as
an ``(n_draws, n_chains)`` tensor, and hand it to ArviZ in the ``(chain, draw)`` layout it
expects:

* :func:`rhat`: the rank-normalised split R-hat (Vehtari et al. 2021). It compares the
  spread within halves of the chains with the spread between them; values near 1 (below
  about 1.01 to 1.05) say the chains look like draws from one distribution, large values
  that they have not forgotten where they started.
* :func:`ess`: the effective sample size, bulk or tail: how many independent draws the
  correlated chains are worth for estimating the mean (bulk) or the 5% and 95% quantiles
  (tail) of the statistic.
* :func:`autocorrelation`: the autocorrelation of the statistic along each chain, by lag.
* :func:`summarize`: all of them at once, after dropping a burn-in.

No estimator is written here by hand: the numbers are ArviZ's, so they are the ones the
MCMC literature and other libraries report. The one exception is :func:`ks_statistic`, the
two-sample Kolmogorov-Smirnov distance, used to compare the law of a statistic under MCMC
samples with its law under exact samples (an EBFlow has both); it is tested against SciPy.

References:
    Vehtari, Gelman, Simpson, Carpenter and Bürkner, "Rank-normalization, folding, and
    localization: an improved R-hat for assessing convergence of MCMC", Bayesian Analysis
    2021; Kumar, Carroll, Hartikainen and Martin, "ArviZ a unified library for exploratory
    analysis of Bayesian models in Python", JOSS 2019; Gelman and Rubin, Statistical
    Science 1992.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

#: The ArviZ versions this module is written for (pinned in pyproject.toml).
ARVIZ_REQUIREMENT = ">=0.23,<0.24"


def _arviz() -> Any:
    """Import ArviZ on first use (it loads xarray and pandas, a few seconds), quietly."""
    with warnings.catch_warnings():
        # 0.2x prints a FutureWarning about its coming 1.0 refactor on import.
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def _as_chains(stat: object, burn_in: int = 0, where: str = "diagnostics") -> np.ndarray:
    """An ``(n_draws, n_chains)`` tensor (or array) as a float64 ``(chain, draw)`` array."""
    if isinstance(stat, torch.Tensor):
        array = stat.detach().to("cpu", torch.float64).numpy()
    elif isinstance(stat, np.ndarray):
        array = stat.astype(np.float64)
    else:
        raise ValueError(f"{where}: expected a torch.Tensor of shape (n_draws, n_chains), got "
                         f"{type(stat).__name__}")
    if array.ndim != 2:
        raise ValueError(f"{where}: expected a statistic of shape (n_draws, n_chains), one "
                         f"value per kept state and chain, got shape {array.shape}; reduce "
                         "each state to a scalar first (e.g. energy_trace)")
    if isinstance(burn_in, bool) or not isinstance(burn_in, int) or burn_in < 0:
        raise ValueError(f"{where}: burn_in must be an int >= 0, got {burn_in!r}")
    if array.shape[0] - burn_in < 4:
        raise ValueError(f"{where}: need at least 4 draws per chain after a burn-in of "
                         f"{burn_in}, got {array.shape[0]} draws")
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: the statistic contains NaN or inf")
    return np.ascontiguousarray(array[burn_in:].T)


def _need_chains(chains: np.ndarray, minimum: int, where: str) -> None:
    if chains.shape[0] < minimum:
        raise ValueError(f"{where}: needs at least {minimum} chains, got {chains.shape[0]}")


def rhat(stat: torch.Tensor, burn_in: int = 0, method: str = "rank") -> float:
    """Split R-hat of a scalar statistic over chains.

    Args:
        stat: shape ``(n_draws, n_chains)`` (time first, as a sampler's trace), at least two
            chains.
        burn_in: leading draws to drop.
        method: ``"rank"`` (rank-normalised split R-hat, the default of ArviZ and of the
            2021 paper) or ``"split"`` (the classic split R-hat of Gelman et al.).

    Returns:
        R-hat (1 for perfectly mixed chains; larger is worse).
    """
    if method not in ("rank", "split"):
        raise ValueError(f"rhat: method must be 'rank' or 'split', got {method!r}")
    chains = _as_chains(stat, burn_in, "rhat")
    _need_chains(chains, 2, "rhat")
    return float(_arviz().rhat(chains, method=method))


def ess(stat: torch.Tensor, burn_in: int = 0, method: str = "bulk") -> float:
    """The effective sample size of a scalar statistic, summed over chains.

    Args:
        stat: shape ``(n_draws, n_chains)``.
        burn_in: leading draws to drop.
        method: ``"bulk"`` (for the mean) or ``"tail"`` (for the 5% and 95% quantiles).

    Returns:
        The ESS; at most about ``n_chains * n_draws`` for independent draws (it can exceed
        that for anti-correlated chains).
    """
    if method not in ("bulk", "tail"):
        raise ValueError(f"ess: method must be 'bulk' or 'tail', got {method!r}")
    chains = _as_chains(stat, burn_in, "ess")
    return float(_arviz().ess(chains, method=method))


def autocorrelation(stat: torch.Tensor, burn_in: int = 0, max_lag: int | None = None
                    ) -> torch.Tensor:
    """The autocorrelation of a statistic along each chain, averaged over the chains.

    Args:
        stat: shape ``(n_draws, n_chains)``.
        burn_in: leading draws to drop.
        max_lag: return lags ``0 .. max_lag`` (default: all).

    Returns:
        A float64 tensor of shape ``(max_lag + 1,)``; entry 0 is 1.
    """
    chains = _as_chains(stat, burn_in, "autocorrelation")
    acf = np.asarray(_arviz().autocorr(chains, axis=1)).mean(0)
    if max_lag is not None:
        if isinstance(max_lag, bool) or not isinstance(max_lag, int) or max_lag < 0:
            raise ValueError(f"autocorrelation: max_lag must be an int >= 0, got {max_lag!r}")
        acf = acf[: max_lag + 1]
    return torch.from_numpy(np.ascontiguousarray(acf))


@dataclass(frozen=True)
class ChainSummary:
    """ArviZ's diagnostics of one scalar statistic over several chains.

    Attributes:
        rhat: rank-normalised split R-hat.
        ess_bulk: bulk effective sample size (all chains together).
        ess_tail: tail effective sample size.
        n_chains: the number of chains.
        n_draws: draws per chain after the burn-in.
    """

    rhat: float
    ess_bulk: float
    ess_tail: float
    n_chains: int
    n_draws: int

    @property
    def ess_per_draw(self) -> float:
        """Bulk ESS divided by the number of draws: 1 for independent draws."""
        return self.ess_bulk / (self.n_chains * self.n_draws)

    def mixed(self, max_rhat: float = 1.05, min_ess: float = 100.0) -> bool:
        """True when R-hat is at most ``max_rhat`` and both ESS at least ``min_ess``."""
        return self.rhat <= max_rhat and min(self.ess_bulk, self.ess_tail) >= min_ess


def summarize(stat: torch.Tensor, burn_in: int = 0) -> ChainSummary:
    """R-hat and bulk and tail ESS of a statistic (``(n_draws, n_chains)``, >= 4 chains).

    Four chains is the smallest number for which the 2021 paper recommends R-hat.
    """
    chains = _as_chains(stat, burn_in, "summarize")
    _need_chains(chains, 4, "summarize")
    az = _arviz()
    return ChainSummary(
        rhat=float(az.rhat(chains, method="rank")),
        ess_bulk=float(az.ess(chains, method="bulk")),
        ess_tail=float(az.ess(chains, method="tail")),
        n_chains=int(chains.shape[0]), n_draws=int(chains.shape[1]),
    )


def energy_trace(model: nn.Module, trace: torch.Tensor, batch_size: int = 4096
                 ) -> torch.Tensor:
    """``E(x_t)`` of every kept state of a trace: ``(n_draws, B, *event) -> (n_draws, B)``.

    The trace must be in the space the energy is defined on (model space, for an
    :class:`ebflow_lite.EBFlow` with preprocessing). Evaluated without gradients, in chunks
    of ``batch_size`` states.
    """
    if not isinstance(trace, torch.Tensor) or trace.dim() < 3:
        raise ValueError("energy_trace: expected a trace of shape (n_draws, B, *event_shape), "
                         f"got {getattr(trace, 'shape', type(trace).__name__)}")
    flat = trace.reshape(-1, *trace.shape[2:])
    with torch.no_grad():
        parts = [model.energy(flat[i:i + batch_size])  # type: ignore[operator]
                 for i in range(0, flat.shape[0], batch_size)]
    return torch.cat(parts).reshape(trace.shape[0], trace.shape[1])


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """The two-sample Kolmogorov-Smirnov statistic ``sup_t |F_a(t) - F_b(t)|``.

    ``F_a`` and ``F_b`` are the empirical distribution functions of the two samples (1-D
    tensors, any lengths). 0 for identical samples, 1 for samples that do not overlap.
    """
    for name, v in (("a", a), ("b", b)):
        if not isinstance(v, torch.Tensor) or v.dim() != 1 or v.numel() == 0:
            raise ValueError(f"ks_statistic: {name} must be a non-empty 1-D tensor")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"ks_statistic: {name} contains NaN or inf")
    a, b = a.detach().double().sort().values, b.detach().double().sort().values
    points = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, points, right=True).double() / a.numel()
    cdf_b = torch.searchsorted(b, points, right=True).double() / b.numel()
    return float((cdf_a - cdf_b).abs().max())


def ks_critical_value(n: int, m: int, alpha: float = 0.01) -> float:
    """The asymptotic level-``alpha`` critical value of the two-sample KS statistic.

    ``c(alpha) sqrt((n + m) / (n m))`` with ``c(alpha) = sqrt(-log(alpha / 2) / 2)``: two
    samples of one distribution exceed it with probability about ``alpha``.
    """
    if n < 1 or m < 1 or not 0 < alpha < 1:
        raise ValueError(f"ks_critical_value: need n, m >= 1 and 0 < alpha < 1, got "
                         f"{n}, {m}, {alpha}")
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


__all__ = [
    "ARVIZ_REQUIREMENT",
    "ChainSummary",
    "autocorrelation",
    "energy_trace",
    "ess",
    "ks_critical_value",
    "ks_statistic",
    "rhat",
    "summarize",
]
