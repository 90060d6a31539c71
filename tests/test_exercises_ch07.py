"""The chapter 7 checkers accept the reference solutions and reject stubs and wrong answers."""

from __future__ import annotations

import statistics
import time

from solutions import ch07 as ref

from ebflow_lite.exercises import ch07 as check


def _stub(*args, **kwargs):
    raise NotImplementedError


# ----------------------------------------------------------------------------- exercise 1
def test_matmul_flops_accepts_the_reference() -> None:
    result = check.matmul_flops(ref.matmul_flops)
    assert result, result


def test_matmul_flops_rejects_a_stub() -> None:
    result = check.matmul_flops(_stub)
    assert not result and "not implemented" in result.message


def test_matmul_flops_hints_at_the_constant_direction() -> None:
    def counts_dv(objective, dim, batch_size):
        extra = 2.0 * batch_size * dim**2 if objective == "ssm" else 0.0
        return ref.matmul_flops(objective, dim, batch_size) + extra

    result = check.matmul_flops(counts_dv)
    assert not result and "constant" in result.message


def test_matmul_flops_hints_at_the_factor_two() -> None:
    def mkn(objective, dim, batch_size):  # forgot the factor 2 of multiply-add
        return ref.matmul_flops(objective, dim, batch_size) / 2

    result = check.matmul_flops(mkn)
    assert not result and "2 B D^2" in result.message


def test_matmul_flops_hints_at_fdssm_rows() -> None:
    def one_batch(objective, dim, batch_size):
        if objective == "fdssm":
            return 5 * 2.0 * batch_size * dim**2
        return ref.matmul_flops(objective, dim, batch_size)

    result = check.matmul_flops(one_batch)
    assert not result and "3B rows" in result.message


# ----------------------------------------------------------------------------- exercise 2
def test_median_step_time_accepts_the_reference() -> None:
    result = check.median_step_time(ref.median_step_time)
    assert result, result


def test_median_step_time_rejects_a_stub() -> None:
    assert not check.median_step_time(_stub)


def test_median_step_time_rejects_the_mean() -> None:
    def mean_time(step, repeats=5, warmup=2, clock=time.perf_counter):
        for _ in range(warmup):
            step()
        start = clock()
        for _ in range(repeats):
            step()
        return (clock() - start) / repeats

    result = check.median_step_time(mean_time)
    assert not result and "mean" in result.message


def test_median_step_time_rejects_timing_the_warmup() -> None:
    def no_warmup(step, repeats=5, warmup=2, clock=time.perf_counter):
        times = []
        for _ in range(warmup + repeats):
            start = clock()
            step()
            times.append(clock() - start)
        return statistics.median(times)

    result = check.median_step_time(no_warmup)
    assert not result and "warm-up" in result.message


def test_median_step_time_rejects_skipping_the_warmup_calls() -> None:
    def forgets_warmup(step, repeats=5, warmup=2, clock=time.perf_counter):
        return ref.median_step_time(step, repeats, 0, clock)

    result = check.median_step_time(forgets_warmup)
    assert not result and "warmup + repeats" in result.message


# ----------------------------------------------------------------------------- exercise 3
DIMS = [8, 16]


def test_crossover_accepts_the_reference() -> None:
    result = check.crossover(lambda dims: ref.find_crossover(dims, repeats=1), dims=DIMS)
    assert result, result


def test_crossover_rejects_a_stub() -> None:
    assert not check.crossover(_stub, dims=DIMS)


def _fixed(ml, sm, crossing, dims=(100, 200, 400, 800)):
    return lambda _dims: {"dims": list(dims), "ml": ml, "sm": sm, "crossover": crossing}


def test_crossover_checks_consistency() -> None:
    dims = [100, 200, 400, 800]
    ml = [1.0, 2.0, 8.0, 50.0]
    sm = [2.0, 4.0, 6.0, 12.0]          # crosses between 200 and 400
    good = check.crossover(_fixed(ml, sm, 300.0), dims=dims)
    # 300 is inside the bracket but far from the log-log interpolation (about 230)
    assert not good and "log-log" in good.message
    import math
    x = math.exp(math.log(200) + (math.log(2.0) / (math.log(2.0) - math.log(0.75)))
                 * math.log(2))
    assert check.crossover(_fixed(ml, sm, x), dims=dims)
    outside = check.crossover(_fixed(ml, sm, 900.0), dims=dims)
    assert not outside and "between D = 200 and D = 400" in outside.message
    never = check.crossover(_fixed(ml, [3.0, 5.0, 9.0, 60.0], 500.0), dims=dims)
    assert not never and "None" in never.message
    negative = check.crossover(_fixed([-1.0, 2.0, 8.0, 50.0], sm, x), dims=dims)
    assert not negative and "positive" in negative.message
    short = check.crossover(_fixed(ml[:3], sm, x), dims=dims)
    assert not short and "3 times for 4 sizes" in short.message
