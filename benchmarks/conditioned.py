"""Benchmark (h): one preference-conditioned run against a sweep of one run per preference.

On ``sentiment_length`` (``experiment=embedded_sentiment_length``), at ``quality.py``'s budget:

- conditioned PAMA (``algorithm=pama conditioning=prompt``) and, as the baseline, conditioned MORLHF
  (``algorithm=morlhf conditioning=prompt``): one run each of B iterations;
- PAMA's sweep: one run of B iterations per preference (0.1,0.9) ... (0.9,0.1), ``conditioning=none``.
  These are ``quality.py``'s front runs, same folders and overrides, so runs ``make bench-quality``
  finished are read, not trained again.

Each conditioned run is then evaluated by one ``evaluate.py`` process (a Hydra multirun over
``preference=``) on its held-out prompts at the sweep's preferences and at off-grid ones between them,
into ``<run>/preferences/<weights>/eval.json``. The report: each front's hypervolume (the reference
policy's point as the reference point) and IGD+ (against the non-dominated points of all fronts
together), HV(conditioned) / HV(sweep), the controllability (per objective, Spearman's correlation of
the weight with the reward over the sweep's preferences), the training compute (train wall seconds;
iterations x rollout batch), the verdict for the target (HV >= 0.9x the sweep's at 1/5 of its
compute, every controllability >= 0.8), and whether each off-grid preference lands between its
neighbours.

Runs go to ``<out>/sentiment_length/<algorithm>/<tag>/seed0`` (``--out``, default
``benchmarks/runs/quality``, shared with ``quality.py``); the conditioned ones have the tag
``conditioned``. Finished runs and evaluations are kept; an interrupted benchmark continues where it
stopped (``quality.py``'s rules: a run is reused only under today's effective configuration,
``--force`` retrains).

Run: ``.venv/bin/python benchmarks/conditioned.py``, ``--quick``, ``--dry-run`` (the commands only),
``--report-only`` (from the runs on disk). Writes ``benchmarks/results/conditioned.json`` and
``conditioned_front.png`` (``conditioned_quick.*`` with ``--quick``) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from common import ROOT, machine_info, shown, write_result  # noqa: E402
from quality import (  # noqa: E402
    Run,
    fmt,
    load_result,
    markdown_table,
    raw_numbers,
    read_json,
    run_all,
    thread_env,
    unique,
)

TASK = quality.FRONT_TASK
SEED = quality.FRONT_SEED
SWEEP_ALGORITHM = "pama"
CONDITIONED_ALGORITHMS = ["pama", "morlhf"]
# The benchmark evaluates the grid itself after training; the training-time grid validation
# (conditioning.eval_grid_steps) would add validation passes the sweep's runs do not pay for.
CONDITIONING = ("conditioning=prompt", "conditioning.eval_grid_steps=null")
PREFERENCES = quality.FRONT_PREFERENCES
QUICK_PREFERENCES = quality.QUICK["front_preferences"]
DECIMALS = 2  # conditioning.decimals: a conditioned policy reads weights with two decimals

# The target of issue 11, for conditioned PAMA.
TARGET_HV_RATIO = 0.9
TARGET_COMPUTE_RATIO = 1 / 5
TARGET_CONTROLLABILITY = 0.8
# An off-grid point is "between its neighbours" on an objective when its reward lies in the
# neighbours' interval widened by this share of the objective's range over the sweep's preferences.
TOLERANCE = 0.05

EVAL_RECORD = "bench_eval.json"
EVAL_LOG = "bench_eval.log"
LABELS = {
    SWEEP_ALGORITHM: "pama sweep",
    "pama_prompt": "pama conditioned",
    "morlhf_prompt": "morlhf conditioned",
}


# ------------------------------------------------------------------------------------------ plan
def plan_runs(args: argparse.Namespace) -> tuple[list[Run], list[Run]]:
    """(conditioned runs, sweep runs); the sweep's runs are quality.py's front runs of PAMA."""
    conditioned = [Run(TASK, a, None, SEED, CONDITIONING) for a in args.conditioned_algorithms]
    sweep = [Run(TASK, SWEEP_ALGORITHM, quality.canonical_preference(p), SEED) for p in args.preferences]
    return conditioned, sweep


def key(preference: Sequence[float]) -> tuple[float, ...]:
    """A preference as the evaluations are matched: rounded to the conditioned policy's decimals."""
    return tuple(round(float(w), DECIMALS) for w in preference)


