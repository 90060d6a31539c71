"""The six tensors of a labelled data set split into train, validation and test parts."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DataSplit:
    """Data and labels of the train, validation and test parts (labels int64, ``(N,)``)."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor
    val_labels: torch.Tensor
    test_labels: torch.Tensor


__all__ = ["DataSplit"]
