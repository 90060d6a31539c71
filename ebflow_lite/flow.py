"""The energy-based normalizing flow: a flow whose density is split into E(x) and log Z."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ebflow_lite.layers.base import FlowLayer, LinearFlowLayer
from ebflow_lite.validation import check_batch, check_same_device


def standard_normal_log_prob(u: torch.Tensor) -> torch.Tensor:
    """``log N(u; 0, I)`` per sample, summed over every non-batch axis. Shape ``(B,)``."""
    flat = u.flatten(1)
    return -0.5 * (flat**2).sum(1) - 0.5 * flat.shape[1] * math.log(2.0 * math.pi)


class EBFlow(nn.Module):
    """A normalizing flow read as an energy-based model, ``p(x) = exp(-E(x)) / Z``.

    The flow ``g = g_L o ... o g_1`` maps data to a latent with standard normal prior.
    Splitting its layers by ``is_linear`` gives

    * ``E(x) = -log p_u(g(x)) - sum over non-linear layers of log|det J_i(x_{i-1})|``
      (:meth:`energy`, cost O(D^2 L) with dense layers: no determinant), and
    * ``log Z = -sum over linear layers of log|det J_i|`` (:meth:`log_z`, O(D^3) per dense
      layer, but independent of x: computed once and cached until a parameter changes).

    Preprocessing (for example a rescaling and a logit) is a list of parameter-free layers
    applied before the flow. With ``match_after_preprocessing=True`` (MaP, the default) it
    runs outside the model without gradients: :meth:`energy`, :meth:`score` and the
    objectives see the preprocessed variable, and :meth:`log_prob` adds the preprocessing
    log-det back so that densities are in data space. With ``False`` the preprocessing
    layers become the first layers of the flow, so scores are taken in data space.

    Args:
        layers: the flow layers, in the data -> latent order.
        preprocessing: parameter-free bijections applied first.
        match_after_preprocessing: see above.

    References:
        Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
        Objectives", NeurIPS 2023.
    """

    def __init__(
        self,
        layers: Sequence[FlowLayer],
        preprocessing: Sequence[FlowLayer] = (),
        match_after_preprocessing: bool = True,
    ) -> None:
        super().__init__()
        layers = list(layers)
        preprocessing = list(preprocessing)
        for layer in [*layers, *preprocessing]:
            if not isinstance(layer, FlowLayer):
                raise ValueError(
                    f"every layer must be an ebflow_lite FlowLayer, got {type(layer).__name__}"
                )
        for layer in preprocessing:
            if any(p.requires_grad for p in layer.parameters()):
                raise ValueError(
                    f"preprocessing layer {type(layer).__name__} has trainable parameters; "
                    "put it in `layers` instead"
                )
        self.match_after_preprocessing = bool(match_after_preprocessing)
        if self.match_after_preprocessing:
            self.layers = nn.ModuleList(layers)
            self.preprocessing = nn.ModuleList(preprocessing)
        else:
            self.layers = nn.ModuleList([*preprocessing, *layers])
            self.preprocessing = nn.ModuleList()
        if len(self.layers) == 0:
            raise ValueError("EBFlow needs at least one layer")
        dims = [layer.dim for layer in [*self.preprocessing, *self.layers] if layer.dim]
        if len(set(dims)) > 1:
            raise ValueError(f"layers disagree on the feature dimension: {sorted(set(dims))}")
        self.dim: int | None = dims[0] if dims else None
        # (snapshot of the linear layers' parameters, log Z computed from them)
        self._log_z_cache: tuple[list[torch.Tensor], torch.Tensor] | None = None

    # ------------------------------------------------------------------ preprocessing
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Map data to the variable the energy is defined on (identity without MaP)."""
        return self.preprocess_with_logdet(x)[0]

    def preprocess_with_logdet(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the preprocessing without gradients; return ``(z, log|det dz/dx|)``."""
        check_batch(x, self.dim, where="EBFlow")
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if len(self.preprocessing) == 0:
            return x, logdet
        with torch.no_grad():
            for layer in self.preprocessing:
                x, ld = layer(x)
                logdet = logdet + ld
        return x, logdet

    # ------------------------------------------------------------------ the split
    def latent_and_energy(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(g(x), E(x))`` for a batch in model space; no determinant is computed."""
        check_batch(x, self.dim, where="EBFlow")
        check_same_device(x, self, where="EBFlow")
        nonlinear_logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        h = x
        for layer in self.layers:
            if layer.is_linear:
                h = layer.apply(h)  # type: ignore[attr-defined]
            else:
                h, ld = layer(h)
                nonlinear_logdet = nonlinear_logdet + ld
        return h, -standard_normal_log_prob(h) - nonlinear_logdet

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``E(x)``, shape ``(B,)``, for ``x`` in model space (after MaP preprocessing).

        Costs O(D^2) per sample and dense layer; never computes a determinant.
        """
        return self.latent_and_energy(x)[1]

    def _reference(self) -> tuple[torch.dtype, torch.device]:
        """The dtype and device of the parameters (defaults when there are none)."""
        p = next(self.parameters(), None)
        if p is None:
            return torch.get_default_dtype(), torch.device("cpu")
        return p.dtype, p.device

    def _linear_parameters(self) -> list[torch.Tensor]:
        return [p for layer in self.layers if layer.is_linear for p in layer.parameters()]

    def _cache_is_valid(self, params: list[torch.Tensor]) -> bool:
        if self._log_z_cache is None:
            return False
        snapshot = self._log_z_cache[0]
        return len(snapshot) == len(params) and all(
            s.shape == p.shape and s.dtype == p.dtype and s.device == p.device
            and torch.equal(s, p)
            for s, p in zip(snapshot, params, strict=True)
        )

    def _sum_linear_logabsdets(self) -> torch.Tensor:
        dtype, device = self._reference()
        total = torch.zeros((), dtype=dtype, device=device)
        for layer in self.linear_layers():
            total = total + layer.logabsdet().to(dtype=dtype, device=device)
        return total

    def log_z(self) -> torch.Tensor:
        """``log Z = -sum over linear layers of log|det J|`` (a scalar).

        The value is cached and reused until a parameter of a linear layer changes value (an
        optimizer step, ``load_state_dict``, an EMA swap, a ``.to(dtype)``): the cache keeps a
        copy of those parameters and compares it, O(D^2), with the current ones. When
        gradients are being recorded and the parameters require them, it is recomputed so
        that ML training can differentiate it.
        """
        params = self._linear_parameters()
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return -self._sum_linear_logabsdets()
        if not self._cache_is_valid(params):
            with torch.no_grad():
                value = -self._sum_linear_logabsdets()
            self._log_z_cache = ([p.detach().clone() for p in params], value)
        return self._log_z_cache[1]  # type: ignore[index]

    # ------------------------------------------------------------------ densities
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x) = -E(z) - log Z + log|det dz/dx|`` with ``z`` the preprocessed x.

        Shape ``(B,)``; in data space, so preprocessing is accounted for.
        """
        z, pre_logdet = self.preprocess_with_logdet(x)
        return -self.energy(z) - self.log_z() + pre_logdet

    def log_prob_model_space(self, z: torch.Tensor) -> torch.Tensor:
        """``-E(z) - log Z``: the log-density of the preprocessed variable."""
        return -self.energy(z) - self.log_z()

    def score(self, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """``grad_x log p(x) = -grad_x E(x)`` in model space, shape like ``x``."""
        check_batch(x, self.dim, where="EBFlow.score")
        with torch.enable_grad():
            x = x.detach().requires_grad_(True) if not x.requires_grad else x
            e = self.energy(x).sum()
            (grad,) = torch.autograd.grad(e, x, create_graph=create_graph)
        return -grad

    # ------------------------------------------------------------------ generation
    def inverse(self, u: torch.Tensor, through_preprocessing: bool = True) -> torch.Tensor:
        """``g^{-1}(u)``: map latents back through every layer (O(D^3) per dense layer).

        Args:
            u: latents, shape ``(B, D)``.
            through_preprocessing: also undo the preprocessing, returning data space.
        """
        check_batch(u, self.dim, where="EBFlow.inverse")
        check_same_device(u, self, where="EBFlow.inverse")
        h = u
        for layer in reversed(self.layers):
            h = layer.inverse(h)
        if through_preprocessing:
            for layer in reversed(self.preprocessing):
                h = layer.inverse(h)
        return h

    @torch.no_grad()
    def sample(
        self, n: int, through_preprocessing: bool = True, temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` samples by inverse generation, ``x = g^{-1}(u)`` with ``u ~ N(0, T^2 I)``."""
        if self.dim is None:
            raise ValueError("sample() needs a layer that declares its feature dimension")
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        dtype, device = self._reference()
        u = torch.randn(n, self.dim, generator=generator, dtype=dtype) * temperature
        return self.inverse(u.to(device), through_preprocessing=through_preprocessing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`log_prob`, so ``model(x)`` is the data-space log-density."""
        return self.log_prob(x)

    def linear_layers(self) -> list[LinearFlowLayer]:
        """The layers whose log-dets form log Z."""
        return [layer for layer in self.layers if layer.is_linear]  # type: ignore[misc]
