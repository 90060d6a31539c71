"""The layer contract every flow layer follows.

Direction: a layer maps data towards the latent, ``x -> y``. ``forward(x)`` returns
``(y, logabsdet)`` where ``logabsdet`` has shape ``(B,)`` and is ``log|det dy/dx|`` for each
sample. ``inverse(y)`` undoes the map. ``is_linear`` is True when the Jacobian does not depend
on ``x``: such a layer's log-det belongs to the normalizing constant ``log Z`` and never to the
energy (see the chapter "A flow is an energy-based model").
"""

from __future__ import annotations

import torch
from torch import nn

from ebflow_lite.validation import check_batch


class FlowLayer(nn.Module):
    """A bijection ``x -> y`` with a per-sample log-determinant.

    Subclasses implement :meth:`forward` and :meth:`inverse`. ``dim`` is the feature size
    the layer accepts (None: any).
    """

    is_linear: bool = False
    dim: int | None = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def check(self, x: torch.Tensor) -> torch.Tensor:
        """Validate a batch for this layer (shape, dtype, finiteness)."""
        return check_batch(x, self.dim, where=type(self).__name__)


class LinearFlowLayer(FlowLayer):
    """A layer with a constant Jacobian (an affine map ``y = A x + b``).

    Subclasses implement :meth:`apply` (the map, without any determinant), :meth:`inverse`
    and :meth:`logabsdet` (``log|det A|``, a scalar that depends on the parameters only).
    ``forward`` computes the log-det for completeness; :class:`ebflow_lite.EBFlow` calls
    ``apply`` instead when it evaluates the energy, so no determinant enters training by a
    score-matching objective.
    """

    is_linear = True

    def apply(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def logabsdet(self) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.apply(x)
        return y, self.logabsdet().expand(x.shape[0])
