"""Gather per-run evaluation files of a sweep into front tables, reference points and metrics.

Each run folder (a Hydra run dir, a member of a multirun sweep, or a W&B offline run) holds
`eval.json` in the `pama_lit.eval/1` format written by the evaluation step, and optionally
`evaluations.jsonl` with one such object per evaluation during training. An `eval.json` whose
`policy` is "reference" holds the reference policy's scores and defines the hypervolume reference
point; every other one is a trained run.

Failure policy: a missing folder, a folder without any `eval.json`, and files whose objective
sets differ raise `FrontsError` (the sweep mixes experiments or points at the wrong place). A
single unreadable file (invalid JSON, wrong format tag, missing fields) is skipped with a logged
warning that names it, so one crashed run does not hide the rest of the sweep; skipped files are
listed in `Sweep.skipped`. Malformed lines of `evaluations.jsonl` are skipped the same way.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pama_lit.fronts.metrics import additive_epsilon, hypervolume, igd_plus, non_dominated, spacing
from pama_lit.run.results import EVAL_FORMAT  # the writer's format: imports no torch

log = logging.getLogger(__name__)

EVAL_FILE = "eval.json"
HISTORY_FILE = "evaluations.jsonl"
REFERENCE_POLICY = "reference"


class FrontsError(Exception):
    """The given folders cannot be turned into fronts; the message says why."""


class MalformedEvalError(FrontsError):
    """One evaluation file or line does not follow the `pama_lit.eval/1` format."""


def mean_column(objective: str) -> str:
    """Column holding the mean score of `objective` in the runs table."""
    return f"{objective}_mean"


@dataclass
class Sweep:
    """The evaluations found under one or more folders.

    Attributes:
        objectives: Objective ids in the order of the first file read; every point array and
            reference point uses this order.
        runs: One row per trained run: run_dir, algorithm, preference (JSON list), seed,
            iteration, `{objective}_mean`, `{objective}_ci95_low`, `{objective}_ci95_high` for each
            objective, kl_ref, response_length, non_dominated (within its algorithm) and
            non_dominated_all (within the union of all algorithms).
        records: The parsed eval.json of each row of `runs`, in the same order (for samples).
        references: Parsed eval.json files of the reference policy.
        reference_files: Paths of `references`.
        skipped: (path, reason) of every file skipped as malformed.
    """

    objectives: tuple[str, ...]
    runs: pd.DataFrame
    records: list[dict[str, Any]]
    references: list[dict[str, Any]] = field(default_factory=list)
    reference_files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def algorithms(self) -> list[str]:
        """Algorithms present, sorted."""
        return sorted(self.runs["algorithm"].unique())

    @property
    def mean_columns(self) -> list[str]:
        return [mean_column(o) for o in self.objectives]

    def points(self, algorithm: str | None = None) -> np.ndarray:
        """(N, K) mean scores of the runs of `algorithm`, or of all runs."""
        runs = self.runs if algorithm is None else self.runs[self.runs["algorithm"] == algorithm]
        return runs[self.mean_columns].to_numpy(dtype=np.float64)


def find_eval_files(folders: Iterable[str | Path]) -> list[Path]:
    """All eval.json files under `folders`, searched recursively, sorted and without duplicates.

    Raises:
        FrontsError: a folder does not exist or holds no eval.json.
    """
    found: dict[Path, Path] = {}
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FrontsError(f"folder not found: {folder}")
        files = sorted(folder.rglob(EVAL_FILE))
        if not files:
            raise FrontsError(f"no {EVAL_FILE} found under {folder}")
        for path in files:
            found.setdefault(path.resolve(), path)
    return sorted(found.values())


def _parse_eval(obj: Any) -> dict[str, Any]:
    """Check one evaluation object against the `pama_lit.eval/1` format and return it."""
    if not isinstance(obj, dict):
        raise MalformedEvalError(f"expected a JSON object, got {type(obj).__name__}")
    if obj.get("format") != EVAL_FORMAT:
        raise MalformedEvalError(f"format is {obj.get('format')!r}, expected {EVAL_FORMAT!r}")
    for key in ("algorithm", "policy"):
        if not isinstance(obj.get(key), str):
            raise MalformedEvalError(f"missing or non-string {key!r}")
    objectives = obj.get("objectives")
    if not isinstance(objectives, list) or not objectives or not all(isinstance(o, str) for o in objectives):
        raise MalformedEvalError("'objectives' must be a non-empty list of objective ids")
    rewards = obj.get("rewards")
    if not isinstance(rewards, dict):
        raise MalformedEvalError("missing 'rewards'")
    for objective in objectives:
        reward = rewards.get(objective)
        mean = reward.get("mean") if isinstance(reward, dict) else None
        if not isinstance(mean, int | float) or not math.isfinite(mean):
            raise MalformedEvalError(f"rewards.{objective}.mean is missing or not a finite number")
    return obj


def read_eval(path: str | Path) -> dict[str, Any]:
    """Read and check one eval.json.

    Raises:
        MalformedEvalError: the file is not valid JSON or not in the `pama_lit.eval/1` format.
    """
    try:
        obj = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MalformedEvalError(f"invalid JSON: {err}") from err
    return _parse_eval(obj)


def _check_objectives(
    objectives: tuple[str, ...] | None, first: Path | None, obj: dict[str, Any], path: Path
) -> tuple[str, ...]:
    """Return the sweep's objectives, raising if `obj` has a different set than the first file."""
    these = tuple(obj["objectives"])
    if objectives is None:
        return these
    if set(these) != set(objectives):
        raise FrontsError(
            f"objective sets differ: {first} has {list(objectives)} but {path} has {list(these)}"
        )
    return objectives


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def _run_row(obj: dict[str, Any], path: Path, objectives: Sequence[str]) -> dict[str, Any]:
    preference = obj.get("preference")
    row: dict[str, Any] = {
        "run_dir": str(path.parent),
        "algorithm": obj["algorithm"],
        "preference": json.dumps(preference) if preference is not None else "",
        "seed": obj.get("seed"),
        "iteration": obj.get("iteration"),
    }
    for objective in objectives:
        reward = obj["rewards"][objective]
        ci = reward.get("ci95")
        low, high = ci if isinstance(ci, list) and len(ci) == 2 else (None, None)
        row[mean_column(objective)] = float(reward["mean"])
        row[f"{objective}_ci95_low"] = _float(low)
        row[f"{objective}_ci95_high"] = _float(high)
    row["kl_ref"] = _float(obj.get("kl_ref"))
    row["response_length"] = _float(obj.get("response_length"))
    return row


