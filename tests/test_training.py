"""The training loop: learning, NaN handling, checkpoints and exact resumption."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import ebflow_lite
from ebflow_lite import EBFlow, fit, load_checkpoint, save_checkpoint
from ebflow_lite.ema import EMA
from ebflow_lite.layers import ActNorm, AffineCoupling, Dense, SmoothLeakyReLU
from ebflow_lite.objectives import ml
from ebflow_lite.training import BatchStream, History


def gaussian_data(n: int = 512) -> torch.Tensor:
    """A correlated 2-D Gaussian sample, the same in every call (its own generator)."""
    mixing = torch.tensor([[2.0, 0.0], [1.2, 0.5]])
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(2023))
    return noise @ mixing.T + torch.tensor([1.0, -2.0])


def small_flow() -> EBFlow:
    return EBFlow([ActNorm(2), Dense(2), SmoothLeakyReLU(dim=2),
                   AffineCoupling(2, hidden=8), Dense(2)])


def noisy_ml(model: EBFlow, x: torch.Tensor) -> torch.Tensor:
    """ML on jittered data: an objective that draws from the global RNG, like SSM does."""
    return ml(model, x + 0.01 * torch.randn_like(x))


def test_fit_decreases_the_ml_loss_on_a_gaussian() -> None:
    data = gaussian_data()
    model = EBFlow([Dense(2)])
    with torch.no_grad():
        before = float(ml(model, data))
    history = fit(model, ml, data, steps=300, batch_size=128, lr=0.05, progress=False)
    with torch.no_grad():
        after = float(ml(model, data))
    # the best a Gaussian can do: the NLL of the fitted Gaussian, 0.5 log det(2 pi e Sigma)
    cov = torch.cov(data.T)
    optimum = 0.5 * float(torch.logdet(2 * math.pi * math.e * cov))
    assert history.step == 300 and len(history.losses) == 300 and history.skipped == 0
    assert after < before - 1.0
    assert abs(after - optimum) < 0.05
    assert sum(history.losses[-20:]) < sum(history.losses[:20])


def _objective_with_bad_calls(bad_calls: set[int], kind: str, snapshots: list | None = None):
    """ML, except on the given (1-based) calls: a NaN loss, or a finite loss with a NaN
    gradient. ``snapshots`` receives the model's weights at the start of every call."""
    calls = {"n": 0}

    def objective(model: EBFlow, x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if snapshots is not None:
            snapshots.append([p.detach().clone() for p in model.parameters()])
        loss = ml(model, x)
        if calls["n"] in bad_calls:
            if kind == "loss":
                return loss * float("nan")
            # a finite loss (zero added) whose gradient is NaN: d sqrt(|w - w|) at 0
            weight = model.layers[0].weight
            return loss + (weight - weight.detach()).abs().sqrt().sum()
        return loss

    return objective


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_non_finite_steps_are_skipped_and_counted(kind: str) -> None:
    data = gaussian_data()
    model = EBFlow([Dense(2), SmoothLeakyReLU(dim=2)])
    steps_seen: list[int] = []
    snapshots: list[list[torch.Tensor]] = []
    bad = {3, 4, 9}
    objective = _objective_with_bad_calls(bad, kind, snapshots)
    history = fit(model, objective, data, steps=10, lr=0.01, progress=False,
                  callback=lambda step, loss: steps_seen.append(step))
    assert history.skipped == 3
    assert history.step == 10 and len(history.losses) == 10
    assert all(math.isfinite(v) for v in history.losses)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert steps_seen == list(range(1, 11))
    assert len(snapshots) == 13
    for call in range(1, 13):  # between call k and call k + 1, an update iff k was good
        unchanged = all(torch.equal(a, b) for a, b in
                        zip(snapshots[call - 1], snapshots[call], strict=True))
        assert unchanged is (call in bad), call


def test_twenty_bad_steps_in_a_row_raise() -> None:
    model = EBFlow([Dense(2)])
    with pytest.raises(ValueError, match="diverged: 20 steps in a row"):
        fit(model, _objective_with_bad_calls(set(range(3, 100)), "loss"), gaussian_data(),
            steps=50, progress=False)


def test_nineteen_bad_steps_in_a_row_do_not_raise() -> None:
    model = EBFlow([Dense(2)])
    history = fit(model, _objective_with_bad_calls(set(range(3, 22)), "loss"), gaussian_data(),
                  steps=5, progress=False)
    assert history.skipped == 19 and history.step == 5


def _train(steps: int, checkpoint: Path | None = None, crash_at: int | None = None,
           seed: int = 0, **kwargs) -> tuple[EBFlow, History, EMA]:
    """Seed, build, train; ``crash_at`` raises from the callback at that step."""
    ebflow_lite.seed_everything(seed)
    data = gaussian_data(300)  # batch 64 on 300 rows: checkpoints fall mid-epoch
    model = small_flow()
    ema = EMA(model, decay=0.9)

    def crash(step: int, loss: float) -> None:
        if step == crash_at:
            raise KeyboardInterrupt

    history = fit(model, noisy_ml, data, steps=steps, batch_size=64, lr=0.01,
                  checkpoint=checkpoint, progress=False, callback=crash, ema=ema, **kwargs)
    return model, history, ema


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0, msg=key)


