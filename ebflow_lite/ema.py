"""An exponential moving average of a model's parameters, swapped in for evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ebflow_lite.validation import ArgumentTypeError, check_module, check_real


class EMA:
    """Shadow parameters ``theta~ <- m theta~ + (1 - m) theta`` updated after every step.

    With ``warmup=True`` the momentum at the n-th update (n = 0, 1, ...) is
    ``m_n = min(decay, (2 + n) / (11 + n))``, so early averages are not dominated by the
    random initial weights. This is ``(1 + k) / (10 + k)`` with ``k = n + 1`` the number of
    updates *including* this one, as in the score-SDE code the paper uses (which increments
    its counter before computing the momentum): the first momentum is 2/11. Only
    parameters are averaged; buffers (such as ActNorm's ``initialized`` flag) are left
    alone.

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
        check_module(model, "EMA")
        self.decay = check_real(decay, "decay", "EMA", low=0.0, high=1.0, high_open=True)
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
        return min(self.decay, (2.0 + n) / (11.0 + n))

    def _params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        check_module(model, "EMA")
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

    def check_state_dict(self, state: object) -> None:
        """Raise ValueError unless ``state`` is an EMA state for the tracked parameters (the
        same names and shapes); nothing is changed."""
        where = "EMA.load_state_dict"
        if not isinstance(state, dict):
            raise ArgumentTypeError(f"{where}: expected a dict, got {type(state).__name__}")
        missing = {"decay", "warmup", "num_updates", "shadow"} - set(state)
        if missing:
            raise ValueError(f"{where}: missing keys {sorted(missing)}")
        shadow = state["shadow"]
        if not isinstance(shadow, dict) or set(shadow) != set(self.shadow):
            raise ValueError(f"{where}: the saved parameters differ from the tracked")
        wrong = [f"{k}: saved {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v)}, "
                 f"tracked {tuple(self.shadow[k].shape)}" for k, v in shadow.items()
                 if not isinstance(v, torch.Tensor) or v.shape != self.shadow[k].shape]
        if wrong:
            raise ValueError(f"{where}: the saved parameters differ from the tracked in shape "
                             f"({'; '.join(wrong[:3])})")
        check_real(state["decay"], "decay", where, low=0.0, high=1.0, high_open=True)
        count = state["num_updates"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{where}: num_updates must be an int >= 0, got {count!r}")

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (checked first: a state that does not
        fit leaves the EMA unchanged)."""
        self.check_state_dict(state)
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}


__all__ = ["EMA"]
