"""MADE masks and the MAF / IAF layers: autoregressive structure, cost, identity at start."""

from __future__ import annotations

import pytest
import torch
from torch.func import jacrev

from ebflow_lite.layers import IAF, MADE, MAF
from ebflow_lite.testing import perturb_parameters

DTYPE = torch.float64


def _perturbed(layer: torch.nn.Module) -> torch.nn.Module:
    return perturb_parameters(layer, 0.5).to(DTYPE)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dim", [2, 3, 5])
def test_made_output_depends_only_on_earlier_inputs(dim: int, reverse: bool) -> None:
    torch.manual_seed(0)
    made = _perturbed(MADE(dim, hidden=12, depth=2, reverse=reverse))
    x = torch.randn(dim, dtype=DTYPE)
    jac = jacrev(lambda v: torch.cat(made(v[None]), 1)[0])(x)      # (2D, D)
    order = made.order                                               # position of feature j
    allowed = order[None, :] < order[:, None]                        # input j before output i
    for block in (jac[:dim], jac[dim:]):
        assert float(block[~allowed].abs().max().detach()) == 0.0
        # and the allowed entries are really used (a mask that cut everything would pass)
        if dim > 1:
            assert float(block[allowed].abs().min().detach()) > 0.0


@pytest.mark.parametrize("kind", [MAF, IAF])
def test_new_autoregressive_layer_is_the_identity(kind: type) -> None:
    layer = kind(3).to(DTYPE)
    x = torch.randn(5, 3, dtype=DTYPE)
    y, logdet = layer(x)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(logdet, torch.zeros(5, dtype=DTYPE))


def _count_made_calls(layer: torch.nn.Module, fn) -> int:
    calls = []
    handle = layer.made.register_forward_hook(lambda *args: calls.append(1))
    try:
        fn()
    finally:
        handle.remove()
    return len(calls)


@pytest.mark.parametrize("dim", [2, 6])
def test_maf_density_is_one_pass_and_sampling_is_sequential(dim: int) -> None:
    x = torch.randn(4, dim, dtype=DTYPE)
    maf, iaf = _perturbed(MAF(dim)), _perturbed(IAF(dim))
    assert _count_made_calls(maf, lambda: maf(x)) == 1
    assert _count_made_calls(maf, lambda: maf.inverse(x)) >= dim
    assert _count_made_calls(iaf, lambda: iaf.inverse(x)) == 1
    assert _count_made_calls(iaf, lambda: iaf(x)) >= dim


def test_iaf_is_the_inverse_of_a_maf_with_the_same_network() -> None:
    maf = _perturbed(MAF(4))
    iaf = IAF(4).to(DTYPE)
    iaf.load_state_dict(maf.state_dict())
    x = torch.randn(6, 4, dtype=DTYPE)
    torch.testing.assert_close(iaf.inverse(x), maf(x)[0])
    y, logdet = maf(x)
    x_back, logdet_iaf = iaf(y)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(logdet_iaf, -logdet)


def test_autoregressive_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="scale_bound"):
        MAF(3, scale_bound=0.0)
    with pytest.raises(ValueError, match="hidden"):
        IAF(3, hidden=0)
