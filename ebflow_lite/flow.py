"""The energy-based normalizing flow: a flow whose density is split into E(x) and log Z."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ebflow_lite import validation
from ebflow_lite.autodiff import energy_and_grad
from ebflow_lite.layers.base import FlowLayer, LinearFlowLayer
from ebflow_lite.layers.reshape import Split
from ebflow_lite.prior import StandardNormal, standard_normal_log_prob
from ebflow_lite.validation import (
    ArgumentTypeError,
    Shape,
    as_event_shape,
    check_batch,
    check_finite_parameters,
    check_generator,
    check_same_device,
    check_shape,
    numel,
)

Layer = FlowLayer | Split


def _is_split(layer: nn.Module) -> bool:
    return bool(getattr(layer, "factors_out", False))


class EBFlow(nn.Module):
    """A normalizing flow read as an energy-based model, ``p(x) = exp(-E(x)) / Z``.

    The flow ``g = g_L o ... o g_1`` maps data to latents with prior ``p_u`` (a standard
    normal by default; several latents for a multi-scale model with
    :class:`ebflow_lite.layers.Split` layers). Splitting its layers into ``S_l``, the
    constant-Jacobian (linear) layers whose log-dets form log Z, and ``S_n``, the others,
    gives

    * ``E(x) = -log p_u(latents) - sum over S_n of log|det J_i(x_{i-1})|`` (:meth:`energy`,
      O(D^2 L) with dense layers: no determinant), and
    * ``log Z = -sum over S_l of log|det J_i|`` (:meth:`log_z`, O(D^3) per dense layer, but
      independent of x: computed once and cached until a parameter changes).

    ``S_l`` holds every layer with ``is_linear`` True, except those named in
    ``keep_in_energy``: a constant-Jacobian layer whose log-det is cheap (ActNorm: O(C)) may
    stay inside the energy, as in the paper's image models. :meth:`in_log_z` tells where a
    layer went.

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
        event_shape: the shape of one data sample, ``(D,)`` or ``(C, H, W)``; None infers it
            from the first layer that declares one.
        prior: the latent prior (default :class:`ebflow_lite.prior.StandardNormal`).
        keep_in_energy: layer classes or layer instances whose (constant) log-det stays in
            E instead of log Z.

    References:
        Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
        Objectives", NeurIPS 2023.
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        preprocessing: Sequence[FlowLayer] = (),
        match_after_preprocessing: bool = True,
        *,
        event_shape: int | Sequence[int] | None = None,
        prior: StandardNormal | None = None,
        keep_in_energy: Sequence[type | nn.Module] = (),
    ) -> None:
        super().__init__()
        for name, value in (("layers", layers), ("preprocessing", preprocessing)):
            if isinstance(value, (str, torch.Tensor)) or not isinstance(value, Iterable):
                raise ArgumentTypeError(
                    f"EBFlow: {name} must be a list of layers, got {type(value).__name__}"
                )
        layers = list(layers)
        preprocessing = list(preprocessing)
        for layer in layers:
            if not isinstance(layer, (FlowLayer, Split)):
                raise ValueError(
                    f"every layer must be an ebflow_lite FlowLayer or Split, got "
                    f"{type(layer).__name__}"
                )
        for layer in preprocessing:
            if not isinstance(layer, FlowLayer):
                raise ValueError(
                    f"every preprocessing layer must be an ebflow_lite FlowLayer, got "
                    f"{type(layer).__name__}"
                )
            if any(p.requires_grad for p in layer.parameters()):
                raise ValueError(
                    f"preprocessing layer {type(layer).__name__} has trainable parameters; "
                    "put it in `layers` instead"
                )
        if prior is not None and not isinstance(prior, StandardNormal):
            raise ValueError(
                f"prior must be an ebflow_lite.prior.StandardNormal (or a subclass), got "
                f"{type(prior).__name__}"
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
        self.prior = prior if prior is not None else StandardNormal()
        self._keep_in_energy = self._resolve_keep_in_energy(keep_in_energy)
        self._resolve_shapes(as_event_shape(event_shape))
        # (snapshot of what the linear layers' log-dets depend on, log Z computed from it)
        self._log_z_cache: tuple[list[torch.Tensor], list, torch.Tensor] | None = None

    # ------------------------------------------------------------------ construction
    def _resolve_keep_in_energy(self, keep: Sequence[type | nn.Module]) -> list[bool]:
        keep = list(keep)
        for item in keep:
            if isinstance(item, type):
                continue
            if not any(item is layer for layer in self.layers):
                raise ValueError(
                    f"keep_in_energy: {type(item).__name__} instance is not a layer of this model"
                )
        flags = []
        for layer in self.layers:
            kept = any(layer is item or (isinstance(item, type) and isinstance(layer, item))
                       for item in keep)
            flags.append(kept)
        self._log_z_flags = [
            bool(getattr(layer, "is_linear", False)) and not kept and not _is_split(layer)
            for layer, kept in zip(self.layers, flags, strict=True)
        ]
        return flags

    def _resolve_shapes(self, event_shape: Shape | None) -> None:
        chain = [*self.preprocessing, *self.layers]
        if event_shape is None:
            declared = [layer.event_shape for layer in chain
                        if getattr(layer, "event_shape", None) is not None]
            # Only shape-preserving layers before the first declaration can be trusted to
            # hand it back unchanged; the propagation below checks every declaration.
            event_shape = declared[0] if declared else None
            if event_shape is not None:
                first = next(i for i, layer in enumerate(chain)
                             if getattr(layer, "event_shape", None) is not None)
                for layer in chain[:first]:
                    if layer.output_shape(event_shape) != event_shape or _is_split(layer):
                        event_shape = None  # ambiguous: the caller must say
                        break
        self.event_shape: Shape | None = event_shape
        self._in_shapes: list[Shape | None] = []
        self.latent_shapes: list[Shape] = []
        shape = event_shape
        for i, layer in enumerate(chain):
            declared = getattr(layer, "event_shape", None)
            if shape is None:
                if declared is not None:
                    raise ValueError(
                        "EBFlow: cannot infer the event shape of the data; pass event_shape=..."
                    )
                if _is_split(layer):
                    raise ValueError("EBFlow: a Split layer needs event_shape=... to be known")
                self._in_shapes.append(None)
                continue
            if declared is not None and tuple(declared) != shape:
                raise ValueError(
                    f"layer {i} ({type(layer).__name__}) expects events of shape "
                    f"{tuple(declared)}, but receives {shape}"
                )
            self._in_shapes.append(shape)
            if _is_split(layer):
                self.latent_shapes.append(layer.factored_shape(shape))
            shape = layer.output_shape(shape)
        if shape is not None:
            self.latent_shapes.append(shape)
        self._layer_shapes = self._in_shapes[len(self.preprocessing):]

    @property
    def dim(self) -> int | None:
        """D, the number of entries of one data sample (None when the shape is unknown)."""
        return None if self.event_shape is None else numel(self.event_shape)

    def in_log_z(self, layer: nn.Module) -> bool:
        """True if the layer's log-det is part of log Z (it is in S_l)."""
        for candidate, flag in zip(self.layers, self._log_z_flags, strict=True):
            if candidate is layer:
                return flag
        raise ValueError(f"{type(layer).__name__} is not a layer of this model")

    def linear_layers(self) -> list[LinearFlowLayer]:
        """The layers whose log-dets form log Z (the set S_l)."""
        return [layer for layer, flag in zip(self.layers, self._log_z_flags, strict=True)
                if flag]  # type: ignore[misc]

    # ------------------------------------------------------------------ validation
    def check_input(self, x: object, where: str = "EBFlow") -> torch.Tensor:
        """Validate a batch at the model's boundary: type, shape, dtype, device, finiteness."""
        check_batch(x, self.event_shape, where=where)
        check_same_device(x, self, where=where)  # type: ignore[arg-type]
        return x  # type: ignore[return-value]

    # ------------------------------------------------------------------ preprocessing
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Map data to the variable the energy is defined on (identity without MaP)."""
        return self.preprocess_with_logdet(x)[0]

    def preprocess_with_logdet(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the preprocessing without gradients; return ``(z, log|det dz/dx|)``."""
        check_batch(x, self.event_shape, where="EBFlow")
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if len(self.preprocessing) == 0:
            return x, logdet
        with torch.no_grad():
            for layer in self.preprocessing:
                x, ld = layer(x)
                logdet = logdet + ld
        return x, logdet

    # ------------------------------------------------------------------ the split
    def _run(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``(latents, sum of the non-linear and kept-in-energy log-dets)``; no determinant."""
        energy_logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        latents: list[torch.Tensor] = []
        h = x
        for layer, kept in zip(self.layers, self._keep_in_energy, strict=True):
            if _is_split(layer):
                h, factored = layer.split(h)
                latents.append(factored)
            elif layer.is_linear and not kept:
                h = layer.linear_map(h)
            else:
                h, ld = layer(h)
                energy_logdet = energy_logdet + ld
        latents.append(h)
        return latents, energy_logdet

    def latents_and_energy(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Return ``(latents, E(x))``: every latent (factored-out ones first, the final one
        last) and the energy, for a batch in model space. No determinant is computed."""
        self.check_input(x)
        latents, energy_logdet = self._run(x)
        return latents, -self.prior.log_prob(latents) - energy_logdet

    def latent_and_energy(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(g(x), E(x))``: the latent (all latents flattened and concatenated for a
        multi-scale model, shape ``(B, D)``) and the energy."""
        latents, energy = self.latents_and_energy(x)
        if len(latents) == 1:
            return latents[0], energy
        return torch.cat([u.flatten(1) for u in latents], dim=1), energy

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``E(x)``, shape ``(B,)``, for ``x`` in model space (after MaP preprocessing).

        Costs O(D^2) per sample and dense layer; never computes a determinant.
        """
        return self.latents_and_energy(x)[1]

    def _reference(self) -> tuple[torch.dtype, torch.device]:
        """The dtype and device of the parameters (defaults when there are none)."""
        p = next(self.parameters(), None)
        if p is None:
            return torch.get_default_dtype(), torch.device("cpu")
        return p.dtype, p.device

    def _linear_parameters(self) -> list[torch.Tensor]:
        return [p for layer in self.linear_layers() for p in layer.parameters()]

    def _log_z_key(self) -> tuple[list[torch.Tensor], list]:
        """What the log-dets of the layers in S_l depend on: their parameters and buffers
        (e.g. LUDense's ``sign``), and their plain attributes (e.g. Affine's ``scale``)."""
        tensors: list[torch.Tensor] = []
        plain: list = []
        for layer in self.linear_layers():
            for module in layer.modules():
                tensors.extend(module.parameters(recurse=False))
                tensors.extend(module.buffers(recurse=False))
                plain.append(tuple((k, v) for k, v in vars(module).items()
                                   if not k.startswith("_") and k != "training"
                                   and _is_plain(v)))
        return tensors, plain

    def _cache_is_valid(self, tensors: list[torch.Tensor], plain: list) -> bool:
        if self._log_z_cache is None:
            return False
        snapshot, saved_plain, _ = self._log_z_cache
        return saved_plain == plain and len(snapshot) == len(tensors) and all(
            s.shape == p.shape and s.dtype == p.dtype and s.device == p.device
            and torch.equal(s, p)
            for s, p in zip(snapshot, tensors, strict=True)
        )

    def _warn_if_not_finite(self, value: torch.Tensor) -> None:
        """Warn, naming the layers, when log Z is NaN or inf (one device synchronisation)."""
        if not validation.CHECK_FINITE or bool(torch.isfinite(value)):
            return
        culprits = []
        with torch.no_grad():
            for i, (layer, shape, flag) in enumerate(zip(
                    self.layers, self._layer_shapes, self._log_z_flags, strict=True)):
                if flag:
                    logdet = float(layer.logabsdet(shape))
                    if not math.isfinite(logdet):
                        why = ("its parameters are not finite" if math.isnan(logdet) else
                               "a singular matrix" if logdet < 0 else "an overflowing matrix")
                        culprits.append(f"layer {i} ({type(layer).__name__}) has "
                                        f"log|det| = {logdet} ({why})")
        detail = "; ".join(culprits) if culprits else "the log-dets overflow when summed"
        warnings.warn(
            f"EBFlow.log_z: log Z is {float(value)}: {detail}; log_prob is not finite either",
            RuntimeWarning, stacklevel=3,
        )

    def _sum_linear_logabsdets(self) -> torch.Tensor:
        dtype, device = self._reference()
        total = torch.zeros((), dtype=dtype, device=device)
        for layer, shape, flag in zip(self.layers, self._layer_shapes, self._log_z_flags,
                                      strict=True):
            if flag:
                total = total + layer.logabsdet(shape).to(dtype=dtype, device=device)
        return total

    def log_z(self) -> torch.Tensor:
        """``log Z = -sum over S_l of log|det J|`` (a scalar).

        The value is cached and reused until something it depends on changes: a parameter
        or buffer of a layer in S_l (an optimizer step, ``load_state_dict``, an EMA swap, a
        ``.to(dtype)``, an edit of LUDense's ``sign``) or a plain attribute of one (Affine's
        ``scale``). The cache keeps a copy of those and compares it, O(D^2), with the current
        ones. When gradients are being recorded and the parameters require them, it is
        recomputed so that ML training can differentiate it. A NaN or infinite log Z (a
        singular matrix) raises a ``RuntimeWarning`` that names the layer.
        """
        params = self._linear_parameters()
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            value = -self._sum_linear_logabsdets()
            self._warn_if_not_finite(value.detach())
            return value
        tensors, plain = self._log_z_key()
        if not self._cache_is_valid(tensors, plain):
            with torch.no_grad():
                value = -self._sum_linear_logabsdets()
            self._log_z_cache = ([t.detach().clone() for t in tensors], plain, value)
            self._warn_if_not_finite(value)
        return self._log_z_cache[2].clone()  # type: ignore[index]

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
        self.check_input(x, where="EBFlow.score")
        return -energy_and_grad(self, x, create_graph=create_graph)[1]

    # ------------------------------------------------------------------ generation
    def _split_latents(self, u: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if not self.latent_shapes:
            raise ValueError("EBFlow.inverse: the model's event shape is unknown")
        if isinstance(u, torch.Tensor):
            check_shape(u, None, where="EBFlow.inverse")
            sizes = [numel(s) for s in self.latent_shapes]
            if len(self.latent_shapes) == 1:
                if tuple(u.shape[1:]) != (sizes[0],):
                    check_shape(u, self.latent_shapes[0], where="EBFlow.inverse")
                return [u.reshape(u.shape[0], *self.latent_shapes[0])]
            if u.dim() != 2 or u.shape[1] != sum(sizes):
                raise ValueError(
                    f"EBFlow.inverse: expected a list of {len(sizes)} latents of shapes "
                    f"{self.latent_shapes} or all of them flat, (B, {sum(sizes)}); got "
                    f"{tuple(u.shape)}"
                )
            return [part.reshape(u.shape[0], *shape)
                    for part, shape in zip(u.split(sizes, dim=1), self.latent_shapes,
                                           strict=True)]
        latents = list(u)
        if len(latents) != len(self.latent_shapes):
            raise ValueError(
                f"EBFlow.inverse: expected {len(self.latent_shapes)} latents, got {len(latents)}"
            )
        for part, shape in zip(latents, self.latent_shapes, strict=True):
            check_shape(part, shape, where="EBFlow.inverse")
        return latents

    def inverse(
        self, u: torch.Tensor | Sequence[torch.Tensor], through_preprocessing: bool = True,
    ) -> torch.Tensor:
        """``g^{-1}(u)``: map latents back through every layer (O(D^3) per dense layer).

        Args:
            u: the final latent, shape ``(B, *latent_shapes[-1])``; or all latents flat,
                ``(B, D)``; or the list of latents that :meth:`latents_and_energy` returns.
            through_preprocessing: also undo the preprocessing, returning data space.
        """
        latents = self._split_latents(u)
        for part in latents:
            check_batch(part, None, where="EBFlow.inverse")
            check_same_device(part, self, where="EBFlow.inverse")
        factored = latents[:-1]
        h = latents[-1]
        for layer in reversed(self.layers):
            if _is_split(layer):
                h = layer.merge(h, factored.pop())
            else:
                h = layer.inverse(h)
        if through_preprocessing:
            for layer in reversed(self.preprocessing):
                h = layer.inverse(h)
        return h

    @torch.no_grad()
    def sample(
        self, n: int | Sequence[int] | torch.Size = 1, through_preprocessing: bool = True,
        temperature: float = 1.0, generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw samples by inverse generation, ``x = g^{-1}(u)`` with ``u ~ N(0, T^2 I)``.

        Args:
            n: the number of samples, or a torch-style sample shape such as ``(n,)``; the
                result has shape ``(*sample_shape, *event_shape)``.
            through_preprocessing: return data space (else model space).
            temperature: the latent's standard deviation T (> 0).
            generator: a ``torch.Generator`` for reproducible draws.

        Raises:
            ValueError: a bad argument, parameters that hold NaN or inf, or a temperature so
                large that the latents overflow. Samples that come out NaN or inf (the
                inverse overflowed) raise a ``RuntimeWarning`` that counts them.
        """
        if not self.latent_shapes:
            raise ValueError(
                "sample() needs the event shape: build the model with event_shape=... or a "
                "layer that declares its feature dimension"
            )
        if isinstance(n, bool) or not isinstance(n, (numbers.Integral, tuple, list, torch.Size)):
            raise ArgumentTypeError(f"n must be an int or a tuple of ints, got {n!r}")
        sample_shape = (n,) if isinstance(n, numbers.Integral) else tuple(n)
        if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in sample_shape):
            raise ArgumentTypeError(f"n must be an int or a tuple of ints, got {n!r}")
        sample_shape = tuple(int(s) for s in sample_shape)
        if any(s < 1 for s in sample_shape):
            raise ValueError(f"n must be positive, got {n}")
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
                math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be positive and finite, got {temperature!r}")
        check_generator(generator, "EBFlow.sample")
        check_finite_parameters(self, "EBFlow.sample")
        total = math.prod(sample_shape)
        dtype, device = self._reference()
        latents = self.prior.sample(total, self.latent_shapes, float(temperature), dtype=dtype,
                                    device=device, generator=generator)
        if validation.CHECK_FINITE and not all(bool(torch.isfinite(u).all()) for u in latents):
            raise ValueError(
                f"EBFlow.sample: temperature={float(temperature):g} is too large for {dtype}: "
                "the latents overflow to inf"
            )
        x = self.inverse(latents, through_preprocessing=through_preprocessing)
        if validation.CHECK_FINITE and not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x.flatten(1))).any(1).sum())
            warnings.warn(
                f"EBFlow.sample: {bad} of {total} samples are NaN or inf (the inverse "
                f"overflows; temperature={float(temperature):g})", RuntimeWarning, stacklevel=3,
            )
        return x.reshape(*sample_shape, *x.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`log_prob`, so ``model(x)`` is the data-space log-density."""
        return self.log_prob(x)


def _is_plain(value: object) -> bool:
    """A plain attribute value that may enter a log-det (numbers, strings, tuples of them)."""
    if isinstance(value, tuple):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


__all__ = ["EBFlow", "standard_normal_log_prob"]
