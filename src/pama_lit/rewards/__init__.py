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
from pama_lit.rewards.sentiment import TweetSentiment, VaderSentiment

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
    "TweetSentiment",
    "VaderSentiment",
    "build_rewards",
    "cache_dir",
    "require_hub_model",
]


def build_rewards(
    rewards_cfg: Mapping[str, Any], normalize: str | Mapping[str, Any] | None = None
) -> dict[str, Reward]:
    """Instantiate one reward per objective, in the config's order.

    Args:
        rewards_cfg: objective id -> reward config with a ``_target_`` (``cfg.objective.rewards``).
            The id names the value head, score column, preference weight and metric suffix.
        normalize: ``reward.normalize``: None or "none" (raw scores, the default); "running" (every
            objective, ``Normalized(kind="running")``); ``Normalized`` options for every objective
            (``{"kind": "running", "clip": 5}``); or objective id -> "none", "running" or options.

    Returns:
        objective id -> Reward.

    Raises:
        ValueError: a ``reward.normalize`` value or objective id that is not allowed, named.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if not rewards_cfg:
        raise ValueError("no rewards configured: pick an objective, e.g. objective=humor+harmless")
    check_normalize(normalize, [str(name) for name in rewards_cfg])  # before any reward model loads
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


NORMALIZE_KINDS = ("none", "running")


def _normalize_options(name: str, normalize: str | Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``Normalized`` options of objective ``name`` (None: raw scores)."""
    if normalize is None or isinstance(normalize, str):
        return _kind_options(normalize, "reward.normalize")
    if "kind" in normalize:
        return normalize
    return _kind_options(normalize.get(name), f"reward.normalize.{name}")


def _kind_options(value: Any, key: str) -> Mapping[str, Any] | None:
    if value is None or value == "none":
        return None
    if value == "running":
        return {"kind": "running"}
    if isinstance(value, Mapping):
        return value
    hint = " (fixed needs its mean and std: {kind: fixed, mean: m, std: s})" if value == "fixed" else ""
    raise ValueError(
        f"{key}={value!r} is not allowed{hint}: use none, running, Normalized options "
        "({kind: running|fixed, mean, std, momentum, eps, clip}) or, per objective, a mapping from its id"
    )


def check_normalize(normalize: str | Mapping[str, Any] | None, objectives: list[str]) -> None:
    """Validate ``reward.normalize`` against the objectives, before any reward or model loads.

    Raises:
        ValueError: naming the bad key or value and what is allowed.
    """
    if normalize is None or isinstance(normalize, str) or "kind" in normalize:
        _normalize_options(objectives[0] if objectives else "", normalize)
        return
    unknown = [str(k) for k in normalize if k not in objectives]
    if unknown:
        raise ValueError(
            f"reward.normalize: {', '.join(unknown)} is not an objective of this run; "
            f"objectives: {', '.join(objectives)} (or give kind: ... for every objective)"
        )
    for name in objectives:
        _normalize_options(name, normalize)
