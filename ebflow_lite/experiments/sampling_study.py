"""Chapter 10's experiments: inverse generation against MCMC, and imputation.

Chapter 10 ("Sampling an EBFlow") compares the two ways to draw from an EBFlow and fills in
missing pixels with the model's energy. This module holds its reusable pieces:

* Cost. :class:`PreparedInverse` inverts every dense layer once and reuses the inverses
  for each batch of latents; :func:`measure_costs` times, in interleaved repeats, one
  Langevin step, the library's inverse generation (``EBFlow.sample``, which factorises on
  every call), the inversion alone and a prepared inverse, for the paper's FC model at
  one dimension; :func:`cost_sweep` does it over dimensions and :func:`chain_times` over
  chain lengths. :func:`predicted_crossover` is the flop count's prediction of how many
  Langevin steps cost one inverse.
* Quality. :func:`energy_ks_curve` runs chains and measures, every few steps, the
  Kolmogorov-Smirnov distance between the law of ``E(x_t)`` under the chains and under
  exact samples of the model.
* Imputation. :func:`make_mask` builds the chapter's masks (a centre square, half the image,
  random pixels, and strokes of the scikit-learn digits upscaled to the image size,
  :func:`digit_stroke_masks`); :func:`mean_image_fill` and :func:`nearest_neighbour_fill`
  are the two baselines; :func:`masked_mse` and :func:`psnr` the error on the masked
  pixels; :func:`small_fashion` the data and :func:`train_fc_model` the model.

References:
    Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching Objectives",
    NeurIPS 2023 (Sections 5.1 and 5.2: inverse and MCMC generation, imputation with masks
    drawn from another data set's images); Xiao, Rasul and Vollgraf, "Fashion-MNIST",
    arXiv:1708.07747, 2017.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ebflow_lite import objectives
from ebflow_lite.data.images import ImageSplit, dequantize, fashion_mnist
from ebflow_lite.diagnostics import energy_trace, ks_statistic
from ebflow_lite.ema import EMA
from ebflow_lite.experiments.bench import fit_loglog_slope, time_interleaved
from ebflow_lite.flow import EBFlow
from ebflow_lite.layers import Dense
from ebflow_lite.metrics import bits_per_dim, nll
from ebflow_lite.models import fc_flow
from ebflow_lite.preprocessing import image_preprocessing
from ebflow_lite.sampling import langevin, mala
from ebflow_lite.training import History, fit
from ebflow_lite.validation import check_positive_int

# ---------------------------------------------------------------------------------- cost


class PreparedInverse:
    """``g^{-1}`` with every dense layer inverted once: O(D^3 L) now, O(D^2 L) per batch.

    :meth:`ebflow_lite.layers.Dense.inverse` solves ``W x = y - b`` from scratch on every
    call (an LU factorisation, ``2/3 D^3`` flops, then two triangular solves). Here each dense
    layer's inverse matrix ``W^{-1}`` is computed once, when the object is built (``2 D^3``
    flops), and each call only multiplies by it (``2 B D^2`` flops, a matrix product as fast
    as the ones of a Langevin step); every other layer uses its own ``inverse``. The
    inverses are a snapshot: rebuild after the parameters change.

    Args:
        model: an :class:`ebflow_lite.EBFlow` without multi-scale splits.

    Call it as ``prepared(u)`` on latents of shape ``(B, *latent_shape)``; it returns data
    space (through the preprocessing), like ``model.inverse(u)``.
    """

    def __init__(self, model: nn.Module) -> None:
        if len(getattr(model, "latent_shapes", [])) != 1:
            raise ValueError("PreparedInverse: needs a flow with one latent (no Split layers)")
        self.model = model
        self.inverses: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for layer in model.layers:
                if isinstance(layer, Dense):
                    self.inverses[id(layer)] = torch.linalg.inv(layer.weight.detach())

    @torch.no_grad()
    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        h = u
        for layer in reversed(self.model.layers):
            if id(layer) in self.inverses:
                rhs = h - layer.bias if layer.bias is not None else h
                h = rhs @ self.inverses[id(layer)].T
            else:
                h = layer.inverse(h)
        for layer in reversed(self.model.preprocessing):
            h = layer.inverse(h)
        return h


def benchmark_model(dim: int, seed: int = 0) -> nn.Module:
    """The paper's FC model (``Dense -> SmoothLeakyReLU -> Dense``) with random orthogonal
    weights, built from ``seed`` without touching the global random state.

    Orthogonal weights keep the inverse well conditioned at every D; the cost of a step does
    not depend on the values.
    """
    check_positive_int(dim, "dim", "benchmark_model", minimum=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fc_flow(dim, init="orthogonal").eval()


def interleaved_medians(
    fns: Mapping[str, Callable[[], object]], repeats: int = 3, warmup: int = 1,
) -> dict[str, float]:
    """The median seconds of each callable, timed in interleaved rounds.

    Every round times each callable once (after ``warmup`` untimed calls of each), so that a
    change of machine load during the measurement affects every callable alike
    (:func:`ebflow_lite.experiments.bench.time_interleaved`, without its time cap).
    """
    check_positive_int(repeats, "repeats", "interleaved_medians")
    check_positive_int(warmup, "warmup", "interleaved_medians", minimum=0)
    runs = time_interleaved(list(fns.values()), repeats, warmup, max_seconds=None)
    return {name: statistics.median(ts) for name, ts in zip(fns, runs, strict=True)}


@dataclass(frozen=True)
class CostPoint:
    """Median seconds per call at one dimension (batch ``batch_size``).

    Attributes:
        dim, batch_size: D and B.
        langevin_step: one Langevin step on B chains (an energy and its gradient).
        sample: the library's inverse generation of B samples, ``EBFlow.sample`` (it
            factorises every dense layer on each call).
        prepare: inverting the dense layers once (:class:`PreparedInverse`).
        prepared_sample: B samples through the prepared inverse.
    """

    dim: int
    batch_size: int
    langevin_step: float
    sample: float
    prepare: float
    prepared_sample: float

    @property
    def crossover_steps(self) -> float:
        """``T*``: how many Langevin steps cost as much as one batch of inverse samples."""
        return self.sample / self.langevin_step

    @property
    def prepared_crossover_steps(self) -> float:
        """The same against the prepared inverse (the factorisation already paid)."""
        return self.prepared_sample / self.langevin_step


def measure_costs(
    dim: int, batch_size: int = 64, repeats: int = 3, steps_per_call: int = 4, seed: int = 0,
) -> CostPoint:
    """Time one Langevin step and the three inverse paths on :func:`benchmark_model`.

    The Langevin step is timed as a call of :func:`ebflow_lite.sampling.langevin` with
    ``steps_per_call`` steps, divided by that number (the call's checks are paid once).
    """
    model = benchmark_model(dim, seed)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(batch_size, dim, generator=gen)
    u = torch.randn(batch_size, dim, generator=gen)
    prepared = PreparedInverse(model)
    fns = {
        "langevin": lambda: langevin(model, x0, step_size=1e-3, n_steps=steps_per_call,
                                     generator=gen),
        "sample": lambda: model.sample(batch_size, generator=gen),
        "prepare": lambda: PreparedInverse(model),
        "prepared_sample": lambda: prepared(u),
    }
    t = interleaved_medians(fns, repeats=repeats)
    return CostPoint(dim, batch_size, t["langevin"] / steps_per_call, t["sample"],
                     t["prepare"], t["prepared_sample"])


def cost_sweep(
    dims: Sequence[int], batch_size: int = 64, repeats: int = 3, steps_per_call: int = 4,
    seed: int = 0,
) -> list[CostPoint]:
    """:func:`measure_costs` at every dimension, in increasing order."""
    return [measure_costs(d, batch_size, repeats, steps_per_call, seed) for d in sorted(dims)]


def sweep_slope(points: Sequence[CostPoint], field: str, min_dim: int = 512) -> float:
    """The fitted exponent k of ``t ~ D^k`` for one cost of a sweep, over ``D >= min_dim``."""
    chosen = [p for p in points if p.dim >= min_dim]
    if len(chosen) < 2:
        raise ValueError(f"sweep_slope: need two dimensions >= {min_dim}, got "
                         f"{[p.dim for p in points]}")
    return fit_loglog_slope([p.dim for p in chosen], [getattr(p, field) for p in chosen])


def predicted_crossover(dim: int, batch_size: int) -> float:
    """The flop count's ``T*``: ``(2 * 2/3 D^3 + 2 * 2 B D^2) / (4 * 2 B D^2)``.

    A Langevin step on the FC model costs four ``B x D x D`` products (two forward, two in
    the gradient), ``8 B D^2`` flops; inverse generation factorises both dense layers
    (``2/3 D^3`` each) and solves with ``B`` right-hand sides (``2 B D^2`` each). So
    ``T* = D / (6 B) + 1/2``; the activation's Newton iterations (O(B D)) are left out.
    """
    return (2 * (2 / 3) * dim**3 + 4 * batch_size * dim**2) / (8 * batch_size * dim**2)


def chain_times(
    dim: int, steps: Sequence[int], batch_size: int = 64, repeats: int = 3, seed: int = 0,
) -> dict[int, float]:
    """Median seconds of a whole Langevin chain of T steps (B chains), for each T."""
    model = benchmark_model(dim, seed)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(batch_size, dim, generator=gen)
    fns = {str(t): (lambda t=t: langevin(model, x0, step_size=1e-3, n_steps=t, generator=gen))
           for t in steps}
    medians = interleaved_medians(fns, repeats=repeats)
    return {int(t): medians[t] for t in fns}


# ---------------------------------------------------------------------------------- quality


@dataclass
class KSCurve:
    """The KS distance between ``E`` under chains and under exact samples, over time.

    Attributes:
        steps: the chain lengths T at which it was measured.
        ks: the KS statistic at each T.
        acceptance_rate: MALA's acceptance rate (None for Langevin).
        energies: ``E(x_t)`` of every chain at every measured T, shape ``(len(steps), B)``.
    """

    steps: list[int]
    ks: list[float]
    acceptance_rate: float | None
    energies: torch.Tensor


def energy_ks_curve(
    model: nn.Module, x0: torch.Tensor, reference_energies: torch.Tensor, step_size: float,
    n_steps: int, every: int, method: str = "langevin",
    generator: torch.Generator | None = None,
) -> KSCurve:
    """Run chains from ``x0`` (model space) and compare ``E(x_t)`` with exact samples' ``E``.

    Args:
        model: a module with ``energy``.
        x0: the chains' starts, ``(B, *event_shape)``.
        reference_energies: ``E`` of independent exact samples, ``(N,)``.
        step_size: h.
        n_steps: the chain length.
        every: measure every ``every`` steps (and at step 0).
        method: ``"langevin"`` (ULA) or ``"mala"``.
        generator: for the chains.
    """
    if method not in ("langevin", "mala"):
        raise ValueError(f"energy_ks_curve: method must be 'langevin' or 'mala', got "
                         f"{method!r}")
    sampler = langevin if method == "langevin" else mala
    result = sampler(model, x0, step_size=step_size, n_steps=n_steps, keep_trace=True,
                     thin=every, generator=generator)
    energies = energy_trace(model, result.trace)
    steps = [i * every for i in range(energies.shape[0])]
    ks = [ks_statistic(e, reference_energies) for e in energies]
    return KSCurve(steps, ks, result.acceptance_rate, energies)


# ---------------------------------------------------------------------------------- masks

MASK_KINDS = ("centre", "half", "random", "strokes")


def digit_stroke_masks(size: tuple[int, int], n: int | None = None, threshold: float = 0.5,
                       seed: int = 0) -> torch.Tensor:
    """Masks from the strokes of the scikit-learn digits, upscaled to ``size``.

    Each 8x8 digit (levels 0..16) is upscaled bilinearly to ``size`` and thresholded at
    ``threshold`` of the full level: the stroke pixels are True (missing). This mirrors the
    paper's masks drawn from (K)MNIST digits, with a data set that ships with scikit-learn.

    Args:
        size: ``(H, W)`` of the images to mask.
        n: how many masks (digits in a seeded random order; None: all 1797).
        threshold: the fraction of the top level above which a pixel is a stroke.
        seed: the order's seed.

    Returns:
        A bool tensor of shape ``(n, 1, H, W)``.
    """
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images).float()[:, None] / 16.0
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    images = images[order[:n] if n is not None else order]
    up = nn.functional.interpolate(images, size=tuple(size), mode="bilinear",
                                   align_corners=False)
    return up > threshold


def make_mask(kind: str, n: int, image_shape: Sequence[int], fraction: float = 0.5,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` masks of one kind for images of shape ``(C, H, W)`` (True: missing).

    Kinds: ``"centre"`` (the central square with half the side), ``"half"`` (the bottom
    half), ``"random"`` (each pixel missing with probability ``fraction``, independently per
    image) and ``"strokes"`` (:func:`digit_stroke_masks`, a different digit per image).
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"make_mask: kind must be one of {MASK_KINDS}, got {kind!r}")
    check_positive_int(n, "n", "make_mask")
    c, h, w = image_shape
    mask = torch.zeros(n, c, h, w, dtype=torch.bool)
    if kind == "centre":
        top, left = h // 4, w // 4
        mask[:, :, top:top + h // 2, left:left + w // 2] = True
    elif kind == "half":
        mask[:, :, h // 2:, :] = True
    elif kind == "random":
        mask = torch.rand(n, c, h, w, generator=generator) < fraction
    else:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        mask = digit_stroke_masks((h, w), n, seed=seed).expand(n, c, h, w).clone()
    return mask


# ---------------------------------------------------------------------------------- baselines


def mean_image_fill(train: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill the missing entries with the training set's mean image."""
    mean = train.mean(0, keepdim=True).to(x)
    return torch.where(mask, mean.expand_as(x), x)


def nearest_neighbour_fill(train: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                           chunk: int = 256) -> torch.Tensor:
    """Fill the missing entries from the training image closest on the observed entries.

    The distance is the squared Euclidean one over the entries that are observed in the
    image being filled (each image has its own mask).
    """
    flat_train = train.flatten(1).to(x)
    out = []
    for start in range(0, x.shape[0], chunk):
        xs = x[start:start + chunk].flatten(1)
        seen = (~mask[start:start + chunk]).flatten(1).to(x)
        # sum_d seen_d (x_d - t_d)^2 = seen.x^2 - 2 (seen*x).t + seen.t^2
        dist = ((seen * xs**2).sum(1, keepdim=True) - 2 * (seen * xs) @ flat_train.T
                + seen @ (flat_train**2).T)
        out.append(flat_train[dist.argmin(1)])
    nearest = torch.cat(out).reshape(x.shape)
    return torch.where(mask, nearest, x)


def masked_mse(imputed: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor,
               scale: float = 1.0) -> torch.Tensor:
    """Per-image mean squared error over the missing entries, of values divided by
    ``scale`` (256 for 8-bit levels, so that the error is on ``[0, 1]``): shape ``(B,)``."""
    m = mask.to(imputed.dtype)
    err = ((imputed - truth) / scale) ** 2 * m
    return err.flatten(1).sum(1) / m.flatten(1).sum(1)


def psnr(mse: torch.Tensor | float, peak: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(peak^2 / mse)``."""
    mse = torch.as_tensor(mse, dtype=torch.float64)
    return 10.0 * torch.log10(peak**2 / mse)


# ---------------------------------------------------------------------------------- model

#: The side of the images :func:`small_fashion` returns (Fashion-MNIST pooled 2x2).
SMALL_SIDE = 14
#: The paper's logit smoothness for its FC models.
FC_LOGIT_ALPHA = 0.5


def small_fashion(n_train: int = 10_000, n_val: int = 1000, n_test: int = 1000,
                  seed: int = 0) -> ImageSplit:
    """Fashion-MNIST pooled 2x2 to 14x14 (D = 196), 256 levels, from Debian's package."""
    return fashion_mnist(n_train=n_train, n_val=n_val, n_test=n_test, seed=seed, downscale=2)


def fc_image_model(dim: int, alpha: float = FC_LOGIT_ALPHA) -> EBFlow:
    """The paper's FC model on flattened 8-bit images, with the MaP preprocessing
    (rescale by 1/256 and a logit of smoothness ``alpha``)."""
    return fc_flow(dim, preprocessing=image_preprocessing(256, alpha=alpha))


@torch.no_grad()
def whiten_fc_flow(model: EBFlow, z: torch.Tensor) -> EBFlow:
    """Data-dependent start of the FC model: the first layer whitens the data.

    With ``mu`` and ``S`` the mean and covariance of the (preprocessed) training batch ``z``,
    the first dense layer is set to ``W_1 = S^{-1/2}``, ``b_1 = -W_1 mu`` (so ``W_1 z + b_1``
    has zero mean and identity covariance), and the second to the diagonal map that
    standardises the activation's output. A linear flow started this way would already be
    the best Gaussian, the closed-form score-matching (and maximum-likelihood) fit; the
    non-linearity and both full matrices are then trained. This is Glow's data-dependent
    ActNorm initialisation carried over to full matrices.

    Args:
        model: :func:`ebflow_lite.models.fc_flow` (``Dense, SmoothLeakyReLU, Dense``).
        z: training data in model space, ``(N, D)`` with ``N > D``.

    Returns:
        ``model`` itself, modified in place.
    """
    first, act, second = model.layers
    if not (isinstance(first, Dense) and isinstance(second, Dense)):
        raise ValueError("whiten_fc_flow: expected the FC model (Dense, activation, Dense)")
    if z.dim() != 2 or z.shape[0] <= z.shape[1]:
        raise ValueError(f"whiten_fc_flow: need more samples than features, got {tuple(z.shape)}")
    mu = z.mean(0)
    cov = torch.cov(z.T.double())
    values, vectors = torch.linalg.eigh(cov)
    w = (vectors @ torch.diag(values.clamp(min=1e-12).rsqrt()) @ vectors.T).to(z.dtype)
    first.weight.copy_(w)
    first.bias.copy_(-w @ mu)
    out, _ = act(z @ w.T - w @ mu)
    scale = out.std(0).clamp(min=1e-6)
    second.weight.copy_(torch.diag(1.0 / scale))
    second.bias.copy_(-out.mean(0) / scale)
    return model


@dataclass
class TrainedModel:
    """A trained imputation model and how it was trained.

    Attributes:
        model: the FC EBFlow with its EMA weights.
        history: :func:`ebflow_lite.fit`'s record (the SSM loss of every step).
        seconds: the training's wall time.
        bits_per_dim_start, bits_per_dim_end: test bits per dimension at the whitened start
            and after training (exact, the model is a flow).
    """

    model: EBFlow
    history: History
    seconds: float
    bits_per_dim_start: float
    bits_per_dim_end: float


def train_fc_model(
    data: ImageSplit, steps: int, batch_size: int = 100, lr: float = 3e-4,
    objective: str = "ssm", ema_decay: float = 0.99, n_eval: int = 1000, seed: int = 0,
) -> TrainedModel:
    """Train :func:`fc_image_model` on an image split by score matching with MaP.

    The model starts whitened (:func:`whiten_fc_flow`, on one dequantized copy of the
    training set), then ``fit`` runs ``steps`` Adam steps of ``objective`` (default sliced
    score matching) on batches dequantized afresh, with an EMA of the weights (decay
    ``ema_decay``), which the returned model holds.
    """
    gen = torch.Generator().manual_seed(seed)
    train = data.train.flatten(1)
    test = dequantize(data.test[:n_eval].flatten(1), generator=gen)
    model = fc_image_model(train.shape[1])
    whiten_fc_flow(model, model.preprocess(dequantize(train, generator=gen)))
    start_bpd = bits_per_dim(nll(model, test), train.shape[1])
    loss = objectives.get(objective)
    ema = EMA(model, decay=ema_decay)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        history = fit(model, lambda m, b: loss(m, dequantize(b)), train, steps=steps,
                      batch_size=batch_size, lr=lr, ema=ema, progress=False)
        seconds = time.perf_counter() - t0
    ema.copy_to(model)
    model.eval()
    end_bpd = bits_per_dim(nll(model, test), train.shape[1])
    return TrainedModel(model, history, seconds, start_bpd, end_bpd)


# ---------------------------------------------------------------------------------- runs


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """``(fn(), seconds it took)``."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


__all__ = [
    "MASK_KINDS",
    "CostPoint",
    "KSCurve",
    "PreparedInverse",
    "SMALL_SIDE",
    "TrainedModel",
    "benchmark_model",
    "chain_times",
    "cost_sweep",
    "digit_stroke_masks",
    "energy_ks_curve",
    "fc_image_model",
    "interleaved_medians",
    "make_mask",
    "masked_mse",
    "mean_image_fill",
    "measure_costs",
    "nearest_neighbour_fill",
    "predicted_crossover",
    "psnr",
    "small_fashion",
    "sweep_slope",
    "timed",
    "train_fc_model",
    "whiten_fc_flow",
]

