"""Front plots built on `matplotlib.figure.Figure` directly.

No pyplot, so nothing depends on the active backend: `fig.savefig("front.png")` renders with Agg
from a script or a headless machine, and a notebook displays the returned figure inline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pama_lit.fronts.collect import mean_column


def _ci_errors(runs: pd.DataFrame, objective: str) -> np.ndarray:
    """(2, N) distances from the mean down to the CI's low end and up to its high end."""
    mean = runs[mean_column(objective)].to_numpy(dtype=np.float64)
    low = runs[f"{objective}_ci95_low"].to_numpy(dtype=np.float64)
    high = runs[f"{objective}_ci95_high"].to_numpy(dtype=np.float64)
    return np.clip(np.stack([mean - low, high - mean]), 0.0, None)


def _draw_pair(
    ax: Axes,
    runs: pd.DataFrame,
    x: str,
    y: str,
    ref_xy: Sequence[float] | None,
    ref_label: str,
    detailed: bool,
) -> None:
    """Scatter objective `y` against `x`, one colour per algorithm.

    Filled markers are non-dominated within their algorithm, hollow ones dominated. With
    `detailed`, also draw 95% CI error bars and join each algorithm's front by a line.
    """
    for i, (algorithm, group) in enumerate(runs.groupby("algorithm", sort=True)):
        color = f"C{i}"
        xs, ys = group[mean_column(x)], group[mean_column(y)]
        front = group["non_dominated"].to_numpy(dtype=bool)
        if detailed:
            ax.errorbar(
                xs,
                ys,
                xerr=_ci_errors(group, x),
                yerr=_ci_errors(group, y),
                fmt="none",
                ecolor=color,
                alpha=0.35,
                linewidth=1,
            )
            line = group[front].sort_values(mean_column(x))
            ax.plot(line[mean_column(x)], line[mean_column(y)], color=color, linewidth=1.5)
        ax.scatter(xs[front], ys[front], color=color, label=algorithm, zorder=3)
        ax.scatter(xs[~front], ys[~front], facecolors="none", edgecolors=color, zorder=3)
    if ref_xy is not None:
        ax.scatter(*ref_xy, marker="X", s=80, color="black", label=ref_label, zorder=4)


def plot_front(
    runs: pd.DataFrame,
    objectives: Sequence[str],
    ref_point: Sequence[float] | None = None,
    ref_label: str = "reference point",
) -> Figure:
    """Plot the runs of every algorithm in objective space.

    Two objectives: one scatter with 95% CI error bars and a line through each algorithm's front.
    Three or more: a pairs plot of every objective against every other, without lines (a front
    in K dimensions is not a front of its 2-D projections).

    Args:
        runs: `Sweep.runs`, or a subset of its rows.
        objectives: Objective ids, in the order of `ref_point`.
        ref_point: (K,) reference point to mark, or None.
        ref_label: Legend label of the reference point.
    """
    k = len(objectives)
    ref = None if ref_point is None else np.asarray(ref_point, dtype=np.float64)
    if k == 2:
        fig = Figure(figsize=(6.5, 5), layout="constrained")
        ax = fig.subplots()
        _draw_pair(ax, runs, objectives[0], objectives[1], ref, ref_label, detailed=True)
        ax.set_xlabel(f"{objectives[0]} (mean score, higher is better)")
        ax.set_ylabel(f"{objectives[1]} (mean score, higher is better)")
        ax.set_title("Pareto fronts (hollow: dominated; bars: 95% CI)")
        ax.grid(alpha=0.3)
        ax.legend()
        return fig
    if k < 2:
        raise ValueError(f"a front needs at least two objectives, got {list(objectives)}")
    fig = Figure(figsize=(2.8 * k, 2.8 * k), layout="constrained")
    axes = fig.subplots(k, k, squeeze=False)
    for i, row_objective in enumerate(objectives):
        for j, col_objective in enumerate(objectives):
            ax = axes[i, j]
            if i == j:
                ax.text(
                    0.5, 0.5, row_objective, ha="center", va="center", fontsize=12, transform=ax.transAxes
                )
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            ref_xy = None if ref is None else (ref[j], ref[i])
            _draw_pair(ax, runs, col_objective, row_objective, ref_xy, ref_label, detailed=False)
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels))
    fig.suptitle("Mean scores (filled: on its algorithm's front in all objectives)")
    return fig


def plot_hypervolume_history(history: pd.DataFrame) -> Figure:
    """Hypervolume against training iteration, one line per algorithm.

    Args:
        history: Output of `collect.hypervolume_history`.
    """
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    for algorithm, group in history.groupby("algorithm", sort=True):
        ax.plot(group["iteration"], group["hypervolume"], marker="o", label=algorithm)
    ax.set_xlabel("training iteration")
    ax.set_ylabel("hypervolume of the sweep's points")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_reward_kl(
    paths: dict[str, Sequence[tuple[Sequence[float], dict[str, Sequence[float]]]]],
    objectives: Sequence[str],
    marks: Sequence[float] = (),
) -> Figure:
    """Reward against KL to the reference, one panel per objective, one line per run.

    Args:
        paths: Per algorithm, each run's path: its evaluations' KLs and, per objective, their means
            (`kl_curves.path_from_evaluations`). Runs of one algorithm share a colour.
        objectives: Objective ids, one panel each.
        marks: KL values to draw as dotted vertical lines (where the runs were compared).
    """
    fig = Figure(figsize=(4.5 * len(objectives), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(objectives)))
    for ax, objective in zip(axes, objectives, strict=True):
        for i, (algorithm, runs) in enumerate(sorted(paths.items())):
            for j, (kls, rewards) in enumerate(runs):
                ax.plot(
                    kls,
                    rewards[objective],
                    color=f"C{i}",
                    marker="o",
                    markersize=3,
                    linewidth=1.2,
                    alpha=0.8,
                    label=algorithm if j == 0 else None,
                )
        for kl in marks:
            ax.axvline(kl, color="0.5", linestyle=":", linewidth=1)
        ax.set_xlabel("KL to the reference")
        ax.set_ylabel(objective)
        ax.grid(alpha=0.3)
    axes[0].legend()
    return fig
