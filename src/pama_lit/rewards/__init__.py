"""Reward functions: one frozen scorer per objective, built from the objective's Hydra config."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pama_lit.infra.cache import cache_dir
from pama_lit.infra.hub_access import HubModelUnavailable, require_hub_model
from pama_lit.rewards.base import Reward
from pama_lit.rewards.callable import CallableReward
from pama_lit.rewards.harmless import ProfanityHarmless
from pama_lit.rewards.hub import RewardModelReward, SequenceClassifierReward
from pama_lit.rewards.humor import HumorClassifier
from pama_lit.rewards.length import LengthReward
from pama_lit.rewards.normalize import Normalized
from pama_lit.rewards.sentiment import VaderSentiment

log = logging.getLogger(__name__)

__all__ = [
    "CallableReward",
    "HubModelUnavailable",
    "HumorClassifier",
    "LengthReward",
    "Normalized",
    "ProfanityHarmless",
    "Reward",
    "RewardModelReward",
    "SequenceClassifierReward",
    "VaderSentiment",
    "build_rewards",
    "cache_dir",
    "require_hub_model",
]


def build_rewards(
    rewards_cfg: Mapping[str, Any], normalize: Mapping[str, Any] | None = None
) -> dict[str, Reward]:
    """Instantiate one reward per objective, in the config's order.

    Args:
        rewards_cfg: objective id -> reward config with a ``_target_`` (``cfg.objective.rewards``).
            The id names the value head, score column, preference weight and metric suffix.
        normalize: None (raw scores, the default); or ``Normalized`` options for every objective
            (``{"kind": "running"}``); or objective id -> options (None leaves that one raw).

    Returns:
        objective id -> Reward.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if not rewards_cfg:
        raise ValueError("no rewards configured: pick an objective, e.g. objective=humor+harmless")
    rewards: dict[str, Reward] = {}
    for name, cfg in rewards_cfg.items():
        if not isinstance(cfg, Mapping) or "_target_" not in cfg:
            raise TypeError(f"reward '{name}': expected a config with a _target_, got {cfg!r}")
        try:
            reward = instantiate(cfg)
        except InstantiationException as e:
            if isinstance(
                e.__cause__, HubModelUnavailable
            ):  # Hydra's wrapper hides the one line that matters
                raise HubModelUnavailable(f"objective '{name}': {e.__cause__}") from e.__cause__
            raise
        if not isinstance(reward, Reward):
            raise TypeError(
                f"reward '{name}': {cfg['_target_']} built a {type(reward).__name__}, not a pama_lit Reward "
                "(wrap a plain function with pama_lit.rewards.CallableReward)"
            )
        options = _normalize_options(name, normalize)
        if options is not None:
            reward = Normalized(reward, **options)
        log.info("reward '%s': %s (reads %s)%s", name, cfg["_target_"], reward.reads,
                 f", normalized {dict(options)}" if options is not None else "")  # fmt: skip
        rewards[str(name)] = reward
    return rewards


def _normalize_options(name: str, normalize: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if not normalize:
        return None
    if "kind" in normalize:
        return normalize
    return normalize.get(name)