def load_sweep(folders: Iterable[str | Path], progress: bool = True) -> Sweep:
    """Read every eval.json under `folders` into a `Sweep`.

    Args:
        folders: Sweep folders, run folders or W&B offline-run folders, searched recursively.
        progress: Show a progress bar while reading.

    Raises:
        FrontsError: a folder is missing or empty, objective sets differ, or no trained run is left.
    """
    folders = [Path(f) for f in folders]
    files = find_eval_files(folders)
    objectives: tuple[str, ...] | None = None
    first: Path | None = None
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    references: list[dict[str, Any]] = []
    reference_files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in tqdm(files, desc=f"reading {EVAL_FILE}", unit="file", disable=not progress, leave=False):
        try:
            obj = read_eval(path)
        except MalformedEvalError as err:
            skipped.append((path, str(err)))
            continue
        objectives = _check_objectives(objectives, first, obj, path)
        first = first or path
        if obj["policy"] == REFERENCE_POLICY:
            references.append(obj)
            reference_files.append(path)
        else:
            records.append(obj)
            rows.append(_run_row(obj, path, objectives))
    for path, reason in skipped:  # after the loop, so the warnings do not tear the progress bar
        log.warning("skipping malformed %s: %s", path, reason)
    where = ", ".join(map(str, folders))
    if objectives is None:
        raise FrontsError(f"every {EVAL_FILE} under {where} is malformed")
    if not rows:
        raise FrontsError(f"no trained run under {where}: only reference-policy evaluations")
    runs = pd.DataFrame(rows)
    sweep = Sweep(objectives, runs, records, references, reference_files, skipped)
    runs["non_dominated"] = False
    for algorithm in sweep.algorithms:
        mask = (runs["algorithm"] == algorithm).to_numpy()
        runs.loc[mask, "non_dominated"] = non_dominated(sweep.points(algorithm))
    runs["non_dominated_all"] = non_dominated(sweep.points())
    return sweep


def reference_point(
    sweep: Sweep, ref_point: Sequence[float] | None = None, shift: float = 0.0
) -> tuple[np.ndarray, str]:
    """The hypervolume reference point and a sentence saying where it came from.

    Precedence: an explicit `ref_point`; else the reference policy's mean scores (averaged over
    its eval.json files if there are several); else the component-wise minimum of all runs' means,
    where the runs at the extremes contribute no volume.

    Args:
        sweep: The loaded sweep.
        ref_point: Explicit reference point, one value per objective in `sweep.objectives` order.
        shift: Subtracted from every coordinate, so points level with the reference still count.

    Returns:
        ((K,) reference point, description of its source).
    """
    if ref_point is not None:
        if len(ref_point) != len(sweep.objectives):
            raise FrontsError(
                f"--ref-point has {len(ref_point)} values but there are {len(sweep.objectives)} "
                f"objectives: {', '.join(sweep.objectives)}"
            )
        ref = np.asarray(ref_point, dtype=np.float64)
        source = "given explicitly"
    elif sweep.references:
        scores = [[r["rewards"][o]["mean"] for o in sweep.objectives] for r in sweep.references]
        ref = np.mean(np.asarray(scores, dtype=np.float64), axis=0)
        if len(scores) == 1:
            source = f"reference policy scores from {sweep.reference_files[0]}"
        else:
            source = f"mean reference policy scores of {len(scores)} files"
    else:
        ref = sweep.points().min(axis=0)
        source = "component-wise minimum of all runs (no reference-policy eval.json found)"
    if shift:
        ref = ref - shift
        source += f", shifted down by {shift:g}"
    return ref, source


