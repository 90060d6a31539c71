"""The run-mode switch, device choice and seeding."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import ebflow_lite
from ebflow_lite import config, fast_mode, pick, pick_device, seed_everything


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", " FAST "])
def test_fast_mode_on(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("EBFLOW_FAST", value)
    assert fast_mode() is True
    assert pick(full=5000, fast=200) == 200
    assert config.mode_name() == "fast"


@pytest.mark.parametrize("value", [None, "", "0", "false", "No", "off"])
def test_fast_mode_off(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("EBFLOW_FAST", raising=False)
    else:
        monkeypatch.setenv("EBFLOW_FAST", value)
    assert fast_mode() is False
    assert pick(full=5000, fast=200) == 5000
    assert config.mode_name() == "full"


def test_pick_returns_objects_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EBFLOW_FAST", "1")
    fast_value = {"lr": 1e-3}
    assert pick(full=None, fast=fast_value) is fast_value


def test_pick_device_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EBFLOW_DEVICE", raising=False)
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("EBFLOW_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    monkeypatch.setenv("EBFLOW_DEVICE", "   ")
    assert isinstance(pick_device(), torch.device)  # blank: automatic choice


def test_pick_device_argument_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EBFLOW_DEVICE", "tpu")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        pick_device()


@pytest.mark.parametrize(
    ("name", "message"),
    [("gpu", "unknown device"), ("cpu:x", "malformed device name"), ("", None)],
)
def test_pick_device_bad_names(monkeypatch: pytest.MonkeyPatch, name: str, message) -> None:
    monkeypatch.delenv("EBFLOW_DEVICE", raising=False)
    if message is None:  # an empty name means automatic
        assert isinstance(pick_device(name or None), torch.device)
        return
    with pytest.raises(ValueError, match=message):
        pick_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_pick_device_missing_cuda_raises() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")


def test_seed_everything_makes_every_rng_repeat() -> None:
    def draw():
        return (torch.randn(3), np.random.rand(3), random.random())

    generator = seed_everything(42)
    first = draw()
    first_own = torch.randn(3, generator=generator)
    generator = seed_everything(42)
    second = draw()
    torch.testing.assert_close(first[0], second[0], rtol=0, atol=0)
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]
    torch.testing.assert_close(first_own, torch.randn(3, generator=generator), rtol=0, atol=0)
    seed_everything(43)
    assert not torch.equal(torch.randn(3), first[0])
    assert torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_seed_everything_rejects_bad_seeds(seed) -> None:
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        seed_everything(seed)


def test_public_names_exist() -> None:
    for name in ebflow_lite.__all__:
        assert hasattr(ebflow_lite, name), name
