"""Per-step training time of the FC and CNN models under ML and the score-matching objectives.

Run ``python -m ebflow_lite.bench`` (or the ``ebflow-bench`` script), e.g.::

    python -m ebflow_lite.bench --sizes 64 256 1024 4096 --threads 2 --matmul-baseline \\
        --out benchmarks/cpu-2core.json
    python -m ebflow_lite.bench --model cnn --shapes 1x28x28 3x32x32 --threads 2 \\
        --out benchmarks/cpu-2core-cnn.json

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

The CNN model
-------------
``--model cnn`` times :func:`ebflow_lite.models.cnn_flow` (the paper's CNN: three blocks of
two full ``K x K`` convolutions, K = 7, residual smooth leaky ReLUs between them, squeezes
between blocks, so every convolution maps ``D = C H W`` entries to ``D``) at image shapes
``(C, H, W)``. The batch is a fixed set of ``B`` dequantized random 8-bit images (levels
``0..255`` plus ``U[0, 1)``) and the model's preprocessing is the paper's MaP one,
:func:`ebflow_lite.preprocessing.image_preprocessing` with 256 levels and logit
``alpha = 0.75``. Objectives: ``ml`` (zero padding: each of the six log-dets is a ``slogdet``
of the convolution's ``D x D`` matrix, :meth:`ebflow_lite.layers.ConvKxK.matrix`),
``ml-circular`` (the same model with circular padding, the "specially designed layer"
alternative: FFT log-dets, one ``C x C`` determinant per frequency), ``sml`` (negatives by
the exact inverse: a ``D x D`` solve per convolution), ``ssm``, ``dsm`` and ``fdssm`` with
the FC settings above (one slice, sigma = 1, eps = 1; the values do not change the cost).
Per convolution, a score-matching step costs ``O(B D C K^2)`` (a few convolutions), while
ML adds building the matrix (``O(D C K^2)``) and factorising it (``O(D^3)``, forward and
backward). :func:`op_census` works for the CNN too (``tests/test_bench.py`` checks that its
score-matching steps dispatch no cubic operator); the matrix-product baseline is FC only.

References:
    Chao et al., NeurIPS 2023, Figure 2(a) and Table 2 (runtime of the objectives); Section 4
    of the book's chapter "The price of a determinant".
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ebflow_lite.validation import check_positive_int

MODELS = ("fc", "cnn")
#: The FC model's objectives (``ml-lu``: ML with LU-parameterised dense layers).
OBJECTIVE_NAMES = ("ml", "ml-lu", "sml", "ssm", "dsm", "fdssm")
#: The CNN model's objectives (``ml-circular``: ML with circular padding, FFT log-dets).
CNN_OBJECTIVE_NAMES = ("ml", "ml-circular", "sml", "ssm", "dsm", "fdssm")
SM_OBJECTIVES = ("ssm", "dsm", "fdssm")
DEFAULT_SIZES = (64, 128, 256, 512, 1024, 2048, 4096)
#: MNIST's and CIFAR-10's image shapes (C, H, W).
DEFAULT_SHAPES = ((1, 28, 28), (3, 32, 32))
#: The CNN's kernel size, its data's intensity levels and its logit's alpha (the paper's).
CNN_KERNEL_SIZE = 7
CNN_NUM_LEVELS = 256
CNN_LOGIT_ALPHA = 0.75
#: :func:`ebflow_lite.models.cnn_flow` squeezes twice, so H and W must be divisible by 4.
_CNN_SQUEEZE = 4

#: The paper's CNN training throughputs in batches per second (batch 100, on its GPU; as
#: given to this project, not measured here). Its ML baseline builds each convolution's
#: Toeplitz matrix on the CPU.
PAPER_CNN_BATCHES_PER_SECOND = {
    (1, 28, 28): {"ml": 0.21, "sml": 0.29, "ssm": 7.09, "dsm": 18.32, "fdssm": 38.76},
    (3, 32, 32): {"ml": 0.02, "sml": 0.03, "ssm": 7.35, "dsm": 18.41, "fdssm": 39.84},
}

#: A benchmark size: the dimension D (FC) or an image shape (C, H, W) (CNN).
Size = int | tuple[int, ...]

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


# ---------------------------------------------------------------------------------- sizes
def objective_names(model: str = "fc") -> tuple[str, ...]:
    """The objectives the benchmark runs for ``model`` (``"fc"`` or ``"cnn"``)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    return OBJECTIVE_NAMES if model == "fc" else CNN_OBJECTIVE_NAMES


