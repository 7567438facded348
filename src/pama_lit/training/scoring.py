"""Phase 2: score a rollout with every objective's reward, and refuse (or skip) bad scores loudly.

``rewards_on_error`` chooses what a bad score does:

* ``raise`` (default): stop the run with a :class:`RewardError` naming the objective, the
  iteration and the offending sample's prompt and response.
* ``skip``: the offending samples get NaN scores, :func:`mask_unscored` takes them out of the
  update (their response mask becomes empty), and the module counts them in
  ``train/skipped_samples``. A reward returning the wrong shape is a bug, not a bad sample: it
  always raises.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from pama_lit.rewards import Reward
from pama_lit.training.rollout import Rollout

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")


class RewardError(RuntimeError):
    """A reward raised, or returned a wrong shape or a non-finite score."""


def _sample(rollout: Rollout, b: int) -> str:
    return f"prompt={rollout.prompts[b]!r} response={rollout.texts[b]!r}"


def _score_one_by_one(
    reward: Reward, rollout: Rollout, lengths: torch.Tensor
) -> tuple[torch.Tensor, list[int]]:
    """Per-sample scores after a batch call raised: NaN where the reward raises on the sample alone."""
    scores = torch.full((len(rollout.texts),), float("nan"))
    failed = []
    for b in range(len(rollout.texts)):
        try:
            value = reward([rollout.prompts[b]], [rollout.texts[b]], lengths[b : b + 1])
            scores[b] = torch.as_tensor(value, dtype=torch.float32).reshape(-1)[0].cpu()
        except Exception:
            failed.append(b)
    return scores, failed


def score_rollout(
    rewards: dict[str, Reward], rollout: Rollout, iteration: int, on_error: str = "raise"
) -> torch.Tensor:
    """(B,K) scores, column k from the k-th objective's reward, on the rollout's device.

    Args:
        rewards: objective id -> reward, in objective order.
        rollout: the sampled batch.
        iteration: for the error message.
        on_error: "raise" or "skip" (see the module docstring); with "skip" every score of a bad
            sample is NaN.

    Raises:
        RewardError: naming the objective, the iteration and, where one sample is to blame, its
            prompt and response.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"rewards_on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    lengths = rollout.lengths
    batch = len(rollout.texts)
    columns = []
    for name, reward in rewards.items():
        reported = False
        try:
            column = reward(rollout.prompts, rollout.texts, lengths)
        except RewardError:
            raise
        except Exception as err:
            column, failed = _score_one_by_one(reward, rollout, lengths)
            reported = True
            if on_error == "raise" or not failed:
                where = (
                    f"; first failing sample: {_sample(rollout, failed[0])}"
                    if failed
                    else "; every sample scores alone, so the failure needs the whole batch"
                )
                raise RewardError(
                    f"reward for objective {name!r} raised at iteration {iteration}: {err!r}{where}"
                ) from err
            log.warning(
                "reward for objective %r raised on %d sample(s) at iteration %d (%r); skipped. First: %s",
                name, len(failed), iteration, err, _sample(rollout, failed[0]),
            )  # fmt: skip
        if not torch.is_tensor(column) or column.shape != (batch,):
            shape = tuple(column.shape) if torch.is_tensor(column) else type(column).__name__
            raise RewardError(
                f"reward for objective {name!r} returned shape {shape} at iteration {iteration}; "
                f"expected ({batch},), one float per sample"
            )
        column = column.to(lengths.device, torch.float32)
        bad = (~torch.isfinite(column)).nonzero().flatten()
        if len(bad):
            b = int(bad[0])
            message = (
                f"reward for objective {name!r} returned {column[b].item()} for {len(bad)} sample(s) at "
                f"iteration {iteration}; first: {_sample(rollout, b)}"
            )
            if on_error == "raise":
                raise RewardError(message)
            if not reported:
                log.warning("%s; skipped", message)
            column = torch.where(torch.isfinite(column), column, torch.full_like(column, float("nan")))
        columns.append(column)
    return torch.stack(columns, dim=-1)


def mask_unscored(rollout: Rollout, scores: torch.Tensor) -> tuple[Rollout, torch.Tensor, int]:
    """Take samples with a non-finite score out of the update.

    Args:
        rollout: the batch; its ``response_mask`` (B,T) is replaced.
        scores: (B,K) with NaN for skipped samples.

    Returns:
        The rollout with an empty response mask on skipped rows, scores (B,K) with 0 there, and the
        number of skipped samples. An empty mask removes a row from every masked statistic and loss.
    """
    valid = torch.isfinite(scores).all(-1)
    skipped = int((~valid).sum())
    if not skipped:
        return rollout, scores, 0
    mask = rollout.response_mask & valid.unsqueeze(-1)
    rollout = dataclasses.replace(rollout, response_mask=mask)
    return rollout, torch.where(valid.unsqueeze(-1), scores, torch.zeros_like(scores)), skipped
