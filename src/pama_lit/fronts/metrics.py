"""Pareto-front quality indicators for maximised objectives.

Conventions, shared by every function and metric here:

- Points are an (N, K) array: N outcomes (one per run), K objectives in a fixed order. Every
  objective is MAXIMISED. moocore minimises, so the wrappers negate points and references before
  calling it.
- The hypervolume reference point is the reference policy's per-objective scores, optionally
  shifted down by a margin so that the extremes of a front still enclose some volume. A point that
  does not strictly dominate the reference point in every objective contributes nothing; with the
  reference policy as the reference point, hypervolume therefore measures only improvement over
  the model the runs started from.
- IGD+ and additive epsilon compare a set against a reference front; in the `fronts` command that
  is the union of every algorithm's non-dominated points. Both are lower-is-better and 0 when the
  set contains the reference front.
- Indicators are computed in raw objective units: rescale the points first if the objectives'
  scales differ a lot and you want each to count equally.

The functions accept numpy arrays, torch tensors or nested sequences and return Python values;
they import neither torch, Lightning nor Hydra. `pama_lit.fronts.torch_metrics` wraps them as
torchmetrics metrics so a LightningModule can accumulate outcomes and log the indicator.
"""

from __future__ import annotations

from typing import Any

import moocore
import numpy as np


def as_points(points: Any, name: str = "points", num_objectives: int | None = None) -> np.ndarray:
    """Return `points` as a float64 (N, K) array; a single point (K,) becomes (1, K)."""
    if hasattr(points, "detach"):  # a torch tensor; torch itself is not imported for this
        points = points.detach().cpu().double().numpy()
    array = np.asarray(points, dtype=np.float64)
    if array.ndim == 1:
        array = array.reshape(0, num_objectives or 0) if array.size == 0 else array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{name} must be an (N, K) array, got shape {array.shape}")
    if num_objectives is not None and array.shape[1] != num_objectives:
        raise ValueError(f"{name} has {array.shape[1]} objectives, expected {num_objectives}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def as_ref_point(ref_point: Any) -> np.ndarray:
    """Return `ref_point` as a float64 (K,) array."""
    ref = as_points(ref_point, "ref_point")
    if ref.shape[0] != 1:
        raise ValueError(f"ref_point must be a single point, got shape {ref.shape}")
    return ref[0]


def non_dominated(points: Any) -> np.ndarray:
    """Mask of the points that no other point dominates (maximisation).

    a dominates b when a >= b in every objective and a > b in at least one. Duplicates of a
    non-dominated point are all kept.

    Args:
        points: (N, K) outcomes.

    Returns:
        (N,) bool mask, True on the non-dominated points.
    """
    pts = as_points(points)
    if len(pts) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(moocore.is_nondominated(-pts, keep_weakly=True), dtype=bool)


def hypervolume(points: Any, ref_point: Any) -> float:
    """Volume of objective space that the points dominate and that dominates `ref_point`.

    Higher is better. Points that do not strictly dominate `ref_point` contribute nothing, and an
    empty set has hypervolume 0.

    Args:
        points: (N, K) outcomes.
        ref_point: (K,) reference point, normally the reference policy's scores.

    Returns:
        The hypervolume, in the product of the objectives' units.
    """
    ref = as_ref_point(ref_point)
    pts = as_points(points, num_objectives=len(ref))
    if len(pts) == 0:
        return 0.0
    return float(moocore.hypervolume(-pts, -ref))


def igd_plus(points: Any, reference_front: Any) -> float:
    """Inverted generational distance plus (IGD+) of `points` to `reference_front`.

    For each reference point z, the distance to a point a counts only the objectives where a falls
    short of z: d+(z, a) = ||max(z - a, 0)||_2. IGD+ is the mean over z of the smallest d+.
    Lower is better; an empty set is infinitely far.

    Args:
        points: (N, K) outcomes of one algorithm.
        reference_front: (M, K) front to compare against, e.g. the union of all non-dominated points.

    Returns:
        The IGD+ value.
    """
    front = as_points(reference_front, "reference_front")
    pts = as_points(points, num_objectives=front.shape[1])
    if len(front) == 0:
        raise ValueError("reference_front is empty")
    if len(pts) == 0:
        return float("inf")
    return float(moocore.igd_plus(-pts, -front))


def additive_epsilon(points: Any, reference_front: Any) -> float:
    """Additive epsilon indicator of `points` with respect to `reference_front`.

    The smallest eps such that every reference point z is weakly dominated by some point a shifted
    up by eps in every objective: max over z of min over a of max over k of (z_k - a_k).
    Lower is better; 0 or less means the points cover the reference front.

    Args:
        points: (N, K) outcomes of one algorithm.
        reference_front: (M, K) front to compare against.

    Returns:
        The additive epsilon value.
    """
    front = as_points(reference_front, "reference_front")
    pts = as_points(points, num_objectives=front.shape[1])
    if len(front) == 0:
        raise ValueError("reference_front is empty")
    if len(pts) == 0:
        return float("inf")
    return float(moocore.epsilon_additive(-pts, -front))


def spacing(points: Any) -> float:
    """Schott's spacing: how evenly the points are spread (moocore has no spacing).

    With d_i the L1 distance from point i to its nearest other point and d_mean their mean,
    spacing = sqrt(sum_i (d_i - d_mean)^2 / (N - 1)). 0 means evenly spaced; lower is better.
    Pass a front (the non-dominated points): dominated points distort the spread.

    Args:
        points: (N, K) outcomes.

    Returns:
        The spacing, or NaN for fewer than two points, where it is undefined.
    """
    pts = as_points(points)
    n = len(pts)
    if n < 2:
        return float("nan")
    distances = np.abs(pts[:, None, :] - pts[None, :, :]).sum(axis=-1)
    np.fill_diagonal(distances, np.inf)
    nearest = distances.min(axis=1)
    return float(np.sqrt(((nearest - nearest.mean()) ** 2).sum() / (n - 1)))


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation of two equally long sequences: Pearson's correlation of their ranks.

    Tied values share their average rank. Used as the controllability of a conditioned policy: over
    a preference grid, the correlation of an objective's weight with the reward achieved for it.

    Returns:
        The correlation in [-1, 1], or NaN when either sequence is constant or has fewer than two
        values, where it is undefined.
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"spearman needs two 1-D sequences of one length, got shapes {a.shape} and {b.shape}"
        )

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for value in np.unique(v):  # ties: their average rank
            tied = v == value
            r[tied] = r[tied].mean()
        return r

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])
