"""Flow layers. Each maps data towards the latent: ``forward(x) -> (y, logabsdet)``.

See :mod:`ebflow_lite.layers.base` for the contract and the meaning of ``is_linear``.
"""

from ebflow_lite.layers.actnorm import ActNorm
from ebflow_lite.layers.base import FlowLayer, LinearFlowLayer
from ebflow_lite.layers.coupling import AffineCoupling
from ebflow_lite.layers.dense import Dense, LUDense
from ebflow_lite.layers.elementwise import Affine, Logit, SmoothLeakyReLU
from ebflow_lite.layers.planar import Planar

__all__ = [
    "ActNorm",
    "Affine",
    "AffineCoupling",
    "Dense",
    "FlowLayer",
    "LUDense",
    "LinearFlowLayer",
    "Logit",
    "Planar",
    "SmoothLeakyReLU",
]