def midpoints(preferences: Sequence[Sequence[float]]) -> list[tuple[float, ...]]:
    """The points halfway between consecutive preferences (by first weight), on the 0.01 grid."""
    ordered = sorted(preferences, key=lambda p: p[0])
    return [
        key([(a + b) / 2 for a, b in zip(p, q, strict=True)])
        for p, q in zip(ordered, ordered[1:], strict=False)
    ]


def check_preferences(on_grid: Sequence[Sequence[float]], off_grid: Sequence[Sequence[float]]) -> str | None:
    """Why these preferences cannot be measured, or None.

    Each needs two positive weights that are multiples of 0.01 (the conditioned policy's grid) summing
    to 1; every off-grid point needs sweep preferences on both sides of it, and none may be one of them.
    """
    for name, points in (("--preferences", on_grid), ("--off-grid", off_grid)):
        for p in points:
            if len(p) != 2 or min(p) <= 0 or key(p) != tuple(p) or abs(sum(p) - 1) > 1e-9:
                return f"{name}: {','.join(f'{w:g}' for w in p)} is not two positive multiples of 0.01 summing to 1"
    firsts = sorted(p[0] for p in on_grid)
    for p in off_grid:
        if key(p) in {key(q) for q in on_grid} or not firsts[0] < p[0] < firsts[-1]:
            return f"--off-grid: {p[0]:g},{p[1]:g} must lie strictly between two of --preferences"
    return None


# --------------------------------------------------------------------------------------- running
def preference_text(preference: Sequence[float]) -> str:
    return "[" + ",".join(f"{w:g}" for w in preference) + "]"


def eval_command(folder: Path, preferences: Sequence[Sequence[float]]) -> list[str]:
    """One ``evaluate.py`` process for all ``preferences``: a Hydra multirun over ``preference=``."""
    return [
        sys.executable,
        "evaluate.py",
        "--multirun",
        f"run_dir={folder}",
        "preference=" + ",".join(preference_text(p) for p in preferences),
        f"hydra.sweep.dir={folder / '.evaluate' / 'multirun'}",
    ]


def evaluated(folder: Path) -> dict[tuple[float, ...], Path]:
    """The conditioned run's result files in ``<folder>/preferences``, by preference."""
    found = {}
    for path in sorted((folder / "preferences").glob("*/eval.json")):
        record = read_json(path)
        if record is not None and record.get("preference"):
            found[key(record["preference"])] = path
    return found


def evaluate_run(folder: Path, preferences: list, env: dict[str, str]) -> dict:
    """Run ``evaluate.py`` at ``preferences``, its output appended to ``<folder>/bench_eval.log``."""
    previous = read_json(folder / EVAL_RECORD) or {}
    started = datetime.datetime.now().isoformat(timespec="seconds")
    start = time.perf_counter()
    with open(folder / EVAL_LOG, "a") as log:
        returncode = subprocess.run(
            eval_command(folder, preferences), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
        ).returncode
    record = {
        "started": started,
        "threads": env["OMP_NUM_THREADS"],
        "preferences": [list(p) for p in preferences],
        "wall_s": previous.get("wall_s", 0.0) + time.perf_counter() - start,
        "attempts": previous.get("attempts", 0) + 1,
        "returncode": returncode,
    }
    (folder / EVAL_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def evaluate_all(runs: list[Run], args: argparse.Namespace) -> list[tuple[Run, Path]]:
    """Evaluate every trained conditioned run at the preferences it lacks; returns the failed ones."""
    wanted = [*args.preferences, *args.off_grid]
    env = thread_env(args.jobs)
    todo = {}
    for run in runs:
        folder = run.folder(args.out)
        have = evaluated(folder)  # empty after a (forced) retrain: a fresh run starts in an empty folder
        missing = [p for p in wanted if key(p) not in have]
        if missing and (args.dry_run or (folder / "eval.json").is_file()):
            todo[run] = missing
    print(f"{len(runs)} conditioned runs to evaluate at {len(wanted)} preferences: {len(todo)} to do")
    if args.dry_run:
        prefix = f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} MKL_NUM_THREADS={env['MKL_NUM_THREADS']}"
        for run, missing in todo.items():
            print(f"{prefix} {shlex.join(eval_command(run.folder(args.out), missing))}")
        return []
    failed = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {run: pool.submit(evaluate_run, run.folder(args.out), todo[run], env) for run in todo}
        for run, future in futures.items():
            folder = run.folder(args.out)
            record = future.result()
            if record["returncode"] != 0 or any(key(p) not in evaluated(folder) for p in todo[run]):
                failed.append((run, folder / EVAL_LOG))
                print(f"FAILED evaluation (exit {record['returncode']}): {folder}; log: {folder / EVAL_LOG}")
    return failed