def test_resuming_after_a_crash_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    reference, reference_history, reference_ema = _train(steps=16)
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        _train(steps=16, checkpoint=path, crash_at=10, checkpoint_every=7)
    # a fresh process: another seed, a new model; the checkpoint saved on the interrupt (step
    # 10) brings it back
    resumed, history, ema = _train(steps=16, checkpoint=path, seed=123, checkpoint_every=7)
    assert history.step == 16 and len(history.losses) == 16
    assert history.losses == reference_history.losses
    _assert_same_state(resumed, reference)
    for key, value in reference_ema.shadow.items():
        torch.testing.assert_close(ema.shadow[key], value, rtol=0, atol=0)
    # the loss changed while training, so the equality above is not trivial
    assert history.losses[0] != history.losses[-1]


def test_extending_a_finished_run_gives_the_longer_run(tmp_path: Path) -> None:
    reference, _, _ = _train(steps=14)
    path = tmp_path / "run.pt"
    short, short_history, _ = _train(steps=9, checkpoint=path)
    assert short_history.step == 9
    assert load_checkpoint(path, small_flow())[0].step == 9
    extended, history, _ = _train(steps=14, checkpoint=path, seed=7)
    assert history.step == 14
    _assert_same_state(extended, reference)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = small_flow()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    ml(model, gaussian_data()).backward()
    optimizer.step()
    history = History(losses=[1.0, 0.5], skipped=1, step=2)
    save_checkpoint(tmp_path / "c.pt", model, optimizer, history, extra={"note": 3})
    other = small_flow()
    other_optimizer = torch.optim.Adam(other.parameters(), lr=0.1)
    loaded, extra = load_checkpoint(tmp_path / "c.pt", other, other_optimizer)
    assert loaded == history and extra == {"note": 3}
    _assert_same_state(other, model)
    assert other_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()
    with pytest.raises(ValueError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt", other)


def test_progress_bar_can_be_disabled(capsys) -> None:
    data = gaussian_data()
    fit(EBFlow([Dense(2)]), ml, data, steps=3, progress=False)
    assert capsys.readouterr().err == ""
    fit(EBFlow([Dense(2)]), ml, data, steps=3, progress=True)
    assert "fit" in capsys.readouterr().err


def test_callback_sees_every_step_and_grad_clip_runs() -> None:
    steps: list[int] = []
    fit(EBFlow([Dense(2)]), ml, gaussian_data(), steps=4, grad_clip=0.1, progress=False,
        callback=lambda step, loss: steps.append(step))
    assert steps == [1, 2, 3, 4]


def test_fit_rejects_bad_arguments() -> None:
    model = EBFlow([Dense(2)])
    with pytest.raises(ValueError, match=r"fit: steps must be an int >= 0, got -1"):
        fit(model, ml, gaussian_data(), steps=-1, progress=False)
    with pytest.raises(ValueError, match=r"fit: batch_size must be an int >= 1, got 0"):
        fit(model, ml, gaussian_data(), steps=1, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="data is empty"):
        fit(model, ml, torch.zeros(0, 2), steps=1, progress=False)


def test_batch_stream_visits_every_row_once_per_epoch() -> None:
    data = torch.arange(10.0).unsqueeze(1)
    stream = BatchStream(data, batch_size=3)
    first_epoch = torch.cat([next(stream) for _ in range(3)]).flatten()
    assert len(set(first_epoch.tolist())) == 9  # 3 full batches, the 10th row is dropped
    assert all(next(stream).shape == (3, 1) for _ in range(10))
    assert BatchStream(data, batch_size=50).batch_size == 10


def test_batch_stream_state_round_trip() -> None:
    data = torch.randn(50, 2)
    stream = BatchStream(data, batch_size=8)
    for _ in range(4):
        next(stream)
    state = stream.state_dict()
    expected = [next(stream) for _ in range(12)]
    other = BatchStream(data, batch_size=8)
    other.load_state_dict(state)
    for a, b in zip(expected, [next(other) for _ in range(12)], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="same data"):
        BatchStream(torch.randn(40, 2), batch_size=8).load_state_dict(state)
