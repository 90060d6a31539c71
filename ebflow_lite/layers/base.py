"""The layer contract every flow layer follows, for vectors and images alike.

Direction: a layer maps data towards the latent, ``x -> y``. A batch has shape
``(B, *event_shape)``: ``(B, D)`` for vectors, ``(B, C, H, W)`` for images.

* ``forward(x)`` returns ``(y, logabsdet)`` with ``y`` of shape ``(B, *output_shape)`` and
  ``logabsdet`` of shape ``(B,)``: ``log|det dy/dx|`` for each sample.
* ``inverse(y)`` undoes the map.
* ``event_shape`` is the shape of one input sample the layer was built for (None: any);
  ``output_shape(event_shape)`` is the shape of one output sample (the same, except for
  shape-changing layers such as :class:`ebflow_lite.layers.Squeeze`).
* ``is_linear`` is True exactly when the Jacobian does not depend on ``x`` (an affine map
  ``y = A x + b``). Such a layer is a :class:`LinearFlowLayer`: ``linear_map(x)`` computes
  ``y`` without any determinant and ``logabsdet(event_shape)`` gives the constant
  ``log|det A|``. Whether that log-det goes into ``log Z`` or stays in the energy is decided
  by the model, not by the layer (``EBFlow(..., keep_in_energy=...)``).

Layers check shapes (metadata only, no device synchronisation); finiteness is checked once
at the model's boundary (:class:`ebflow_lite.EBFlow`).
"""

from __future__ import annotations

import torch
from torch import nn

from ebflow_lite.validation import Shape, as_event_shape, check_shape, numel


class FlowLayer(nn.Module):
    """A bijection ``x -> y`` with a per-sample log-determinant.

    Subclasses implement :meth:`forward` and :meth:`inverse`, and set ``event_shape`` when
    they only accept one shape.
    """

    is_linear: bool = False
    event_shape: Shape | None = None

    @property
    def dim(self) -> int | None:
        """The number of features of one input sample (None: any shape is accepted)."""
        return None if self.event_shape is None else numel(self.event_shape)

    def output_shape(self, event_shape: Shape) -> Shape:
        """The shape of one output sample for inputs of shape ``event_shape``."""
        return tuple(event_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def check(self, x: torch.Tensor) -> torch.Tensor:
        """Check a batch's type and shape for this layer (no device synchronisation)."""
        return check_shape(x, self.event_shape, where=type(self).__name__)

    def check_output(self, y: torch.Tensor) -> torch.Tensor:
        """Check a batch of outputs (the argument of :meth:`inverse`)."""
        shape = None if self.event_shape is None else self.output_shape(self.event_shape)
        return check_shape(y, shape, where=f"{type(self).__name__}.inverse")

    def _resolve_shape(self, event_shape: Shape | None, where: str) -> Shape:
        """``event_shape`` if given, else the layer's own; raise when neither is known."""
        shape = as_event_shape(event_shape) if event_shape is not None else self.event_shape
        if self.event_shape is not None and shape != self.event_shape:
            raise ValueError(
                f"{type(self).__name__}.{where}: the layer was built for events of shape "
                f"{self.event_shape}, got event_shape={shape}"
            )
        if shape is None:
            raise ValueError(
                f"{type(self).__name__}.{where}: the layer was built without an event shape; "
                "pass event_shape=(D,) or (C, H, W)"
            )
        return shape


class LinearFlowLayer(FlowLayer):
    """A layer with a constant Jacobian (an affine map ``y = A x + b``).

    Subclasses implement :meth:`linear_map` (the map, without any determinant),
    :meth:`inverse` and :meth:`logabsdet` (``log|det A|``, a scalar that depends on the
    parameters and on the event shape only). ``forward`` adds the log-det for completeness;
    :class:`ebflow_lite.EBFlow` calls ``linear_map`` when it evaluates the energy, so no
    determinant enters training by a score-matching objective.
    """

    is_linear = True

    def linear_map(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def logabsdet(self, event_shape: Shape | None = None) -> torch.Tensor:  # pragma: no cover
        """``log|det A|`` for one sample of ``event_shape`` (default: the layer's own)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.linear_map(x)
        logdet = self.logabsdet(tuple(x.shape[1:])).to(dtype=x.dtype, device=x.device)
        return y, logdet.expand(x.shape[0])
