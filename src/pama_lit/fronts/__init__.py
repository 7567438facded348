"""Pareto fronts of preference sweeps: front indicators, result collection and plots.

`metrics` holds the indicators (numpy, on moocore) and `torch_metrics` their torchmetrics wrappers
for logging during training.
"""

from typing import Any

from pama_lit.fronts.metrics import (
    additive_epsilon,
    hypervolume,
    igd_plus,
    non_dominated,
    spacing,
)

__all__ = [
    "HypervolumeMetric",
    "IGDPlusMetric",
    "additive_epsilon",
    "hypervolume",
    "igd_plus",
    "non_dominated",
    "spacing",
]


def __getattr__(name: str) -> Any:
    # torchmetrics takes seconds to import; load the wrappers only when asked for.
    if name in ("HypervolumeMetric", "IGDPlusMetric"):
        from pama_lit.fronts import torch_metrics

        return getattr(torch_metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