def _check_objective(name: str, model: str) -> str:
    names = objective_names(model)
    if name not in names:
        raise ValueError(f"unknown objective {name!r} for the {model} model; "
                         f"expected one of {names}")
    return name


def check_size(
    size: object, model: str = "fc", kernel_size: int = CNN_KERNEL_SIZE,
    circular: bool = False,
) -> Size:
    """Validate one benchmark size and return it (a CNN shape as a tuple).

    Args:
        size: an int D >= 2 (FC), or an image shape ``(C, H, W)`` of positive ints with H
            and W divisible by 4 (CNN: the model squeezes twice).
        model: ``"fc"`` or ``"cnn"``.
        kernel_size: the CNN's K (odd).
        circular: the CNN runs with circular padding, which needs the last block's images,
            ``H / 4 x W / 4``, to be at least ``K // 2`` wide.

    Raises:
        ValueError: naming the size and what was expected.
    """
    objective_names(model)
    if model == "fc":
        return check_positive_int(_as_int(size), "dim", "bench (fc model)", minimum=2)
    check_positive_int(kernel_size, "kernel_size", "bench (cnn model)")
    if kernel_size % 2 == 0:
        raise ValueError(f"bench (cnn model): kernel_size must be odd, got {kernel_size}")
    try:
        shape = tuple(_as_int(v) for v in size)  # type: ignore[attr-defined]
    except TypeError:
        shape = ()
    if (len(shape) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                               for v in shape)):
        raise ValueError(f"bench (cnn model): shape must be (C, H, W) of positive ints, "
                         f"got {size!r}")
    if shape[1] % _CNN_SQUEEZE or shape[2] % _CNN_SQUEEZE:
        raise ValueError(f"bench (cnn model): H and W of shape {size_label(shape)} must be "
                         f"divisible by {_CNN_SQUEEZE} (the model squeezes twice)")
    if circular and kernel_size // 2 > min(shape[1:]) // _CNN_SQUEEZE:
        raise ValueError(
            f"bench (cnn model): shape {size_label(shape)} is too small for circular padding "
            f"with kernel_size {kernel_size}: the last block's images are "
            f"{shape[1] // _CNN_SQUEEZE}x{shape[2] // _CNN_SQUEEZE}, narrower than "
            f"the padding {kernel_size // 2}")
    return shape


def _as_int(value: object) -> object:
    """An integral number (a numpy int, say) as a Python int; anything else unchanged."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def size_label(size: Size) -> str:
    """``64`` -> ``"64"``, ``(1, 28, 28)`` -> ``"1x28x28"`` (the JSON keys and table rows)."""
    return str(size) if isinstance(size, int) else "x".join(str(v) for v in size)


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse an image shape written ``CxHxW`` (e.g. ``"3x32x32"``) and check it.

    Raises:
        ValueError: not three integers joined by ``x``, or a shape :func:`check_size`
            rejects for the CNN.
    """
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected a shape CxHxW such as 1x28x28, got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"expected a shape CxHxW of three positive integers such as "
                         f"1x28x28, got {text!r}")
    return check_size(shape, "cnn")  # type: ignore[return-value]


def _size_from_label(label: str, model: str) -> Size:
    return int(label) if model == "fc" else tuple(int(v) for v in label.split("x"))


def _check_sizes(sizes: Sequence[object], model: str, kernel_size: int,
                 circular: bool) -> list[Size]:
    """Checked, de-duplicated sizes, smallest first (CNN shapes by their D = C H W)."""
    checked = {check_size(s, model, kernel_size, circular) for s in sizes}
    if not checked:
        raise ValueError("bench: give at least one size (dims or shapes)")
    return sorted(checked, key=lambda s: (math.prod(s), s) if isinstance(s, tuple) else (s,))


# ---------------------------------------------------------------------------------- steps
def objective_for(
    name: str, model: str = "fc",
) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """Return the library objective behind a benchmark name (settings of the paper's FC runs).

    ``ssm`` uses one slice, ``dsm`` sigma = 1 and ``fdssm`` eps = 1 (MNIST FC configs), for
    the CNN too; the values do not change the cost. ``ml-lu`` and ``ml-circular`` are ML.
    """
    from ebflow_lite import objectives

    _check_objective(name, model)
    options = {"ssm": {"n_slices": 1}, "dsm": {"sigma": 1.0}, "fdssm": {"eps": 1.0}}
    return objectives.get("ml" if name.startswith("ml") else name, **options.get(name, {}))


