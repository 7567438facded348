"""Preference-conditioned SVD-LoRA adapters (Panacea, Zhong et al., NeurIPS 2024), one preference per sample.

Each adapted ``nn.Linear`` computes, for sample b of the batch,

    y_b = W x_b + (alpha / r) * U diag(s_b) V^T x_b,   s_b = [sigma_1 .. sigma_r, c * w_b1 .. c * w_bK]

with U (out, r+K) and V^T (r+K, in) learned, the first r singular values ``sigma`` learned, and the
last K the sample's preference w_b (on the simplex) times a learned per-layer scale c: the preference
lives in the weights, not in the prompt. peft cannot carry this: AdaLoRA's P diag(E) Q has a learned
E per layer, and its mixed-adapter batches pick one of a few discrete adapters per sample, not a
continuous vector, hence this module.

The preference of the current batch is set on ``SvdLora`` (``SvdLora.preference``) around each forward
or ``generate`` call: (B,K), one row per sample, broadcast over the tokens (also over generation's
steps, where the batch stays B), or (K,) for every sample. Under gradient checkpointing the
recomputation runs later, at backward time: ``SvdLora.checkpoint_context_fn`` makes it read the
preference of its forward, not the one set then.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# ``lora``: U = 0, V^T Kaiming-uniform (peft's LoRA A), sigma = c = 1: with r learned values it is
# LoRA's B A plus K preference directions. ``adalora``: U, V^T ~ N(0, 0.02), sigma = c = 0 (AdaLoRA's
# init, which Panacea's SVD form extends). Both start at the base model: the reference policy.
INITS = ("lora", "adalora")
PARAMETERS = ("u", "v", "sigma", "pref_scale")


@dataclass
class _Slot:
    """What every adapted layer of one model reads at its forward; shared, never a module's state."""

    preference: torch.Tensor | None = None
    enabled: bool = True


class _Restored:
    """Sets ``slot`` back to what it holds now for the block, every time it is entered: a backward that
    keeps its graph (one ``autograd.grad`` per objective) recomputes a checkpointed forward each time."""

    def __init__(self, slot: _Slot) -> None:
        self.slot = slot
        self.state = slot.preference, slot.enabled
        self.saved: list[tuple[torch.Tensor | None, bool]] = []

    def __enter__(self) -> None:
        self.saved.append((self.slot.preference, self.slot.enabled))
        self.slot.preference, self.slot.enabled = self.state

    def __exit__(self, *exc: object) -> None:
        self.slot.preference, self.slot.enabled = self.saved.pop()


