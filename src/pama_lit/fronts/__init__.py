"""Pareto fronts of preference sweeps: front indicators, result collection and plots.

`metrics` holds the indicators (numpy, on moocore), `torch_metrics` their torchmetrics wrappers
for logging during training, `collect` reads a sweep's eval.json files, `kl_curves` reads runs
at matched KL to the reference, `plot` draws fronts and reward-vs-KL curves, and
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
    read_history,
    reference_point,
    write_tables,
)
from pama_lit.fronts.kl_curves import common_kl, path_from_evaluations, reward_at_kl
from pama_lit.fronts.metrics import (
    additive_epsilon,
    hypervolume,
    igd_plus,
    non_dominated,
    spacing,
)
from pama_lit.fronts.plot import plot_front, plot_hypervolume_history, plot_reward_kl

__all__ = [
    "FrontsError",
    "HypervolumeMetric",
    "IGDPlusMetric",
    "Sweep",
    "additive_epsilon",
    "common_kl",
    "front_metrics",
    "hypervolume",
    "hypervolume_history",
    "igd_plus",
    "load_history",
    "load_sweep",
    "mean_column",
    "non_dominated",
    "path_from_evaluations",
    "plot_front",
    "plot_hypervolume_history",
    "plot_reward_kl",
    "read_history",
    "reference_point",
    "reward_at_kl",
    "spacing",
    "write_tables",
]


def __getattr__(name: str) -> Any:
    # torchmetrics takes seconds to import; load the wrappers only when asked for.
    if name in ("HypervolumeMetric", "IGDPlusMetric"):
        from pama_lit.fronts import torch_metrics

        return getattr(torch_metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
