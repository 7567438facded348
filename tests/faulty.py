"""Inputs that misbehave on purpose (rewards, prompt sources), imported by path from test configs."""

from __future__ import annotations

import math


def nan_for_first(responses: list[str]) -> list[float]:
    """NaN for the first sample of every batch, 1.0 for the others."""
    return [math.nan if i == 0 else 1.0 for i in range(len(responses))]


def raise_for_first(responses: list[str]) -> list[float]:
    """Raises on any call that includes a batch's first sample (a lone sample is its own first)."""
    raise ValueError("cannot score this text")


def no_prompts(**options) -> list[str]:
    """A prompt source that yields nothing (whatever the data config passes)."""
    return []


def raise_on_rank_one(responses: list[str]) -> list[float]:
    """Scores on rank 0, raises on rank 1 of a data-parallel run."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_rank() == 1:
        raise ValueError("reward service unreachable from rank 1")
    return [1.0] * len(responses)