# ------------------------------------------------------------------------------------ measures
def controllability(front: dict[tuple[float, ...], Sequence[float]], objectives: Sequence[str]) -> dict:
    """Per objective, Spearman's correlation of its weight with its reward over the front's preferences.

    Args:
        front: preference (K weights) -> (K,) mean rewards, in objective order.

    Returns:
        {objective: correlation}; NaN where it is undefined (constant rewards, or under two points).
    """
    from pama_lit.fronts.metrics import spearman

    prefs = list(front)
    return {
        o: spearman([p[i] for p in prefs], [front[p][i] for p in prefs]) if len(prefs) > 1 else math.nan
        for i, o in enumerate(objectives)
    }


def between_neighbours(
    on_grid: dict[tuple[float, ...], Sequence[float]],
    off_grid: dict[tuple[float, ...], Sequence[float]],
    objectives: Sequence[str],
    tolerance: float,
) -> dict:
    """Does each off-grid preference's reward lie between its two neighbours' rewards, per objective?

    For two objectives the preferences lie on a line; an off-grid point's neighbours are the on-grid
    preferences with the nearest first weight below and above it. On each objective, its reward must
    lie in [min, max] of the neighbours' rewards widened by ``tolerance`` times the objective's range
    over all on-grid points.

    Args:
        on_grid: preference -> (2,) mean rewards at the evaluation grid's preferences.
        off_grid: the same at the off-grid preferences.
        objectives: the two objective ids, in the rewards' order.
        tolerance: the widening, a share of each objective's on-grid range.

    Returns:
        {"points": one entry per off-grid point, "fraction": share of points between their neighbours
        on every objective, "fraction_strict": the same with no tolerance, "tolerance": per objective,
        the absolute widening}.
    """
    grid = sorted(on_grid)
    widen = {
        o: tolerance * (max(r[i] for r in on_grid.values()) - min(r[i] for r in on_grid.values()))
        for i, o in enumerate(objectives)
    }
    points = []
    for p in sorted(off_grid):
        below = [q for q in grid if q[0] < p[0]]
        above = [q for q in grid if q[0] > p[0]]
        if not below or not above:
            raise ValueError(
                f"off-grid preference {list(p)} has no on-grid neighbour on both sides in {grid}"
            )
        lower, upper = below[-1], above[0]
        per = {}
        for i, o in enumerate(objectives):
            low, high = sorted((on_grid[lower][i], on_grid[upper][i]))
            reward = off_grid[p][i]
            outside = max(low - reward, reward - high, 0.0)
            per[o] = {
                "reward": reward,
                "low": low,
                "high": high,
                "outside": outside,
                "between": outside <= widen[o],
            }
        points.append(
            {
                "preference": list(p),
                "neighbours": [list(lower), list(upper)],
                "objectives": per,
                "between": all(v["between"] for v in per.values()),
                "between_strict": all(v["outside"] == 0 for v in per.values()),
            }
        )
    n = len(points)
    return {
        "points": points,
        "fraction": sum(x["between"] for x in points) / n if n else None,
        "fraction_strict": sum(x["between_strict"] for x in points) / n if n else None,
        "tolerance": widen,
        "tolerance_share": tolerance,
    }


def budget_of(record: dict, args: argparse.Namespace) -> tuple[int, int]:
    """(iterations, rollout batch) a run trained with: its recorded overrides (the last one wins)."""
    values = {"iterations": args.iterations, "rollout.batch_size": args.batch_size}
    for override in record.get("overrides") or []:
        name, _, value = override.partition("=")
        if name in values:
            values[name] = int(value)
    return values["iterations"], values["rollout.batch_size"]


