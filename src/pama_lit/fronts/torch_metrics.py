"""torchmetrics wrappers of the front indicators, so training can accumulate outcomes and log them.

Kept apart from `metrics` because importing torchmetrics takes seconds, which the `fronts`
command and the notebook do not need. Conventions (maximisation, reference point) are those of
`pama_lit.fronts.metrics`.

A conditioned run's validation (``conditioning.eval_grid_steps``) logs ``HypervolumeMetric`` of its
preference grid's mean rewards (``val/conditioning/hypervolume``); nothing uses ``IGDPlusMetric`` yet.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from pama_lit.fronts.metrics import as_points, as_ref_point, hypervolume, igd_plus


class _PointSetMetric(Metric):
    """Accumulates outcome points (N, K) across update() calls and processes."""

    full_state_update = False

    def __init__(self, num_objectives: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_objectives = num_objectives
        self.add_state("points", default=[], dist_reduce_fx="cat")

    def update(self, points: torch.Tensor) -> None:
        """Add outcomes: a (K,) point or an (N, K) batch of points."""
        points = torch.as_tensor(points, dtype=torch.float64)
        if points.ndim == 1:
            points = points[None, :]
        if points.ndim != 2 or points.shape[1] != self.num_objectives:
            raise ValueError(
                f"expected points of shape (N, {self.num_objectives}), got {tuple(points.shape)}"
            )
        self.points.append(points)

    def _accumulated(self) -> np.ndarray:
        if isinstance(self.points, list) and not self.points:
            return np.zeros((0, self.num_objectives))
        return dim_zero_cat(self.points).detach().cpu().numpy()


class HypervolumeMetric(_PointSetMetric):
    """Hypervolume (`metrics.hypervolume`) of all points passed to update(), for logging.

    Args:
        ref_point: (K,) reference point, normally the reference policy's scores.
    """

    higher_is_better = True
    is_differentiable = False

    def __init__(self, ref_point: Any, **kwargs: Any) -> None:
        ref = as_ref_point(ref_point)
        super().__init__(num_objectives=len(ref), **kwargs)
        self.ref_point = ref

    def compute(self) -> torch.Tensor:
        return torch.tensor(hypervolume(self._accumulated(), self.ref_point))


class IGDPlusMetric(_PointSetMetric):
    """IGD+ (`metrics.igd_plus`) of all points passed to update() to a fixed reference front.

    Args:
        reference_front: (M, K) front to compare against.
    """

    higher_is_better = False
    is_differentiable = False

    def __init__(self, reference_front: Any, **kwargs: Any) -> None:
        front = as_points(reference_front, "reference_front")
        if len(front) == 0:
            raise ValueError("reference_front is empty")
        super().__init__(num_objectives=front.shape[1], **kwargs)
        self.reference_front = front

    def compute(self) -> torch.Tensor:
        return torch.tensor(igd_plus(self._accumulated(), self.reference_front))
