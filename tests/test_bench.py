"""The benchmark harness: operator census, timing, analysis, JSON and the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest
import torch

from ebflow_lite.experiments import bench
from ebflow_lite.experiments.bench import (
    DERIVED_MATMUL_UNITS,
    BenchResult,
    crossover,
    fit_loglog_slope,
    op_census,
    slopes,
    time_callable,
)


@pytest.mark.parametrize("name", bench.OBJECTIVE_NAMES)
def test_census_matches_the_derived_matmul_count(name: str) -> None:
    census = op_census(name, dim=24, batch_size=6)
    assert census.matmul_units == pytest.approx(DERIVED_MATMUL_UNITS[name])
    # Only ML (slogdet and its backward) and SML (solves in the sampler) touch O(D^3).
    assert census.has_cubic == (name in ("ml", "sml"))
    if name == "ml":
        assert census.cubic["_linalg_slogdet"] == 2  # one per dense layer


def test_predicted_crossover_solves_the_flop_model() -> None:
    for name in ("ssm", "dsm", "fdssm"):
        d_star = bench.predicted_crossover(name, batch_size=100)
        ml = bench.predicted_step_flops("ml", d_star)
        assert bench.predicted_step_flops(name, d_star) == pytest.approx(ml)
        assert bench.predicted_step_flops(name, 2 * d_star) < bench.predicted_step_flops(
            "ml", 2 * d_star)
    assert bench.predicted_crossover("ml-lu") == pytest.approx(2 * 100 * 6 / (2 * 8 / 3))
    with pytest.raises(ValueError):
        bench.predicted_crossover("nope")


def test_ssm_costs_about_twice_dsm_in_matrix_products() -> None:
    ratio = DERIVED_MATMUL_UNITS["ssm"] / DERIVED_MATMUL_UNITS["dsm"]
    assert 1.8 < ratio <= 2.0


def test_time_callable_counts_and_caps() -> None:
    calls = []

    def fn() -> None:
        calls.append(1)
        time.sleep(0.01)

    times = time_callable(fn, repeats=3, warmup=2)
    assert len(times) == 3 and len(calls) == 5
    assert all(t >= 0.009 for t in times)
    calls.clear()
    # a slow step: warm-ups stop after one call and the timed calls fit max_seconds.
    slow = time_callable(lambda: time.sleep(0.05), repeats=10, warmup=3, max_seconds=0.12)
    assert len(slow) == 2
    with pytest.raises(ValueError):
        time_callable(fn, repeats=0)


def test_time_training_step_is_positive_and_finite() -> None:
    times = bench.time_training_step("dsm", 16, batch_size=8, repeats=2, warmup=1,
                                     device="cpu")
    assert len(times) == 2 and all(math.isfinite(t) and t > 0 for t in times)


def test_training_step_changes_the_parameters() -> None:
    step = bench.make_training_step("ssm", 8, batch_size=4, device="cpu")
    loss = step()
    assert math.isfinite(loss)
    with pytest.raises(ValueError, match="unknown objective"):
        bench.make_training_step("nope", 8)


def test_loglog_slope_recovers_the_exponent() -> None:
    dims = [64, 128, 512, 4096]
    assert fit_loglog_slope(dims, [3e-7 * d**2.5 for d in dims]) == pytest.approx(2.5)
    with pytest.raises(ValueError):
        fit_loglog_slope([1], [1.0])
    with pytest.raises(ValueError):
        fit_loglog_slope([4, 4], [1.0, 2.0])


def _synthetic() -> BenchResult:
    dims = [100, 200, 400, 800]
    times = {
        "ml": {d: [1e-6 * d**2 + 1e-9 * d**3] for d in dims},
        "ssm": {d: [1e-5 * d**2] for d in dims},       # crosses ml at D = 9000: above
        "dsm": {d: [1.5e-6 * d**2] for d in dims},    # crosses ml at D = 500: within
        "ml-lu": {d: [1e-7 * d**2] for d in dims},    # cheaper everywhere: below
    }
    return BenchResult(dims=dims, objectives=list(times), batch_size=10, times=times)


def test_crossover_and_slopes_on_synthetic_timings() -> None:
    result = _synthetic()
    assert crossover(result, "ml-lu").status == "below"
    assert crossover(result, "ssm").status == "above"
    inside = crossover(result, "dsm")
    assert inside.status == "within"
    assert 400 < inside.dim < 800  # true crossing 500, log-log interpolation between sizes
    k = slopes(result, min_dim=100)
    assert k["ssm"] == pytest.approx(2.0) and 2.0 < k["ml"] < 3.0
    assert slopes(result, min_dim=800)["ssm"] is None


def test_json_round_trip_and_table(tmp_path) -> None:
    result = _synthetic()
    result.matmul_times = {"ssm": {800: [1.0]}}
    result.matmul_units = {"ssm": {800: 23.0}}
    path = tmp_path / "r.json"
    bench.save_result(result, path, min_dim=100)
    back = bench.load_result(path)
    assert back.times == result.times and back.dims == result.dims
    data = json.loads(path.read_text())
    assert data["summary"]["crossover"]["ml-lu"]["status"] == "below"
    assert data["summary"]["step_over_matmul_at_top"]["ssm"] == pytest.approx(6.4)
    table = bench.format_table(result)
    assert table.splitlines()[0].split() == ["D", "ml", "ssm", "dsm", "ml-lu"]


def test_run_benchmark_restores_threads() -> None:
    before = torch.get_num_threads()
    result = bench.run_benchmark([8, 12], ["ml", "fdssm"], batch_size=4, repeats=1,
                                 warmup=0, device="cpu", threads=1, matmul_baseline=True,
                                 progress=False)
    assert torch.get_num_threads() == before
    assert result.machine["torch_threads"] == 1
    assert result.matmul_units["fdssm"][12] == pytest.approx(15)
    with pytest.raises(ValueError, match="unknown objective"):
        bench.run_benchmark([8], ["bogus"])


def test_command_line_writes_json_and_plot(tmp_path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "ebflow_lite.bench", "--sizes", "8", "16", "--objectives",
         "ml", "ssm", "--repeats", "1", "--warmup", "0", "--out", str(out), "--no-progress",
         "--fit-min-dim", "8", "--matmul-baseline"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "bench.json").read_text())
    assert set(data["times"]) == {"ml", "ssm"} and set(data["times"]["ml"]) == {"8", "16"}
    assert (out / "bench.png").stat().st_size > 1000
    assert "log-log slopes" in proc.stdout