def compute_of(results: list[dict | None], args: argparse.Namespace) -> dict:
    """Training compute of a front's runs: train wall seconds and iterations x rollout batch, summed."""
    done = [r for r in results if r is not None]
    return {
        "runs": len(done),
        "train_wall_s": sum(r["record"].get("wall_s") or 0.0 for r in done),
        "samples": sum(math.prod(budget_of(r["record"], args)) for r in done),
        "threads": sorted({str(r["record"]["threads"]) for r in done if "threads" in r["record"]}),
    }


def verdict(hv_ratio: float | None, compute_ratio: float | None, control: dict) -> dict:
    """The target: HV >= 0.9x the sweep's at <= 1/5 of its compute (samples), every controllability >= 0.8."""
    parts = {
        "hypervolume": hv_ratio is not None and hv_ratio >= TARGET_HV_RATIO,
        "compute": compute_ratio is not None and compute_ratio <= TARGET_COMPUTE_RATIO + 1e-9,
        "controllability": bool(control) and all(v >= TARGET_CONTROLLABILITY for v in control.values()),
    }
    measured = hv_ratio is not None and bool(control)
    return {"met": all(parts.values()) if measured else None, "parts": parts}


# ---------------------------------------------------------------------------------------- report
def rewards(record: dict, objectives: Sequence[str]) -> list[float]:
    return [float(record["rewards"][o]["mean"]) for o in objectives]


def report_fronts(
    conditioned: list[Run], sweep_runs: list[Run], args: argparse.Namespace, results: dict[Run, dict | None]
) -> dict:
    """Fronts, their metrics, the controllability, the compute, the verdicts, the off-grid check, the plot."""
    import pandas as pd

    from pama_lit.fronts import FrontsError, front_metrics, load_sweep, plot_front, reference_point

    on_keys = [key(p) for p in args.preferences]
    off_keys = [key(p) for p in args.off_grid]
    files = {run: evaluated(run.folder(args.out)) for run in conditioned}
    sweep_folders = [r.folder(args.out) for r in sweep_runs if results[r] is not None]
    cond_folders = [files[r][k].parent for r in conditioned for k in on_keys if k in files[r]]
    # The reference point is the sweep's reference policy (as in quality.py); the conditioned runs'
    # own reference evaluation only when no sweep run is finished.
    refs = [] if sweep_folders else [r.folder(args.out) / "reference" for r in conditioned if results[r]]
    refs = [f for f in refs if (f / "eval.json").is_file()]
    if not sweep_folders and not cond_folders:
        return {"markdown": "### fronts\n\nno finished runs"}
    try:
        front = load_sweep(sweep_folders + cond_folders + refs, progress=False)
        ref, source = reference_point(front)
    except FrontsError as err:
        return {"markdown": f"### fronts\n\ncannot build the fronts: {err}"}
    objectives = list(front.objectives)
    metrics = {m["algorithm"]: m for m in front_metrics(front, ref).to_dict(orient="records")}

    points: dict[str, dict[tuple[float, ...], list[float]]] = {}
    for run in sweep_runs:
        if results[run] is not None:
            preference = run.preference or (1 / quality.NUM_OBJECTIVES,) * quality.NUM_OBJECTIVES
            points.setdefault(SWEEP_ALGORITHM, {})[key(preference)] = rewards(
                results[run]["eval"], objectives
            )
    off: dict[str, dict[tuple[float, ...], list[float]]] = {}
    for run in conditioned:
        name = f"{run.algorithm}_prompt"
        for k, path in files[run].items():
            target = points if k in on_keys else off if k in off_keys else None
            if target is not None:
                target.setdefault(name, {})[k] = rewards(read_json(path), objectives)

    # A ratio to an incomplete sweep would flatter the conditioned run: then there is none.
    sweep_complete = len(points.get(SWEEP_ALGORITHM, {})) == len(on_keys)
    sweep_hv = (metrics.get(SWEEP_ALGORITHM) or {}).get("hypervolume") if sweep_complete else None
    sweep_compute = compute_of([results[r] for r in sweep_runs], args)
    fronts = {}
    for name, front_points in points.items():
        m = metrics[name]
        compute = (
            sweep_compute
            if name == SWEEP_ALGORITHM
            else compute_of([results[r] for r in conditioned if f"{r.algorithm}_prompt" == name], args)
        )
        complete = len(front_points) == len(on_keys)
        hv_ratio = m["hypervolume"] / sweep_hv if sweep_hv and complete and name != SWEEP_ALGORITHM else None
        samples_ratio = compute["samples"] / sweep_compute["samples"] if sweep_compute["samples"] else None
        wall_ratio = (
            compute["train_wall_s"] / sweep_compute["train_wall_s"] if sweep_compute["train_wall_s"] else None
        )
        control = controllability(front_points, objectives) if complete else {}
        entry = {
            "label": LABELS.get(name, name),
            "points": len(front_points),
            "hypervolume": m["hypervolume"],
            "igd_plus": m["igd_plus"],
            "hv_ratio": hv_ratio,
            "controllability": control,
            "compute": compute,
            "compute_ratio_samples": samples_ratio,
            "compute_ratio_wall": wall_ratio,
        }
        if name != SWEEP_ALGORITHM:
            entry["target"] = verdict(hv_ratio, samples_ratio, control)
            if name in off and complete:
                entry["off_grid"] = between_neighbours(front_points, off[name], objectives, args.tolerance)
        fronts[name] = entry

    plot_rows = front.runs.assign(algorithm=front.runs["algorithm"].map(lambda a: LABELS.get(a, a)))
    off_folders = [files[r][k].parent for r in conditioned for k in off_keys if k in files[r]]
    if off_folders:
        off_runs = load_sweep(off_folders, progress=False).runs
        plot_rows = pd.concat(
            [
                plot_rows,
                off_runs.assign(
                    algorithm=off_runs["algorithm"].map(lambda a: f"{LABELS.get(a, a)}, off-grid")
                ),
            ],
            ignore_index=True,
        )
    png = args.results / f"{args.name}_front.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    plot_front(plot_rows, objectives, ref, ref_label="reference policy").savefig(png, dpi=150)
    return {
        "objectives": objectives,
        "reference_point": [float(v) for v in ref],
        "reference_point_source": source,
        "points": json.loads(front.runs.to_json(orient="records")),
        "fronts": fronts,
        "plot": str(png),
        "markdown": fronts_markdown(fronts, front, objectives, ref, png),
    }


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}x"


