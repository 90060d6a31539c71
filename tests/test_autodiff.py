import pytest
import torch

from ebflow_lite.autodiff import batch_jacobian
from ebflow_lite.layers import AffineCoupling, Planar


@pytest.mark.parametrize("layer", [Planar(3), AffineCoupling(3, hidden=8, parity=1)])
def test_batch_jacobian_equals_per_sample_autograd_jacobian(layer):
    layer = layer.double().eval()
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(6, 3, dtype=torch.float64)
    J = batch_jacobian(lambda v: layer(v)[0], x)
    for b in range(6):
        expected = torch.autograd.functional.jacobian(lambda r: layer(r[None])[0][0], x[b])
        torch.testing.assert_close(J[b], expected)


def test_batch_jacobian_of_a_non_square_map():
    x = torch.randn(4, 2, dtype=torch.float64)
    J = batch_jacobian(lambda v: torch.stack([v[:, 0] * v[:, 1], v[:, 0], v[:, 1] ** 2], 1), x)
    assert J.shape == (4, 3, 2)
    torch.testing.assert_close(J[:, 0, 0], x[:, 1])
    torch.testing.assert_close(J[:, 2, 1], 2 * x[:, 1])


def test_batch_jacobian_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        batch_jacobian(lambda v: v, torch.randn(3))
    with pytest.raises(ValueError, match="must return"):
        batch_jacobian(lambda v: v.sum(1), torch.randn(3, 2))
