"""Checkers for the exercises of chapter 5 (a flow is an energy-based model).

Each checker compares a learner's function with an independent computation: the library's
:class:`ebflow_lite.EBFlow` built from the same parameters, autograd of
``torch.linalg.slogdet``, or the library's SSM objective applied to a shifted energy.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ebflow_lite.exercises import CheckResult, checker, failed, passed
from ebflow_lite.flow import EBFlow
from ebflow_lite.layers import ActNorm, AffineCoupling, Dense, SmoothLeakyReLU

# ----------------------------------------------------------------------------- exercise 1


def split_parameters(dim: int = 3, seed: int = 0) -> dict[str, torch.Tensor | float]:
    """Random parameters of the flow ``Dense_2 o SmoothLeakyReLU o Dense_1 o ActNorm``.

    Keys: ``loc``, ``log_scale`` (ActNorm), ``W1``, ``b1`` (first dense layer), ``alpha``
    (the leaky slope), ``W2``, ``b2`` (second dense layer). Float64.
    """
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return {
        "loc": 0.3 * randn(dim),
        "log_scale": 0.4 * randn(dim),
        "W1": torch.eye(dim, dtype=torch.float64) + 0.5 * randn(dim, dim),
        "b1": 0.5 * randn(dim),
        "alpha": 0.3,
        "W2": -torch.eye(dim, dtype=torch.float64) + 0.5 * randn(dim, dim),
        "b2": 0.5 * randn(dim),
    }


def flow_from_parameters(params: dict) -> EBFlow:
    """The library EBFlow with the given parameters (ActNorm's log-det in log Z)."""
    dim = params["loc"].shape[0]
    actnorm, first, second = ActNorm(dim), Dense(dim), Dense(dim)
    layers = [actnorm, first, SmoothLeakyReLU(float(params["alpha"]), dim=dim), second]
    flow = EBFlow(layers).double().eval()
    with torch.no_grad():
        actnorm.loc.copy_(params["loc"])
        actnorm.log_scale.copy_(params["log_scale"])
        first.weight.copy_(params["W1"])
        first.bias.copy_(params["b1"])  # type: ignore[union-attr]
        second.weight.copy_(params["W2"])
        second.bias.copy_(params["b2"])  # type: ignore[union-attr]
    return flow


@checker
def split(learner: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> CheckResult:
    """Check ``learner(x, params) -> (energy (B,), log_z scalar)`` against ``EBFlow``."""
    for dim, seed in ((2, 0), (3, 1), (5, 2)):
        params = split_parameters(dim, seed)
        x = 1.5 * torch.randn(64, dim, generator=torch.Generator().manual_seed(seed + 10),
                              dtype=torch.float64)
        flow = flow_from_parameters(params)
        with torch.no_grad():
            energy_ref = flow.energy(x)
            log_z_ref = flow.log_z()
            h = params["W1"] @ ((x - params["loc"]) * params["log_scale"].exp()).T
            h = h.T + params["b1"]
            slope = params["alpha"] + (1 - params["alpha"]) * torch.sigmoid(h)
            nonlinear_logdet = slope.log().sum(1)
        out = learner(x.clone(), {k: (v.clone() if torch.is_tensor(v) else v)
                                  for k, v in params.items()})
        if not (isinstance(out, tuple) and len(out) == 2):
            return failed("return a pair (energy, log_z)")
        energy, log_z = (torch.as_tensor(v, dtype=torch.float64).detach() for v in out)
        if energy.shape != (x.shape[0],):
            return failed(f"the energy must have shape (B,) = ({x.shape[0]},), "
                          f"got {tuple(energy.shape)}")
        if log_z.numel() != 1:
            return failed(f"log Z is one number for the whole flow, got shape "
                          f"{tuple(log_z.shape)}")
        log_z = log_z.reshape(())
        tol = 1e-6
        if not torch.allclose(log_z, log_z_ref, atol=tol, rtol=tol):
            if torch.allclose(log_z, -log_z_ref, atol=tol, rtol=tol):
                return failed("the sign of log Z looks flipped: log Z = -(sum of the linear "
                              "layers' log|det|), because p = exp(-E) / Z.")
            actnorm = params["log_scale"].sum()
            if torch.allclose(log_z, log_z_ref + actnorm, atol=tol, rtol=tol):
                return failed("ActNorm is linear (constant Jacobian): its log-det, the sum "
                              "of log_scale, belongs in log Z as -sum(log_scale).")
            return failed(f"log Z = {log_z.item():.6f}, expected {log_z_ref.item():.6f}: "
                          "sum -log|det| over ActNorm and the two dense layers.")
        if torch.allclose(energy, energy_ref, atol=tol, rtol=tol):
            continue
        diff = energy - energy_ref
        if torch.allclose(diff, log_z_ref.expand_as(diff), atol=tol, rtol=tol):
            return failed("your energy is -log p(x): it still contains the linear layers' "
                          "log-dets. Those belong to log Z, not to E.")
        if torch.allclose(diff, nonlinear_logdet, atol=tol, rtol=tol):
            return failed("the smooth leaky ReLU's log-det is missing from the energy: "
                          "E = -log p_u(u) - sum log f'(h), with h the input of f.")
        if torch.allclose(diff, -nonlinear_logdet, atol=tol, rtol=tol):
            return failed("the non-linear log-det has the wrong sign: it is subtracted, "
                          "E = -log p_u(u) - sum log f'(h).")
        const = 0.5 * dim * math.log(2 * math.pi)
        if torch.allclose(diff.abs(), torch.full_like(diff, const), atol=tol, rtol=tol):
            return failed("the energy is off by the prior's constant (D/2) log(2 pi): "
                          "-log N(u; 0, I) = ||u||^2 / 2 + (D/2) log(2 pi).")
        return failed(f"the energy differs from EBFlow.energy by up to "
                      f"{diff.abs().max().item():.3g} (D={dim}).")
    return passed("E(x) and log Z match EBFlow.energy and EBFlow.log_z for D = 2, 3, 5.")


# ----------------------------------------------------------------------------- exercise 2
@checker
def logdet_gradient(learner: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``learner(W) -> grad_W log|det W|`` (without autograd) against autograd."""
    gen = torch.Generator().manual_seed(5)
    for size in (1, 2, 4, 7):
        for flip in (False, True):  # a positive and a negative determinant
            W = torch.randn(size, size, generator=gen, dtype=torch.float64)
            W = W + size**0.5 * torch.eye(size, dtype=torch.float64)
            if flip:
                W[0] = -W[0]
            leaf = W.clone().requires_grad_(True)
            (expected,) = torch.autograd.grad(torch.linalg.slogdet(leaf).logabsdet, leaf)
            with torch.no_grad():
                got = learner(W.clone())
            if not isinstance(got, torch.Tensor):
                return failed(f"return a tensor, got {type(got).__name__}")
            got = got.detach().to(torch.float64)
            if got.shape != W.shape:
                return failed(f"the gradient has the shape of W {tuple(W.shape)}, "
                              f"got {tuple(got.shape)}")
            if torch.allclose(got, expected, atol=1e-8, rtol=1e-6):
                continue
            if torch.allclose(got, expected.T, atol=1e-8, rtol=1e-6):
                return failed("you returned W^{-1}; the gradient is its transpose W^{-T} "
                              "(d log|det W| = tr(W^{-1} dW) = <W^{-T}, dW>).")
            if torch.allclose(got, -expected, atol=1e-8, rtol=1e-6):
                return failed("the sign is flipped: log|det W| grows along W^{-T}.")
            det = torch.linalg.det(W)
            if torch.allclose(got, expected * det, atol=1e-8, rtol=1e-6):
                return failed("that is the gradient of det W (the adjugate transposed); "
                              "divide by det W for the gradient of log|det W|.")
            if torch.allclose(got, expected * det.abs(), atol=1e-8, rtol=1e-6):
                return failed("that is the gradient of |det W|; divide by |det W| for the "
                              "gradient of log|det W|.")
            return failed(f"for a {size}x{size} W (det {det.item():+.3g}) the result differs "
                          "from autograd's gradient of log|det W|.")
    return passed("grad log|det W| = W^{-T} for sizes 1 to 7 and both signs of det W.")


# ----------------------------------------------------------------------------- exercise 3
def shift_flow(seed: int = 0) -> EBFlow:
    """A small float64 flow (dense, coupling, ActNorm) for exercise 3."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [Dense(2, init="orthogonal"), AffineCoupling(2, hidden=8, parity=0),
                  ActNorm(2), Dense(2, init="orthogonal"), AffineCoupling(2, hidden=8, parity=1)]
        flow = EBFlow(layers).double().eval()
        with torch.no_grad():
            for p in flow.parameters():
                p.add_(0.2 * torch.randn_like(p))
    return flow


def log_z_shift(flow: EBFlow, x: torch.Tensor) -> torch.Tensor:
    """c(theta) = log Z(theta): the energy becomes -log p(x)."""
    return flow.log_z()


def parameter_norm_shift(flow: EBFlow, x: torch.Tensor) -> torch.Tensor:
    """c(theta) = 0.1 * sum of squared parameters: x-independent."""
    return 0.1 * sum((p**2).sum() for p in flow.parameters())


def quadratic_shift(flow: EBFlow, x: torch.Tensor) -> torch.Tensor:
    """c(x, theta) = 0.5 ||W_1 x||^2 with W_1 the first dense weight: depends on x."""
    weight = flow.layers[0].weight
    return 0.5 * ((x @ weight.T) ** 2).sum(1)


class _ShiftedEnergy(nn.Module):
    def __init__(self, flow: EBFlow, shift: Callable) -> None:
        super().__init__()
        self.flow = flow
        self.shift = shift

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow.energy(x) + self.shift(self.flow, x)


def _reference_change(flow: EBFlow, x: torch.Tensor, shift: Callable, seed: int) -> float:
    from ebflow_lite import objectives

    params = list(flow.parameters())
    grads = []
    for model in (flow, _ShiftedEnergy(flow, shift)):
        torch.manual_seed(seed)
        loss = objectives.ssm(model, x, n_slices=1)
        found = torch.autograd.grad(loss, params, allow_unused=True)
        grads.append([torch.zeros_like(p) if g is None else g
                      for p, g in zip(params, found, strict=True)])
    return max((a - b).abs().max().item() for a, b in zip(*grads, strict=True))


@checker
def gradient_change(learner: Callable[..., float]) -> CheckResult:
    """Check ``learner(flow, x, shift, seed) -> max |change of the SSM parameter gradient|``."""
    flow = shift_flow(0)
    x = 1.5 * torch.randn(128, 2, generator=torch.Generator().manual_seed(2),
                          dtype=torch.float64)
    results = {}
    for shift in (log_z_shift, parameter_norm_shift, quadratic_shift):
        value = learner(flow, x.clone(), shift, 3)
        value = float(value.item() if isinstance(value, torch.Tensor) else value)
        if not math.isfinite(value) or value < 0:
            return failed(f"return a non-negative number (a max of absolute values), got {value}")
        results[shift.__name__] = value
    expected = _reference_change(flow, x, quadratic_shift, 3)
    got = results["quadratic_shift"]
    if got < 1e-3 * expected:
        return failed("your function reports (almost) no change even for the x-dependent "
                      "shift 0.5 ||W x||^2: add the shift to the energy *before* the objective "
                      "takes gradients in x, and compare the gradients w.r.t. the parameters.")
    if abs(got - expected) > 1e-4 * expected:
        return failed(f"for the x-dependent shift you report {got:.4g}, the reference gives "
                      f"{expected:.4g}: call torch.manual_seed(seed) right before each SSM "
                      "evaluation so both losses see the same projections.")
    for name in ("log_z_shift", "parameter_norm_shift"):
        if results[name] > 1e-8 * max(1.0, expected):
            return failed(f"for the x-independent {name} you report a change of "
                          f"{results[name]:.3g}; it should vanish: make sure both losses "
                          "use the same batch and the same random projections.")
    return passed(f"x-independent shifts leave the SSM gradient unchanged (changes "
                  f"{results['log_z_shift']:.1e}, {results['parameter_norm_shift']:.1e}); the "
                  f"x-dependent one changes it by {got:.3g}.")


__all__ = [
    "flow_from_parameters",
    "gradient_change",
    "log_z_shift",
    "logdet_gradient",
    "parameter_norm_shift",
    "quadratic_shift",
    "shift_flow",
    "split",
    "split_parameters",
]
