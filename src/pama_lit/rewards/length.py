"""The paper's length reward: clip(l / scale, low, high), l in policy tokens."""

from __future__ import annotations

from pama_lit.rewards.base import Reward


class LengthReward(Reward):
    """Length of the response in policy tokens, scaled and clipped.

    The paper uses scale 140 with [0.5, 1.5] (GPT-2/IMDb) and [0, 4096/140] (HH-RLHF). Note that
    with [0.5, 1.5] every response shorter than ``0.5 * scale`` tokens scores the same: pick the
    scale against the generation length so that the objective can move.

    Args:
        scale: tokens per unit of reward.
        low: lower clip bound.
        high: upper clip bound.
    """

    reads = "response"

    def __init__(self, scale: float = 140.0, low: float = 0.5, high: float = 1.5) -> None:
        if scale <= 0:
            raise ValueError(f"LengthReward: scale must be > 0, got {scale}")
        if low > high:
            raise ValueError(f"LengthReward: low ({low}) must not exceed high ({high})")
        self.scale, self.low, self.high = float(scale), float(low), float(high)
        self.ceiling = self.high  # no response scores more: a response at the cap has satisfied it
        self.batch_size = 1 << 30

    def score(self, prompts, responses, response_lengths):
        return (response_lengths.float() / self.scale).clamp(self.low, self.high)
