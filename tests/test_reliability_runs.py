"""Reliability of long runs: checkpoints are safe to load and atomic, and an interrupt loses
nothing that was trained (issue #13). One table of cases per kind."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import ebflow_lite
from ebflow_lite import EBFlow, fit, load_checkpoint, save_checkpoint
from ebflow_lite.ema import EMA
from ebflow_lite.layers import ActNorm, AffineCoupling, Dense, LUDense, SmoothLeakyReLU
from ebflow_lite.objectives import ml
from ebflow_lite.sampling import SamplingInterrupted, langevin, mala, metropolis_hastings
from ebflow_lite.testing import perturb_parameters
from ebflow_lite.training import FitInterrupted, History, TrainingDiverged


def gaussian_data(n: int = 300, seed: int = 2023) -> torch.Tensor:
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return noise @ torch.tensor([[2.0, 0.0], [1.2, 0.5]]).T + torch.tensor([1.0, -2.0])


def small_flow() -> EBFlow:
    return EBFlow([ActNorm(2), Dense(2), SmoothLeakyReLU(dim=2),
                   AffineCoupling(2, hidden=8), Dense(2)])


def noisy_ml(model: EBFlow, x: torch.Tensor) -> torch.Tensor:
    """ML on jittered data: draws from the global RNG, as SSM does."""
    return ml(model, x + 0.01 * torch.randn_like(x))


def train(steps: int, checkpoint: Path | None = None, seed: int = 0,
          objective: Callable = noisy_ml, **kwargs) -> tuple[EBFlow, History, EMA]:
    ebflow_lite.seed_everything(seed)
    model = small_flow()
    ema = EMA(model, decay=0.9)
    history = fit(model, objective, gaussian_data(), steps=steps, batch_size=64, lr=0.01,
                  checkpoint=checkpoint, progress=False, ema=ema, **kwargs)
    return model, history, ema


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------- checkpoints
def _saved(tmp_path: Path) -> tuple[Path, EBFlow]:
    model = perturb_parameters(small_flow(), 1.0)
    path = tmp_path / "run.pt"
    save_checkpoint(path, model, history=History(losses=[1.0], step=1))
    return path, model


def _other_architecture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = _saved(tmp_path)
    model = EBFlow([ActNorm(2), Dense(2), SmoothLeakyReLU(dim=2),
                    AffineCoupling(2, hidden=16), Dense(2)])  # wider conditioner
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"does not fit this model.*shape mismatches.*"
                                         r"left unchanged"):
        load_checkpoint(path, model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    lu = EBFlow([ActNorm(2), LUDense(2), SmoothLeakyReLU(dim=2),
                 AffineCoupling(2, hidden=8), Dense(2)])
    with pytest.raises(ValueError, match="missing keys.*unexpected keys"):
        load_checkpoint(path, lu)


def _other_optimizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_flow()
    adam = torch.optim.Adam(model.parameters(), lr=0.1)
    ml(model, gaussian_data()).backward()
    adam.step()
    save_checkpoint(tmp_path / "a.pt", model, adam)
    fresh = small_flow()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError, match="saved from Adam, this is SGD"):
        load_checkpoint(tmp_path / "a.pt", fresh, torch.optim.SGD(fresh.parameters(), lr=0.1))
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def _truncated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=rf"{path.name} is not a readable checkpoint"):
        load_checkpoint(path, small_flow())


def _foreign_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes\.pt is not a readable checkpoint"):
        load_checkpoint(text, small_flow())
    weights = tmp_path / "weights.pt"
    torch.save(small_flow().state_dict(), weights)  # a bare state dict
    with pytest.raises(ValueError, match=r"weights\.pt is not an ebflow_lite checkpoint"):
        load_checkpoint(weights, small_flow())
    with pytest.raises(ValueError, match="is a directory"):
        load_checkpoint(tmp_path, small_flow())
    with pytest.raises(ValueError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt", small_flow())


class _RunsCode:
    """A pickle payload that would call a function when unpickled."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def _code_in_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = _saved(tmp_path)
    state = torch.load(path, weights_only=True)
    state["extra"] = {"payload": _RunsCode()}
    torch.save(state, path)
    model = small_flow()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"refused to load .*could run code.*system"):
        load_checkpoint(path, model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="plain Python values"):
        save_checkpoint(tmp_path / "b.pt", model, extra={"payload": _RunsCode()})


