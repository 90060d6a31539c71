"""The bundled 8x8 digits: shapes, split, dequantization, determinism, preprocessing."""

from __future__ import annotations

import math

import pytest
import torch

from ebflow_lite.data import DigitsSplit, digits
from ebflow_lite.data.digits import NUM_LEVELS, digits_preprocessing
from ebflow_lite.layers import Affine, Logit


def test_shapes_split_and_range() -> None:
    data = digits()
    assert isinstance(data, DigitsSplit)
    assert data.dim == 64 and data.num_levels == 17
    sizes = [data.train.shape[0], data.val.shape[0], data.test.shape[0]]
    assert sum(sizes) == 1797  # every bundled image, used once
    assert sizes[0] == round(0.8 * 1797) and abs(sizes[1] - sizes[2]) <= 1
    for part in (data.train, data.val, data.test):
        assert part.dtype == torch.float32 and part.shape[1] == 64
        assert float(part.min()) >= 0.0 and float(part.max()) < 17.0
    assert data.train_labels.shape[0] == sizes[0]
    assert set(data.train_labels.tolist()) == set(range(10))


def test_dequantization_keeps_the_integer_level() -> None:
    noisy, plain = digits(seed=3), digits(seed=3, dequantize=False)
    for a, b in ((noisy.train, plain.train), (noisy.test, plain.test)):
        assert torch.equal(a.floor(), b)  # x = k + u with u in [0, 1)
        assert torch.equal(b, b.round())
    frac = noisy.train - plain.train
    # U[0, 1) noise: mean 1/2, variance 1/12 (about 92k draws).
    assert float(frac.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(frac.var()) == pytest.approx(1 / 12, abs=0.005)


def test_seed_fixes_the_draw() -> None:
    a, b, c = digits(seed=0), digits(seed=0), digits(seed=1)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert not torch.equal(a.train, c.train)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split"):
        digits(split=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="split"):
        digits(split=(1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="seed"):
        digits(seed=-1)


def test_preprocessing_layers_and_range() -> None:
    pre = digits_preprocessing()
    assert isinstance(pre[0], Affine) and isinstance(pre[1], Logit)
    assert pre[0].scale == pytest.approx(1 / NUM_LEVELS)
    assert pre[1].alpha == 0.5  # the paper's logit smoothness for FC models
    x = digits().train
    logdet = torch.zeros(x.shape[0])
    for layer in pre:
        x, ld = layer(x)
        logdet += ld
    bound = math.log(0.95 / 0.05) / 0.5
    assert float(x.abs().max()) <= bound + 1e-5
    assert torch.isfinite(logdet).all()
