"""Pareto fronts of preference sweeps: front indicators, result collection and plots.

`metrics` holds the indicators (numpy, on moocore), `torch_metrics` their torchmetrics wrappers
for logging during training, `collect` reads a sweep's eval.json files, `plot` draws fronts, and
`python -m pama_lit.fronts` is the command that ties them together.
"""

from typing import Any

from pama_lit.fronts.collect import (
    FrontsError,
    Sweep,
    front_metrics,
    hypervolume_history,
    load_history,
    load_sweep,
    mean_column,
    reference_point,
    write_tables,
)
from pama_lit.fronts.metrics import (
    additive_epsilon,
    hypervolume,
    igd_plus,
    non_dominated,
    spacing,
)
from pama_lit.fronts.plot import plot_front, plot_hypervolume_history

__all__ = [
    "FrontsError",
    "HypervolumeMetric",
    "IGDPlusMetric",
    "Sweep",
    "additive_epsilon",
    "front_metrics",
    "hypervolume",
    "hypervolume_history",
    "igd_plus",
    "load_history",
    "load_sweep",
    "mean_column",
    "non_dominated",
    "plot_front",
    "plot_hypervolume_history",
    "reference_point",
    "spacing",
    "write_tables",
]


def __getattr__(name: str) -> Any:
    # torchmetrics takes seconds to import; load the wrappers only when asked for.
    if name in ("HypervolumeMetric", "IGDPlusMetric"):
        from pama_lit.fronts import torch_metrics

        return getattr(torch_metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
