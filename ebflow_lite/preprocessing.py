"""Preprocessing of quantised images for Match after Preprocessing (MaP).

Pixels take ``K`` integer levels ``0..K-1``. Dequantization adds ``U[0, 1)`` noise, redrawn
for every batch, so the data have a density on ``[0, K)^D``; the flow's preprocessing then
maps that box to ``R^D``: a rescaling by ``1/K`` onto ``[0, 1)`` and a squeezed logit.
Both are parameter-free bijections whose log-dets :meth:`ebflow_lite.EBFlow.log_prob` adds
back, so NLLs are in nats per image on the dequantized ``[0, K)`` scale and bits per
dimension ``NLL / (D ln 2)`` count the ``K`` levels: a model that is uniform on the box has
exactly ``log2 K`` bits per dimension (tested in ``tests/test_preprocessing.py``).

References:
    Dinh et al., "Density estimation using Real NVP", ICLR 2017 (the logit transform);
    Theis et al., "A note on the evaluation of generative models", ICLR 2016
    (dequantization); Chao et al., NeurIPS 2023 (MaP).
"""

from __future__ import annotations

from collections.abc import Sequence

from ebflow_lite.layers import Affine, Logit
from ebflow_lite.layers.base import FlowLayer
from ebflow_lite.validation import as_event_shape, check_positive_int


def image_preprocessing(
    num_levels: int = 256, alpha: float = 1.0, eps: float = 1e-6,
    event_shape: int | Sequence[int] | None = None,
) -> list[FlowLayer]:
    """``[Affine(1 / K), Logit(alpha, eps)]``: dequantized pixels in ``[0, K)`` to ``R``.

    Args:
        num_levels: K, the number of intensity levels (256 for 8-bit images, 17 for the
            scikit-learn digits).
        alpha: the logit's smoothness (the paper: 0.5 for FC, 0.75 for CNN, 1.0 for Glow).
        eps: the squeeze ``p = eps + (1 - 2 eps) t`` that keeps the logit finite (the
            paper: 1e-6).
        event_shape: the shape of one image, e.g. ``(1, 28, 28)`` (None: any shape).
    """
    check_positive_int(num_levels, "num_levels", "image_preprocessing", minimum=2)
    shape = as_event_shape(event_shape)
    return [Affine(1.0 / num_levels, event_shape=shape),
            Logit(alpha=alpha, eps=eps, event_shape=shape)]


__all__ = ["image_preprocessing"]