def _older_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint of the earlier format (NumPy's RNG state pickled as NumPy objects)."""
    import numpy as np

    path, model = _saved(tmp_path)
    state = torch.load(path, weights_only=True)
    np.random.seed(3)
    state["numpy_rng"] = np.random.get_state()
    expected = np.random.rand()
    torch.save(state, path)
    np.random.seed(1)
    other = small_flow()
    load_checkpoint(path, other)
    assert same_state(other, model)
    assert np.random.rand() == expected


def _interrupted_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, model = _saved(tmp_path)
    real_save = torch.save

    def partial_save(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", partial_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, small_flow())
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # no stale .tmp
    other = small_flow()
    load_checkpoint(path, other)  # the previous checkpoint is intact
    assert same_state(other, model)


def _directory_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="is a directory; pass a file path"):
        fit(small_flow(), ml, gaussian_data(), steps=3, checkpoint=tmp_path, progress=False)
    with pytest.raises(ValueError, match="is a directory"):
        save_checkpoint(tmp_path, small_flow())


def _unwritable_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot write the checkpoint"):  # before training
        fit(small_flow(), ml, gaussian_data(), steps=3, checkpoint=blocker / "run.pt",
            callback=lambda *_: pytest.fail("trained before checking the path"),
            progress=False)


def _resume_other_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run.pt"
    train(4, checkpoint=path)
    shuffled = gaussian_data()[torch.randperm(300)]
    for data, message in ((gaussian_data(seed=7), "other data"), (shuffled, "other data"),
                          (gaussian_data(n=200), "200")):
        with pytest.raises(ValueError, match=message):
            fit(small_flow(), noisy_ml, data, steps=8, batch_size=64, checkpoint=path,
                progress=False)
    with pytest.raises(ValueError, match="batches of 64 rows, but batch_size is 32"):
        fit(small_flow(), noisy_ml, gaussian_data(), steps=8, batch_size=32, checkpoint=path,
            progress=False)
    model, history, _ = train(8, checkpoint=path)  # the same data and batch size resume
    assert history.step == 8


def _resume_with_another_ema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run.pt"
    train(4, checkpoint=path)
    model = small_flow()
    wrong = EMA(EBFlow([Dense(2)]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="EMA.load_state_dict"):
        fit(model, noisy_ml, gaussian_data(), steps=8, batch_size=64, ema=wrong,
            checkpoint=path, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


CHECKPOINT_CASES = {
    "another architecture leaves the model unchanged": _other_architecture,
    "another optimizer leaves the model unchanged": _other_optimizer,
    "a truncated file names the path": _truncated,
    "foreign files name the path": _foreign_files,
    "a file that would run code is refused": _code_in_a_checkpoint,
    "the earlier format still loads": _older_format,
    "an interrupted save leaves the old file and no .tmp": _interrupted_save,
    "a directory is refused before training": _directory_path,
    "an unwritable path is refused before training": _unwritable_path,
    "resuming with other data or batch size is refused": _resume_other_data,
    "resuming with an EMA of another model changes nothing": _resume_with_another_ema,
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES), ids=list(CHECKPOINT_CASES))
def test_checkpoint_faults(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    CHECKPOINT_CASES[case](tmp_path, monkeypatch)


def test_checkpoints_hold_no_pickled_objects(tmp_path: Path) -> None:
    _, history, _ = train(3, checkpoint=tmp_path / "run.pt")
    assert history.step == 3
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "run.pt") == []


# ---------------------------------------------------------------------------- interrupts
def _interrupt_objective(on_call: int, action: Callable[[], None]) -> Callable:
    calls = {"n": 0}

    def objective(model: EBFlow, x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == on_call:
            action()
        return noisy_ml(model, x)

    return objective


def _sigint() -> None:
    os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def default_sigint():
    """Python's default Ctrl-C handler for the test, which fit defers.

    A shell without job control starts background jobs with SIGINT ignored, and Python then
    leaves it ignored; fit (rightly) only replaces the default handler, so the Ctrl-C tests
    would see no interrupt at all when the suite runs as such a job.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _raise() -> None:
    raise KeyboardInterrupt


# (how the interrupt comes, where, the step the run stops at, whether resuming is exact)
INTERRUPTS = {
    "Ctrl-C mid-step finishes the step": (dict(objective=_interrupt_objective(6, _sigint)),
                                          6, True),
    "KeyboardInterrupt in the callback": (dict(callback=lambda s, _: s == 5 and _raise()),
                                          5, True),
    "KeyboardInterrupt mid-step": (dict(objective=_interrupt_objective(6, _raise)), 5, False),
    "two Ctrl-C stop at once": (dict(objective=_interrupt_objective(
        6, lambda: (_sigint(), _sigint()))), 5, False),
    "KeyboardInterrupt right after a checkpoint": (dict(
        objective=_interrupt_objective(5, _raise), checkpoint_every=4), 4, True),
}


@pytest.mark.parametrize("case", list(INTERRUPTS), ids=list(INTERRUPTS))
def test_an_interrupt_loses_nothing(case: str, tmp_path: Path, default_sigint: None) -> None:
    options, stop, exact = INTERRUPTS[case]
    options = {"checkpoint_every": 100, **options}
    reference, reference_history, _ = train(12)
    path = tmp_path / "run.pt"
    with pytest.raises(FitInterrupted) as caught:
        train(12, checkpoint=path, **options)
    error = caught.value
    assert isinstance(error, KeyboardInterrupt)
    assert error.history.step == stop and error.exact is exact and error.checkpoint == path
    assert f"after step {stop} of 12" in str(error) and ".history" in str(error)
    assert error.history.losses == reference_history.losses[:stop]
    assert not path.with_name(path.name + ".tmp").exists()
    assert load_checkpoint(path, small_flow())[0].step == stop
    resumed, history, _ = train(12, checkpoint=path, seed=99)
    assert history.step == 12
    assert same_state(resumed, reference) is exact
    if exact:
        assert history.losses == reference_history.losses


def test_an_interrupt_without_a_checkpoint_keeps_the_model_and_history() -> None:
    with pytest.raises(FitInterrupted, match="pass checkpoint=") as caught:
        train(12, callback=lambda s, _: s == 3 and _raise())
    assert caught.value.history.step == 3 and caught.value.checkpoint is None


def test_an_interrupt_during_a_checkpoint_save_saves_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference, _, _ = train(12)
    real_save = torch.save
    calls = {"n": 0}

    def flaky_save(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the periodic save at step 4
            handle.write(b"half")
            raise KeyboardInterrupt
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", flaky_save)
    path = tmp_path / "run.pt"
    with pytest.raises(FitInterrupted) as caught:
        train(12, checkpoint=path, checkpoint_every=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert caught.value.history.step == 4 and caught.value.exact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]
    resumed, _, _ = train(12, checkpoint=path, seed=5)
    assert same_state(resumed, reference)


def test_a_diverged_run_keeps_its_history_and_its_last_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "run.pt"

    def poison(step: int, loss: float) -> None:
        if step == 4:
            with torch.no_grad():
                model.layers[1].weight.fill_(float("nan"))

    ebflow_lite.seed_everything(0)
    model = small_flow()
    with pytest.raises(TrainingDiverged, match=r"diverged at step 4: .*layers\.1\.weight") as e:
        fit(model, noisy_ml, gaussian_data(), steps=12, batch_size=64, checkpoint=path,
            checkpoint_every=2, callback=poison, progress=False)
    assert e.value.history.step == 4 and "the checkpoint keeps step 2" in str(e.value)
    saved = small_flow()
    assert load_checkpoint(path, saved)[0].step == 2  # the good checkpoint, not a NaN one
    assert all(bool(torch.isfinite(p).all()) for p in saved.parameters())


SAMPLERS = {
    "langevin": lambda m, x, g: langevin(m, x, 0.05, 10, keep_trace=True, generator=g),
    "mala": lambda m, x, g: mala(m, x, 0.05, 10, keep_trace=True, generator=g),
    "metropolis_hastings": lambda m, x, g: metropolis_hastings(m, x, 0.3, 10, keep_trace=True,
                                                               generator=g),
}


class _InterruptingEnergy(torch.nn.Module):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.calls, self.after = 0, after

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return 0.5 * (x**2).sum(1)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_an_interrupted_sampler_returns_the_chains_so_far(name: str) -> None:
    start = torch.randn(5, 2)
    with pytest.raises(SamplingInterrupted) as caught:
        SAMPLERS[name](_InterruptingEnergy(after=4), start, torch.Generator().manual_seed(0))
    error = caught.value
    assert isinstance(error, KeyboardInterrupt) and f"{name}: interrupted" in str(error)
    assert 0 < error.step < 10
    assert error.result.samples.shape == (5, 2)
    assert error.result.trace.shape == (error.step + 1, 5, 2)
    full = SAMPLERS[name](_InterruptingEnergy(after=10**6), start,
                          torch.Generator().manual_seed(0))
    torch.testing.assert_close(error.result.trace, full.trace[: error.step + 1])
