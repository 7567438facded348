"""Reward-vs-KL curves: runs compared at the same KL to the reference policy.

A policy can buy reward by drifting further from the reference, so the RLHF literature compares
methods at matched KL, or as reward-vs-KL curves. Each run's evaluations during training
(``evaluations.jsonl``: the reference at iteration 0 and KL 0, then every evaluation) trace a path
of (KL, reward) points, one path per objective. Reading every path at a common KL compares the
methods like for like.

Conventions:

- A path is read where it reaches the KL asked for, interpolating linearly between the two
  evaluations that bracket it. A run whose KL falls back (the controller raised beta) can meet the
  same KL more than once; the best of those readings counts, since the run did reach that reward
  there (at an evaluation, a checkpoint that exists). A run that never reaches the KL gives None.
- ``common_kl`` is the largest KL every path reaches: the furthest point where all runs can be
  compared without extrapolating.
- Linear interpolation between evaluations is only as fine as the evaluation schedule: with
  evaluations 10 iterations apart it is a coarse reading, and it says so in the report.

Pure Python and numpy; no torch, Lightning or Hydra.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _path(kls: Sequence[float], rewards: Sequence[float]) -> tuple[list[float], list[float]]:
    if len(kls) != len(rewards):
        raise ValueError(f"a path needs one reward per KL, got {len(kls)} KLs and {len(rewards)} rewards")
    if not kls:
        raise ValueError("a path needs at least one (KL, reward) point, got none")
    xs = [_finite(k, f"KL #{i}") for i, k in enumerate(kls)]
    ys = [_finite(r, f"reward #{i}") for i, r in enumerate(rewards)]
    return xs, ys


def reward_at_kl(kls: Sequence[float], rewards: Sequence[float], kl: float) -> float | None:
    """The reward a run's path reaches at ``kl``, linear between evaluations; None if it never does.

    Args:
        kls: KL to the reference at each evaluation, in training order (the reference's 0 first).
        rewards: one objective's evaluation mean at the same evaluations.
        kl: the KL to read the path at.

    Returns:
        The best reward over every place the path meets ``kl``: each evaluation whose KL equals it,
        and each segment between consecutive evaluations that brackets it, read by linear
        interpolation. None when no point or segment reaches ``kl``.
    """
    xs, ys = _path(kls, rewards)
    kl = _finite(kl, "kl")
    found = [y for x, y in zip(xs, ys, strict=True) if x == kl]
    for i in range(1, len(xs)):
        (x0, y0), (x1, y1) = (xs[i - 1], ys[i - 1]), (xs[i], ys[i])
        if x0 != x1 and min(x0, x1) < kl < max(x0, x1):
            found.append(y0 + (y1 - y0) * (kl - x0) / (x1 - x0))
    return max(found) if found else None


def common_kl(paths: Iterable[Sequence[float]]) -> float | None:
    """The largest KL that every path reaches: the minimum over paths of each path's maximum KL.

    Paths that start at KL 0 (the reference) and are continuous reach every KL below their maximum,
    so every path can be read there. None when there are no paths.
    """
    maxima = [max(_finite(k, "KL") for k in path) for path in paths if len(path)]
    return min(maxima) if maxima else None


def path_from_evaluations(records: Iterable[dict]) -> tuple[list[float], dict[str, list[float]]]:
    """A run's (KL, reward) path from its ``pama_lit.eval/1`` records, in iteration order.

    Records without an iteration or a finite ``kl_ref`` are skipped; when an iteration appears more
    than once (a resumed run appends to the same file) the last record is kept. Returns the KLs and,
    per objective, the evaluation means, aligned.
    """
    by_iteration: dict[int, dict] = {}
    for record in records:
        iteration, kl = record.get("iteration"), record.get("kl_ref")
        if not isinstance(iteration, int) or isinstance(kl, bool) or not isinstance(kl, int | float):
            continue
        if not math.isfinite(kl):
            continue
        by_iteration[iteration] = record
    ordered = [by_iteration[i] for i in sorted(by_iteration)]
    objectives: list[str] = list(ordered[0]["rewards"]) if ordered else []
    for record in ordered:
        if list(record["rewards"]) != objectives:
            raise ValueError(
                f"evaluation at iteration {record['iteration']} scores {list(record['rewards'])}, "
                f"the first one {objectives}: one run's evaluations must share objectives"
            )
    kls = [float(r["kl_ref"]) for r in ordered]
    rewards = {o: [float(r["rewards"][o]["mean"]) for r in ordered] for o in objectives}
    return kls, rewards
