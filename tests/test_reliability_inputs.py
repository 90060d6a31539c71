"""Reliability of the public entry points (issue #13): every bad argument gives a clear
ValueError (a TypeError too for a wrong type) that names the function and the argument, never
a deep torch error, a silent wrong number or a hang; and nothing relies on ``assert``. One
table of cases per kind."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ebflow_lite import EMA, EBFlow, fit, metrics, objectives, sampling
from ebflow_lite.data import toy
from ebflow_lite.layers import (
    Affine,
    AffineCoupling,
    Dense,
    LinearFlowLayer,
    Logit,
    LUDense,
    SmoothLeakyReLU,
    mlp_conditioner,
)
from ebflow_lite.training import BatchStream, TrainingDiverged
from ebflow_lite.validation import ArgumentTypeError

ROOT = Path(__file__).resolve().parents[1]


def flow() -> EBFlow:
    return EBFlow([Dense(2, init="orthogonal"), SmoothLeakyReLU(dim=2), Dense(2)])


def batch(n: int = 16) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0))


class PlainEnergy(nn.Module):
    """An energy network without log_prob, event shape or preprocessing."""

    def __init__(self, reduce: str = "per_sample") -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))
        self.reduce = reduce

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        per_entry = (x * self.w) ** 2
        if self.reduce == "scalar":
            return per_entry.sum()
        if self.reduce == "column":
            return per_entry.sum(1, keepdim=True)
        return per_entry.flatten(1).sum(1)


def poisoned(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    return model


# ---------------------------------------------------------------------------- kind 1
# Silent wrong results: each case checks the right error or the right number.
def _quiet_fit(**kwargs):
    return fit(flow(), objectives.ml, batch(), progress=False, **kwargs)


def _log_z_follows_a_buffer() -> None:
    class Scaled(LinearFlowLayer):
        """``y = s x`` with the factor in a buffer."""

        def __init__(self) -> None:
            super().__init__()
            self.event_shape = (2,)
            self.register_buffer("factor", torch.tensor(2.0))

        def linear_map(self, x):
            return x * self.factor

        def inverse(self, y):
            return y / self.factor

        def logabsdet(self, event_shape=None):
            return 2 * self.factor.abs().log()

    model = EBFlow([Scaled(), Dense(2)])
    with torch.no_grad():
        assert float(model.log_z()) == pytest.approx(-2 * math.log(2.0))
        model.layers[0].factor.fill_(4.0)
        assert float(model.log_z()) == pytest.approx(-2 * math.log(4.0))


def _log_z_follows_a_plain_attribute() -> None:
    model = EBFlow([Affine(2.0, dim=2), Dense(2)])
    with torch.no_grad():
        assert float(model.log_z()) == pytest.approx(-2 * math.log(2.0))
        model.layers[0].scale = 4.0
        assert float(model.log_z()) == pytest.approx(-2 * math.log(4.0))


def _log_z_follows_lu_buffers() -> None:
    model = EBFlow([LUDense(2)])
    with torch.no_grad():
        first = model.log_z()
        assert model._cache_is_valid(*model._log_z_key())
        model.layers[0].sign.mul_(-1.0)  # a buffer, not a parameter
        assert not model._cache_is_valid(*model._log_z_key())
        torch.testing.assert_close(model.log_z(), first)  # |det| does not see the sign


def _log_z_returns_a_copy() -> None:
    model = flow()
    with torch.no_grad():
        value = model.log_z()
        value.add_(100.0)
        torch.testing.assert_close(model.log_z(), value - 100.0)


def _singular_dense_warns() -> None:
    model = flow()
    with torch.no_grad():
        model.layers[0].weight.zero_()
    with pytest.warns(RuntimeWarning, match=r"log Z is inf: layer 0 \(Dense\).*singular"):
        assert math.isinf(float(model.log_z().detach()))


def _scalar_energy_is_refused(sampler):
    def case() -> None:
        for reduce, shape in (("scalar", r"\(\)"), ("column", r"\(16, 1\)")):
            with pytest.raises(ValueError, match=rf"shape \(16,\), one value per sample, got "
                                                 rf"{shape}"):
                run_sampler(sampler, PlainEnergy(reduce), batch(), 1)
    return case


def run_sampler(name: str, model, x0, n_steps, **kwargs):
    size = {"langevin": 0.1, "mala": 0.1, "metropolis_hastings": 0.3}[name]
    return getattr(sampling, name)(model, x0, size, n_steps, **kwargs)


def _mh_without_steps() -> None:
    assert sampling.metropolis_hastings(flow(), batch(), 0.3, 0).acceptance_rate is None
    assert sampling.mala(flow(), batch(), 0.1, 0).acceptance_rate is None


def _student_t_tails() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for p, df in ((0.9999, 1), (0.999, 1), (0.9995, 2), (0.975, 2), (0.99, 500)):
        assert metrics.student_t_quantile(p, df) == pytest.approx(
            scipy_stats.t.ppf(p, df), rel=1e-9)
    assert metrics.student_t_quantile(0.9999, 1) == pytest.approx(3183.0988, rel=1e-6)


def _diverging_langevin() -> None:
    with pytest.raises(ValueError, match="langevin: 16 of 16 chains ended NaN or inf.*"
                                         "step_size=1e"):
        sampling.langevin(PlainEnergy(), batch(), 1e30, 20)
    with pytest.raises(ValueError, match="chains became NaN or inf before step"):
        sampling.langevin(flow(), batch(), 1e30, 20)


def _nan_parameters_mid_training() -> None:
    model = flow()

    def poison(step: int, loss: float) -> None:
        if step == 2:
            poisoned(model)

    for objective in (objectives.sml, objectives.ml, objectives.ssm):
        with warnings.catch_warnings(), pytest.raises(
                TrainingDiverged, match=r"diverged at step 2: the model's parameters contain "
                                        r"NaN.*layers\.0\.weight"):
            warnings.simplefilter("ignore", RuntimeWarning)  # ML also warns: log Z is NaN
            fit(model, objective, batch(), steps=6, progress=False, callback=poison)
        model = flow()


def _blame_the_real_cause() -> None:
    with pytest.raises(ValueError, match=r"EBFlow\.sample: the model's parameters contain NaN"):
        poisoned(flow()).sample(3)
    with pytest.raises(ValueError, match=r"temperature=1e\+39 is too large"):
        flow().sample(3, temperature=1e39)
    with pytest.raises(ValueError, match="mala: the model's parameters contain NaN"):
        sampling.mala(poisoned(flow()), batch(), 0.1, 3)
    with pytest.raises(ValueError, match="nll: the model's parameters contain NaN"):
        metrics.nll(poisoned(flow()), batch())
    with pytest.raises(ValueError, match="metropolis_hastings: the model's parameters"):
        sampling.metropolis_hastings(poisoned(PlainEnergy()), batch(), 0.3, 3)
    far = torch.full((16, 2), 1e30)  # finite, but its energy overflows
    with pytest.raises(ValueError, match="metropolis_hastings: the energy is NaN or inf at 16 "
                                         "of 16 starting points"):
        sampling.metropolis_hastings(PlainEnergy(), far, 0.3, 3)


def _nan_data_in_fit() -> None:
    data = batch()
    data[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"fit: data: input contains NaN or inf \(1 of 32"):
        fit(flow(), objectives.ml, data, steps=2, progress=False)


# (call, the error that replaces the silent wrong result)
SILENT = {
    "fit grad_clip=-1 (was gradient ascent)": (
        lambda: _quiet_fit(steps=2, grad_clip=-1),
        "fit: grad_clip must be positive and finite, got -1"),
    "fit steps=2.5 (ran 3 steps)": (lambda: _quiet_fit(steps=2.5),
                                    "fit: steps must be an int >= 0, got 2.5"),
    "fit steps=nan (ran none)": (lambda: _quiet_fit(steps=math.nan),
                                 "fit: steps must be an int >= 0, got nan"),
    "fit steps=inf (never returned)": (lambda: _quiet_fit(steps=math.inf),
                                       "fit: steps must be an int >= 0, got inf"),
    "fit batch_size=2.5 (drew batches of 2)": (lambda: _quiet_fit(steps=1, batch_size=2.5),
                                               "fit: batch_size must be an int >= 1"),
    "fit checkpoint_every=nan (never saved)": (
        lambda: _quiet_fit(steps=1, checkpoint_every=math.nan),
        "fit: checkpoint_every must be an int >= 1, got nan"),
    "fit with another model's optimizer (trained nothing)": (
        lambda: _quiet_fit(steps=1, optimizer=torch.optim.SGD(flow().parameters(), lr=0.1)),
        "the optimizer holds none of the model's trainable parameters"),
    "ml on an empty batch (was NaN)": (lambda: objectives.ml(flow(), torch.zeros(0, 2)),
                                       r"ml: the batch is empty \(shape \(0, 2\)\)"),
    "sml with empty negatives (was NaN)": (
        lambda: objectives.sml(flow(), batch(), negatives=torch.zeros(0, 2)),
        "sml negatives: the batch is empty"),
    "dsm on samples without entries (was NaN)": (
        lambda: objectives.dsm(PlainEnergy(), torch.zeros(4, 0)),
        "dsm: every sample has zero entries"),
    "Logit(alpha=nan)": (lambda: Logit(alpha=math.nan), "Logit: alpha must be a finite number"),
    "bits_per_dim(dim=2.5)": (lambda: metrics.bits_per_dim(1.0, 2.5),
                              "bits_per_dim: dim must be an int >= 1, got 2.5"),
    "EMA.load_state_dict with other shapes (loaded them)": (
        lambda: (lambda e: e.load_state_dict(
            {**e.state_dict(), "shadow": {k: torch.zeros(7) for k in e.shadow}}))(EMA(flow())),
        "differ from the tracked in shape"),
    "toy sample with an integer dtype (rounded the points)": (
        lambda: toy("gaussian").sample(3, dtype=torch.int64),
        "gaussian: dtype must be a floating torch.dtype"),
    "toy gaussian with a NaN covariance (blamed symmetry)": (
        lambda: toy("gaussian", cov=((math.nan, 0), (0, 1))), "mean and cov must be finite"),
}
SILENT_RIGHT = {
    "log Z follows a buffer": _log_z_follows_a_buffer,
    "log Z follows a plain attribute (Affine's scale)": _log_z_follows_a_plain_attribute,
    "log Z's cache key holds LUDense's buffers": _log_z_follows_lu_buffers,
    "log_z() returns a copy": _log_z_returns_a_copy,
    "a singular Dense warns that log Z is inf": _singular_dense_warns,
    "langevin refuses a scalar or (B, 1) energy": _scalar_energy_is_refused("langevin"),
    "mala refuses a scalar or (B, 1) energy": _scalar_energy_is_refused("mala"),
    "MH refuses a scalar or (B, 1) energy": _scalar_energy_is_refused("metropolis_hastings"),
    "MH and MALA with 0 steps report no acceptance rate": _mh_without_steps,
    "student_t_quantile is right in the tails (df=1)": _student_t_tails,
    "a diverging Langevin chain is reported": _diverging_langevin,
    "NaN parameters mid-training stop fit, naming them": _nan_parameters_mid_training,
    "errors blame the parameters or the temperature": _blame_the_real_cause,
    "NaN data in fit is counted": _nan_data_in_fit,
}


@pytest.mark.parametrize("case", list(SILENT) + list(SILENT_RIGHT),
                         ids=list(SILENT) + list(SILENT_RIGHT))
def test_silent_wrong_results_are_gone(case: str) -> None:
    if case in SILENT_RIGHT:
        SILENT_RIGHT[case]()
        return
    call, pattern = SILENT[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may pass with a mere warning either
        with pytest.raises(ValueError, match=pattern):
            call()


# ---------------------------------------------------------------------------- kind 2
# Obscure errors: (call, exception, pattern that names the place, the argument and the value)
T, V = ArgumentTypeError, ValueError
OBSCURE = {
    "fit steps='3'": (lambda: _quiet_fit(steps="3"), T, r"fit: steps must be an int >= 0, "
                                                       r"got '3'"),
    "fit lr=nan": (lambda: _quiet_fit(steps=1, lr=math.nan), V, "fit: lr must be positive"),
    "fit model=None": (lambda: fit(None, objectives.ml, batch(), 1), T,
                       "fit: model must be a torch.nn.Module, got NoneType"),
    "fit objective=None": (lambda: fit(flow(), None, batch(), 1), T,
                           "fit: objective must be callable"),
    "fit callback=3": (lambda: _quiet_fit(steps=1, callback=3), T,
                       "fit: callback must be callable"),
    "fit ema=object()": (lambda: _quiet_fit(steps=1, ema=object()), T,
                         r"fit: ema must have a update\(model\) method"),
    "fit optimizer='adam'": (lambda: _quiet_fit(steps=1, optimizer="adam"), T,
                             "fit: optimizer must be a torch.optim.Optimizer"),
    "fit data as NumPy": (lambda: fit(flow(), objectives.ml, batch().numpy(), 1), T,
                          r"fit: data must be a torch.Tensor, got ndarray; convert"),
    "fit integer data": (lambda: fit(flow(), objectives.ml, batch().long(), 1), V,
                         "fit: data: expected a floating-point tensor"),
    "fit data of another width": (lambda: fit(flow(), objectives.ml, torch.randn(8, 3), 1),
                                  V, "fit: data: expected feature dimension 2"),
    "fit empty data": (lambda: fit(flow(), objectives.ml, torch.zeros(0, 2), 1), V,
                       "fit: data is empty"),
    "fit a model without parameters": (lambda: fit(EBFlow([SmoothLeakyReLU(dim=2)]),
                                                   objectives.ml, batch(), 1), V,
                                       "fit: the model has no trainable parameters"),
    "fit a vector loss": (lambda: fit(flow(), lambda m, x: -m.log_prob(x), batch(), 1,
                                      progress=False), V,
                          r"objective must return a scalar tensor, got a tensor of shape"),
    "fit a float loss": (lambda: fit(flow(), lambda m, x: 1.0, batch(), 1, progress=False), V,
                         "objective must return a scalar tensor, got float"),
    "fit a loss without gradient": (lambda: fit(flow(), lambda m, x: torch.tensor(1.0),
                                                batch(), 1, progress=False), V,
                                    "does not depend on the parameters"),
    "BatchStream generator=0": (lambda: BatchStream(batch(), 4, generator=0), T,
                                "BatchStream: generator must be a torch.Generator"),
    "BatchStream batch_size=2.5": (lambda: BatchStream(batch(), 2.5), T,
                                   "batch_size must be a positive int, got 2.5"),
    "ml with a model without log_prob": (lambda: objectives.ml(PlainEnergy(), batch()), T,
                                         r"ml: the model must have a log_prob\(x\)"),
    "ml on a list": (lambda: objectives.ml(flow(), [[1.0, 2.0]]), V,
                     "ml: expected a torch.Tensor, got list"),
    "ssm on an empty batch": (lambda: objectives.ssm(flow(), torch.zeros(0, 2)), V,
                              r"ssm: the batch is empty \(shape \(0, 2\)\)"),
    "exact_sm without entries": (lambda: objectives.exact_sm(PlainEnergy(), torch.zeros(4, 0)),
                                 V, "exact_sm: every sample has zero entries"),
    "ssm generator=0": (lambda: objectives.ssm(flow(), batch(), generator=0), T,
                        "ssm: generator must be a torch.Generator or None, got int"),
    "fdssm n_slices=1.5": (lambda: objectives.fdssm(flow(), batch(), n_slices=1.5), T,
                           "fdssm: n_slices must be an int >= 1, got 1.5"),
    "get([...])": (lambda: objectives.get(["ml"]), V, r"unknown objective \['ml'\]"),
    "sample(2.5)": (lambda: flow().sample(2.5), T, "n must be an int or a tuple of ints"),
    "sample generator=0": (lambda: flow().sample(3, generator=0), T,
                           "EBFlow.sample: generator must be a torch.Generator"),
    "EBFlow(None)": (lambda: EBFlow(None), T, "EBFlow: layers must be a list of layers"),
    "energy of a list": (lambda: flow().energy([[1.0, 2.0]]), V,
                         "EBFlow: expected a torch.Tensor, got list"),
    "langevin generator=0 with 0 steps": (lambda: run_sampler("langevin", flow(), batch(), 0,
                                                              generator=0), T,
                                          "langevin: generator must be a torch.Generator"),
    "langevin n_steps=2.0": (lambda: run_sampler("langevin", flow(), batch(), 2.0), T,
                             "langevin: n_steps must be an int >= 0, got 2.0"),
    "mala on empty chains": (lambda: run_sampler("mala", flow(), torch.zeros(0, 2), 3), V,
                             r"mala: x0: the batch is empty"),
    "MH x0 on another device": (lambda: run_sampler("metropolis_hastings", PlainEnergy(),
                                                    torch.zeros(3, 2, device="meta"), 3),
                                V, "input is on meta but the parameters are on cpu"),
    "nll batch_size=2.5": (lambda: metrics.nll(flow(), batch(), batch_size=2.5), T,
                           "nll: batch_size must be an int >= 1, got 2.5"),
    "nll on an empty batch (was ZeroDivisionError)": (lambda: metrics.nll(flow(),
                                                                          torch.zeros(0, 2)),
                                                      V, "nll: the batch is empty"),
    "nll with a model without log_prob": (lambda: metrics.nll(PlainEnergy(), batch()), T,
                                          r"nll: the model must have a log_prob\(x\)"),
    "bits_per_dim nll_nats='a'": (lambda: metrics.bits_per_dim("a", 2), T,
                                  "bits_per_dim: nll_nats must be a number, got str"),
    "kl_divergence n=nan": (lambda: metrics.kl_divergence(toy("gaussian"), flow(), n=math.nan),
                            T, "kl_divergence: n must be an int >= 1, got nan"),
    "kl_divergence generator=0": (lambda: metrics.kl_divergence(toy("gaussian"), flow(), 10,
                                                                generator=0), T,
                                  "kl_divergence: generator must be a torch.Generator"),
    "kl_divergence without log_prob": (lambda: metrics.kl_divergence(toy("gaussian"),
                                                                     PlainEnergy(), 10), T,
                                       r"kl_divergence: the model must have a log_prob\(x\)"),
    "fisher_divergence n=2.5": (lambda: metrics.fisher_divergence(toy("gaussian"), flow(),
                                                                  2.5), T,
                                "fisher_divergence: n must be an int >= 1, got 2.5"),
    "student_t_quantile p=nan": (lambda: metrics.student_t_quantile(math.nan, 3), V,
                                 "student_t_quantile: p must be finite, got nan"),
    "student_t_quantile df=0": (lambda: metrics.student_t_quantile(0.9, 0), V,
                                r"student_t_quantile: df must lie in \(0, inf\), got 0"),
    "mean_confidence_interval(3.0)": (lambda: metrics.mean_confidence_interval(3.0), T,
                                      "values must be a sequence of numbers, got float"),
    "EMA decay='0.9'": (lambda: EMA(flow(), decay="0.9"), T,
                        "EMA: decay must be a number, got str"),
    "EMA(None)": (lambda: EMA(None), T, "EMA: model must be a torch.nn.Module, got NoneType"),
    "EMA.load_state_dict(None)": (lambda: EMA(flow()).load_state_dict(None), T,
                                  "EMA.load_state_dict: expected a dict, got NoneType"),
    "AffineCoupling(None) (was an assert)": (lambda: AffineCoupling(None), V,
                                             "AffineCoupling: event_shape must be"),
    "AffineCoupling scale_bound='2'": (lambda: AffineCoupling(2, scale_bound="2"), T,
                                       "AffineCoupling: scale_bound must be a number, got str"),
    "AffineCoupling mask='x'": (lambda: AffineCoupling(2, mask="x"), V,
                                "unknown mask 'x'; expected one of"),
    "mlp_conditioner hidden=2.5": (lambda: mlp_conditioner(2, 2, hidden=2.5), T,
                                   "mlp_conditioner: hidden must be an int >= 1, got 2.5"),
    "toy([])": (lambda: toy([]), V, r"unknown toy density \[\]"),
    "toy rings radii=3": (lambda: toy("rings", radii=3), V,
                          "radii must be a non-empty tuple of positive numbers, got 3"),
    "toy sample generator=0": (lambda: toy("sine").sample(3, generator=0), T,
                               "sine.sample: generator must be a torch.Generator"),
}


@pytest.mark.parametrize("case", list(OBSCURE), ids=list(OBSCURE))
def test_bad_argument_gives_a_clear_error(case: str) -> None:
    call, kind, pattern = OBSCURE[case]
    with pytest.raises(kind, match=pattern) as caught:
        call()
    assert isinstance(caught.value, ValueError)
    if kind is ArgumentTypeError:
        assert isinstance(caught.value, TypeError)


def test_integer_and_real_numpy_scalars_are_accepted() -> None:
    model = EBFlow([Dense(np.int64(2)), SmoothLeakyReLU(dim=np.int32(2)), Dense(2)])
    assert model.layers[0].event_shape == (2,) and type(model.layers[0].event_shape[0]) is int
    assert model.sample(np.int64(3), temperature=np.float32(0.5)).shape == (3, 2)
    assert Affine(np.float32(2.0)).scale == 2.0
    history = fit(model, objectives.ml, batch(), steps=np.int64(2), batch_size=np.int32(8),
                  lr=np.float64(1e-3), progress=False)
    assert history.step == 2
    result = sampling.langevin(model, batch(), np.float32(0.1), np.int64(2))
    assert result.samples.shape == (16, 2)


# ---------------------------------------------------------------------------- no asserts
def test_the_library_does_not_validate_with_assert() -> None:
    found = []
    for path in sorted((ROOT / "ebflow_lite").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
                  if isinstance(node, ast.Assert)]
    assert found == [], f"python -O drops these checks: {found}"


_UNDER_O = r"""
import json, math, warnings
import torch
from ebflow_lite import EBFlow, EMA, fit, metrics, objectives, sampling
from ebflow_lite.layers import AffineCoupling, Dense, SmoothLeakyReLU