def fronts_markdown(fronts: dict, front, objectives: list[str], ref, png: Path) -> str:
    """The points table, the fronts table, the verdicts and the off-grid table."""
    table = markdown_table(
        ["front", "preference", *objectives, "KL to ref"],
        [
            [
                LABELS.get(row["algorithm"], row["algorithm"]),
                row["preference"],
                *(quality.point_cell(row, o) for o in objectives),
                fmt(row["kl_ref"], 3),
            ]
            for _, row in front.runs.sort_values(["algorithm", "preference"]).iterrows()
        ],
    )
    summary = markdown_table(
        [
            "front",
            "points",
            "hypervolume",
            "HV / sweep's",
            "IGD+",
            *(f"Spearman {o}" for o in objectives),
            "train wall s",
            "iterations x batch",
            "compute / sweep's (samples, wall)",
        ],  # fmt: skip
        [
            [
                f["label"],
                str(f["points"]),
                fmt(f["hypervolume"]),
                _ratio(f["hv_ratio"]),
                fmt(f["igd_plus"]),
                *(fmt(f["controllability"].get(o), 3) for o in objectives),
                f"{f['compute']['train_wall_s']:.0f} ({f['compute']['runs']} runs)",
                str(f["compute"]["samples"]),
                f"{_ratio(f['compute_ratio_samples'])}, {_ratio(f['compute_ratio_wall'])}",
            ]
            for f in fronts.values()
        ],
    )
    coords = ", ".join(f"{o}={v:.4g}" for o, v in zip(objectives, ref, strict=True))
    lines = [
        "### conditioned vs per-preference sweep",
        "",
        table,
        "",
        summary,
        "",
        f"Hypervolume reference point: the reference policy ({coords}); IGD+ against the non-dominated "
        "points of all fronts together; Spearman: per objective, the weight against the reward over the "
        f"sweep's preferences. Plot: {shown(png)}",
        "",
    ]
    threads = {tuple(f["compute"]["threads"]) for f in fronts.values() if f["compute"]["threads"]}
    if len(threads) > 1:
        lines.append(
            "- warning: the fronts' runs trained with different thread counts ("
            + "; ".join(f"{f['label']}: {', '.join(f['compute']['threads'])}" for f in fronts.values())
            + "), so their wall times do not compare; iterations x batch does"
        )
    for f in fronts.values():
        if "target" not in f:
            continue
        target = f["target"]
        word = {True: "met", False: "not met", None: "not measured"}[target["met"]]
        control = ", ".join(f"{o} {fmt(v, 3)}" for o, v in f["controllability"].items()) or "-"
        lines.append(
            f"- {f['label']}: target (HV >= {TARGET_HV_RATIO}x the sweep's at <= 1/5 of its compute in "
            f"iterations x batch, every Spearman >= {TARGET_CONTROLLABILITY}): **{word}** (HV ratio "
            f"{_ratio(f['hv_ratio'])}; compute {_ratio(f['compute_ratio_samples'])} in samples, "
            f"{_ratio(f['compute_ratio_wall'])} in train wall time; Spearman {control})"
        )
    for f in fronts.values():
        if "off_grid" not in f:
            continue
        check = f["off_grid"]
        tol = ", ".join(f"{o} {v:.3g}" for o, v in check["tolerance"].items())
        lines += [
            "",
            f"#### {f['label']}: off-grid preferences between their neighbours",
            "",
            markdown_table(
                ["preference", "neighbours", *objectives, "between"],
                [
                    [
                        str(p["preference"]),
                        " / ".join(map(str, p["neighbours"])),
                        *(
                            f"{v['reward']:.4g} in [{v['low']:.4g}, {v['high']:.4g}]"
                            + ("" if v["outside"] == 0 else f" (off by {v['outside']:.3g})")
                            for v in p["objectives"].values()
                        ),
                        "yes" if p["between"] else "no",
                    ]
                    for p in check["points"]
                ],
            ),
            "",
            f"Between their neighbours on every objective: {check['fraction']:.0%} of {len(check['points'])} "
            f"points with a tolerance of {check['tolerance_share']:g} x each objective's range over the "
            f"evaluation grid ({tol}); {check['fraction_strict']:.0%} with none. Off-grid means off "
            "the evaluation grid: training draws preferences on the 0.01 grid, so these points may have "
            "been drawn in training.",
        ]
    return "\n".join(lines)


