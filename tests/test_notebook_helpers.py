"""The helpers the chapters share: ``ebflow_lite.testing.perturb_parameters``."""

from __future__ import annotations

import math

import pytest
import torch

from ebflow_lite.layers import AffineCoupling, Dense, LUDense, SmoothLeakyReLU
from ebflow_lite.testing import perturb_parameters
from ebflow_lite.validation import ArgumentTypeError


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_perturb_parameters_moves_every_parameter_by_the_scale() -> None:
    torch.manual_seed(0)
    layer = AffineCoupling(4, hidden=16)
    before = _flat(layer).clone()
    returned = perturb_parameters(layer, 0.3, torch.Generator().manual_seed(1))
    assert returned is layer
    change = _flat(layer) - before
    # every entry moves, and the moves are N(0, 0.3^2): their spread is the scale
    assert bool((change != 0).all())
    n = change.numel()
    assert abs(float(change.std()) - 0.3) < 4 * 0.3 / math.sqrt(2 * n)
    assert abs(float(change.mean())) < 4 * 0.3 / math.sqrt(n)


def test_perturb_parameters_is_deterministic_given_the_generator() -> None:
    a, b = Dense(5, init="orthogonal"), Dense(5, init="orthogonal")
    b.load_state_dict(a.state_dict())
    perturb_parameters(a, 0.1, torch.Generator().manual_seed(7))
    perturb_parameters(b, 0.1, torch.Generator().manual_seed(7))
    assert torch.equal(_flat(a), _flat(b))
    perturb_parameters(b, 0.1, torch.Generator().manual_seed(8))
    assert not torch.equal(_flat(a), _flat(b))


def test_perturb_parameters_without_a_generator_uses_the_global_stream() -> None:
    a, b = Dense(3), Dense(3)
    b.load_state_dict(a.state_dict())
    torch.manual_seed(3)
    perturb_parameters(a, 0.5)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.5 * torch.randn_like(p))
    assert torch.equal(_flat(a), _flat(b))


def test_perturb_parameters_keeps_dtype_and_leaves_buffers_alone() -> None:
    layer = LUDense(3).double()  # float buffers: the signs and the mask of L
    buffers = {name: value.clone() for name, value in layer.named_buffers()}
    perturb_parameters(layer, 0.2, torch.Generator().manual_seed(0))
    assert all(p.dtype == torch.float64 for p in layer.parameters())
    for name, value in layer.named_buffers():
        assert torch.equal(value, buffers[name]), name
    # a module without parameters is returned unchanged
    relu = SmoothLeakyReLU(0.3, dim=3)
    assert perturb_parameters(relu, 0.2) is relu


def test_perturb_parameters_does_not_record_a_graph() -> None:
    layer = Dense(3)
    perturb_parameters(layer, 0.2, torch.Generator().manual_seed(0))
    assert all(p.is_leaf and p.grad_fn is None for p in layer.parameters())


@pytest.mark.parametrize(("arguments", "error", "match"), [
    ((torch.zeros(3), 0.1), TypeError, "module must be a torch.nn.Module"),
    ((Dense(2), "0.1"), TypeError, "scale must be a number"),
    ((Dense(2), True), TypeError, "scale must be a number"),
    ((Dense(2), 0.0), ValueError, "scale must be positive"),
    ((Dense(2), -0.1), ValueError, "scale must be positive"),
    ((Dense(2), math.nan), ValueError, "scale must be positive"),
    ((Dense(2), 0.1, 0), TypeError, "generator must be a torch.Generator"),
])
def test_perturb_parameters_names_the_refused_argument(arguments, error, match) -> None:
    with pytest.raises(error, match=f"perturb_parameters: {match}"):
        perturb_parameters(*arguments)


def test_refused_types_are_also_value_errors() -> None:
    with pytest.raises(ArgumentTypeError):
        perturb_parameters(object(), 0.1)  # type: ignore[type-var]
