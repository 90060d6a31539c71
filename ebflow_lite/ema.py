"""An exponential moving average of a model's parameters, swapped in for evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """Shadow parameters ``theta~ <- m theta~ + (1 - m) theta`` updated after every step.

    With ``warmup=True`` the momentum at the n-th update (n = 0, 1, ...) is
    ``m_n = min(decay, (1 + n) / (10 + n))``, so early averages are not dominated by the
    random initial weights. Only parameters are averaged; buffers (such as ActNorm's
    ``initialized`` flag) are left alone.

    Typical use::

        ema = EMA(model, decay=0.999)
        fit(model, objective, data, steps, ema=ema)
        with ema.average_parameters(model):
            evaluate(model)            # runs with the averaged weights
        # the trained weights are back here

    Args:
        model: the module whose parameters are tracked (a copy is taken now).
        decay: the largest momentum m, in ``[0, 1)``.
        warmup: use the warm-up schedule above.

    References:
        Chao et al., NeurIPS 2023 (EMA, eq. (11) of the poster, decay 0.999); Song and
        Ermon, "Improved Techniques for Training Score-Based Generative Models", NeurIPS 2020.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone() for name, p in model.named_parameters()
        }
        self._backup: dict[str, torch.Tensor] | None = None

    def momentum(self) -> float:
        """The momentum the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    def _params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        if params.keys() != self.shadow.keys():
            missing = sorted(set(self.shadow) ^ set(params))
            raise ValueError(
                f"EMA: the model's parameters differ from the tracked ones (e.g. {missing[:3]})"
            )
        return params

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current parameters into the average."""
        m = self.momentum()
        for name, p in self._params(model).items():
            shadow = self.shadow[name]
            if shadow.device != p.device or shadow.dtype != p.dtype:
                shadow = shadow.to(device=p.device, dtype=p.dtype)
                self.shadow[name] = shadow
            shadow.mul_(m).add_(p.detach(), alpha=1.0 - m)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's parameters with the averages (irreversible; see store)."""
        for name, p in self._params(model).items():
            p.copy_(self.shadow[name])

    @torch.no_grad()
    def store(self, model: nn.Module) -> None:
        """Save the model's current parameters so that :meth:`restore` can put them back."""
        self._backup = {name: p.detach().clone() for name, p in self._params(model).items()}

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        """Put back the parameters saved by :meth:`store`."""
        if self._backup is None:
            raise ValueError("EMA.restore: nothing stored; call store(model) first")
        for name, p in self._params(model).items():
            p.copy_(self._backup[name])
        self._backup = None

    @contextmanager
    def average_parameters(self, model: nn.Module) -> Iterator[nn.Module]:
        """Swap the averages into ``model`` for the ``with`` block, then swap back."""
        self.store(model)
        self.copy_to(model)
        try:
            yield model
        finally:
            self.restore(model)

    def state_dict(self) -> dict:
        """The averages and the update count, for checkpoints."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": {k: v.clone() for k, v in self.shadow.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        missing = {"decay", "warmup", "num_updates", "shadow"} - set(state)
        if missing:
            raise ValueError(f"EMA.load_state_dict: missing keys {sorted(missing)}")
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError("EMA.load_state_dict: the saved parameters differ from the tracked")
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}


__all__ = ["EMA"]