model = EBFlow([Dense(2), SmoothLeakyReLU(dim=2), Dense(2)])
x = torch.randn(8, 2)
calls = [
    lambda: fit(model, objectives.ml, x, steps=2.5, progress=False),
    lambda: fit(model, objectives.ml, x, steps=1, grad_clip=-1, progress=False),
    lambda: fit(model, objectives.ml, torch.zeros(0, 2), steps=1, progress=False),
    lambda: AffineCoupling(None),
    lambda: model.sample(0),
    lambda: model.energy(torch.full((2, 2), math.nan)),
    lambda: objectives.ml(model, torch.zeros(0, 2)),
    lambda: sampling.langevin(model, x, -1.0, 3),
    lambda: metrics.nll(model, x, batch_size=0),
    lambda: metrics.student_t_quantile(2.0, 3),
    lambda: EMA(model, decay=1.5),
]
out = []
for call in calls:
    try:
        call()
        out.append("no error")
    except Exception as err:
        out.append(f"{type(err).__name__}: {err}")
print(json.dumps(out))
"""


def test_python_dash_o_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert __debug__  # this process runs with asserts; the child below without (-O)
    exec(compile(_UNDER_O, "<checks>", "exec"), {})
    here = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    done = subprocess.run([sys.executable, "-O", "-c", _UNDER_O], capture_output=True,
                          text=True, cwd=ROOT, timeout=240, check=True)
    optimised = json.loads(done.stdout.strip().splitlines()[-1])
    assert optimised == here
    assert all(result != "no error" and "Error" in result for result in optimised), optimised
