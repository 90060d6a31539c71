"""Input checks: every bad batch becomes a ValueError that names the problem."""

from __future__ import annotations

import pytest
import torch

from ebflow_lite import validation
from ebflow_lite.layers import Dense
from ebflow_lite.validation import check_batch, check_same_device


def test_check_batch_returns_a_good_batch_unchanged() -> None:
    x = torch.randn(5, 3)
    assert check_batch(x, 3) is x
    assert check_batch(torch.randn(5, 2, 2)) is not None  # no dim: any trailing shape


@pytest.mark.parametrize(
    ("bad", "dim", "message"),
    [
        (None, 3, "expected a torch.Tensor, got NoneType"),
        (torch.ones(4, 3, dtype=torch.int32), 3, "floating-point tensor, got dtype torch.int32"),
        (torch.ones(4, 3, dtype=torch.bool), 3, "floating-point"),
        (torch.randn(3), 3, r"shape \(B, D\), got shape \(3,\)"),
        (torch.randn(4, 3, 1), 3, r"shape \(B, 3\), got shape \(4, 3, 1\)"),
        (torch.randn(4, 2), 3, r"feature dimension 3, got shape \(4, 2\)"),
        (torch.tensor([[float("nan"), 0.0, 0.0]]), 3, "NaN or inf"),
        (torch.tensor([[float("inf"), 0.0, 0.0]]), None, "NaN or inf"),
    ],
)
def test_check_batch_names_the_problem(bad, dim, message: str) -> None:
    with pytest.raises(ValueError, match=f"my_layer: .*{message}"):
        check_batch(bad, dim, where="my_layer")


def test_finite_check_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "CHECK_FINITE", False)
    x = torch.tensor([[float("nan"), 1.0]])
    assert check_batch(x, 2) is x


def test_check_same_device_detects_device_and_dtype() -> None:
    layer = Dense(2)
    check_same_device(torch.randn(3, 2), layer, where="here")  # fine
    with pytest.raises(ValueError, match="here: input is on meta but the parameters are on cpu"):
        check_same_device(torch.empty(3, 2, device="meta"), layer, where="here")
    with pytest.raises(ValueError, match="here: input dtype torch.float64 differs"):
        check_same_device(torch.randn(3, 2, dtype=torch.float64), layer, where="here")
    check_same_device(torch.empty(3, 2, device="meta"), torch.nn.Identity(), where="here")
