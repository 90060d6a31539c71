"""Imputation: fill in the missing entries of a batch by MCMC on the model's energy.

Split a data vector into an observed part ``x_O`` and a missing (masked) part ``x_M``. The
model's conditional density of the missing part is

    p(x_M | x_O) = p(x_O, x_M) / p(x_O)  ∝  exp(-E(x_O, x_M)),

with the observed entries held fixed. ``Z`` and ``p(x_O)`` are constants in ``x_M``, so the
conditional needs nothing but the energy, and a Langevin chain on ``x_M`` alone samples it
(Chao et al. 2023, Section 5.2):

    x_M <- x_M - h dE(x_O, x_M)/dx_M + sqrt(2 h) n,     n ~ N(0, I).

:func:`impute` runs that chain (``method="langevin"``, the unadjusted Langevin algorithm),
or MALA (``method="mala"``, exact for every step size), on many images at once, in the
variable the energy is defined on: for an :class:`ebflow_lite.EBFlow` with MaP
preprocessing that is the preprocessed (logit) variable, so the observed pixels are
preprocessed, the chain runs there, and the imputed batch is mapped back to data space.

The official implementation adds three things to the plain Langevin step (see
:func:`impute`'s ``snr``, ``blur`` and ``noise_free_last``): noise scaled by a
score-to-noise ratio, a drift towards a blurred copy of the image, and a last step without
noise. They are options here, off by default, so that each can be measured on its own.

For a flow of linear layers only, the model is a Gaussian and the conditional has a closed
form: :func:`linear_flow_gaussian` and :func:`gaussian_conditional` give it, and
``tests/test_imputation.py`` checks that :func:`impute` reproduces it.

References:
    Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching Objectives",
    NeurIPS 2023 (MCMC imputation, Figure 5); Roberts and Tweedie, Bernoulli 1996 (ULA and
    MALA); Song et al., "Score-Based Generative Modeling through Stochastic Differential
    Equations", ICLR 2021 (signal-to-noise step scaling of Langevin correctors).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ebflow_lite.autodiff import energy_and_grad
from ebflow_lite.draws import draw
from ebflow_lite.sampling import SamplerResult, mala
from ebflow_lite.validation import as_event_shape, check_shape, model_event_shape

METHODS = ("langevin", "mala")
INITS = ("noise", "given")


@dataclass
class ImputationResult:
    """What :func:`impute` returns.

    Attributes:
        samples: the imputed batch, in the space of the input ``x`` (data space for a model
            with preprocessing); the observed entries are exactly those of ``x``.
        trace: the chain's states every ``thin`` steps in *model space* (where the chain
            runs), shape ``(n_steps // thin + 1, B, *event_shape)`` starting with the initial
            state, or None unless ``keep_trace=True``.
        energies: ``E(x_t)`` of every state of ``trace``, shape ``(n_kept, B)`` (None
            without a trace): the statistic to diagnose mixing with
            (:mod:`ebflow_lite.diagnostics`).
        acceptance_rate: MALA's fraction of accepted proposals (None for Langevin).
        mask: the boolean mask used, shape ``(B, *event_shape)`` (True: imputed).
    """

    samples: torch.Tensor
    trace: torch.Tensor | None
    energies: torch.Tensor | None
    acceptance_rate: float | None
    mask: torch.Tensor


def check_mask(mask: object, x: torch.Tensor, where: str = "impute") -> torch.Tensor:
    """Validate a missing-entry mask and return it as a bool tensor of ``x``'s shape.

    Args:
        mask: True (or 1) where an entry is missing and must be imputed, False (or 0) where
            it is observed. Shape ``x.shape`` (one mask per sample) or ``x.shape[1:]`` (one
            mask for the whole batch); bool, or numbers that are all 0 or 1.
        x: the batch, shape ``(B, *event_shape)``.
        where: a name for error messages.

    Raises:
        ValueError: not a tensor, a shape that is neither, entries other than 0 and 1, or a
            sample with no missing entry (nothing to impute).
    """
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{where}: mask must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) not in (tuple(x.shape), tuple(x.shape[1:])):
        raise ValueError(
            f"{where}: mask of shape {tuple(mask.shape)} does not match the batch of shape "
            f"{tuple(x.shape)}; pass one mask per sample, {tuple(x.shape)}, or one for all, "
            f"{tuple(x.shape[1:])}"
        )
    if mask.dtype != torch.bool:
        if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
            values = torch.unique(mask.detach().flatten().cpu())[:5].tolist()
            raise ValueError(
                f"{where}: mask must be binary (True/1 = missing, False/0 = observed), got "
                f"values such as {values}"
            )
        mask = mask != 0
    mask = mask.to(x.device).expand(x.shape)
    empty = ~mask.flatten(1).any(1)
    if bool(empty.any()):
        rows = torch.nonzero(empty).flatten()[:5].tolist()
        raise ValueError(
            f"{where}: the mask has no missing entry for sample(s) {rows}; every sample "
            "needs at least one entry to impute (True = missing)"
        )
    return mask.contiguous()


class ClampedEnergy(nn.Module):
    """``E(where(mask, z, z_obs))``: the model's energy with the observed entries clamped.

    Its gradient vanishes on the observed entries, so any sampler of
    :mod:`ebflow_lite.sampling` run on it samples ``p(z_M | z_O)`` in the missing entries
    (what the chain does on the observed ones is irrelevant and is overwritten).

    Args:
        model: a module with ``energy``.
        z_obs: the clamped values (model space), shape ``(B, *event_shape)``.
        mask: bool, True where the entry is free, same shape.
    """

    def __init__(self, model: nn.Module, z_obs: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.z_obs = z_obs
        self.mask = mask
        self.event_shape = tuple(z_obs.shape[1:])

    def clamp(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` with its observed entries replaced by ``z_obs``."""
        return torch.where(self.mask, z, self.z_obs)

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.energy(self.clamp(z))  # type: ignore[operator]


def _preprocessing(model: nn.Module) -> list[nn.Module]:
    return list(getattr(model, "preprocessing", None) or [])


def _to_model_space(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if not _preprocessing(model):
        return x
    return model.preprocess(x)  # type: ignore[operator]


def _to_data_space(model: nn.Module, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        for layer in reversed(_preprocessing(model)):
            z = layer.inverse(z)
    return z


def _fill_missing(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replace the missing entries (they may be NaN) by the sample's mean observed value,
    so that the preprocessing gets values inside its domain."""
    observed = ~mask
    safe = torch.where(observed, x, torch.zeros((), dtype=x.dtype, device=x.device))
    counts = observed.flatten(1).sum(1).clamp(min=1)
    means = safe.flatten(1).sum(1) / counts
    return torch.where(mask, means.view(-1, *([1] * (x.dim() - 1))), x)


def gaussian_blur(z: torch.Tensor, image_shape: Sequence[int], kernel_size: int = 5,
                  sigma: float = 1.0) -> torch.Tensor:
    """Blur every image of a batch with a ``kernel_size`` Gaussian (reflect padding).

    Args:
        z: shape ``(B, *event_shape)`` with ``prod(event_shape) == prod(image_shape)``.
        image_shape: ``(C, H, W)``, how to read one sample as an image (a flat FC model's
            samples are vectors).
        kernel_size: odd, at least 1.
        sigma: the Gaussian's standard deviation in pixels (> 0).

    Returns:
        The blurred batch, shaped like ``z``.
    """
    shape = as_event_shape(image_shape, "image_shape")
    if shape is None or len(shape) != 3 or math.prod(shape) != math.prod(z.shape[1:]):
        raise ValueError(f"gaussian_blur: image_shape must be (C, H, W) with "
                         f"{math.prod(z.shape[1:])} entries, got {image_shape!r}")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 \
            or kernel_size % 2 == 0:
        raise ValueError(f"gaussian_blur: kernel_size must be an odd int >= 1, got "
                         f"{kernel_size!r}")
    if not sigma > 0:
        raise ValueError(f"gaussian_blur: sigma must be positive, got {sigma}")
    c, h, w = shape
    offsets = torch.arange(kernel_size, dtype=z.dtype, device=z.device) - kernel_size // 2
    weights = torch.exp(-offsets**2 / (2 * sigma**2))
    weights = weights / weights.sum()
    kernel = (weights[:, None] * weights[None, :]).expand(c, 1, kernel_size, kernel_size)
    images = z.reshape(-1, c, h, w)
    pad = kernel_size // 2
    mode = "reflect" if pad < min(h, w) else "replicate"
    padded = nn.functional.pad(images, (pad, pad, pad, pad), mode=mode)
    return nn.functional.conv2d(padded, kernel, groups=c).reshape(z.shape)


def _check_number(value: object, name: str, minimum: float = 0.0, strict: bool = True
                  ) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value) or (value <= minimum if strict else value < minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(f"impute: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def impute(
    model: nn.Module,
    x: torch.Tensor,
    mask: torch.Tensor,
    step_size: float,
    n_steps: int,
    method: str = "langevin",
    init: str | torch.Tensor = "noise",
    init_std: float = 1.0,
    snr: float | None = None,
    blur: float = 0.0,
    blur_kernel: int = 5,
    blur_sigma: float = 1.0,
    image_shape: Sequence[int] | None = None,
    noise_free_last: bool = False,
    keep_trace: bool = False,
    thin: int = 1,
    progress: bool = False,
    generator: torch.Generator | None = None,
) -> ImputationResult:
    """Impute the masked entries of ``x`` by MCMC on ``exp(-E(x_O, x_M))`` with ``x_O`` clamped.

    Args:
        model: a module with ``energy`` (an :class:`ebflow_lite.EBFlow`: with MaP
            preprocessing, ``x`` is in data space and the chain runs in model space).
        x: the batch, shape ``(B, *event_shape)``; the masked entries' values are ignored
            (they may be NaN) unless ``init="given"``.
        mask: True/1 where an entry is missing; shape ``x.shape`` or ``x.shape[1:]``
            (see :func:`check_mask`).
        step_size: ``h > 0`` of the Langevin step ``z - h grad E + sqrt(2 h) n``.
        n_steps: the number of steps (>= 1).
        method: ``"langevin"`` (unadjusted) or ``"mala"`` (Metropolis-adjusted: exact
            conditional for every ``h``; no extras below).
        init: ``"noise"``: the missing entries start at ``N(0, init_std^2)`` in model space
            (the official code's start); ``"given"``: at the (preprocessed) values ``x``
            holds there; or a model-space tensor of ``x``'s shape.
        init_std: see ``init``.
        snr: the official sampler's noise scaling: if set, each step's noise is multiplied
            by ``snr * (mean_b |n_b| / mean_b |s_b|)^2`` (``s = -grad E``, norms over the
            whole sample, means over the batch) instead of 1.
        blur: the official "smoothing" drift: add ``blur * (G(z) - z)`` on the missing
            entries each step, ``G`` a Gaussian blur (needs ``image_shape`` for vectors).
        blur_kernel, blur_sigma: the blur's size and width (pixels).
        image_shape: ``(C, H, W)`` to read a flat sample as an image for the blur (default:
            the event shape when it is one).
        noise_free_last: the official last step: drift only, no noise.
        keep_trace: return the model-space states every ``thin`` steps and their energies.
        thin: see ``keep_trace``.
        progress: show a tqdm progress bar.
        generator: a ``torch.Generator`` for the initial noise and the chain.

    Returns:
        An :class:`ImputationResult`.

    Raises:
        ValueError: a bad mask (shape, values, a sample with nothing to impute), an unknown
            ``method`` or ``init``, extras combined with MALA, or a bad number.
    """
    if not callable(getattr(model, "energy", None)):
        raise ValueError("impute: the model must have an energy(x) method")
    check_shape(x, model_event_shape(model), where="impute")
    mask = check_mask(mask, x)
    if method not in METHODS:
        raise ValueError(f"impute: method must be one of {METHODS}, got {method!r}")
    h = _check_number(step_size, "step_size")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"impute: n_steps must be an int >= 1, got {n_steps!r}")
    blur = _check_number(blur, "blur", strict=False)
    extras = snr is not None or blur > 0 or noise_free_last
    if method == "mala" and extras:
        raise ValueError("impute: snr, blur and noise_free_last modify the Langevin step; "
                         "they cannot be combined with method='mala'")
    if snr is not None:
        snr = _check_number(snr, "snr")
    if blur > 0:
        image_shape = image_shape if image_shape is not None else tuple(x.shape[1:])
        gaussian_blur(x[:1], image_shape, blur_kernel, blur_sigma)  # validates the options

    x_filled = _fill_missing(x, mask)
    observed_values = x_filled.detach()
    z_obs = _to_model_space(model, x_filled).detach()
    if isinstance(init, torch.Tensor):
        check_shape(init, tuple(x.shape[1:]), where="impute (init)")
        if init.shape != x.shape:
            raise ValueError(f"impute: init must have the batch's shape {tuple(x.shape)}, got "
                             f"{tuple(init.shape)}")
        start = init.to(z_obs)
    elif init == "noise":
        std = _check_number(init_std, "init_std")
        start = std * draw("normal", z_obs.shape, like=z_obs, generator=generator)
    elif init == "given":
        if not bool(torch.isfinite(x).all()):
            raise ValueError("impute: init='given' needs finite values at the missing entries")
        start = _to_model_space(model, x).detach()
    else:
        raise ValueError(f"impute: init must be one of {INITS} or a tensor, got {init!r}")
    target = ClampedEnergy(model, z_obs, mask)
    z0 = target.clamp(start)

    if method == "mala":
        result = mala(target, z0, step_size=h, n_steps=n_steps, keep_trace=keep_trace,
                      thin=thin, progress=progress, generator=generator)
    else:
        result = _langevin_run(model, z0, mask, h, n_steps, snr, blur, blur_kernel,
                               blur_sigma, image_shape, noise_free_last, keep_trace, thin,
                               progress, generator)
    z = target.clamp(result.samples)
    trace = target.clamp(result.trace) if result.trace is not None else None
    energies = None
    if trace is not None:
        from ebflow_lite.diagnostics import energy_trace

        energies = energy_trace(model, trace)
    samples = _to_data_space(model, z) if _preprocessing(model) else z
    samples = torch.where(mask, samples, observed_values)
    return ImputationResult(samples=samples, trace=trace, energies=energies,
                            acceptance_rate=result.acceptance_rate, mask=mask)


def _langevin_run(
    model: nn.Module, z0: torch.Tensor, mask: torch.Tensor, h: float, n_steps: int,
    snr: float | None, blur: float, blur_kernel: int, blur_sigma: float,
    image_shape: Sequence[int] | None, noise_free_last: bool, keep_trace: bool, thin: int,
    progress: bool, generator: torch.Generator | None,
) -> SamplerResult:
    """The masked Langevin chain, with the official sampler's optional additions.

    The observed entries of the state hold ``z_obs`` throughout (drift and noise are masked),
    so the gradient of the model's own energy is the conditional one on the missing entries.
    """
    free = mask.to(z0.dtype)
    scale = math.sqrt(2.0 * h)
    z = z0.detach().clone()
    kept = [z.clone()] if keep_trace else []
    steps = tqdm(range(n_steps), disable=not progress, desc="impute", leave=False,
                 mininterval=1.0)
    for t in steps:
        _, grad = energy_and_grad(model, z)
        drift = -h * grad
        if blur > 0:
            drift = drift + blur * (gaussian_blur(z, image_shape, blur_kernel, blur_sigma) - z)
        z = z + free * drift
        if not (noise_free_last and t == n_steps - 1):
            noise = draw("normal", z.shape, like=z, generator=generator)
            factor = 1.0
            if snr is not None:
                noise_norm = noise.flatten(1).norm(dim=1).mean()
                score_norm = grad.flatten(1).norm(dim=1).mean().clamp(min=1e-30)
                factor = snr * float(noise_norm / score_norm) ** 2
            z = z + (factor * scale) * free * noise
        if not bool(torch.isfinite(z).all()):
            raise ValueError(f"impute: the chains became NaN or inf at step {t + 1} of "
                             f"{n_steps}; step_size={h:g} is too large for this energy")
        if keep_trace and (t + 1) % thin == 0:
            kept.append(z.clone())
    return SamplerResult(samples=z, trace=torch.stack(kept) if keep_trace else None)


# --------------------------------------------------------------------------- Gaussian check
def linear_flow_gaussian(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and covariance of a flow whose layers are all linear (a Gaussian).

    With every layer affine, ``u = g(x) = A x + b`` and ``u ~ N(0, I)``, so
    ``x ~ N(-A^{-1} b, (A^T A)^{-1})``. ``A`` and ``b`` are read off the flow by applying
    it to ``0`` and to the unit vectors (no access to the layers' parameters needed).

    Args:
        model: an :class:`ebflow_lite.EBFlow` with linear layers only, no preprocessing,
            no multi-scale split and a standard normal prior.

    Returns:
        ``(mean, cov)``, shapes ``(D,)`` and ``(D, D)``, for the flattened event.
    """
    layers = list(getattr(model, "layers", []))
    if not layers or not all(getattr(layer, "is_linear", False) for layer in layers):
        raise ValueError("linear_flow_gaussian: every layer of the flow must be linear "
                         "(is_linear True); a non-linear flow is not a Gaussian")
    if _preprocessing(model):
        raise ValueError("linear_flow_gaussian: the model must have no preprocessing")
    shape = getattr(model, "event_shape", None)
    if shape is None:
        raise ValueError("linear_flow_gaussian: the model's event shape must be known")
    if len(getattr(model, "latent_shapes", [shape])) != 1:
        raise ValueError("linear_flow_gaussian: a multi-scale (Split) flow is not supported")
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None else torch.get_default_dtype()
    device = p.device if p is not None else torch.device("cpu")
    d = math.prod(shape)
    points = torch.cat([torch.zeros(1, d), torch.eye(d)]).to(dtype=dtype, device=device)
    with torch.no_grad():
        latents, _ = model.latents_and_energy(points.reshape(-1, *shape))  # type: ignore
    u = latents[-1].reshape(d + 1, -1)
    b = u[0]
    a = (u[1:] - b).T
    mean = -torch.linalg.solve(a, b)
    cov = torch.linalg.inv(a.T @ a)
    return mean, 0.5 * (cov + cov.T)


def gaussian_conditional(
    mean: torch.Tensor, cov: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The conditional law of ``x_M`` given ``x_O`` under ``N(mean, cov)``.

    ``mean_M + S_MO S_OO^{-1} (x_O - mean_O)`` and ``S_MM - S_MO S_OO^{-1} S_OM`` (the Schur
    complement).

    Args:
        mean: ``(D,)``.
        cov: ``(D, D)``, symmetric positive definite.
        x: ``(B, D)``; only the observed entries are read.
        mask: bool ``(D,)``, True where missing (one mask for the batch).

    Returns:
        ``(conditional means (B, |M|), conditional covariance (|M|, |M|))``.
    """
    d = mean.shape[0]
    if cov.shape != (d, d) or x.dim() != 2 or x.shape[1] != d:
        raise ValueError(f"gaussian_conditional: expected mean (D,), cov (D, D), x (B, D); "
                         f"got {tuple(mean.shape)}, {tuple(cov.shape)}, {tuple(x.shape)}")
    if not isinstance(mask, torch.Tensor) or mask.shape != (d,):
        raise ValueError(f"gaussian_conditional: mask must be a ({d},) tensor")
    m = mask.to(torch.bool)
    o = ~m
    if not bool(m.any()):
        raise ValueError("gaussian_conditional: the mask has no missing entry")
    s_mm, s_mo, s_oo = cov[m][:, m], cov[m][:, o], cov[o][:, o]
    if not bool(o.any()):
        return mean.expand(x.shape[0], d).clone(), s_mm.clone()
    gain = torch.linalg.solve(s_oo, s_mo.T).T            # S_MO S_OO^{-1}
    cond_mean = mean[m] + (x[:, o] - mean[o]) @ gain.T
    cond_cov = s_mm - gain @ s_mo.T
    return cond_mean, 0.5 * (cond_cov + cond_cov.T)


__all__ = [
    "INITS",
    "METHODS",
    "ClampedEnergy",
    "ImputationResult",
    "check_mask",
    "gaussian_blur",
    "gaussian_conditional",
    "impute",
    "linear_flow_gaussian",
]
