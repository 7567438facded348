"""Optional per-objective normalisation of raw scores (off by default)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from pama_lit.rewards.base import Reward


class Normalized(Reward):
    """Wrap a reward to return (score - mean) / std.

    PAMA whitens each objective's advantages anyway, so normalisation changes little for it; it
    matters for linear scalarisation (MORLHF), where raw scales decide the trade-off, and for reading
    logged rewards on one scale.

    - ``kind="fixed"``: constants, e.g. measured on the reference policy before training.
    - ``kind="running"``: mean and variance of every score seen in training mode, updated before
      normalising the batch (TRL's RunningMoments); with ``momentum`` an exponential moving average
      instead of the exact cumulative moments. ``eval()`` freezes the statistics (validation).

    The statistics are plain floats, saved with ``state_dict`` / ``load_state_dict``; ``PamaModule``
    keeps them in its checkpoints, so that a resumed run normalises as before. ``metrics()`` reports
    them with the last raw batch's mean and std. Switched on by ``reward.normalize``; validation and
    ``evaluate.py`` score with the raw reward, so results stay comparable across runs.

    Args:
        reward: the raw reward.
        kind: "running" or "fixed".
        mean: fixed mean, or the running mean's start when ``momentum`` is set.
        std: fixed std, or the running std's start when ``momentum`` is set.
        momentum: None for cumulative moments, or the EMA weight of each new batch in (0, 1].
        eps: added to std before dividing.
        clip: clip normalised scores to [-clip, clip] when set.
    """

    def __init__(
        self,
        reward: Reward,
        kind: Literal["running", "fixed"] = "running",
        mean: float = 0.0,
        std: float = 1.0,
        momentum: float | None = None,
        eps: float = 1e-6,
        clip: float | None = None,
    ) -> None:
        if not isinstance(reward, Reward):
            raise TypeError(f"Normalized wraps a Reward, got {type(reward).__name__}")
        if kind not in ("running", "fixed"):
            raise ValueError(f"Normalized: kind must be 'running' or 'fixed', got {kind!r}")
        if std <= 0:
            raise ValueError(f"Normalized: std must be > 0, got {std}")
        if momentum is not None and not 0.0 < momentum <= 1.0:
            raise ValueError(f"Normalized: momentum must be in (0, 1], got {momentum}")
        self.reward, self.kind, self.momentum = reward, kind, momentum
        self.eps, self.clip = float(eps), clip
        self.reads, self.batch_size = reward.reads, reward.batch_size
        self.mean, self.var, self.count = float(mean), float(std) ** 2, 0
        self.training = True
        self._raw_mean = self._raw_std = math.nan

    def __call__(self, prompts, responses, response_lengths):
        raw = self.reward(prompts, responses, response_lengths)
        finite = raw[torch.isfinite(raw)]  # a NaN (rewards_on_error=skip) must not poison the moments
        if len(finite):
            self._raw_mean = finite.mean().item()
            self._raw_std = finite.std(unbiased=False).item()
            if self.kind == "running" and self.training:
                self._update(finite.double())
        out = (raw - self.mean) / (math.sqrt(self.var) + self.eps)
        return out.clamp(-self.clip, self.clip) if self.clip is not None else out

    def _update(self, x: torch.Tensor) -> None:
        n, batch_mean, batch_var = len(x), x.mean().item(), x.var(unbiased=False).item()
        if self.momentum is not None:
            m = self.momentum if self.count else 1.0  # the first batch replaces the start values
            delta = batch_mean - self.mean
            self.mean += m * delta
            self.var = (1 - m) * (self.var + m * delta**2) + m * batch_var
        else:  # Chan et al.'s parallel update of exact moments
            total = self.count + n
            delta = batch_mean - self.mean
            self.mean += delta * n / total
            self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count += n

    def score(self, prompts, responses, response_lengths):
        return self.reward.score(prompts, responses, response_lengths)

    def to(self, device):
        self.reward.to(device)
        return self

    def train(self, mode: bool = True) -> Normalized:
        self.training = mode
        self.reward.train(mode)
        return self

    def metrics(self) -> dict[str, float]:
        out = {
            "norm_mean": self.mean,
            "norm_std": math.sqrt(self.var),
            "raw_mean": self._raw_mean,
            "raw_std": self._raw_std,
        }
        return {**self.reward.metrics(), **out}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind", self.kind) != self.kind:
            raise ValueError(f"Normalized: state of kind {state['kind']!r} loaded into kind {self.kind!r}")
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), int(state["count"])