def report(
    args: argparse.Namespace, conditioned: list[Run], sweep_runs: list[Run], failed: list[tuple[Run, Path]]
) -> dict:
    """Read the runs and evaluations on disk; write the JSON and the plot; print Markdown."""
    every = unique(conditioned + sweep_runs)
    results = {run: load_result(run.folder(args.out)) for run in every}
    fronts = report_fronts(conditioned, sweep_runs, args, results)
    wanted = {key(p) for p in [*args.preferences, *args.off_grid]}
    missing_evals = {
        str(r.folder(args.out)): sorted(list(k) for k in wanted - set(evaluated(r.folder(args.out))))
        for r in conditioned
    }
    missing_evals = {folder: prefs for folder, prefs in missing_evals.items() if prefs}
    markdown = fronts["markdown"]
    if missing_evals:
        markdown += "\n\nwarning: preferences not evaluated yet: " + "; ".join(
            f"{folder}: {prefs}" for folder, prefs in missing_evals.items()
        )
    failed_folders = {str(r.folder(args.out)) for r, _ in failed}

    def entry(run: Run) -> dict:
        result = results[run] or {}
        folder = run.folder(args.out)
        status = "done" if results[run] else "failed" if str(folder) in failed_folders else "missing"
        return {
            "algorithm": run.algorithm,
            "conditioned": bool(run.conditioning),
            "preference": None if run.preference is None else list(run.preference),
            "run_dir": str(folder),
            "status": status,
            "wall_s": result.get("record", {}).get("wall_s"),
            "overrides": result.get("record", {}).get("overrides"),
            "evaluation": read_json(folder / EVAL_RECORD) if run.conditioning else None,
            "eval": raw_numbers(result.get("eval")),
            "reference": raw_numbers(result.get("reference")),
        }

    payload = {
        "benchmark": "conditioned",
        "machine": machine_info(),
        "command": sys.argv,
        "budget": quality.budget_record(args, [TASK]) | {"conditioning": list(CONDITIONING)},
        "preferences": [list(p) for p in args.preferences],
        "off_grid": [list(p) for p in args.off_grid],
        "targets": {
            "hv_ratio": TARGET_HV_RATIO,
            "compute_ratio": TARGET_COMPUTE_RATIO,
            "controllability": TARGET_CONTROLLABILITY,
        },
        "runs": [entry(run) for run in every],
        "missing_evaluations": missing_evals,
        "fronts": {k: v for k, v in fronts.items() if k != "markdown"},
        "failed": [str(log) for _, log in failed],
        "markdown": markdown,
    }
    write_result(args.name, payload, folder=args.results)
    print("\n" + markdown)
    return payload


