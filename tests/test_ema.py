"""The exponential moving average: warm-up schedule, update rule, swapping and checkpoints."""

from __future__ import annotations

import pytest
import torch

import ebflow_lite
from ebflow_lite.ema import EMA
from ebflow_lite.layers import ActNorm, Dense
from ebflow_lite.models import fc_flow
from ebflow_lite.testing import perturb_parameters


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_warmup_momentum_schedule() -> None:
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.999)
    seen = []
    for _ in range(9100):  # (2 + n) / (11 + n) reaches 0.999 at n = 8989
        seen.append(ema.momentum())
        ema.update(model)
    assert seen[0] == pytest.approx(2 / 11)  # score-SDE: counter incremented first
    assert seen[10] == pytest.approx(12 / 21)
    assert seen[8988] < 0.999 and seen[8989] == pytest.approx(0.999)
    assert all(b >= a for a, b in zip(seen, seen[1:], strict=False))
    assert max(seen) == pytest.approx(0.999)
    assert EMA(model, decay=0.9, warmup=False).momentum() == pytest.approx(0.9)


def test_update_matches_the_recursion_by_hand() -> None:
    model = torch.nn.Linear(4, 4)
    ema = EMA(model, decay=0.99, warmup=True)
    expected = _flat(model).clone()
    for n in range(30):
        perturb_parameters(model, 1.0)  # a stand-in for a training step
        m = min(0.99, (2 + n) / (11 + n))
        expected = m * expected + (1 - m) * _flat(model)
        ema.update(model)
    averaged = torch.cat([ema.shadow[name].flatten() for name, _ in model.named_parameters()])
    torch.testing.assert_close(averaged, expected)


def test_average_parameters_swaps_in_and_restores() -> None:
    model = fc_flow(5)
    ema = EMA(model, decay=0.9)
    x = torch.randn(64, 5)
    ebflow_lite.fit(model, ebflow_lite.objectives.ml, x, steps=20, batch_size=16, ema=ema,
                    progress=False, lr=1e-2)
    trained = _flat(model).clone()
    shadow = torch.cat([ema.shadow[n].flatten() for n, _ in model.named_parameters()])
    assert not torch.allclose(trained, shadow)
    logp_trained = model.log_prob(x).detach()
    with ema.average_parameters(model):
        torch.testing.assert_close(_flat(model), shadow)
        # log Z is cached per parameter version: the swap must invalidate it.
        logp_avg = model.log_prob(x).detach()
        ref = fc_flow(5)
        ref.load_state_dict(model.state_dict())
        torch.testing.assert_close(logp_avg, ref.log_prob(x).detach())
    torch.testing.assert_close(_flat(model), trained)
    torch.testing.assert_close(model.log_prob(x).detach(), logp_trained)


def test_store_restore_and_copy_to() -> None:
    model = torch.nn.Linear(3, 3)
    ema = EMA(model)
    before = _flat(model).clone()
    with pytest.raises(ValueError, match="nothing stored"):
        ema.restore(model)
    ema.store(model)
    with torch.no_grad():
        model.weight.zero_()
    ema.restore(model)
    torch.testing.assert_close(_flat(model), before)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.copy_to(model)
    torch.testing.assert_close(_flat(model), before)


def test_buffers_are_not_averaged() -> None:
    model = torch.nn.Sequential(ActNorm(3))
    ema = EMA(model)
    names = set(ema.shadow)
    assert names == {"0.loc", "0.log_scale"}
    model[0].initialize(torch.randn(10, 3))
    ema.update(model)
    with ema.average_parameters(model):
        assert bool(model[0].initialized)


def test_state_dict_round_trip_and_checkpoint(tmp_path) -> None:
    model = Dense(4)
    ema = EMA(model, decay=0.95)
    for _ in range(5):
        with torch.no_grad():
            model.weight.add_(0.1)
        ema.update(model)
    other = EMA(Dense(4), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 5 and other.decay == 0.95
    torch.testing.assert_close(other.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError, match="missing keys"):
        other.load_state_dict({"decay": 0.9})
    # fit() saves the EMA with the checkpoint and restores it when resuming.
    flow = fc_flow(3)
    x = torch.randn(40, 3)
    ema1 = EMA(flow, decay=0.9)
    ckpt = tmp_path / "run.pt"
    ebflow_lite.fit(flow, ebflow_lite.objectives.ml, x, steps=6, batch_size=8, ema=ema1,
                    checkpoint=ckpt, checkpoint_every=3, progress=False)
    ema2 = EMA(fc_flow(3), decay=0.9)
    ebflow_lite.fit(fc_flow(3), ebflow_lite.objectives.ml, x, steps=6, batch_size=8,
                    ema=ema2, checkpoint=ckpt, progress=False)
    assert ema2.num_updates == 6
    torch.testing.assert_close(ema2.shadow["layers.0.weight"], ema1.shadow["layers.0.weight"])


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="decay"):
        EMA(torch.nn.Linear(2, 2), decay=1.0)
    ema = EMA(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="differ"):
        ema.update(torch.nn.Linear(2, 2, bias=False))