def build_model(name: str, dim: Size, model: str = "fc",
                kernel_size: int = CNN_KERNEL_SIZE) -> nn.Module:
    """The model the benchmark trains under objective ``name``.

    FC: :func:`ebflow_lite.models.fc_flow` (the LU variant for ``ml-lu``). CNN:
    :func:`ebflow_lite.models.cnn_flow` with the paper's preprocessing (256 levels, logit
    alpha 0.75), circular padding for ``ml-circular`` and zero padding otherwise.
    """
    from ebflow_lite.models import cnn_flow, fc_flow, lu_fc_flow
    from ebflow_lite.preprocessing import image_preprocessing

    _check_objective(name, model)
    size = check_size(dim, model, kernel_size, circular=name == "ml-circular")
    if model == "fc":
        return lu_fc_flow(size) if name == "ml-lu" else fc_flow(size)  # type: ignore[arg-type]
    preprocessing = image_preprocessing(CNN_NUM_LEVELS, alpha=CNN_LOGIT_ALPHA,
                                        event_shape=size)
    return cnn_flow(size, kernel_size, padding_mode="circular" if name == "ml-circular"
                    else "zeros", preprocessing=preprocessing)


def make_batch(dim: Size, batch_size: int, model: str = "fc") -> torch.Tensor:
    """The fixed batch a step trains on, drawn from the global random state.

    FC: ``B`` standard normal vectors in ``R^D``. CNN: ``B`` dequantized random 8-bit images
    (uniform levels ``0..255`` plus ``U[0, 1)`` noise), which the model's MaP preprocessing
    maps to ``R^D``.
    """
    from ebflow_lite.data.images import dequantize

    check_positive_int(batch_size, "batch_size", "bench")
    size = check_size(dim, model)
    if model == "fc":
        return torch.randn(batch_size, size)  # type: ignore[arg-type]
    levels = torch.randint(0, CNN_NUM_LEVELS, (batch_size, *size))  # type: ignore[misc]
    return dequantize(levels.float())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def make_training_step(
    name: str, dim: Size, batch_size: int = 100, device: torch.device | str | None = None,
    seed: int = 0, model: str = "fc", kernel_size: int = CNN_KERNEL_SIZE,
) -> Callable[[], float]:
    """Build the model and an RMSprop optimiser; return a function doing one step.

    The returned closure runs ``zero_grad``, the loss, ``backward`` and ``optimizer.step()``
    on a fixed batch (:func:`make_batch`) and returns the loss as a float.

    Args:
        name: an objective of :func:`objective_names` ``(model)``.
        dim: the size, D (FC) or ``(C, H, W)`` (CNN).
        batch_size: B.
        device: where to run (None: :func:`ebflow_lite.pick_device`).
        seed: seeds the model and the batch.
        model: ``"fc"`` or ``"cnn"``.
        kernel_size: the CNN's K.
    """
    from ebflow_lite.device import pick_device

    _check_objective(name, model)
    check_positive_int(batch_size, "batch_size", "make_training_step")
    device = pick_device(str(device)) if device is not None else pick_device()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        flow = build_model(name, dim, model, kernel_size).to(device)
        x = make_batch(dim, batch_size, model).to(device)
    objective = objective_for(name, model)
    optimizer = torch.optim.RMSprop(flow.parameters(), lr=1e-4)
    flow.train()

    params = [p for p in flow.parameters() if p.requires_grad]

    def step() -> float:
        # As ebflow_lite.fit does: gradients for the parameters only, not for the batch.
        optimizer.zero_grad(set_to_none=True)
        loss = objective(flow, x)
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
    return time_interleaved([fn], repeats, warmup, device, max_seconds)[0]