def front_metrics(sweep: Sweep, ref_point: Sequence[float]) -> pd.DataFrame:
    """One row per algorithm: runs, front size and the front indicators.

    hypervolume uses `ref_point`; igd_plus and additive_epsilon compare against the union of all
    algorithms' non-dominated points; spacing is over the algorithm's own non-dominated points.
    """
    union_front = sweep.points()[sweep.runs["non_dominated_all"].to_numpy(dtype=bool)]
    rows = []
    for algorithm in sweep.algorithms:
        points = sweep.points(algorithm)
        front = points[non_dominated(points)]
        rows.append(
            {
                "algorithm": algorithm,
                "runs": len(points),
                "front_size": len(front),
                "hypervolume": hypervolume(points, ref_point),
                "igd_plus": igd_plus(points, union_front),
                "additive_epsilon": additive_epsilon(points, union_front),
                "spacing": spacing(front),
            }
        )
    return pd.DataFrame(rows)


def _file_stem(algorithm: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in algorithm)


def write_tables(sweep: Sweep, out_dir: str | Path) -> list[Path]:
    """Write runs_all.csv and one runs_{algorithm}.csv per algorithm into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "runs_all.csv"]
    sweep.runs.to_csv(written[0], index=False)
    for algorithm in sweep.algorithms:
        path = out / f"runs_{_file_stem(algorithm)}.csv"
        sweep.runs[sweep.runs["algorithm"] == algorithm].to_csv(path, index=False)
        written.append(path)
    return written


def read_history(path: str | Path, objectives: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The checked `pama_lit.eval/1` records of one run's evaluations.jsonl, in file order.

    A malformed line (invalid JSON, another format, missing fields, or objectives other than
    ``objectives`` when given) is skipped with a logged warning that names it.
    """
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = _parse_eval(json.loads(line))
            if objectives is not None and set(obj["objectives"]) != set(objectives):
                raise MalformedEvalError(
                    f"objectives {obj['objectives']} differ from the sweep's {list(objectives)}"
                )
        except (json.JSONDecodeError, MalformedEvalError) as err:
            log.warning("skipping malformed line %d of %s: %s", number, path, err)
            continue
        records.append(obj)
    return records


def load_history(sweep: Sweep) -> pd.DataFrame:
    """Evaluations during training, from each run's evaluations.jsonl (`read_history`).

    Returns:
        One row per evaluation: algorithm, run_dir, preference, iteration and `{objective}_mean`.
        Runs without the file contribute nothing.
    """
    rows = []
    for run_dir, algorithm, preference in sweep.runs[["run_dir", "algorithm", "preference"]].itertuples(
        index=False
    ):
        path = Path(run_dir) / HISTORY_FILE
        if not path.is_file():
            continue
        for obj in read_history(path, sweep.objectives):
            row = {
                "algorithm": algorithm,
                "run_dir": run_dir,
                "preference": preference,
                "iteration": obj.get("iteration"),
            }
            row.update({mean_column(o): float(obj["rewards"][o]["mean"]) for o in sweep.objectives})
            rows.append(row)
    columns = ["algorithm", "run_dir", "preference", "iteration", *sweep.mean_columns]
    return pd.DataFrame(rows, columns=columns)


def hypervolume_history(
    history: pd.DataFrame, objectives: Sequence[str], ref_point: Sequence[float]
) -> pd.DataFrame:
    """Hypervolume of each algorithm's set of points at each training iteration.

    Args:
        history: Output of `load_history`.
        objectives: Objective ids, in the order of `ref_point`.
        ref_point: (K,) reference point.

    Returns:
        One row per (algorithm, iteration): runs (how many runs were evaluated there) and
        hypervolume.
    """
    columns = [mean_column(o) for o in objectives]
    rows = [
        {
            "algorithm": algorithm,
            "iteration": iteration,
            "runs": len(group),
            "hypervolume": hypervolume(group[columns].to_numpy(dtype=np.float64), ref_point),
        }
        for (algorithm, iteration), group in history.groupby(["algorithm", "iteration"], sort=True)
    ]
    return pd.DataFrame(rows, columns=["algorithm", "iteration", "runs", "hypervolume"])
