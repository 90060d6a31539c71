"""Checkers for the exercises of chapter 8 (stabilizing score matching: MaP and EMA).

Each checker compares a learner's function with an independent computation: the library's
:class:`ebflow_lite.layers.Logit` and autograd, the library's :class:`ebflow_lite.ema.EMA`,
and closed forms for the KL and Fisher divergences between products of Beta densities.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ebflow_lite.ema import EMA
from ebflow_lite.exercises import CheckResult, checker, failed, passed
from ebflow_lite.layers import Logit

# ----------------------------------------------------------------------------- exercise 1


def _logit_cases() -> list[tuple[torch.Tensor, float, float]]:
    gen = torch.Generator().manual_seed(8)
    x = torch.rand(32, 5, generator=gen, dtype=torch.float64)
    x[0, 0], x[1, 1], x[2, 2] = 0.0, 1.0, 1e-9  # the ends of the interval
    return [(x, 1.0, 1e-6), (x, 0.5, 0.05), (x, 0.75, 0.0), (x[:, :2], 2.0, 0.1)]


@checker
def logit_logdet(learner: Callable[[torch.Tensor, float, float], torch.Tensor]) -> CheckResult:
    """Check ``learner(x, alpha, eps) -> (B,)`` against ``Logit(alpha, eps)`` and autograd."""
    for x, alpha, eps in _logit_cases():
        if eps == 0.0:
            x = x.clamp(1e-6, 1 - 1e-6)  # without a squeeze the ends are infinite
        _, expected = Logit(alpha=alpha, eps=eps)(x)
        # independent check of the reference itself: autograd of the element-wise map
        xg = x.clone().requires_grad_(True)
        y = torch.logit(eps + (1 - 2 * eps) * xg) / alpha
        (slope,) = torch.autograd.grad(y.sum(), xg)
        torch.testing.assert_close(slope.log().sum(1), expected, rtol=1e-9, atol=1e-8)
        out = learner(x.clone(), alpha, eps)
        if not isinstance(out, torch.Tensor):
            return failed(f"return a torch.Tensor, got {type(out).__name__}")
        if out.shape != (x.shape[0],):
            return failed(
                f"expected shape ({x.shape[0]},), one log-det per sample, got "
                f"{tuple(out.shape)}: sum log P'(x_d) over the D features"
            )
        out = out.detach().to(torch.float64)
        if torch.allclose(out, expected, rtol=1e-6, atol=1e-6):
            continue
        d = x.shape[1]
        if torch.allclose(out, -expected, rtol=1e-6, atol=1e-6):
            return failed("the sign is flipped: the log-det of the data -> logit map is "
                          "+sum log P'(x), and P' > 0 is large near 0 and 1")
        if eps > 0 and torch.allclose(out, expected - d * math.log(1 - 2 * eps),
                                      rtol=1e-6, atol=1e-6):
            return failed("the squeeze p = eps + (1 - 2 eps) x has derivative (1 - 2 eps): "
                          "add D log(1 - 2 eps)")
        if torch.allclose(out, expected + d * math.log(alpha), rtol=1e-6, atol=1e-6):
            return failed("dividing by alpha contributes -log(alpha) per feature")
        return failed(f"wrong value for alpha={alpha}, eps={eps}: compare with "
                      "sum_d [log(1 - 2 eps) - log(alpha) - log p_d - log(1 - p_d)]")
    return passed("the log-det matches the library's Logit layer and autograd.")


# ----------------------------------------------------------------------------- exercise 2


def _ema_reference(decay: float, steps: int, shapes: list[tuple[int, ...]], seed: int):
    """Yield (params, shadow after the update) from the library EMA on random parameters."""
    gen = torch.Generator().manual_seed(seed)
    module = torch.nn.ParameterList(
        [torch.nn.Parameter(torch.randn(*s, generator=gen, dtype=torch.float64))
         for s in shapes]
    )
    ema = EMA(module, decay=decay, warmup=True)
    for _ in range(steps):
        with torch.no_grad():
            for p in module:
                p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
        ema.update(module)
        yield ([p.detach().clone() for p in module],
               [ema.shadow[name].clone() for name, _ in module.named_parameters()])


def _initial_params(shapes: list[tuple[int, ...]], seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=gen, dtype=torch.float64) for s in shapes]


@checker
def ema_update(learner: Callable[..., list[torch.Tensor]]) -> CheckResult:
    """Check ``learner(shadow, params, step, decay)`` against :class:`ebflow_lite.ema.EMA`."""
    shapes = [(3, 4), (4,)]
    for decay, steps in ((0.999, 40), (0.9, 60)):
        shadow = [p.clone() for p in _initial_params(shapes, seed=5)]
        for step, (params, expected) in enumerate(_ema_reference(decay, steps, shapes, 5)):
            old = [s.clone() for s in shadow]
            out = learner([s.clone() for s in shadow], [p.clone() for p in params], step,
                          decay)
            if not isinstance(out, (list, tuple)) or len(out) != len(shapes):
                return failed("return the list of updated shadow tensors, one per parameter")
            out = [torch.as_tensor(o, dtype=torch.float64) for o in out]
            if all(torch.allclose(o, e, rtol=1e-10, atol=1e-12)
                   for o, e in zip(out, expected, strict=True)):
                shadow = out
                continue

            def blend(m: float, old=old, params=params) -> list[torch.Tensor]:
                return [m * s + (1 - m) * p for s, p in zip(old, params, strict=True)]

            def same(candidate: list[torch.Tensor], out=out) -> bool:
                return all(torch.allclose(o, c, rtol=1e-10, atol=1e-12)
                           for o, c in zip(out, candidate, strict=True))

            m = min(decay, (2 + step) / (11 + step))
            if same(blend(decay)):
                return failed(f"at step={step} you used the constant momentum {decay}; with "
                              "warm-up it is min(decay, (2 + step) / (11 + step))")
            if same(blend(1 - m)):
                return failed("m and 1 - m are swapped: the shadow keeps the fraction m of "
                              "its old value and takes 1 - m of the new parameters")
            if same(blend(min(decay, (1 + step) / (10 + step)))) or same(
                    blend(min(decay, (3 + step) / (12 + step)))):
                return failed("the warm-up is off by one: at step=0 (the first update) the "
                              "momentum is (2 + 0) / (11 + 0) = 2/11")
            return failed(f"wrong shadow at step={step} (decay={decay}): expected "
                          f"m * shadow + (1 - m) * params with m = {m:.6f}")
    return passed("your EMA matches the library's EMA with warm-up at every step.")


# ----------------------------------------------------------------------------- exercise 3

# p and q are products of two Beta densities on the unit square; T is the logit.
P_PARAMS = ((5.0, 9.0), (9.0, 5.0))
Q_PARAMS = ((7.0, 9.0), (9.0, 7.0))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def exact_kl(p=P_PARAMS, q=Q_PARAMS) -> float:
    """``KL(p || q)`` for products of Beta densities (closed form with digamma)."""
    def dig(v: float) -> float:
        return float(torch.special.digamma(torch.tensor(v, dtype=torch.float64)))

    total = 0.0
    for (a, b), (c, d) in zip(p, q, strict=True):
        total += (_log_beta(c, d) - _log_beta(a, b) + (a - c) * dig(a) + (b - d) * dig(b)
                  + (c - a + d - b) * dig(a + b))
    return total


def exact_fisher(p=P_PARAMS, q=Q_PARAMS) -> tuple[float, float]:
    """``(D_F in x, D_F in y = logit(x))`` for products of Betas (closed forms).

    In x the score difference per coordinate is ``c1 / x - c2 / (1 - x)`` with
    ``c1 = a - c``, ``c2 = b - d``; in y it is ``x (1 - x)`` times that,
    ``c1 (1 - x) - c2 x``. The expectations of the squares use Beta moments.
    """
    fx = fy = 0.0
    for (a, b), (c, d) in zip(p, q, strict=True):
        c1, c2, s = a - c, b - d, a + b
        inv_x2 = (s - 1) * (s - 2) / ((a - 1) * (a - 2))
        inv_1mx2 = (s - 1) * (s - 2) / ((b - 1) * (b - 2))
        inv_x1mx = (s - 1) * (s - 2) / ((a - 1) * (b - 1))
        fx += 0.5 * (c1**2 * inv_x2 - 2 * c1 * c2 * inv_x1mx + c2**2 * inv_1mx2)
        ex2 = a * (a + 1) / (s * (s + 1))
        e1mx2 = b * (b + 1) / (s * (s + 1))
        ex1mx = a * b / (s * (s + 1))
        fy += 0.5 * (c1**2 * e1mx2 - 2 * c1 * c2 * ex1mx + c2**2 * ex2)
    return fx, fy


def _per_sample_terms(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Per-sample terms of the four Monte-Carlo estimators (to size the tolerances)."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(np.stack([rng.beta(a, b, n) for a, b in P_PARAMS], 1))
    log_ratio = torch.zeros(n, dtype=torch.float64)
    fx = torch.zeros(n, dtype=torch.float64)
    fy = torch.zeros(n, dtype=torch.float64)
    for j, ((a, b), (c, d)) in enumerate(zip(P_PARAMS, Q_PARAMS, strict=True)):
        xj = x[:, j]
        log_ratio += (-_log_beta(a, b) + _log_beta(c, d) + (a - c) * xj.log()
                      + (b - d) * torch.log1p(-xj))
        diff = (a - c) / xj - (b - d) / (1 - xj)
        fx += 0.5 * diff**2
        fy += 0.5 * (diff * xj * (1 - xj)) ** 2
    return {"kl_x": log_ratio, "kl_y": log_ratio, "fisher_x": fx, "fisher_y": fy}


@checker
def divergences_two_ways(learner: Callable[[int, torch.Generator], dict]) -> CheckResult:
    """Check ``learner(n, generator) -> {kl_x, kl_y, fisher_x, fisher_y}`` (Monte Carlo)."""
    n = 40_000
    out = learner(n, torch.Generator().manual_seed(2024))
    keys = ("kl_x", "kl_y", "fisher_x", "fisher_y")
    if not isinstance(out, dict) or set(out) != set(keys):
        return failed(f"return a dict with the keys {keys}")
    values = {k: float(out[k]) for k in keys}
    if not all(math.isfinite(v) for v in values.values()):
        return failed(f"an estimate is not finite: {values}")
    kl = exact_kl()
    fisher_x, fisher_y = exact_fisher()
    exact = {"kl_x": kl, "kl_y": kl, "fisher_x": fisher_x, "fisher_y": fisher_y}
    spread = {k: float(v.std()) / math.sqrt(n) for k, v in _per_sample_terms(200_000, 7).items()}
    reverse_kl = exact_kl(Q_PARAMS, P_PARAMS)
    for key in keys:
        tolerance = 6.0 * spread[key]
        if abs(values[key] - exact[key]) <= tolerance:
            continue
        if key.startswith("kl") and abs(values[key] - reverse_kl) <= 6 * spread["kl_x"]:
            return failed(f"{key} is close to KL(q || p) = {reverse_kl:.4f}: KL(p || q) "
                          "averages log p - log q over samples from p")
        if key == "kl_y" and abs(values["kl_x"] - kl) <= 6.0 * spread["kl_x"]:
            return failed("kl_x is right but kl_y is not: in logit space both densities "
                          "carry the same Jacobian factor sigma(y)(1 - sigma(y)), which "
                          "cancels in log p_Y - log q_Y; did you add it to only one of them?")
        if key == "fisher_y" and abs(values["fisher_y"] - fisher_x) <= 6.0 * spread["fisher_x"]:
            return failed("fisher_y equals the data-space value: in logit space the score "
                          "difference is multiplied by dx/dy = x (1 - x) (chain rule)")
        return failed(f"{key} = {values[key]:.4f} but the exact value is {exact[key]:.4f} "
                      f"(Monte-Carlo tolerance {tolerance:.4f})")
    return passed(f"KL = {kl:.4f} in both spaces; Fisher {fisher_x:.3f} in x but "
                  f"{fisher_y:.4f} in logit space. Your estimates agree.")


__all__ = [
    "divergences_two_ways",
    "ema_update",
    "exact_fisher",
    "exact_kl",
    "logit_logdet",
]
