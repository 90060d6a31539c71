"""The benchmark harness: operator census, timing, analysis, JSON and the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

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


def test_time_interleaved_alternates_and_caps_each_callable() -> None:
    calls: list[str] = []

    def quick() -> None:
        calls.append("q")

    def slow() -> None:
        calls.append("s")
        time.sleep(0.05)

    times = bench.time_interleaved([quick, slow], repeats=3, warmup=1, max_seconds=0.12)
    # one warm-up each, then round-robin; the slow one is capped at int(0.12 / 0.05) = 2
    assert calls == ["q", "s", "q", "s", "q", "s", "q"]
    assert [len(t) for t in times] == [3, 2]
    assert min(times[1]) >= 0.045
    with pytest.raises(ValueError, match="repeats >= 1"):
        bench.time_interleaved([quick], repeats=0)


def test_time_interleaved_runs_blocks_of_calls_per_round() -> None:
    calls: list[str] = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b")]
    times = bench.time_interleaved(fns, repeats=5, warmup=0, calls_per_round=2)
    # rounds of two calls of each in turn; the last round holds what is left of the five
    assert "".join(calls) == "aabbaabbab"
    assert [len(t) for t in times] == [5, 5]
    with pytest.raises(ValueError, match="calls_per_round must be an int >= 1"):
        bench.time_interleaved(fns, calls_per_round=0)


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


# ---------------------------------------------------------------------------------- CNN
TINY_SHAPE = (1, 8, 8)  # D = 64; the three blocks see 1x8x8, 4x4x4 and 16x2x2 images
TINY_KERNEL = 3


@pytest.mark.parametrize("name", bench.CNN_OBJECTIVE_NAMES)
def test_cnn_census_only_ml_and_sml_factorise(name: str) -> None:
    census = op_census(name, TINY_SHAPE, batch_size=3, model="cnn", kernel_size=TINY_KERNEL)
    d = math.prod(TINY_SHAPE)
    assert census.dim == d
    assert census.ops["convolution"] > 0
    # Score matching runs convolutions only: no slogdet, solve, inverse or LU.
    assert census.has_cubic == (name in ("ml", "ml-circular", "sml"))
    if name == "ml":
        # one slogdet of each of the six convolutions' D x D matrices
        assert census.cubic["_linalg_slogdet"] == 6
        assert {shape for op, shape in census.cubic_shapes} == {(d, d)}
    if name == "ml-circular":
        # the FFT leaves one C x C determinant per frequency: (H, W, C, C) per block
        assert census.cubic["_linalg_slogdet"] == 6
        assert {shape for op, shape in census.cubic_shapes} == {
            (8, 8, 1, 1), (4, 4, 4, 4), (2, 2, 16, 16)}


def test_cnn_step_trains_on_dequantized_images() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = bench.make_batch(TINY_SHAPE, 5, model="cnn")
    assert x.shape == (5, *TINY_SHAPE)
    assert 0.0 <= float(x.min()) and float(x.max()) < bench.CNN_NUM_LEVELS
    assert not torch.equal(x, x.floor())  # dequantized, not integer levels
    zeros = bench.build_model("ml", TINY_SHAPE, "cnn", TINY_KERNEL)
    circular = bench.build_model("ml-circular", TINY_SHAPE, "cnn", TINY_KERNEL)
    assert {m.padding_mode for m in zeros.modules() if hasattr(m, "padding_mode")} == {"zeros"}
    assert {m.padding_mode for m in circular.modules()
            if hasattr(m, "padding_mode")} == {"circular"}
    step = bench.make_training_step("dsm", TINY_SHAPE, 4, "cpu", model="cnn",
                                    kernel_size=TINY_KERNEL)
    assert math.isfinite(step()) and math.isfinite(step())
    with pytest.raises(ValueError, match="unknown objective 'ml-lu' for the cnn model"):
        bench.make_training_step("ml-lu", TINY_SHAPE, model="cnn")
    with pytest.raises(ValueError, match="unknown objective 'ml-circular' for the fc model"):
        bench.make_training_step("ml-circular", 8)


@pytest.mark.parametrize(("text", "match"), [
    ("0x8x8", "three positive integers"), ("1x28", "three positive integers"),
    ("axbxc", "CxHxW"), ("1x30x30", "divisible by 4"), ("1x28x28x1", "three positive"),
])
def test_parse_shape_rejects_bad_shapes(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bench.parse_shape(text)


def test_sizes_are_checked_per_model() -> None:
    assert bench.parse_shape("3X32x32") == (3, 32, 32)
    assert bench.check_size(64) == 64
    with pytest.raises(ValueError, match="dim must be an int >= 2"):
        bench.check_size(1)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        bench.check_size((1, 8, 8), "cnn", kernel_size=4)
    # circular padding 3 does not fit the last block's 1x1 images of a 1x4x4 input
    with pytest.raises(ValueError, match="too small for circular padding"):
        bench.check_size((1, 4, 4), "cnn", kernel_size=7, circular=True)
    with pytest.raises(ValueError, match="model must be one of"):
        bench.check_size(8, "rnn")


def _synthetic_cnn() -> BenchResult:
    shapes = [(1, 28, 28), (3, 32, 32)]
    seconds = {"ml": 10.0, "ml-circular": 0.5, "ssm": 0.4, "dsm": 0.2, "fdssm": 0.1}
    times = {name: {s: [t * math.prod(s) / 784] for s in shapes} for name, t in seconds.items()}
    return BenchResult(dims=shapes, objectives=list(times), batch_size=100, times=times,
                       model="cnn", kernel_size=7)


def test_cnn_json_round_trip_summary_and_tables(tmp_path) -> None:
    result = _synthetic_cnn()
    result.loads = {"ml": {(1, 28, 28): [0.5, 0.7]}}
    path = tmp_path / "cnn.json"
    bench.save_result(result, path)
    back = bench.load_result(path)
    assert back.model == "cnn" and back.dims == result.dims and back.times == result.times
    assert back.loads == result.loads and back.kernel_size == 7
    data = json.loads(path.read_text())
    assert data["shapes"] == [[1, 28, 28], [3, 32, 32]] and "dims" not in data
    assert set(data["median"]["ml"]) == {"1x28x28", "3x32x32"}
    info = data["summary"]
    assert info["speedup_over_ml"]["3x32x32"]["fdssm"] == pytest.approx(100.0)
    assert info["slowest_sm_speedup_over_ml"]["1x28x28"] == pytest.approx(25.0)
    assert info["speedup_over_ml_circular"]["1x28x28"]["dsm"] == pytest.approx(2.5)
    assert info["paper_speedup_over_ml"]["1x28x28"]["ssm"] == pytest.approx(7.09 / 0.21)
    assert bench.format_table(result).splitlines()[0].split() == ["shape", *result.objectives]
    rows = bench.format_speedups(result).splitlines()
    assert any(r.split()[:2] == ["3x32x32", "dsm"] and r.split()[3] == "50.0" for r in rows)
    bench.plot_result(result, tmp_path / "cnn.png")
    assert (tmp_path / "cnn.png").stat().st_size > 1000


def test_stored_fc_results_still_load() -> None:
    stored = bench.load_result(Path(__file__).parents[1] / "benchmarks" / "cpu-2core.json")
    assert stored.model == "fc" and 4096 in stored.times["ml"]
    assert stored.median("ml", 4096) > stored.median("dsm", 4096)


def test_cnn_command_line(tmp_path, capsys) -> None:
    out = tmp_path / "cnn.json"
    code = bench.main(["--model", "cnn", "--shapes", "1x8x8", "--kernel-size", "3",
                       "--objectives", "ml", "fdssm", "--batch-size", "4", "--repeats", "2",
                       "--warmup", "0", "--threads", "1", "--out", str(out),
                       "--no-progress", "--interleave"])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["model"] == "cnn" and set(data["times"]) == {"ml", "fdssm"}
    assert set(data["load_average_1min_before_after"]["ml"]) == {"1x8x8"}
    assert data["machine"]["interleaved"] is True and len(data["times"]["ml"]["1x8x8"]) == 2
    assert out.with_suffix(".png").exists()
    printed = capsys.readouterr().out
    assert "CNN model K = 3" in printed and "ml / this" in printed


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "cnn", "--shapes", "0x2x2"], "argument --shapes: expected a shape CxHxW"),
    (["--repeats", "-1"], "argument --repeats: must be an integer >= 1"),
    (["--threads", "0"], "argument --threads: must be an integer >= 1"),
    (["--sizes", "1"], "argument --sizes: must be an integer >= 2"),
    (["--max-seconds", "0"], "argument --max-seconds: must be a positive number"),
    (["--shapes", "1x8x8"], "argument --shapes: applies to --model cnn only"),
    (["--model", "cnn", "--sizes", "64"], "argument --sizes: applies to --model fc only"),
    (["--model", "cnn", "--objectives", "ml-lu"], "ml-lu not available for --model cnn"),
    (["--objectives", "ml-circular"], "ml-circular not available for --model fc"),
    (["--model", "cnn", "--kernel-size", "4"], "argument --kernel-size: must be odd"),
    (["--model", "cnn", "--matmul-baseline"], "--matmul-baseline: applies to --model fc"),
    (["--model", "cnn", "--shapes", "1x4x4", "--objectives", "ml-circular"],
     "too small for circular padding"),
])
def test_command_line_rejects_bad_arguments(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_command_line_checks_out_is_writable_before_running(tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    start = time.perf_counter()
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "4096", "--objectives", "ml", "--out",
                    str(blocker / "run.json")])
    assert time.perf_counter() - start < 5.0  # refused before any step ran
    assert "argument --out: cannot write in" in capsys.readouterr().err
