"""Preference vectors over the objectives: validation, normalisation, and grids for sweeps."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import torch


def _describe(preference: object) -> str:
    """The vector as the user wrote it, for error messages."""
    if torch.is_tensor(preference):
        return str(preference.tolist())
    if isinstance(preference, Mapping):
        return str(dict(preference.items()))
    if isinstance(preference, Sequence) and not isinstance(preference, str):
        return str(list(preference))
    return repr(preference)


def resolve_preference(preference: object, objectives: list[str]) -> torch.Tensor:
    """Validate a preference vector and normalise it to sum 1.

    Args:
        preference: None (uniform), a sequence or 1-D tensor with one weight per objective in the
            order of ``objectives``, or a mapping from each objective id to its weight.
        objectives: the objective ids, in the order of the score columns and value heads.

    Returns:
        (K,) float32 weights, all positive, summing to 1.

    Raises:
        ValueError: when there are no objectives, or the vector is not one finite, strictly positive
            number per objective (PAMA divides by each weight), or a weight normalises to below
            float32's smallest normal number. The message names the objectives in order and the bad
            vector.
    """
    objectives = list(objectives)
    if not objectives:
        raise ValueError("resolve_preference needs at least one objective, got none")
    k = len(objectives)
    names = ", ".join(objectives)
    hint = f"give one positive weight per objective in that order ({names})"
    shown = _describe(preference)
    if preference is None:
        return torch.full((k,), 1.0 / k, dtype=torch.float32)

    if isinstance(preference, Mapping):
        missing = [name for name in objectives if name not in preference]
        unknown = [str(key) for key in preference if key not in objectives]
        if missing or unknown:
            raise ValueError(
                f"preference {shown} must name exactly the objectives ({names}); "
                f"missing: {missing or 'none'}, unknown: {unknown or 'none'}"
            )
        entries = [preference[name] for name in objectives]
    elif torch.is_tensor(preference) and preference.dim() == 1:
        entries = preference.tolist()
    elif isinstance(preference, Sequence) and not isinstance(preference, str):
        entries = list(preference)
    else:
        raise ValueError(f"preference {shown} is not a list of weights; {hint}")

    if len(entries) != k:
        raise ValueError(
            f"preference {shown} has {len(entries)} entries but there are {k} objectives ({names}); "
            "give one positive weight per objective in that order"
        )
    values = []
    for name, entry in zip(objectives, entries, strict=True):
        if isinstance(entry, bool) or not isinstance(entry, numbers.Real):
            raise ValueError(
                f"preference {shown} has a non-numeric entry {entry!r} for objective {name!r}; {hint}"
            )
        if not math.isfinite(entry):
            raise ValueError(
                f"preference {shown} has a non-finite entry {entry} for objective {name!r}; {hint}"
            )
        if entry <= 0:
            kind = "zero" if entry == 0 else "negative"
            raise ValueError(
                f"preference {shown} has a {kind} entry {entry} for objective {name!r}; PAMA divides by "
                f"each weight, so {hint}"
            )
        values.append(float(entry))
    weights = torch.tensor(values, dtype=torch.float64)
    weights = weights / weights.max()  # first, so that huge weights do not overflow the sum
    weights = (weights / weights.sum()).to(torch.float32)
    # Training divides by each weight in float32: a weight that underflows there becomes 0 (or a
    # subnormal, whose reciprocal is inf), although it is positive as typed.
    tiny = torch.finfo(torch.float32).tiny
    for name, entry, weight in zip(objectives, entries, weights.tolist(), strict=True):
        if weight < tiny:
            raise ValueError(
                f"preference {shown} has an entry {entry} for objective {name!r} that normalises to "
                f"{weight:.3g}, below float32's smallest normal number {tiny:.3g} (training's dtype, where "
                f"PAMA divides by each weight); keep every weight above {tiny:.3g} times their sum"
            )
    return weights


def simplex_grid(k: int, steps: int) -> list[list[float]]:
    """All preference vectors with entries that are positive multiples of 1 / steps.

    These are the compositions of ``steps`` into ``k`` positive integer parts, divided by ``steps``,
    in lexicographic order of the parts; there are C(steps - 1, k - 1) of them.

    Args:
        k: number of objectives, >= 1.
        steps: grid resolution, >= k (every entry is at least 1 / steps).

    Returns:
        A list of vectors, each a list of k floats summing to 1 (plain floats, ready for configs).

    Raises:
        ValueError: for k < 1 or steps < k.

    Example:
        ``simplex_grid(2, 4)`` is ``[[0.25, 0.75], [0.5, 0.5], [0.75, 0.25]]``.
    """
    if k < 1:
        raise ValueError(f"simplex_grid needs k >= 1 objectives, got k={k}")
    if steps < k:
        raise ValueError(
            f"simplex_grid needs steps >= k so that every entry is positive, got k={k}, steps={steps}"
        )

    def compositions(total: int, parts: int) -> list[list[int]]:
        if parts == 1:
            return [[total]]
        return [
            [first, *rest]
            for first in range(1, total - parts + 2)
            for rest in compositions(total - first, parts - 1)
        ]

    return [[part / steps for part in parts] for parts in compositions(steps, k)]