def time_interleaved(
    fns: Sequence[Callable[[], object]], repeats: int = 5, warmup: int = 2,
    device: torch.device | str = "cpu", max_seconds: float | None = 60.0,
    calls_per_round: int = 1,
) -> list[list[float]]:
    """Time several callables round-robin: call 1 of each, then call 2 of each, ...

    Each callable is warmed up and capped as in :func:`time_callable`; the timed calls then
    alternate, so that a change in the machine's load between calls hits every callable
    alike and the ratios of their medians stay fair on a shared machine.

    Args:
        fns: the callables, each called without arguments.
        repeats: timed calls of each callable (before the ``max_seconds`` cap).
        warmup: untimed calls of each callable first.
        device: synchronised around every call (CUDA and MPS run asynchronously).
        max_seconds: cap on the timed calls of one callable, estimated from its warm-ups.
        calls_per_round: timed calls of one callable in a row before the next one's turn.
            With 1 (the default) every call follows another callable's, whose data may have
            evicted this one's from the caches; with a few, most calls of a short callable
            run warm, as in a training loop, and the median reports that.

    Returns:
        The seconds of each callable's timed calls, in the order of ``fns``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    check_positive_int(calls_per_round, "calls_per_round", "time_interleaved")
    device = torch.device(device)
    quotas = []
    for fn in fns:
        first = None
        for _ in range(warmup):
            elapsed = _timed(fn, device)
            first = elapsed if first is None else min(first, elapsed)
            if elapsed > 2.0:
                break
        capped = max_seconds is not None and first is not None and first * repeats > max_seconds
        quotas.append(max(1, int(max_seconds / first)) if capped else repeats)  # type: ignore
    times: list[list[float]] = [[] for _ in fns]
    for start in range(0, max(quotas, default=0), calls_per_round):
        for fn, quota, out in zip(fns, quotas, times, strict=True):
            for _ in range(min(calls_per_round, quota - start)):
                out.append(_timed(fn, device))
    return times


def time_training_step(
    name: str, dim: Size, batch_size: int = 100, repeats: int = 5, warmup: int = 2,
    device: torch.device | str | None = None, seed: int = 0,
    max_seconds: float | None = 60.0, model: str = "fc", kernel_size: int = CNN_KERNEL_SIZE,
) -> list[float]:
    """Seconds per training step of the model under objective ``name`` (see module doc)."""
    from ebflow_lite.device import pick_device

    device = pick_device(str(device)) if device is not None else pick_device()
    step = make_training_step(name, dim, batch_size, device, seed, model, kernel_size)
    return time_callable(step, repeats, warmup, device, max_seconds)


# ---------------------------------------------------------------------------------- census
@dataclass
class OpCensus:
    """The aten operators one training step dispatches.

    Attributes:
        matmuls: ``(op, shape_a, shape_b)`` of every matrix product, in order.
        cubic: counts of operators that factorise or invert a matrix.
        ops: counts of every operator.
        batch_size, dim: the shapes the step ran at (``dim`` is D = C H W for the CNN).
        cubic_shapes: ``(op, shape)`` of the first operand of every cubic operator, in
            order: ``(D, D)`` for a zero-padded convolution's matrix, ``(H, W, C, C)`` for
            the per-frequency blocks of a circular one.
    """

    matmuls: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
    cubic: Counter
    ops: Counter
    batch_size: int
    dim: int
    cubic_shapes: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)

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


def op_census(
    name: str, dim: Size, batch_size: int = 100, seed: int = 0, model: str = "fc",
    kernel_size: int = CNN_KERNEL_SIZE,
) -> OpCensus:
    """Record the operators of one training step (the second: the first is a warm-up).

    Uses a ``TorchDispatchMode``, which sees every aten call, the backward pass included,
    on the CPU. The arguments are those of :func:`make_training_step`.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    step = make_training_step(name, dim, batch_size, "cpu", seed, model, kernel_size)
    step()
    matmuls: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    cubic_shapes: list[tuple[str, tuple[int, ...]]] = []
    ops: Counter = Counter()

    class _Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            op = func.overloadpacket.__name__
            ops[op] += 1
            if op in _MATMUL_OPS:
                a, b = (args[0], args[1]) if op in ("mm", "bmm") else (args[1], args[2])
                matmuls.append((op, tuple(a.shape), tuple(b.shape)))
            elif op in CUBIC_OPS and args and isinstance(args[0], torch.Tensor):
                cubic_shapes.append((op, tuple(args[0].shape)))
            return func(*args, **(kwargs or {}))

    with _Recorder():
        step()
    cubic = Counter({op: n for op, n in ops.items() if op in CUBIC_OPS})
    size = check_size(dim, model, kernel_size)
    features = math.prod(size) if isinstance(size, tuple) else size
    return OpCensus(matmuls, cubic, ops, batch_size, features, cubic_shapes)


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


def _load_1min() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


