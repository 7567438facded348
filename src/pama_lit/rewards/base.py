"""The reward interface: a frozen scorer from (prompts, responses) to one float per sample."""

from __future__ import annotations

import abc
from typing import Literal

import torch

Reads = Literal["response", "prompt+response"]


class Reward(abc.ABC):
    """A frozen, batched reward function R(prompt, response) -> float.

    Rewards are plain objects, never ``nn.Module`` children of the LightningModule, so they never
    enter an optimizer, a ``state_dict`` or a checkpoint.

    Attributes:
        reads: whether the score reads the response alone or the prompt and response together.
        batch_size: how many samples one call of ``score`` receives at most.
        ceiling: the largest score the reward can give, when it has one by construction (a clipped
            rule such as ``LengthReward``'s ``high``), else None. A sample scoring it has satisfied
            the objective: ``algorithm.satisfied_at_ceiling`` then leaves the objective out of PAMA's
            min at that sample's tokens.
    """

    reads: Reads = "response"
    batch_size: int = 64
    ceiling: float | None = None

    def __call__(
        self, prompts: list[str], responses: list[str], response_lengths: torch.Tensor
    ) -> torch.Tensor:
        """Score a batch.

        Args:
            prompts: B prompt strings (as shown to the policy, chat template removed).
            responses: B decoded responses (special tokens removed).
            response_lengths: (B,) long, the response lengths in policy tokens (EOS included);
                its device is the device of the returned tensor.

        Returns:
            (B,) float32 scores on ``response_lengths.device``.
        """
        if not (len(prompts) == len(responses) == len(response_lengths)):
            raise ValueError(
                f"{type(self).__name__}: got {len(prompts)} prompts, {len(responses)} responses and "
                f"{len(response_lengths)} lengths; they must match"
            )
        chunks = []
        for start in range(0, len(responses), self.batch_size):
            stop = start + self.batch_size
            out = self.score(prompts[start:stop], responses[start:stop], response_lengths[start:stop])
            chunk = torch.as_tensor(out, dtype=torch.float32).reshape(-1).cpu()
            if len(chunk) != len(responses[start:stop]):
                raise ValueError(
                    f"{type(self).__name__}.score returned {len(chunk)} scores for "
                    f"{len(responses[start:stop])} samples"
                )
            chunks.append(chunk)
        scores = torch.cat(chunks) if chunks else torch.zeros(0)
        return scores.to(response_lengths.device)

    @abc.abstractmethod
    def score(
        self, prompts: list[str], responses: list[str], response_lengths: torch.Tensor
    ) -> torch.Tensor | list[float]:
        """Score at most ``batch_size`` samples; returns B floats in any device or container."""

    def to(self, device: torch.device | str) -> Reward:
        """Move any model the reward holds; rule rewards have none."""
        return self

    def train(self, mode: bool = True) -> Reward:
        """Training or evaluation mode; only stateful wrappers (running normalisation) care."""
        return self

    def eval(self) -> Reward:
        """Evaluation mode: scores no longer update any running state."""
        return self.train(False)

    def metrics(self) -> dict[str, float]:
        """Extra values to log under ``train/reward_stats/...`` (e.g. normaliser state); none by default."""
        return {}


def check_reads(reads: str, who: str) -> Reads:
    """Validate a ``reads`` option."""
    if reads not in ("response", "prompt+response"):
        raise ValueError(f"{who}: reads must be 'response' or 'prompt+response', got {reads!r}")
    return reads  # type: ignore[return-value]


def read_texts(reads: Reads, prompts: list[str], responses: list[str], separator: str = "\n") -> list[str]:
    """The texts a reward reads: the responses, or each prompt and response joined by ``separator``."""
    if reads == "response":
        return list(responses)
    return [p + separator + r for p, r in zip(prompts, responses, strict=True)]
