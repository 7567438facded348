"""Phase 2: score a rollout with every objective's reward, and refuse bad scores loudly."""

from __future__ import annotations

import torch

from pama_lit.rewards import Reward
from pama_lit.rollout import Rollout


class RewardError(RuntimeError):
    """A reward raised, or returned a wrong shape or a non-finite score."""


def score_rollout(rewards: dict[str, Reward], rollout: Rollout, iteration: int) -> torch.Tensor:
    """(B,K) scores, column k from the k-th objective's reward, on the rollout's device.

    Raises:
        RewardError: naming the objective, the iteration and, for a non-finite score, the
            offending sample's prompt and response.
    """
    lengths = rollout.lengths
    batch = len(rollout.texts)
    columns = []
    for name, reward in rewards.items():
        try:
            column = reward(rollout.prompts, rollout.texts, lengths)
        except RewardError:
            raise
        except Exception as err:
            raise RewardError(f"reward for objective {name!r} raised at iteration {iteration}: {err!r}") from err
        if not torch.is_tensor(column) or column.shape != (batch,):
            shape = tuple(column.shape) if torch.is_tensor(column) else type(column).__name__
            raise RewardError(
                f"reward for objective {name!r} returned shape {shape} at iteration {iteration}; "
                f"expected ({batch},), one float per sample"
            )
        bad = (~torch.isfinite(column)).nonzero().flatten()
        if len(bad):
            b = int(bad[0])
            raise RewardError(
                f"reward for objective {name!r} returned {column[b].item()} for {len(bad)} sample(s) at "
                f"iteration {iteration}; first: prompt={rollout.prompts[b]!r} response={rollout.texts[b]!r}"
            )
        columns.append(column.to(lengths.device, torch.float32))
    return torch.stack(columns, dim=-1)
