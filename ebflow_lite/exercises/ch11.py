"""Checkers for the exercises of chapter 11 (density estimation on real images).

Each checker compares a learner's function with an independent computation: the bits/dim
conversion between scales, the exact likelihood of a linear EBFlow behind the library's image
preprocessing (for the Gaussian in logit space), and a brute-force reading of validation
curves under a time budget. Typical mistakes get a specific hint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch

from ebflow_lite.exercises import CheckResult, checker, failed, passed
from ebflow_lite.flow import EBFlow
from ebflow_lite.layers import Dense
from ebflow_lite.preprocessing import image_preprocessing

# ----------------------------------------------------------------------------- exercise 1

#: ``(NLL in nats of the density on [0, 1)^D, D, K)`` cases for the bits/dim conversion.
BPD_CASES = ((-1500.0, 784, 256), (-3200.0, 3072 * 2, 256), (-40.0, 64, 17),
             (250.0, 784, 256), (0.0, 100, 2))


def reference_bits_per_dim(nll_unit: float, dim: int, num_levels: int) -> float:
    """Bits/dim on the ``[0, K)`` scale of an NLL (nats) of the density on ``[0, 1)^D``.

    Rescaling by ``K`` divides the density by ``K^D``: the NLL grows by ``D log K``.
    """
    return (nll_unit + dim * math.log(num_levels)) / (dim * math.log(2.0))


@checker
def bits_per_dim_from_unit_scale(learner: Callable[[float, int, int], float]) -> CheckResult:
    """Check ``learner(nll_unit, D, K)`` (bits/dim on the K-level scale) on several cases."""
    for nll_unit, dim, levels in BPD_CASES:
        expected = reference_bits_per_dim(nll_unit, dim, levels)
        out = learner(nll_unit, dim, levels)
        if isinstance(out, torch.Tensor):
            out = float(out)
        if not isinstance(out, (int, float)) or not math.isfinite(out):
            return failed(f"return a finite number, got {out!r}")
        if math.isclose(out, expected, rel_tol=1e-9, abs_tol=1e-9):
            continue
        per_dim = nll_unit / (dim * math.log(2.0))
        if math.isclose(out, per_dim, rel_tol=1e-9, abs_tol=1e-9):
            return failed("you converted the [0, 1) NLL without moving it to the [0, K) "
                          "scale: dividing x by K multiplies the density by K^D, so the "
                          "NLL on [0, K) is the [0, 1) NLL plus D log K")
        if math.isclose(out, (nll_unit - dim * math.log(levels)) / (dim * math.log(2.0)),
                        rel_tol=1e-9, abs_tol=1e-9):
            return failed("the offset has the wrong sign: the density on the wider box "
                          "[0, K)^D is *lower*, so its NLL is larger by D log K")
        if math.isclose(out, (nll_unit + dim * math.log(levels - 1)) / (dim * math.log(2.0)),
                        rel_tol=1e-9, abs_tol=1e-9):
            return failed("K levels 0..K-1 dequantize to [0, K), a box of side K, not K - 1")
        if math.isclose(out, expected * math.log(2.0), rel_tol=1e-9, abs_tol=1e-9):
            return failed("that is nats per dimension: divide by ln 2 for bits")
        return failed(f"wrong value for nll_unit={nll_unit}, D={dim}, K={levels}: expected "
                      f"{expected:.6f}, got {out:.6f}")
    return passed("bits/dim = (NLL_[0,1) + D ln K) / (D ln 2): a model of the unit box "
                  "that is uniform has NLL 0 there and log2 K bits/dim here.")


# ----------------------------------------------------------------------------- exercise 2


def gaussian_cases() -> list[tuple[torch.Tensor, torch.Tensor, int, float, float]]:
    """``(x_train, x_test, K, alpha, eps)``: dequantized images of two small data sets.

    The 8x8 digits (17 levels) and smooth random 6x6 blobs (256 levels), each dequantized
    with a fixed generator, so that learner and reference see the same points.
    """
    from ebflow_lite.data.digits import digits_images
    from ebflow_lite.data.images import dequantize

    gen = torch.Generator().manual_seed(110)
    digits = digits_images(seed=0)
    digit_train = dequantize(digits.train.double(), generator=gen)
    digit_test = dequantize(digits.test.double(), generator=gen)
    h = w = 6
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centres = torch.rand(3000, 2, generator=gen) * 4 + 1
    blobs = torch.exp(-((yy - centres[:, :1, None]) ** 2
                        + (xx - centres[:, 1:, None]) ** 2) / 3.0)
    levels = (250 * blobs + 5 * torch.rand(blobs.shape, generator=gen)).floor()
    blob_x = dequantize(levels.double().unsqueeze(1), generator=gen)
    return [(digit_train, digit_test, 17, 0.5, 1e-6), (digit_train, digit_test, 17, 1.0, 0.05),
            (blob_x[:2500], blob_x[2500:], 256, 0.75, 1e-6)]


def reference_gaussian_bits_per_dim(x_train: torch.Tensor, x_test: torch.Tensor,
                                    num_levels: int, alpha: float, eps: float,
                                    diagonal: bool = False) -> float:
    """Bits/dim of the ML Gaussian in logit space, scored through the library's EBFlow.

    The Gaussian ``N(mu, Sigma)`` of the preprocessed training images is the linear flow
    ``u = L^{-1} (z - mu)`` (``Sigma = L L^T``): one dense layer behind the preprocessing,
    whose ``log_prob`` adds every log-det (the layer's and the preprocessing's).
    """
    dim = x_train[0].numel()
    pre = image_preprocessing(num_levels, alpha=alpha, eps=eps, event_shape=(dim,))
    model = EBFlow([Dense(dim)], preprocessing=pre).double()
    z = model.preprocess(x_train.reshape(x_train.shape[0], dim).double())
    mean = z.mean(0)
    centred = z - mean
    cov = centred.T @ centred / z.shape[0]
    if diagonal:
        cov = torch.diag(torch.diagonal(cov))
    inverse_chol = torch.linalg.inv(torch.linalg.cholesky(cov))
    with torch.no_grad():
        model.layers[0].weight.copy_(inverse_chol)
        model.layers[0].bias.copy_(-inverse_chol @ mean)
    from ebflow_lite.metrics import bits_per_dim, nll

    return bits_per_dim(nll(model, x_test.reshape(x_test.shape[0], dim).double()), dim)


@checker
def gaussian_bits_per_dim(learner: Callable[..., float]) -> CheckResult:
    """Check ``learner(x_train, x_test, K, alpha, eps)`` (test bits/dim of the Gaussian)."""
    for x_train, x_test, levels, alpha, eps in gaussian_cases():
        expected = reference_gaussian_bits_per_dim(x_train, x_test, levels, alpha, eps)
        out = learner(x_train.clone(), x_test.clone(), levels, alpha, eps)
        if isinstance(out, torch.Tensor):
            out = float(out)
        if not isinstance(out, (int, float)) or not math.isfinite(out):
            return failed(f"return a finite number (bits per dimension), got {out!r}")
        if math.isclose(out, expected, rel_tol=1e-6, abs_tol=1e-6):
            continue
        dim = x_train[0].numel()
        shape = tuple(x_test.shape[1:])
        x = x_test.reshape(x_test.shape[0], dim).double()
        pre = EBFlow([Dense(dim)], preprocessing=image_preprocessing(
            levels, alpha=alpha, eps=eps, event_shape=(dim,))).double()
        logdet_bits = float(pre.preprocess_with_logdet(x)[1].mean()) / (dim * math.log(2.0))
        hints = {
            "that is the bits/dim of the preprocessed (logit-space) variable: add the "
            "preprocessing log-det back, log p(x) = log N(z) + log|det J_P(x)|":
                expected + logdet_bits,
            "the log-det of the preprocessing enters with a plus sign in log p(x) (and so "
            "with a minus sign in the NLL)": expected + 2 * logdet_bits,
            "that is the bits/dim on the unit box [0, 1)^D: the rescaling by 1/K adds "
            "-D log K to the log-det, i.e. log2 K bits per dimension":
                expected - math.log2(levels),
            "a diagonal covariance ignores how pixels vary together: fit the full "
            "covariance (1/N) sum (z - mu)(z - mu)^T":
                reference_gaussian_bits_per_dim(x_train, x_test, levels, alpha, eps, True),
        }
        for hint, wrong in hints.items():
            if math.isclose(out, wrong, rel_tol=1e-6, abs_tol=1e-6):
                return failed(hint)
        return failed(f"wrong bits/dim for images of shape {shape}, K={levels}, "
                      f"alpha={alpha}, eps={eps}: expected {expected:.5f}, got {out:.5f}")
    return passed("your Gaussian's bits/dim match the linear EBFlow's exact likelihood.")


# ----------------------------------------------------------------------------- exercise 3

Curve = tuple[Sequence[int], Sequence[float]]


def reference_best_within_budget(curves: Mapping[str, Curve],
                                 batches_per_second: Mapping[str, float],
                                 seconds: float) -> dict[str, float]:
    """The best validation value each method has evaluated within ``seconds`` of training.

    A method running at ``r`` batches per second has done ``r * seconds`` steps; the best
    checkpoint it can offer is the lowest value among its evaluations at steps up to that
    (inf when it has not been evaluated yet).
    """
    out = {}
    for name, (steps, values) in curves.items():
        done = batches_per_second[name] * seconds
        seen = [v for s, v in zip(steps, values, strict=True) if s <= done]
        out[name] = min(seen) if seen else math.inf
    return out


def _budget_cases() -> list[tuple[dict[str, Curve], dict[str, float], float]]:
    """Synthetic curves: a slow method that learns fast per step, fast ones that do not;
    one noisy curve whose last evaluation is not its best."""
    steps = list(range(100, 2001, 100))
    slow = [2.0 + 3.0 / (1 + s / 200) for s in steps]
    fast = [2.1 + 3.0 / (1 + s / 400) for s in steps]
    noisy = [2.05 + 3.0 / (1 + s / 300) + (0.4 if i % 3 == 2 else 0.0)
             for i, s in enumerate(steps)]
    curves = {"ml": (steps, slow), "dsm": (steps, fast), "ssm": (steps, noisy)}
    rates = {"ml": 8.0, "dsm": 66.7, "ssm": 33.1}
    return [(curves, rates, 15.0), (curves, rates, 25.0), (curves, rates, 1.0),
            (curves, rates, 300.0), (curves, {"ml": 0.5, "dsm": 40.0, "ssm": 12.5}, 120.0)]


@checker
def best_within_budget(learner: Callable[..., Mapping[str, float]]) -> CheckResult:
    """Check ``learner(curves, batches_per_second, seconds) -> {method: best value}``."""
    for curves, rates, seconds in _budget_cases():
        expected = reference_best_within_budget(curves, rates, seconds)
        out = learner(curves, dict(rates), seconds)
        if not isinstance(out, Mapping) or set(out) != set(curves):
            return failed(f"return a dict with one entry per method: {sorted(curves)}")
        values = {k: float(v) for k, v in out.items()}
        if all(values[k] == expected[k] or math.isclose(values[k], expected[k], rel_tol=1e-12)
               for k in curves):
            continue
        inverted = reference_best_within_budget(
            curves, {k: 1.0 / r for k, r in rates.items()}, seconds)
        if values == inverted:
            return failed("the steps done in t seconds are t * (batches per second), not "
                          "t / (batches per second)")
        last = {}
        for name, (steps, vals) in curves.items():
            done = [v for s, v in zip(steps, vals, strict=True) if s <= rates[name] * seconds]
            last[name] = done[-1] if done else math.inf
        if values == last and last != expected:
            return failed("the last evaluation is not always the best one: keep the "
                          "checkpoint with the lowest validation value so far")
        return failed(f"wrong values for a budget of {seconds} s: expected "
                      f"{ {k: round(v, 4) for k, v in expected.items()} }, got "
                      f"{ {k: round(v, 4) for k, v in values.items()} }")
    return passed("you read the curves at equal wall-clock time, as the paper's Figure 2(b) "
                  "does.")


__all__ = [
    "BPD_CASES",
    "best_within_budget",
    "bits_per_dim_from_unit_scale",
    "gaussian_bits_per_dim",
    "gaussian_cases",
    "reference_best_within_budget",
    "reference_bits_per_dim",
    "reference_gaussian_bits_per_dim",
]