# ------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/conditioned.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    quality.add_budget_arguments(parser)
    what = parser.add_argument_group("what to run")
    what.add_argument(
        "--conditioned-algorithms",
        type=quality._csv(str),
        default=CONDITIONED_ALGORITHMS,
        help=f"conditioned runs (default {','.join(CONDITIONED_ALGORITHMS)})",
    )
    what.add_argument(
        "--preferences",
        nargs="+",
        type=quality._preference,
        metavar="W1,W2",
        help="the sweep's preferences, one PAMA run each, and the conditioned runs' evaluation grid "
        "(default " + " ".join(f"{a:g},{b:g}" for a, b in PREFERENCES) + "; --quick: "
        + " ".join(f"{a:g},{b:g}" for a, b in QUICK_PREFERENCES) + ")",
    )  # fmt: skip
    what.add_argument(
        "--off-grid",
        nargs="*",
        type=quality._preference,
        metavar="W1,W2",
        help="preferences between the grid's, evaluated on the conditioned runs only (default: the "
        "midpoints of consecutive --preferences)",
    )
    what.add_argument(
        "--tolerance",
        type=float,
        default=TOLERANCE,
        help=f"off-grid check: widening of the neighbours' interval, a share of each objective's range "
        f"over the grid (default {TOLERANCE})",
    )
    what.add_argument(
        "--quick",
        action="store_true",
        help="quality.py's --quick budget and 3-point grid (see benchmarks/README.md); flags override it",
    )
    quality.add_how_arguments(parser)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags, then ``--quick``'s presets, then the defaults, in that order of precedence."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quality.resolve_budget(args, parser)
    if args.preferences is None:
        args.preferences = QUICK_PREFERENCES if args.quick else PREFERENCES
    args.preferences = [tuple(p) for p in args.preferences]
    if args.off_grid is None:
        args.off_grid = midpoints(args.preferences)
    args.off_grid = [tuple(p) for p in args.off_grid]
    problem = check_preferences(args.preferences, args.off_grid)
    if problem:
        parser.error(problem)
    if len(set(map(key, args.preferences))) < 2:
        parser.error("--preferences: give at least two different preferences")
    unknown = [a for a in args.conditioned_algorithms if a not in ("pama", "morlhf", "morlhf_noon")]
    if unknown:
        parser.error(
            f"--conditioned-algorithms: {unknown} cannot be conditioned; allowed: pama, morlhf, morlhf_noon"
        )
    args.name = "conditioned_quick" if args.quick else "conditioned"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    conditioned, sweep_runs = plan_runs(args)
    failed: list[tuple[Run, Path]] = []
    if not args.report_only:
        failed = run_all(unique(conditioned + sweep_runs), args)
        failed += evaluate_all(conditioned, args)
        if args.dry_run:
            return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        payload = report(args, conditioned, sweep_runs, failed)
    incomplete = quality.print_problems(payload, failed, "step(s)")
    if failed:
        return 1
    if payload["missing_evaluations"]:
        print(
            "\nnot evaluated at every preference:",
            *payload["missing_evaluations"],
            sep="\n  ",
            file=sys.stderr,
        )
    return 1 if incomplete or payload["missing_evaluations"] else 0


if __name__ == "__main__":
    sys.exit(main())
