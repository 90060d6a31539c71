"""Per-step training time of the FC model under ML and the score-matching objectives.

Run ``python -m ebflow_lite.bench`` (or the ``ebflow-bench`` script), e.g.::

    python -m ebflow_lite.bench --sizes 64 256 1024 4096 --threads 2 --matmul-baseline \\
        --out benchmarks/cpu-2core.json

One *step* is what a training loop does per batch: ``zero_grad``, the loss, ``backward`` and
an RMSprop step (lr 1e-4, as the paper). The model is :func:`ebflow_lite.models.fc_flow`
(``Dense -> SmoothLeakyReLU -> Dense``, L = 2 dense layers) on a batch of ``B`` standard
normal inputs in ``R^D``; ``ml-lu`` is ML on :func:`ebflow_lite.models.lu_fc_flow`. Each
configuration is warmed up, then timed for ``repeats`` steps (CUDA is synchronised); the
median is reported. The results go to a JSON file and a log-log plot with slopes fitted over
``D >= fit_min_dim``, and a table, the slopes, the crossover dimensions and the speed-ups are
printed.

Counting the matrix products of one step
----------------------------------------
Write one *unit* for a product of a ``B x D`` by a ``D x D`` matrix, or of a ``D x B`` by a
``B x D`` one (a weight gradient): ``2 B D^2`` flops either way. With ``a = W_1 x + b_1``,
``h = f(a)``, ``u = W_2 h + b_2`` and ``E = |u|^2 / 2 - sum log f'(a)``:

* forward, ``x -> a -> u``: **2** units (products with ``W_1`` and ``W_2``).
* score backward, ``grad_x E = W_1^T (f'(a) * W_2^T u - f''(a)/f'(a))``: **2** units.
* Hessian-vector product (SSM), the gradient of ``<grad_x E, v>`` with respect to x: it runs
  back through the score graph: ``W_1 v`` (1), ``W_2 (.)`` (1), ``W_2^T (.)`` (1),
  ``W_1^T (.)`` (1): **4** units.
* parameter backward: every product node ``Y = X W^T`` on the path to the loss needs
  ``dL/dW`` (1 unit) and, when ``X`` depends on the parameters, ``dL/dX`` (1 unit). Like
  :func:`ebflow_lite.fit`, a step asks for the parameters' gradients only
  (``loss.backward(inputs=params)``), so no product is spent on the batch's gradient.

Per objective this gives (``derived_matmul_units``; :func:`op_census` counts the products
the step really dispatches, and ``tests/test_bench.py`` checks they agree):

* ``ml``: 2 forward + 3 backward (``dW_2, dh, dW_1``) = **5**, plus per dense layer one
  ``slogdet`` (an LU factorisation, ``2/3 D^3`` flops) and in the backward
  ``d log|det W| / dW = W^{-T}`` (an LU solve with D right-hand sides, ``2 D^3``).
* ``dsm``: 2 forward + 2 score + 7 backward (four product nodes, two gradients each, except
  the first forward product, whose input is the noisy batch) = **11**.
* ``ssm``: 2 + 2 + 4 (HVP) + 14 backward (eight nodes, two gradients each, except those
  whose input is the batch or the constant probe ``v``) = **22**: about twice DSM.
* ``fdssm``: one forward on ``3B`` rows (``x, x + v, x - v``) = 6, backward ``dW_1`` (3),
  ``dh`` (3), ``dW_2`` (3) = **15**.
* ``sml``: forward on ``2B`` rows (data and model samples) = 4, backward 6 = **10**, plus
  drawing the samples by the inverse: a linear solve per dense layer (``O(D^3)``) and
  Newton iterations for the activation.
* ``ml-lu``: each LU layer multiplies by two triangular factors (stored as full matrices),
  so 4 forward products; backward: a weight gradient for each (4) and an input gradient for
  all but the first (3) = **11**, and no determinant.

So a score-matching step costs ``O(B D^2 L)`` while ML and SML add ``O(D^3 L)``. The
``--matmul-baseline`` mode times exactly the products :func:`op_census` records, at the same
shapes, so ``step_time / matmul_time`` says how close a step is to its unavoidable
arithmetic.

References:
    Chao et al., NeurIPS 2023, Figure 2(a) and Table 2 (runtime of the objectives); Section 4
    of the book's chapter "The price of a determinant".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

OBJECTIVE_NAMES = ("ml", "ml-lu", "sml", "ssm", "dsm", "fdssm")
SM_OBJECTIVES = ("ssm", "dsm", "fdssm")
DEFAULT_SIZES = (64, 128, 256, 512, 1024, 2048, 4096)

#: Matrix-product units (``2 B D^2`` flops each) per training step, derived in the module
#: docstring for the FC model with two dense layers.
DERIVED_MATMUL_UNITS = {"ml": 5, "ml-lu": 11, "dsm": 11, "ssm": 22, "fdssm": 15, "sml": 10}

#: aten operators that factorise or invert a D x D matrix: O(D^3) each.
CUBIC_OPS = frozenset({
    "_linalg_slogdet", "linalg_slogdet", "_linalg_det", "linalg_det", "linalg_lu_factor_ex",
    "linalg_lu_factor", "linalg_lu", "lu_unpack", "linalg_lu_solve", "_linalg_solve_ex",
    "linalg_solve", "linalg_inv_ex", "linalg_inv", "inverse", "linalg_qr", "_linalg_eigh",
    "linalg_cholesky_ex", "cholesky_solve",
})

_MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm"}

#: Flops per dense layer of ML's determinant work, in units of ``D^3``: the LU factorisation
#: inside ``slogdet`` (2/3) and the solve for ``W^{-T}`` in its backward (2).
ML_CUBIC_FLOPS_PER_LAYER = 2.0 / 3.0 + 2.0


def predicted_step_flops(name: str, dim: int, batch_size: int = 100, n_dense: int = 2) -> float:
    """Flop model of one training step: ``kappa * 2 B D^2`` plus ML's ``n_dense * 8/3 D^3``.

    ``kappa`` is :data:`DERIVED_MATMUL_UNITS` (the FC model, two dense layers). SML's
    sampler is left out (its cost depends on the Newton iterations).
    """
    if name not in DERIVED_MATMUL_UNITS:
        raise ValueError(f"no flop model for {name!r}")
    flops = DERIVED_MATMUL_UNITS[name] * 2.0 * batch_size * dim**2
    if name == "ml":
        flops += n_dense * ML_CUBIC_FLOPS_PER_LAYER * dim**3
    return flops


def predicted_crossover(name: str, batch_size: int = 100, n_dense: int = 2) -> float:
    """The D where the flop model of ``name`` equals ML's:
    ``D* = 2 B (kappa - kappa_ML) / (n_dense * 8/3)`` (0 if ``name`` needs fewer products).
    """
    if name not in DERIVED_MATMUL_UNITS:
        raise ValueError(f"no flop model for {name!r}")
    extra = DERIVED_MATMUL_UNITS[name] - DERIVED_MATMUL_UNITS["ml"]
    return max(0.0, 2.0 * batch_size * extra / (n_dense * ML_CUBIC_FLOPS_PER_LAYER))


# ---------------------------------------------------------------------------------- steps
def objective_for(name: str) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """Return the library objective behind a benchmark name (settings of the paper's FC runs).

    ``dsm`` uses sigma = 1 and ``fdssm`` eps = 1 (MNIST FC configs); the value does not
    change the cost.
    """
    from ebflow_lite import objectives

    if name not in OBJECTIVE_NAMES:
        raise ValueError(f"unknown objective {name!r}; expected one of {OBJECTIVE_NAMES}")
    options = {"ssm": {"n_slices": 1}, "dsm": {"sigma": 1.0}, "fdssm": {"eps": 1.0}}
    return objectives.get("ml" if name == "ml-lu" else name, **options.get(name, {}))


def build_model(name: str, dim: int) -> nn.Module:
    """The FC model the benchmark trains (the LU variant for ``ml-lu``)."""
    from ebflow_lite.models import fc_flow, lu_fc_flow

    if name not in OBJECTIVE_NAMES:
        raise ValueError(f"unknown objective {name!r}; expected one of {OBJECTIVE_NAMES}")
    return lu_fc_flow(dim) if name == "ml-lu" else fc_flow(dim)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def make_training_step(
    name: str, dim: int, batch_size: int = 100, device: torch.device | str | None = None,
    seed: int = 0,
) -> Callable[[], float]:
    """Build the FC model and an RMSprop optimiser; return a function doing one step.

    The returned closure runs ``zero_grad``, the loss, ``backward`` and ``optimizer.step()``
    on a fixed batch of standard normal inputs and returns the loss as a float.
    """
    from ebflow_lite.device import pick_device

    if dim < 2 or batch_size < 1:
        raise ValueError(f"need dim >= 2 and batch_size >= 1, got {dim}, {batch_size}")
    device = pick_device(str(device)) if device is not None else pick_device()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(name, dim).to(device)
        x = torch.randn(batch_size, dim).to(device)
    objective = objective_for(name)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-4)
    model.train()

    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> float:
        # As ebflow_lite.fit does: gradients for the parameters only, not for the batch.
        optimizer.zero_grad(set_to_none=True)
        loss = objective(model, x)
        loss.backward(inputs=params)
        optimizer.step()
        return float(loss.detach())

    return step


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def time_callable(
    fn: Callable[[], object], repeats: int = 5, warmup: int = 2,
    device: torch.device | str = "cpu", max_seconds: float | None = 60.0,
) -> list[float]:
    """Time ``fn`` ``repeats`` times after ``warmup`` untimed calls; return the seconds.

    Timing uses ``time.perf_counter`` around each call, with a device synchronisation before
    and after (CUDA/MPS run asynchronously). When a warm-up call already takes long, the
    remaining warm-ups are skipped and the number of timed calls is cut so that they fit in
    ``max_seconds`` (at least one call is always timed).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    device = torch.device(device)
    first = None
    for _ in range(warmup):
        elapsed = _timed(fn, device)
        first = elapsed if first is None else min(first, elapsed)
        if elapsed > 2.0:
            break
    if max_seconds is not None and first is not None and first * repeats > max_seconds:
        repeats = max(1, int(max_seconds / first))
    return [_timed(fn, device) for _ in range(repeats)]


def time_training_step(
    name: str, dim: int, batch_size: int = 100, repeats: int = 5, warmup: int = 2,
    device: torch.device | str | None = None, seed: int = 0,
    max_seconds: float | None = 60.0,
) -> list[float]:
    """Seconds per training step of the FC model under objective ``name`` (see module doc)."""
    from ebflow_lite.device import pick_device

    device = pick_device(str(device)) if device is not None else pick_device()
    step = make_training_step(name, dim, batch_size, device, seed)
    return time_callable(step, repeats, warmup, device, max_seconds)


# ---------------------------------------------------------------------------------- census
@dataclass
class OpCensus:
    """The aten operators one training step dispatches.

    Attributes:
        matmuls: ``(op, shape_a, shape_b)`` of every matrix product, in order.
        cubic: counts of operators that factorise or invert a D x D matrix.
        ops: counts of every operator.
        batch_size, dim: the shapes the step ran at.
    """

    matmuls: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
    cubic: Counter
    ops: Counter
    batch_size: int
    dim: int

    @property
    def matmul_flops(self) -> int:
        """Flops of the matrix products, ``2 m k n`` each."""
        total = 0
        for _, a, b in self.matmuls:
            batch = math.prod(a[:-2]) if len(a) > 2 else 1
            total += 2 * batch * a[-2] * a[-1] * b[-1]
        return total

    @property
    def matmul_units(self) -> float:
        """Matrix-product flops in units of ``2 B D^2`` (one batch times one weight matrix)."""
        return self.matmul_flops / (2 * self.batch_size * self.dim**2)

    @property
    def has_cubic(self) -> bool:
        """Whether the step factorises or inverts a matrix (an O(D^3) operation)."""
        return sum(self.cubic.values()) > 0


def op_census(name: str, dim: int, batch_size: int = 100, seed: int = 0) -> OpCensus:
    """Record the operators of one training step (the second: the first is a warm-up).

    Uses a ``TorchDispatchMode``, which sees every aten call, the backward pass included,
    on the CPU.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    step = make_training_step(name, dim, batch_size, "cpu", seed)
    step()
    matmuls: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    ops: Counter = Counter()

    class _Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            op = func.overloadpacket.__name__
            ops[op] += 1
            if op in _MATMUL_OPS:
                a, b = (args[0], args[1]) if op in ("mm", "bmm") else (args[1], args[2])
                matmuls.append((op, tuple(a.shape), tuple(b.shape)))
            return func(*args, **(kwargs or {}))

    with _Recorder():
        step()
    cubic = Counter({op: n for op, n in ops.items() if op in CUBIC_OPS})
    return OpCensus(matmuls, cubic, ops, batch_size, dim)


def time_matmuls(
    census: OpCensus, repeats: int = 5, warmup: int = 2,
    device: torch.device | str | None = None, max_seconds: float | None = 60.0,
) -> list[float]:
    """Seconds to run just the matrix products of ``census`` at their shapes (the baseline)."""
    from ebflow_lite.device import pick_device

    device = pick_device(str(device)) if device is not None else pick_device()
    gen = torch.Generator().manual_seed(0)
    operands = [
        (torch.randn(a, generator=gen).to(device), torch.randn(b, generator=gen).to(device))
        for _, a, b in census.matmuls
    ]

    def run() -> None:
        for a, b in operands:
            torch.matmul(a, b)

    return time_callable(run, repeats, warmup, device, max_seconds)


# ---------------------------------------------------------------------------------- results
def machine_info(device: torch.device | str = "cpu") -> dict:
    """Where the numbers were measured: CPU, threads, torch version, device name."""
    device = torch.device(device)
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15min"] = [round(v, 2) for v in os.getloadavg()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


@dataclass
class BenchResult:
    """Timings of a benchmark run, in seconds, keyed by objective and dimension."""

    dims: list[int]
    objectives: list[str]
    batch_size: int
    times: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    matmul_times: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    matmul_units: dict[str, dict[int, float]] = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    note: str = ""

    def median(self, objective: str, dim: int) -> float:
        """Median seconds per step."""
        return statistics.median(self.times[objective][dim])

    def matmul_median(self, objective: str, dim: int) -> float:
        """Median seconds of the step's matrix products alone."""
        return statistics.median(self.matmul_times[objective][dim])

    def to_dict(self) -> dict:
        """A JSON-ready dictionary (dimension keys become strings)."""
        def keyed(table: dict) -> dict:
            return {obj: {str(d): v for d, v in per.items()} for obj, per in table.items()}

        medians = {obj: {str(d): statistics.median(v) for d, v in per.items()}
                   for obj, per in self.times.items()}
        minima = {obj: {str(d): min(v) for d, v in per.items()}
                  for obj, per in self.times.items()}
        return {
            "dims": self.dims, "objectives": self.objectives, "batch_size": self.batch_size,
            "times": keyed(self.times), "median": medians, "min": minima,
            "matmul_times": keyed(self.matmul_times), "matmul_units": keyed(self.matmul_units),
            "machine": self.machine, "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: dict) -> BenchResult:
        """Inverse of :meth:`to_dict`."""
        def unkeyed(table: dict) -> dict:
            return {obj: {int(d): v for d, v in per.items()} for obj, per in table.items()}

        return cls(
            dims=[int(d) for d in data["dims"]], objectives=list(data["objectives"]),
            batch_size=int(data["batch_size"]), times=unkeyed(data["times"]),
            matmul_times=unkeyed(data.get("matmul_times", {})),
            matmul_units=unkeyed(data.get("matmul_units", {})),
            machine=data.get("machine", {}), note=data.get("note", ""),
        )


def run_benchmark(
    dims: Sequence[int] = DEFAULT_SIZES,
    objectives: Sequence[str] = OBJECTIVE_NAMES,
    batch_size: int = 100,
    repeats: int = 5,
    warmup: int = 2,
    device: torch.device | str | None = None,
    threads: int | None = None,
    matmul_baseline: bool = False,
    max_seconds: float | None = 60.0,
    progress: bool = True,
    seed: int = 0,
) -> BenchResult:
    """Time every (objective, D) pair; optionally the matrix-product baseline too.

    Args:
        dims: the dimensions D.
        objectives: names from :data:`OBJECTIVE_NAMES`.
        batch_size: B (the paper's 100).
        repeats: timed steps per configuration (the median is reported).
        warmup: untimed steps first.
        device: ``"cpu"``, ``"cuda"``, ``"mps"`` or None for :func:`ebflow_lite.pick_device`.
        threads: CPU threads for torch during the run (None: leave torch's setting).
        matmul_baseline: also time the products :func:`op_census` records (CPU census).
        max_seconds: cap on the timed steps of one configuration (see :func:`time_callable`).
        progress: show a tqdm bar.
        seed: seeds the model and the batch.
    """
    from tqdm.auto import tqdm

    from ebflow_lite.device import pick_device

    dims = sorted({int(d) for d in dims})
    objectives = list(objectives)
    for name in objectives:
        if name not in OBJECTIVE_NAMES:
            raise ValueError(f"unknown objective {name!r}; expected one of {OBJECTIVE_NAMES}")
    if not dims or min(dims) < 2:
        raise ValueError(f"dims must be integers >= 2, got {dims}")
    device = pick_device(str(device)) if device is not None else pick_device()
    old_threads = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be positive, got {threads}")
        torch.set_num_threads(threads)
    result = BenchResult(dims=dims, objectives=objectives, batch_size=batch_size)
    try:
        result.machine = machine_info(device)
        pairs = [(d, name) for d in dims for name in objectives]
        bar = tqdm(pairs, disable=not progress, desc="bench", leave=False)
        for d, name in bar:
            bar.set_postfix_str(f"{name} D={d}")
            result.times.setdefault(name, {})[d] = time_training_step(
                name, d, batch_size, repeats, warmup, device, seed, max_seconds)
            if matmul_baseline:
                census = op_census(name, d, batch_size, seed)
                result.matmul_units.setdefault(name, {})[d] = census.matmul_units
                result.matmul_times.setdefault(name, {})[d] = time_matmuls(
                    census, repeats, warmup, device, max_seconds)
        bar.close()
        if hasattr(os, "getloadavg"):
            result.machine["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    finally:
        torch.set_num_threads(old_threads)
    return result


# ---------------------------------------------------------------------------------- analysis
def fit_loglog_slope(dims: Sequence[float], times: Sequence[float]) -> float:
    """Least-squares slope of ``log t`` against ``log D`` (the exponent k in ``t ~ D^k``)."""
    if len(dims) != len(times) or len(dims) < 2:
        raise ValueError("need at least two (D, time) pairs of equal length")
    if min(dims) <= 0 or min(times) <= 0:
        raise ValueError("dims and times must be positive")
    xs = [math.log(d) for d in dims]
    ys = [math.log(t) for t in times]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("need at least two distinct dimensions")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def slopes(result: BenchResult, min_dim: int = 512) -> dict[str, float | None]:
    """Fitted log-log slope per objective over ``D >= min_dim`` (None with < 2 sizes)."""
    out: dict[str, float | None] = {}
    for name, per in result.times.items():
        ds = [d for d in sorted(per) if d >= min_dim]
        out[name] = (fit_loglog_slope(ds, [statistics.median(per[d]) for d in ds])
                     if len(ds) >= 2 else None)
    return out


@dataclass
class Crossover:
    """Where an objective's step becomes cheaper than the reference's.

    ``status`` is ``"below"`` (cheaper at every measured D), ``"above"`` (cheaper at none),
    or ``"within"`` (``dim`` is interpolated in log-log between the two sizes where the
    ratio crosses 1; it is the last such crossing).
    """

    status: str
    dim: float | None


def crossover(result: BenchResult, objective: str, reference: str = "ml") -> Crossover:
    """The dimension above which ``objective`` is faster per step than ``reference``."""
    ds = [d for d in result.dims if d in result.times.get(objective, {})
          and d in result.times.get(reference, {})]
    if not ds:
        raise ValueError(f"no common dimensions for {objective!r} and {reference!r}")
    logr = [math.log(result.median(objective, d) / result.median(reference, d)) for d in ds]
    if all(r < 0 for r in logr):
        return Crossover("below", None)
    if logr[-1] >= 0:
        return Crossover("above", None)
    i = max(k for k in range(len(ds)) if logr[k] >= 0)
    x0, x1 = math.log(ds[i]), math.log(ds[i + 1])
    frac = logr[i] / (logr[i] - logr[i + 1])
    return Crossover("within", math.exp(x0 + frac * (x1 - x0)))


def format_table(result: BenchResult) -> str:
    """A text table: one row per D, one column per objective, median seconds per step."""
    names = [n for n in result.objectives if n in result.times]
    head = f"{'D':>6} " + " ".join(f"{n:>10}" for n in names)
    rows = [head, "-" * len(head)]
    for d in result.dims:
        cells = [f"{result.median(n, d):10.4g}" if d in result.times[n] else f"{'':>10}"
                 for n in names]
        rows.append(f"{d:>6} " + " ".join(cells))
    return "\n".join(rows)


def summary(result: BenchResult, min_dim: int = 512) -> dict:
    """Slopes, crossovers, speed-ups over ML at the top size, and matmul ratios."""
    top = max(result.dims)
    out: dict = {"fit_min_dim": min_dim, "slopes": slopes(result, min_dim), "crossover": {},
                 "speedup_over_ml_at_top": {}, "step_over_matmul_at_top": {}, "top_dim": top}
    for name in result.times:
        if "ml" in result.times and name != "ml":
            c = crossover(result, name, "ml")
            out["crossover"][name] = {"status": c.status, "dim": c.dim}
            if top in result.times[name] and top in result.times["ml"]:
                out["speedup_over_ml_at_top"][name] = (
                    result.median("ml", top) / result.median(name, top))
        if name in result.matmul_times and top in result.matmul_times[name]:
            out["step_over_matmul_at_top"][name] = (
                result.median(name, top) / result.matmul_median(name, top))
    return out


def plot_result(result: BenchResult, path: str | os.PathLike | None = None,
                min_dim: int = 512, ax=None):
    """Log-log plot of seconds per step against D with the fitted slopes in the legend."""
    import matplotlib.pyplot as plt

    fitted = slopes(result, min_dim)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    for name in result.objectives:
        if name not in result.times:
            continue
        ds = sorted(result.times[name])
        ts = [result.median(name, d) for d in ds]
        k = fitted.get(name)
        label = name if k is None else f"{name} (slope {k:.2f})"
        (line,) = ax.loglog(ds, ts, "o-", label=label)
        fit_ds = [d for d in ds if d >= min_dim]
        if k is not None:
            t_ref = statistics.median(
                [result.median(name, d) / d**k for d in fit_ds])
            ax.loglog(fit_ds, [t_ref * d**k for d in fit_ds], "--", color=line.get_color(),
                      alpha=0.6)
    ax.set_xlabel("dimension D")
    ax.set_ylabel("seconds per training step")
    ax.set_title(f"FC model, batch {result.batch_size}: time per step")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def save_result(result: BenchResult, json_path: str | os.PathLike, min_dim: int = 512) -> None:
    """Write the timings and :func:`summary` to ``json_path``."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    data = result.to_dict()
    data["summary"] = summary(result, min_dim)
    json_path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def load_result(json_path: str | os.PathLike) -> BenchResult:
    """Read a JSON file written by :func:`save_result`."""
    return BenchResult.from_dict(json.loads(Path(json_path).read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ebflow_lite.bench",
        description="Per-step training time of the FC model: ML vs score matching.")
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                   help="dimensions D")
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVE_NAMES),
                   choices=OBJECTIVE_NAMES)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: automatic)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--matmul-baseline", action="store_true",
                   help="also time the matrix products each step needs")
    p.add_argument("--fit-min-dim", type=int, default=512,
                   help="fit the log-log slopes over D >= this")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="cap on the timed steps of one configuration")
    p.add_argument("--note", default="", help="a note stored in the JSON")
    p.add_argument("--out", default="bench-results",
                   help="a .json file, or a folder to write bench.json and bench.png in")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m ebflow_lite.bench``)."""
    import matplotlib

    matplotlib.use("Agg")
    args = _parser().parse_args(argv)
    out = Path(args.out)
    json_path = out if out.suffix == ".json" else out / "bench.json"
    png_path = json_path.with_suffix(".png")
    result = run_benchmark(
        args.sizes, args.objectives, args.batch_size, args.repeats, args.warmup, args.device,
        args.threads, args.matmul_baseline, args.max_seconds, not args.no_progress)
    result.note = args.note
    save_result(result, json_path, args.fit_min_dim)
    plot_result(result, png_path, args.fit_min_dim)
    info = summary(result, args.fit_min_dim)
    print(f"seconds per training step (median), batch {result.batch_size}, "
          f"{result.machine['device']}, {result.machine['torch_threads']} threads, "
          f"torch {result.machine['torch']}")
    print(format_table(result))
    print(f"\nlog-log slopes over D >= {args.fit_min_dim}:")
    for name, k in info["slopes"].items():
        print(f"  {name:>6}: " + ("n/a (fewer than two sizes)" if k is None else f"{k:.2f}"))
    if info["crossover"]:
        print("\nwhere each objective becomes cheaper per step than ml:")
        for name, c in info["crossover"].items():
            text = {"below": f"cheaper at every size (D <= {min(result.dims)})",
                    "above": f"not cheaper up to D = {max(result.dims)}"}.get(
                        c["status"], f"D ~ {c['dim']:.0f}" if c["dim"] else "")
            print(f"  {name:>6}: {text}")
    if info["speedup_over_ml_at_top"]:
        print(f"\nspeed-up over ml at D = {info['top_dim']}:")
        for name, s in info["speedup_over_ml_at_top"].items():
            print(f"  {name:>6}: {s:.2f}x")
    if info["step_over_matmul_at_top"]:
        print(f"\nstep time / matrix-product time at D = {info['top_dim']}:")
        for name, r in info["step_over_matmul_at_top"].items():
            units = result.matmul_units[name][info["top_dim"]]
            print(f"  {name:>6}: {r:.2f} ({units:.1f} product units)")
    print(f"\nwrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
