"""Checkers for the exercises of chapter 7 (the price of a determinant).

The flop count is compared with the operators a real training step dispatches
(:func:`ebflow_lite.experiments.bench.op_census`); the timing
harness runs on a fake clock whose step
durations are known; the crossover explorer's answer is checked for internal consistency
with :func:`ebflow_lite.experiments.bench.crossover`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

from ebflow_lite.config import pick
from ebflow_lite.exercises import CheckResult, checker, failed, passed
from ebflow_lite.experiments import bench

# ----------------------------------------------------------------------------- exercise 1
_FLOP_OBJECTIVES = ("ml", "dsm", "ssm", "fdssm")

_UNIT_HINTS = {
    ("ssm", 24): "SSM: a step asks for the parameters' gradients only: neither the batch x "
                 "nor the constant random direction v gets an input gradient.",
    ("ssm", 23): "SSM: a step asks for the parameters' gradients only: the products whose "
                 "input is the batch x or the constant direction v need a weight gradient only.",
    ("ssm", 16): "SSM: the parameter backward also runs through the four products of the "
                 "Hessian-vector pass, not only through the forward and score products.",
    ("ssm", 19): "SSM: count the parameter backward through every product node, including "
                 "the Hessian-vector pass (14 units in all).",
    ("dsm", 12): "DSM: a step asks for the parameters' gradients only, so the first product, "
                 "whose input is the noisy batch, needs no input gradient.",
    ("dsm", 8): "DSM: the loss depends on the parameters through the score's products too: "
                "their parameter backward costs two units each.",
    ("fdssm", 5): "FDSSM evaluates the energy on 3B rows (x, x + v, x - v) in one batch.",
    ("fdssm", 6): "FDSSM: do not forget the parameter backward through the 3B-row forward pass.",
    ("ml", 4): "ML: backward needs dL/dW_2, dL/dh and dL/dW_1: three units (plus two forward).",
    ("ml", 6): "ML: the data x is a constant, so the first product needs no input gradient.",
}


def _hint_for(name: str, got: float, units_unit: float, expected: float) -> str:
    units = got / units_unit
    if math.isclose(got, 2 * expected, rel_tol=1e-9):
        return (f"{name}: twice the right value. A product of a B x D and a D x D matrix "
                "costs 2 B D^2 flops, counted once.")
    if math.isclose(got, expected / 2, rel_tol=1e-9):
        return (f"{name}: half the right value. Count 2 flops (a multiply and an add) per "
                "term of a matrix product: 2 B D^2 per unit.")
    for (obj, wrong), text in _UNIT_HINTS.items():
        if obj == name and math.isclose(units, wrong, abs_tol=1e-9):
            return text
    if units != int(units) and name == "ml":
        return ("ML: count only the matrix products; the determinant work (slogdet and the "
                "solve in its backward) is separate.")
    return (f"{name}: you return {got:.4g} flops = {units:.2f} units of 2 B D^2; the step "
            f"runs {expected / units_unit:.0f} units. Recount forward, score, "
            "Hessian-vector and parameter-backward products.")


@checker
def matmul_flops(fn: Callable[[str, int, int], float]) -> CheckResult:
    """Check ``fn(objective, dim, batch_size)`` against the operator census of a real step."""
    for dim, batch in ((16, 5), (40, 7)):
        unit = 2.0 * batch * dim**2
        for name in _FLOP_OBJECTIVES:
            got = fn(name, dim, batch)
            if got is None or not isinstance(got, (int, float)) or not math.isfinite(got):
                return failed(f"return a finite number of flops, got {got!r} for {name}")
            expected = bench.op_census(name, dim, batch).matmul_flops
            if not math.isclose(got, expected, rel_tol=1e-9):
                return failed(_hint_for(name, float(got), unit, float(expected)))
    return passed("your counts match the matrix products PyTorch runs (ML 5, DSM 11, SSM 22, "
                  "FDSSM 15 units of 2 B D^2 flops).")


# ----------------------------------------------------------------------------- exercise 2
class FakeClock:
    """A clock that only moves when the fake step advances it by a scripted duration."""

    def __init__(self, durations: list[float]) -> None:
        self.now = 100.0
        self.durations = list(durations)
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        if self.calls >= len(self.durations):
            raise AssertionError(
                f"the step was called more than {len(self.durations)} times: call it "
                "exactly warmup + repeats times")
        self.now += self.durations[self.calls]
        self.calls += 1


_TIMING_CASES = (
    # (warmup, repeats, durations): warm-up steps are slow, one timed step is an outlier.
    (2, 5, [5.0, 3.0, 1.0, 1.4, 9.0, 1.2, 0.8]),
    (1, 4, [7.0, 2.0, 1.0, 4.0, 3.0]),
    (0, 3, [2.0, 6.0, 2.5]),
)


@checker
def median_step_time(fn: Callable[..., float]) -> CheckResult:
    """Check ``fn(step, repeats, warmup, clock)`` on a fake clock with scripted durations."""
    for warmup, repeats, durations in _TIMING_CASES:
        clock = FakeClock(durations)
        got = fn(clock.step, repeats=repeats, warmup=warmup, clock=clock)
        timed = durations[warmup:]
        expected = statistics.median(timed)
        if clock.calls != warmup + repeats:
            return failed(f"with warmup={warmup}, repeats={repeats} the step ran "
                          f"{clock.calls} times; it should run warmup + repeats = "
                          f"{warmup + repeats} times.")
        if not isinstance(got, (int, float)) or not math.isfinite(got):
            return failed(f"return the median time as a float, got {got!r}")
        if math.isclose(got, expected, rel_tol=1e-9):
            continue
        if math.isclose(got, statistics.mean(timed), rel_tol=1e-9):
            return failed("that is the mean of the timed steps: use the median, which "
                          "ignores the occasional slow outlier.")
        if math.isclose(got, statistics.median(durations), rel_tol=1e-9):
            return failed("the warm-up steps are included: time only the steps after the "
                          "warm-up.")
        if math.isclose(got, sum(timed), rel_tol=1e-9):
            return failed("that is the total of the timed steps: return the median of the "
                          "individual step times.")
        return failed(f"with step times {durations} (warm-up {warmup}) the median of the "
                      f"timed steps is {expected}, you returned {got}. Read the clock just "
                      "before and just after each step.")
    return passed("warm-up skipped, each step timed on its own, median returned.")


# ----------------------------------------------------------------------------- exercise 3
def default_crossover_dims() -> list[int]:
    """The sizes the explorer is run at: small in fast mode."""
    return pick(full=[128, 256, 512, 1024, 2048], fast=[16, 32, 64])


@checker
def crossover(fn: Callable[[list[int]], dict], dims: list[int] | None = None) -> CheckResult:
    """Check the learner's timings and crossover for internal consistency."""
    dims = list(dims) if dims is not None else default_crossover_dims()
    answer = fn(dims)
    if not isinstance(answer, dict) or not {"dims", "ml", "sm", "crossover"} <= set(answer):
        return failed('return a dict with keys "dims", "ml", "sm" and "crossover".')
    got_dims = [int(d) for d in answer["dims"]]
    if got_dims != sorted(dims):
        return failed(f'"dims" should be the sizes you timed, in increasing order: '
                      f"{sorted(dims)}, got {got_dims}")
    for key in ("ml", "sm"):
        times = list(answer[key])
        if len(times) != len(got_dims):
            return failed(f'"{key}" has {len(times)} times for {len(got_dims)} sizes.')
        if not all(isinstance(t, (int, float)) and math.isfinite(t) and t > 0 for t in times):
            return failed(f'"{key}" must hold positive, finite seconds per step.')
    result = bench.BenchResult(
        dims=got_dims, objectives=["ml", "sm"], batch_size=0,
        times={"ml": {d: [t] for d, t in zip(got_dims, answer["ml"], strict=True)},
               "sm": {d: [t] for d, t in zip(got_dims, answer["sm"], strict=True)}})
    ref = bench.crossover(result, "sm", "ml")
    value = answer["crossover"]
    if ref.status == "above":
        if value is not None:
            return failed("with these times the score-matching step is not cheaper than ML "
                          "at the largest size, so there is no crossover: return None.")
        return passed("consistent: no crossover within your sizes (try larger D).")
    if ref.status == "below":
        if value is None or not math.isclose(float(value), got_dims[0]):
            return failed("with these times score matching is cheaper at every size: "
                          f"return the smallest size, {got_dims[0]}.")
        return passed(f"consistent: score matching is cheaper already at D = {got_dims[0]}.")
    ratios = [s / m for s, m in zip(answer["sm"], answer["ml"], strict=True)]
    last = max(i for i in range(len(ratios) - 1) if ratios[i] >= 1.0)
    lo, hi = got_dims[last], got_dims[last + 1]
    if value is None or not lo <= float(value) <= hi:
        return failed(f"your times cross (for the last time) between D = {lo} and D = {hi}; "
                      f"the crossover must lie in that interval, got {value}.")
    if not math.isclose(float(value), ref.dim, rel_tol=0.05):
        return failed(f"interpolate in log-log coordinates: the crossover of your times is "
                      f"D ~ {ref.dim:.0f}, you returned {float(value):.0f}.")
    return passed(f"consistent: score matching becomes cheaper than ML at D ~ {ref.dim:.0f} "
                  "on this machine.")


__all__ = ["FakeClock", "crossover", "default_crossover_dims", "matmul_flops",
           "median_step_time"]
