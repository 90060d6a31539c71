"""Flow layers. Each maps data towards the latent: ``forward(x) -> (y, logabsdet)``.

See :mod:`ebflow_lite.layers.base` for the contract (event shapes, ``is_linear``,
``linear_map``/``logabsdet``); every layer works on vectors ``(B, D)``, on images
``(B, C, H, W)``, or on both, as its docstring says.
"""

from ebflow_lite.layers.actnorm import ActNorm
from ebflow_lite.layers.autoregressive import IAF, MADE, MAF
from ebflow_lite.layers.base import FlowLayer, LinearFlowLayer
from ebflow_lite.layers.conv import Conv1x1, ConvKxK, LUConv1x1, circular_conv_logabsdet
from ebflow_lite.layers.coupling import (
    AffineCoupling,
    cnn_conditioner,
    coupling_mask,
    mlp_conditioner,
)
from ebflow_lite.layers.dense import Dense, LUDense
from ebflow_lite.layers.elementwise import Affine, Logit, SmoothLeakyReLU
from ebflow_lite.layers.planar import Planar
from ebflow_lite.layers.reshape import Split, Squeeze

__all__ = [
    "ActNorm",
    "Affine",
    "AffineCoupling",
    "Conv1x1",
    "ConvKxK",
    "Dense",
    "FlowLayer",
    "IAF",
    "LUConv1x1",
    "LUDense",
    "LinearFlowLayer",
    "Logit",
    "MADE",
    "MAF",
    "Planar",
    "SmoothLeakyReLU",
    "Split",
    "Squeeze",
    "circular_conv_logabsdet",
    "cnn_conditioner",
    "coupling_mask",
    "mlp_conditioner",
]
