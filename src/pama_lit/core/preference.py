"""Preference vectors over the objectives: validation, normalisation, and grids for sweeps."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np
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


def simplex_corners(k: int) -> torch.Tensor:
    """The simplex's K vertices, then the midpoints of its K(K-1)/2 edges, in lexicographic order.

    Returns:
        (K + K(K-1)/2, K) float64 rows summing to 1 (one row, the single vertex, for K = 1).
    """
    eye = torch.eye(k, dtype=torch.float64)
    edges = [(eye[i] + eye[j]) / 2 for i in range(k) for j in range(i + 1, k)]
    return torch.cat([eye, torch.stack(edges)]) if edges else eye


def sample_preferences(
    n: int, k: int, concentration: float, corner_share: float, seed: Sequence[int]
) -> torch.Tensor:
    """Draw one preference per prompt: Dirichlet(concentration) or, with probability ``corner_share``,
    a uniformly chosen vertex or edge midpoint of the simplex (``simplex_corners``).

    The draws come from a generator of their own, seeded by ``seed`` alone (e.g. the run's seed, the
    iteration and the rank): the same seed gives the same draws whatever ran before, so a resumed run
    draws exactly what the interrupted one would have, each rank draws differently, and the draws
    never consume the global random stream that sampling uses.

    Args:
        n: number of draws (rows).
        k: number of objectives.
        concentration: Dirichlet parameter alpha > 0, the same for every objective (1 = uniform on
            the simplex; larger concentrates near the centre, smaller near the corners).
        corner_share: probability in [0, 1] that a row is a corner instead of a Dirichlet draw.
        seed: non-negative integers seeding the generator.

    Returns:
        (n, K) float64 rows on the simplex (corners hold zeros: ``quantize_preferences`` lifts them).
    """
    rng = np.random.default_rng([int(s) for s in seed])
    dirichlet = rng.dirichlet(np.full(k, float(concentration)), size=n)
    corners = simplex_corners(k).numpy()
    pick = rng.integers(len(corners), size=n)
    use_corner = rng.random(n) < corner_share
    rows = np.where(use_corner[:, None], corners[pick], dirichlet)
    return torch.from_numpy(rows)


def quantize_preferences(weights: torch.Tensor, steps: int) -> torch.Tensor:
    """Round preferences onto the simplex grid of ``simplex_grid(K, steps)``: positive multiples of 1/steps.

    The nearest grid point in squared distance: largest remainder rounding of w * steps to integer
    units summing to ``steps``, with every entry kept at one unit at least (PAMA divides by each
    weight), the units that costs taken back from the entries that round down most cheaply. A grid
    point stays as it is; a vertex becomes its nearest grid point, e.g. (0.99, 0.01) for steps=100.
    Ties go to the lower index.

    Args:
        weights: (..., K) nonnegative rows summing to 1.
        steps: grid resolution, >= K.

    Returns:
        (..., K) float32 rows, each a point of ``simplex_grid(K, steps)``.
    """
    k = weights.shape[-1]
    if steps < k:
        raise ValueError(f"quantize_preferences needs steps >= k, got k={k}, steps={steps}")
    raw = weights.double() * steps
    whole = raw.floor().clamp(min=1)
    # One unit at a time, at most K - 1 of them: the floors miss fewer than K units, and the clamps
    # add fewer than K. Giving to the largest remainder (taking from the smallest) is the cheapest move.
    for _ in range(k):
        left = steps - whole.sum(-1, keepdim=True)
        rem = raw - whole
        give = rem.argmax(-1, keepdim=True)
        take = torch.where(whole > 1, rem, torch.inf).argmin(-1, keepdim=True)
        delta = torch.zeros_like(whole).scatter_(-1, give, (left > 0).double())
        whole = whole + delta.scatter_add_(-1, take, -(left < 0).double())
    return (whole / steps).float()


def preference_prefix(weights: Sequence[float], objectives: Sequence[str], decimals: int) -> str:
    """The line ``conditioning=prompt`` writes before each prompt, e.g. ``[preference: sentiment 0.70, length 0.30]``.

    Fixed width (every weight with ``decimals`` decimals): SmolLM2's tokenizer splits numbers into
    single digits, so every preference takes the same number of tokens and nearby preferences differ
    in a trailing digit (docs/conditioning.md has the measurement).
    """
    parts = ", ".join(f"{name} {float(w):.{decimals}f}" for name, w in zip(objectives, weights, strict=True))
    return f"[preference: {parts}]\n"
