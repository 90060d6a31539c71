"""Reference solutions for the exercises of chapter 7 (the price of a determinant)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

from ebflow_lite.experiments import bench

# One unit: a (B x D) @ (D x D) product, or a (D x B) @ (B x D) weight gradient.
_UNITS = {
    "ml": 2 + 3,            # forward; dW2, dh, dW1 (x is a constant)
    "dsm": 2 + 2 + 7,       # forward; score; four product nodes x two gradients, minus dx
    "ssm": 2 + 2 + 4 + 14,  # forward; score; HVP; eight nodes x two, minus dx and dv
    "fdssm": 3 * 2 + 3 * 3,  # forward on 3B rows; dW1, dh, dW2 on 3B rows
}


def matmul_flops(objective: str, dim: int, batch_size: int) -> float:
    """Matrix-product flops of one training step of the FC model (two dense layers)."""
    return _UNITS[objective] * 2.0 * batch_size * dim**2


def median_step_time(
    step: Callable[[], object], repeats: int = 5, warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median seconds of ``repeats`` calls of ``step`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = clock()
        step()
        times.append(clock() - start)
    return statistics.median(times)


def find_crossover(dims: list[int], sm: str = "dsm", repeats: int = 3) -> dict:
    """Time ML and a score-matching objective at ``dims``; locate where SM becomes cheaper."""
    dims = sorted(dims)
    ml_times, sm_times = [], []
    for d in dims:
        ml_times.append(median_step_time(bench.make_training_step("ml", d), repeats, 1))
        sm_times.append(median_step_time(bench.make_training_step(sm, d), repeats, 1))
    log_ratio = [math.log(s / m) for s, m in zip(sm_times, ml_times, strict=True)]
    if log_ratio[-1] >= 0:
        crossing = None                      # not cheaper at the largest size
    elif all(r < 0 for r in log_ratio):
        crossing = float(dims[0])            # cheaper everywhere
    else:
        i = max(k for k in range(len(dims)) if log_ratio[k] >= 0)
        frac = log_ratio[i] / (log_ratio[i] - log_ratio[i + 1])
        crossing = math.exp(math.log(dims[i]) + frac * math.log(dims[i + 1] / dims[i]))
    return {"dims": dims, "ml": ml_times, "sm": sm_times, "crossover": crossing}