@dataclass
class BenchResult:
    """Timings of a benchmark run, in seconds, keyed by objective and size.

    ``dims`` holds the sizes: ints D for the FC model, ``(C, H, W)`` tuples for the CNN
    (``model="cnn"``). ``loads`` keeps the 1-minute load average just before and just
    after each configuration was timed.
    """

    dims: list
    objectives: list[str]
    batch_size: int
    times: dict[str, dict] = field(default_factory=dict)
    matmul_times: dict[str, dict] = field(default_factory=dict)
    matmul_units: dict[str, dict] = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    note: str = ""
    model: str = "fc"
    kernel_size: int | None = None
    loads: dict[str, dict] = field(default_factory=dict)

    def median(self, objective: str, dim: Size) -> float:
        """Median seconds per step."""
        return statistics.median(self.times[objective][dim])

    def matmul_median(self, objective: str, dim: Size) -> float:
        """Median seconds of the step's matrix products alone."""
        return statistics.median(self.matmul_times[objective][dim])

    def to_dict(self) -> dict:
        """A JSON-ready dictionary (sizes become strings: ``"64"``, ``"1x28x28"``).

        FC results keep the original layout (``"dims"``); CNN results list ``"shapes"``
        and the ``"kernel_size"`` instead.
        """
        def keyed(table: dict, value: Callable = lambda v: v) -> dict:
            return {obj: {size_label(d): value(v) for d, v in per.items()}
                    for obj, per in table.items()}

        sizes = ({"dims": self.dims} if self.model == "fc" else
                 {"shapes": [list(s) for s in self.dims], "kernel_size": self.kernel_size})
        return {
            "model": self.model, **sizes, "objectives": self.objectives,
            "batch_size": self.batch_size, "times": keyed(self.times),
            "median": keyed(self.times, statistics.median), "min": keyed(self.times, min),
            "matmul_times": keyed(self.matmul_times), "matmul_units": keyed(self.matmul_units),
            "load_average_1min_before_after": keyed(self.loads),
            "machine": self.machine, "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: dict) -> BenchResult:
        """Inverse of :meth:`to_dict` (also reads FC files written before ``"model"``)."""
        model = data.get("model", "fc")

        def unkeyed(table: dict) -> dict:
            return {obj: {_size_from_label(d, model): v for d, v in per.items()}
                    for obj, per in table.items()}

        dims = ([int(d) for d in data["dims"]] if model == "fc" else
                [tuple(int(v) for v in s) for s in data["shapes"]])
        return cls(
            dims=dims, objectives=list(data["objectives"]),
            batch_size=int(data["batch_size"]), times=unkeyed(data["times"]),
            matmul_times=unkeyed(data.get("matmul_times", {})),
            matmul_units=unkeyed(data.get("matmul_units", {})),
            machine=data.get("machine", {}), note=data.get("note", ""), model=model,
            kernel_size=data.get("kernel_size"),
            loads=unkeyed(data.get("load_average_1min_before_after", {})),
        )


def run_benchmark(
    dims: Sequence[Size] | None = None,
    objectives: Sequence[str] | None = None,
    batch_size: int = 100,
    repeats: int = 5,
    warmup: int = 2,
    device: torch.device | str | None = None,
    threads: int | None = None,
    matmul_baseline: bool = False,
    max_seconds: float | None = 60.0,
    progress: bool = True,
    seed: int = 0,
    model: str = "fc",
    kernel_size: int = CNN_KERNEL_SIZE,
    interleave: bool = False,
) -> BenchResult:
    """Time every (objective, size) pair; optionally the matrix-product baseline too.

    Args:
        dims: the dimensions D (FC) or image shapes ``(C, H, W)`` (CNN); None:
            :data:`DEFAULT_SIZES` or :data:`DEFAULT_SHAPES`.
        objectives: names from :func:`objective_names` ``(model)`` (None: all of them).
        batch_size: B (the paper's 100).
        repeats: timed steps per configuration (the median is reported).
        warmup: untimed steps first.
        device: ``"cpu"``, ``"cuda"``, ``"mps"`` or None for :func:`ebflow_lite.pick_device`.
        threads: CPU threads for torch during the run (None: leave torch's setting).
        matmul_baseline: also time the products :func:`op_census` records (CPU census; FC
            only).
        max_seconds: cap on the timed steps of one configuration (see :func:`time_callable`).
        progress: show a tqdm bar.
        seed: seeds the model and the batch.
        model: ``"fc"`` or ``"cnn"``.
        kernel_size: the CNN's K.
        interleave: at each size, build every objective's step first and time them
            round-robin (:func:`time_interleaved`) instead of one objective after the
            other; fairer ratios on a shared machine, at the memory of all the models.
    """
    from tqdm.auto import tqdm

    from ebflow_lite.device import pick_device

    objectives = list(objective_names(model) if objectives is None else objectives)
    for name in objectives:
        _check_objective(name, model)
    default = DEFAULT_SIZES if model == "fc" else DEFAULT_SHAPES
    dims = _check_sizes(default if dims is None else dims, model, kernel_size,
                        circular="ml-circular" in objectives)
    check_positive_int(batch_size, "batch_size", "run_benchmark")
    if matmul_baseline and model != "fc":
        raise ValueError("run_benchmark: matmul_baseline is for the fc model only")
    if threads is not None:
        check_positive_int(threads, "threads", "run_benchmark")
    device = pick_device(str(device)) if device is not None else pick_device()
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    result = BenchResult(dims=dims, objectives=objectives, batch_size=batch_size, model=model,
                         kernel_size=kernel_size if model == "cnn" else None)
    try:
        result.machine = machine_info(device)
        result.machine["interleaved"] = interleave
        groups = ([(d, objectives) for d in dims] if interleave else
                  [(d, [name]) for d in dims for name in objectives])
        bar = tqdm(groups, disable=not progress, desc="bench", leave=False)
        for d, names in bar:
            bar.set_postfix_str(f"{' '.join(names)} {size_label(d)}")
            before = _load_1min()
            steps = [make_training_step(name, d, batch_size, device, seed, model, kernel_size)
                     for name in names]
            timed = time_interleaved(steps, repeats, warmup, device, max_seconds)
            after = _load_1min()
            del steps
            for name, seconds in zip(names, timed, strict=True):
                result.times.setdefault(name, {})[d] = seconds
                result.loads.setdefault(name, {})[d] = [before, after]
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
    """Least-squares slope of ``log t`` against ``log D`` (the exponent k in ``t ~ D^k``).

    Any positive pairs work, not only timings: the slope of ``log y`` against ``log x`` is
    the exponent k of a power law ``y ~ x^k`` (a variance against a sample size, an error
    against a step size).

    Raises:
        ValueError: fewer than two pairs, lengths that differ, a value that is not
            positive, or a single distinct ``D``.
    """
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
    """A text table: one row per size, one column per objective, median seconds per step."""
    names = [n for n in result.objectives if n in result.times]
    width = max(6, *(len(size_label(d)) for d in result.dims))
    head = (f"{'D' if result.model == 'fc' else 'shape':>{width}} "
            + " ".join(f"{n:>{max(10, len(n))}}" for n in names))
    rows = [head, "-" * len(head)]
    for d in result.dims:
        cells = [f"{result.median(n, d):{max(10, len(n))}.4g}" if d in result.times[n]
                 else " " * max(10, len(n)) for n in names]
        rows.append(f"{size_label(d):>{width}} " + " ".join(cells))
    return "\n".join(rows)


def speedups(result: BenchResult, dim: Size, reference: str = "ml") -> dict[str, float]:
    """``reference``'s median step time over each other objective's, at one size."""
    if dim not in result.times.get(reference, {}):
        return {}
    ref = result.median(reference, dim)
    return {name: ref / result.median(name, dim) for name, per in result.times.items()
            if name != reference and dim in per}


def summary(result: BenchResult, min_dim: int = 512) -> dict:
    """FC: slopes, crossovers, speed-ups over ML at the top size, and matmul ratios.

    CNN (:func:`cnn_summary`): speed-ups over ML per shape, next to the paper's.
    """
    if result.model == "cnn":
        return cnn_summary(result)
    top = max(result.dims)
    out: dict = {"fit_min_dim": min_dim, "slopes": slopes(result, min_dim), "crossover": {},
                 "speedup_over_ml_at_top": speedups(result, top), "step_over_matmul_at_top": {},
                 "top_dim": top}
    for name in result.times:
        if "ml" in result.times and name != "ml":
            c = crossover(result, name, "ml")
            out["crossover"][name] = {"status": c.status, "dim": c.dim}
        if name in result.matmul_times and top in result.matmul_times[name]:
            out["step_over_matmul_at_top"][name] = (
                result.median(name, top) / result.matmul_median(name, top))
    return out


def cnn_summary(result: BenchResult) -> dict:
    """Per shape: each objective's speed-up over ``ml`` and over ``ml-circular``, the
    slowest score-matching step's speed-up over ``ml``, and the paper's throughputs and
    speed-ups where it reports the shape (:data:`PAPER_CNN_BATCHES_PER_SECOND`)."""
    out: dict = {"speedup_over_ml": {}, "speedup_over_ml_circular": {},
                 "slowest_sm_speedup_over_ml": {}, "paper_batches_per_second": {},
                 "paper_speedup_over_ml": {}}
    for shape in result.dims:
        label = size_label(shape)
        over_ml = speedups(result, shape, "ml")
        if over_ml:
            out["speedup_over_ml"][label] = over_ml
            sm = [over_ml[n] for n in SM_OBJECTIVES if n in over_ml]
            if sm:
                out["slowest_sm_speedup_over_ml"][label] = min(sm)
        if over_circular := speedups(result, shape, "ml-circular"):
            out["speedup_over_ml_circular"][label] = over_circular
        if paper := PAPER_CNN_BATCHES_PER_SECOND.get(tuple(shape)):
            out["paper_batches_per_second"][label] = paper
            out["paper_speedup_over_ml"][label] = {
                name: rate / paper["ml"] for name, rate in paper.items() if name != "ml"}
    return out


def format_speedups(result: BenchResult) -> str:
    """A text table per CNN shape: seconds per step, ``ml`` time / this objective's, and
    the paper's ratio (from its batches per second) where it reports one."""
    info = cnn_summary(result)
    head = f"{'shape':>8} {'objective':>11} {'s/step':>9} {'ml / this':>10} {'paper':>8}"
    rows = [head, "-" * len(head)]
    for shape in result.dims:
        label = size_label(shape)
        ours = info["speedup_over_ml"].get(label, {})
        paper = info["paper_speedup_over_ml"].get(label, {})
        for name in result.objectives:
            if shape not in result.times.get(name, {}):
                continue
            ratio = "1" if name == "ml" else (f"{ours[name]:.1f}" if name in ours else "")
            theirs = "1" if name == "ml" and paper else (
                f"{paper[name]:.1f}" if name in paper else "")
            rows.append(f"{label:>8} {name:>11} {result.median(name, shape):9.4g} "
                        f"{ratio:>10} {theirs:>8}")
    return "\n".join(rows)


def plot_result(result: BenchResult, path: str | os.PathLike | None = None,
                min_dim: int = 512, ax=None):
    """Log-log plot of seconds per step against D with the fitted slopes in the legend.

    For a CNN result: bars of seconds per step (log scale), one group per image shape.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    if result.model == "cnn":
        _bar_plot(result, ax)
        if path is not None:
            fig.savefig(path, dpi=120, bbox_inches="tight")
        return fig
    fitted = slopes(result, min_dim)
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


def _bar_plot(result: BenchResult, ax) -> None:
    names = [n for n in result.objectives if n in result.times]
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j, d in enumerate(result.dims)
              if d in result.times[name]]
        ts = [result.median(name, d) for d in result.dims if d in result.times[name]]
        ax.bar(xs, ts, width, label=name)
    ax.set_yscale("log")
    ax.set_xticks(range(len(result.dims)), [size_label(d) for d in result.dims])
    ax.set_xlabel("image shape C x H x W")
    ax.set_ylabel("seconds per training step")
    ax.set_title(f"CNN model (K = {result.kernel_size}), batch {result.batch_size}: "
                 "time per step")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)


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
def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _shape_argument(text: str) -> tuple[int, ...]:
    try:
        return parse_shape(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ebflow_lite.bench",
        description="Per-step training time of the FC or CNN model: ML vs score matching.")
    p.add_argument("--model", choices=MODELS, default="fc",
                   help="fc: Dense-ReLU-Dense on D features; cnn: the paper's CNN on images")
    p.add_argument("--sizes", type=_int_at_least(2), nargs="+", default=None, metavar="D",
                   help=f"fc: dimensions D (default {' '.join(map(str, DEFAULT_SIZES))})")
    p.add_argument("--shapes", type=_shape_argument, nargs="+", default=None,
                   metavar="CxHxW",
                   help="cnn: image shapes, H and W divisible by 4 (default "
                        + " ".join(map(size_label, DEFAULT_SHAPES)) + ")")
    p.add_argument("--kernel-size", type=_int_at_least(1), default=None, metavar="K",
                   help=f"cnn: the convolutions' kernel size K, odd (default {CNN_KERNEL_SIZE})")
    p.add_argument("--objectives", nargs="+", default=None, metavar="NAME",
                   choices=tuple(dict.fromkeys(OBJECTIVE_NAMES + CNN_OBJECTIVE_NAMES)),
                   help=f"default: all of the model's (fc: {' '.join(OBJECTIVE_NAMES)}; "
                        f"cnn: {' '.join(CNN_OBJECTIVE_NAMES)})")
    p.add_argument("--batch-size", type=_int_at_least(1), default=100, metavar="B")
    p.add_argument("--repeats", type=_int_at_least(1), default=5, metavar="N",
                   help="timed steps (median reported)")
    p.add_argument("--warmup", type=_int_at_least(0), default=2, metavar="N",
                   help="untimed steps first")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: automatic)")
    p.add_argument("--threads", type=_int_at_least(1), default=None, metavar="N",
                   help="torch CPU threads")
    p.add_argument("--matmul-baseline", action="store_true",
                   help="fc: also time the matrix products each step needs")
    p.add_argument("--fit-min-dim", type=_int_at_least(1), default=512, metavar="D",
                   help="fc: fit the log-log slopes over D >= this")
    p.add_argument("--max-seconds", type=_positive_float, default=60.0, metavar="S",
                   help="cap on the timed steps of one configuration")
    p.add_argument("--interleave", action="store_true",
                   help="time the objectives round-robin at each size (fairer ratios on a "
                        "shared machine)")
    p.add_argument("--note", default="", help="a note stored in the JSON")
    p.add_argument("--out", default="bench-results",
                   help="a .json file, or a folder to write bench.json and bench.png in "
                        "(bench-cnn.json and bench-cnn.png for --model cnn)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _resolve_arguments(args: argparse.Namespace) -> tuple[list[Size], list[str], int]:
    """The sizes, objectives and kernel size a run uses; ValueError for a bad combination."""
    fc = args.model == "fc"
    for flag, value, wanted in (("--shapes", args.shapes, "cnn"), ("--sizes", args.sizes, "fc"),
                                ("--kernel-size", args.kernel_size, "cnn")):
        if value is not None and args.model != wanted:
            raise ValueError(f"argument {flag}: applies to --model {wanted} only")
    if args.matmul_baseline and not fc:
        raise ValueError("argument --matmul-baseline: applies to --model fc only")
    names = objective_names(args.model)
    objectives = list(args.objectives or names)
    unknown = [n for n in objectives if n not in names]
    if unknown:
        raise ValueError(f"argument --objectives: {', '.join(unknown)} not available for "
                         f"--model {args.model} (choose from {', '.join(names)})")
    kernel_size = CNN_KERNEL_SIZE if args.kernel_size is None else args.kernel_size
    if kernel_size % 2 == 0:
        raise ValueError(f"argument --kernel-size: must be odd, got {kernel_size}")
    sizes = (args.sizes or DEFAULT_SIZES) if fc else (args.shapes or DEFAULT_SHAPES)
    try:
        sizes = _check_sizes(sizes, args.model, kernel_size, "ml-circular" in objectives)
    except ValueError as error:
        raise ValueError(f"argument {'--sizes' if fc else '--shapes'}: {error}") from None
    return sizes, objectives, kernel_size


def _output_paths(out: str, model: str) -> tuple[Path, Path]:
    """The JSON and PNG paths of ``--out``; ValueError unless both can be written."""
    path = Path(out)
    json_path = path if path.suffix == ".json" else (
        path / ("bench.json" if model == "fc" else "bench-cnn.json"))
    png_path = json_path.with_suffix(".png")
    for target in (json_path, png_path):
        if target.is_dir():
            raise ValueError(f"argument --out: {target} is a folder, not a file")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=target.parent):
                pass
        except OSError as error:
            raise ValueError(f"argument --out: cannot write in {target.parent} "
                             f"({error.strerror or error})") from None
        if target.exists() and not os.access(target, os.W_OK):
            raise ValueError(f"argument --out: {target} is not writable")
    return json_path, png_path


def _print_fc_summary(result: BenchResult, fit_min_dim: int) -> None:
    info = summary(result, fit_min_dim)
    print(f"\nlog-log slopes over D >= {fit_min_dim}:")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m ebflow_lite.bench``)."""
    import matplotlib

    matplotlib.use("Agg")
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        sizes, objectives, kernel_size = _resolve_arguments(args)
        json_path, png_path = _output_paths(args.out, args.model)
    except ValueError as error:
        parser.error(str(error))
    result = run_benchmark(
        sizes, objectives, args.batch_size, args.repeats, args.warmup, args.device,
        args.threads, args.matmul_baseline, args.max_seconds, not args.no_progress,
        model=args.model, kernel_size=kernel_size, interleave=args.interleave)
    result.note = args.note
    save_result(result, json_path, args.fit_min_dim)
    plot_result(result, png_path, args.fit_min_dim)
    what = "" if args.model == "fc" else f", CNN model K = {kernel_size}"
    print(f"seconds per training step (median), batch {result.batch_size}{what}, "
          f"{result.machine['device']}, {result.machine['torch_threads']} threads, "
          f"torch {result.machine['torch']}")
    print(format_table(result))
    if args.model == "fc":
        _print_fc_summary(result, args.fit_min_dim)
    else:
        print("\nml step time / each step's time, ours and the paper's (batches per second):")
        print(format_speedups(result))
    print(f"\nwrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