class SvdLoraLinear(nn.Module):
    """One ``nn.Linear`` with a preference-conditioned SVD-LoRA adapter.

    Args:
        base: the frozen linear layer (its weight W is (out, in)).
        rank: r, the learned singular values.
        num_preferences: K, the preference weights, one singular value each.
        alpha: the adapter's output is scaled by alpha / r.
        init: one of ``INITS``.
        slot: the preference holder shared by the model's adapted layers.
    """

    def __init__(
        self, base: nn.Linear, rank: int, num_preferences: int, alpha: float, init: str, slot: _Slot
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"conditioning.svd_lora.init={init!r}: must be one of {', '.join(INITS)}")
        self.base_layer = base
        self.rank, self.num_preferences = rank, num_preferences
        self.scaling = alpha / rank
        full = rank + num_preferences
        # float32 adapters over a half-precision base, as peft's autocast_adapter_dtype does.
        kw = {"device": base.weight.device, "dtype": torch.float32}
        self.u = nn.Parameter(torch.empty(base.out_features, full, **kw))
        self.v = nn.Parameter(torch.empty(full, base.in_features, **kw))
        self.sigma = nn.Parameter(torch.empty(rank, **kw))
        self.pref_scale = nn.Parameter(torch.empty(1, **kw))
        self._slot = slot
        with torch.no_grad():
            if init == "lora":
                nn.init.zeros_(self.u)
                nn.init.kaiming_uniform_(self.v, a=math.sqrt(5))
                nn.init.ones_(self.sigma)
                nn.init.ones_(self.pref_scale)
            else:
                nn.init.normal_(self.u, std=0.02)
                nn.init.normal_(self.v, std=0.02)
                nn.init.zeros_(self.sigma)
                nn.init.zeros_(self.pref_scale)

    def singular_values(self, preference: torch.Tensor) -> torch.Tensor:
        """(B, r+K) from a (B,K) preference, or (r+K,) from a (K,) one: [sigma, c * w]."""
        pref = preference.to(self.sigma.dtype)
        sigma = self.sigma.expand(*pref.shape[:-1], self.rank)
        return torch.cat([sigma, pref * self.pref_scale], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if not self._slot.enabled:
            return out
        preference = self._slot.preference
        if preference is None:
            raise RuntimeError(
                "an svd_lora adapter ran without a preference: call the model inside SvdLora.preference(...)"
            )
        s = self.singular_values(preference)
        if s.dim() == 2:
            if x.dim() < 2 or x.shape[0] != s.shape[0]:
                raise ValueError(
                    f"svd_lora: {s.shape[0]} preferences for an input of shape {tuple(x.shape)}; "
                    "give one per sample (the input's first dimension) or one (K,) for all"
                )
            s = s.view(s.shape[0], *([1] * (x.dim() - 2)), s.shape[1])  # broadcast over the tokens
        h = F.linear(x.to(self.v.dtype), self.v) * s
        return out + (F.linear(h, self.u) * self.scaling).to(out.dtype)


class SvdLora:
    """The SVD-LoRA adapters of one model and the preference they read.

    Replaces, in place, every ``nn.Linear`` of ``model`` whose own name (the last part of its dotted
    name, as peft's ``target_modules`` match it) is in ``target_modules`` with an ``SvdLoraLinear``.
    The model's other parameters are left as they are (freeze them first).

    Args:
        model: the network to adapt.
        target_modules: names of the linear layers to adapt (``q_proj``, ``v_proj``...).
        rank: r, learned singular values per layer.
        num_preferences: K, the length of a preference vector.
        alpha: scale numerator (alpha / r).
        init: one of ``INITS``.

    Raises:
        ValueError: no linear layer of ``model`` is named in ``target_modules`` (the message lists
            the names there are).
    """

    def __init__(
        self,
        model: nn.Module,
        target_modules: list[str],
        rank: int,
        num_preferences: int,
        alpha: float,
        init: str,
    ) -> None:
        self.num_preferences = num_preferences
        self._slot = _Slot()
        self.layers: dict[str, SvdLoraLinear] = {}
        targets = set(target_modules)
        found = [
            (parent, child_name, f"{parent_name}.{child_name}" if parent_name else child_name, child)
            for parent_name, parent in model.named_modules()
            for child_name, child in parent.named_children()
            if child_name in targets and isinstance(child, nn.Linear)
        ]
        if not found:
            names = sorted(
                {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
            )
            raise ValueError(
                f"conditioning.svd_lora.target_modules={list(target_modules)}: no linear layer of the model has "
                f"one of these names; its linear layers are named {', '.join(names)}"
            )
        for parent, child_name, name, child in found:
            layer = SvdLoraLinear(child, rank, num_preferences, alpha, init, self._slot)
            setattr(parent, child_name, layer)
            self.layers[name] = layer

    @contextlib.contextmanager
    def preference(self, preference: torch.Tensor) -> Iterator[None]:
        """Run the adapters at ``preference`` inside the block: (B,K), one per sample, or (K,) for all."""
        if preference.dim() not in (1, 2) or preference.shape[-1] != self.num_preferences:
            raise ValueError(
                f"svd_lora: a preference of shape {tuple(preference.shape)}; expected (K,) or (B,K) "
                f"with K={self.num_preferences}"
            )
        previous = self._slot.preference
        self._slot.preference = preference
        try:
            yield
        finally:
            self._slot.preference = previous

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """The base model alone inside the block (the reference policy)."""
        previous = self._slot.enabled
        self._slot.enabled = False
        try:
            yield
        finally:
            self._slot.enabled = previous

    def checkpoint_context_fn(
        self,
    ) -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        """``torch.utils.checkpoint``'s ``context_fn``: the recomputation sees the forward's preference.

        Called at each checkpointed forward; the second context manager wraps its recomputation, which
        runs at backward time, when another preference (or none) may be set.
        """
        return contextlib.nullcontext(), _Restored(self._slot)

    def parameters(self) -> Iterator[nn.Parameter]:
        for layer in self.layers.values():
            for name in PARAMETERS:
                yield getattr(layer, name)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every adapter tensor, keyed ``<layer>.<u|v|sigma|pref_scale>`` as the model names it."""
        return {
            f"{name}.{p}": getattr(layer, p).detach()
            for name, layer in self.layers.items()
            for p in PARAMETERS
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy ``state`` (from ``state_dict``) into the adapters.

        Raises:
            ValueError: a key is missing or unexpected, or a shape differs (another rank, K or model).
        """
        own = self.state_dict()
        missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
        if missing or unexpected:
            raise ValueError(
                f"svd_lora adapter weights do not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        for key, value in state.items():
            if value.shape != own[key].shape:
                raise ValueError(
                    f"svd_lora adapter weight {key} has shape {tuple(value.shape)}, this model's "
                    f"{tuple(own[key].shape)} (another conditioning.svd_lora.rank or number of objectives?)"
                )
        with torch.no_grad():
            for key, value in state.items():
                own[key].copy_(value)
