"""The chapter-6 driver: per-batch smoothing, SML's ActNorm initialisation, the schedule."""

from __future__ import annotations

import math

import pytest
import torch

from ebflow_lite import objectives
from ebflow_lite.data import toy
from ebflow_lite.experiments import claims
from ebflow_lite.experiments.toy import smoothed_objective, train_toy
from ebflow_lite.layers import ActNorm
from ebflow_lite.models import toy_flow


def test_smoothed_objective_adds_fresh_noise_of_the_given_width() -> None:
    seen = []

    def record(model, x):
        seen.append(x.clone())
        return x.sum()

    x = torch.zeros(20_000, 2)
    wrapped = smoothed_objective(record, 0.375)
    torch.manual_seed(0)
    wrapped(None, x)
    wrapped(None, x)
    assert not torch.equal(seen[0], seen[1])
    assert float(seen[0].std()) == pytest.approx(0.375, rel=0.02)
    with pytest.raises(ValueError, match="positive"):
        smoothed_objective(record, 0.0)


def test_train_toy_is_deterministic_and_checks_its_schedule() -> None:
    target = toy("sine")
    a, history = train_toy(target, "ssm", seed=3, steps=5, batch_size=32, n_train=64,
                           n_blocks=1, hidden=8, lr_schedule="cosine")
    b, _ = train_toy(target, "ssm", seed=3, steps=5, batch_size=32, n_train=64, n_blocks=1,
                     hidden=8, lr_schedule="cosine")
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert len(history.losses) == 5 and all(math.isfinite(v) for v in history.losses)
    with pytest.raises(ValueError, match="lr_schedule"):
        train_toy(target, "ml", steps=1, batch_size=8, n_train=8, lr_schedule="linear")


def test_sml_initialises_actnorm_on_the_data_alone() -> None:
    x = toy("swirl").sample(512, generator=torch.Generator().manual_seed(0))
    reference = toy_flow(n_blocks=1, hidden=8, seed=0).train()
    with torch.no_grad():
        reference.energy(x)
    model = toy_flow(n_blocks=1, hidden=8, seed=0).train()
    objectives.get("sml")(model, x)
    ours = next(m for m in model.modules() if isinstance(m, ActNorm))
    theirs = next(m for m in reference.modules() if isinstance(m, ActNorm))
    torch.testing.assert_close(ours.log_scale, theirs.log_scale)
    torch.testing.assert_close(ours.loc, theirs.loc)


def test_claims_round_trip_and_missing_files(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EBFLOW_RESULTS_DIR", str(tmp_path))
    assert claims.read_results("06") is None
    row = dict.fromkeys(claims.CLAIM_KEYS, "x") | {"asserted": True}
    path = claims.write_results("06", [row], extra={"kl": 1.0})
    record = claims.read_results("06")
    assert path.parent == tmp_path and record["claims"] == [row]
    assert record["extra"] == {"kl": 1.0} and record["mode"] in ("fast", "full")
    path.write_text("{not json")
    assert claims.read_results("06") is None
    with pytest.raises(ValueError, match="lacks"):
        claims.write_results("06", [{"claim": "x"}])
    with pytest.raises(ValueError, match="two digits"):
        claims.write_results("6", [row])
