"""Benchmark (d): what the algorithms reach, compared the way the multi-objective RLHF literature does.

Trains every algorithm of a task at the same budget (iterations, rollout batch, new tokens,
precision, evaluation schedule), one ``python train.py`` subprocess per run, and reads the runs'
``eval.json`` and ``reference/eval.json`` (format ``pama_lit.eval/1``) into:

- per task, a table: each objective's mean over seeds with a 95% t-interval over seeds (n-1 degrees
  of freedom), the KL to the reference, the response length and the fluency measures, plus the
  reference policy's row with its per-prompt 95% interval;
- per task, five verdicts: does PAMA at the uniform preference beat the reference on every
  objective with non-overlapping intervals; does the paper's ordering PAMA >= MORLHF >= MGDA-UB
  hold on every objective as measured; how far each method drifted from the reference (reward
  gained per unit of KL): a method that wins by drifting further has not won; prompt by prompt
  from the runs' ``eval.responses.jsonl``, each PAMA seed's score minus the reference's on the same
  held-out prompts with its 95% interval over prompts; and every method's reward read at the same KL
  along its runs' evaluations (``evaluations.jsonl``), drawn as reward-vs-KL curves;
- fronts of PAMA and MORLHF over preference vectors: hypervolume with the reference policy's point
  as the reference point, IGD+ against the union's non-dominated points, and a plot.

Runs go to ``<out>/<task>/<algorithm>/<preference tag>/seed<k>`` (``--out``, default
``benchmarks/runs/quality``). A run whose folder holds ``eval.json`` and whose configuration
(``.hydra/config.yaml``) is the one its overrides compose to today is not run again, so an
interrupted benchmark continues where it stopped; an unfinished run with ``checkpoints/last.ckpt``
and today's configuration resumes from it (``ckpt_path=last``); a finished run under another
configuration (another budget, or a default in ``conf/`` changed since) stops the benchmark, naming
the keys that differ; ``--force`` retrains.

Run: ``.venv/bin/python benchmarks/quality.py`` (hours), ``--quick`` (under 15 minutes on a quiet
2-core CPU, by estimate), ``--dry-run`` (the commands only), ``--report-only`` (tables from the runs on disk).
Writes ``benchmarks/results/quality.json``, ``quality_front.png`` and ``quality_<task>_kl.png`` (``quality_quick*`` with
``--quick``; ``--results`` for another folder, ``--name`` for another stem) and prints the tables as Markdown. A report of fewer
runs than the file it would replace (a subset: ``--tasks``, ``--seeds``, ``--no-fronts``, ...) keeps
that file and writes ``quality_<date>-<time>.*`` instead.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, compose, machine_info, shown, write_result  # noqa: E402

# Budgets every run gets, whatever its algorithm (flags override them).
ITERATIONS = 12
BATCH_SIZE = 16
MAX_NEW_TOKENS = 48
PRECISION = (
    "32-true"  # bf16-mixed (with --sampling-dtype bfloat16) is ~2x faster here: benchmarks/README.md (e)
)
SAMPLING_DTYPE = "null"  # rollout.sampling_dtype: null samples in the weights' own dtype
EVAL_EVERY = 12

# Task name -> experiment config (conf/experiment/). All three have two objectives.
TASKS = {
    "sentiment_length": "embedded_sentiment_length",
    "harmless_length": "embedded_harmless_length",
    "humor_length": "embedded_humor_length",
}
NUM_OBJECTIVES = 2
# Per-task budget where the common one cannot show what a task measures; a flag (or a --quick preset,
# or an --extra override of the same config key) sets that key for every task instead. The harmless task:
# - val_size 512: harmlessness has a per-prompt std of about 0.16-0.19 on the provocative prompts, so the
#   experiment's 128 held-out prompts give the reference's mean +-0.027, as wide as the gains measured
#   (0.01-0.03); 512 gave +-0.017 (measured: the std over those prompts was 0.19).
# - iterations 36 (every algorithm alike): at 12 no method's harmlessness cleared the reference's
#   interval over three seeds; PAMA's rose once the responses neared the 48-token cap (benchmarks/README.md (e)).
# - eval_every 36: one evaluation, at the end (each of 512 prompts costs about 5-11 minutes).
TASK_BUDGET = {"harmless_length": {"val_size": 512, "iterations": 36, "eval_every": 36}}
DEFAULT_TASKS = ["sentiment_length", "harmless_length"]
ALGORITHMS = ["pama", "pama_batch", "morlhf", "mgda_ub"]
SEEDS = [0, 1, 2]
FRONT_TASK = "sentiment_length"
FRONT_ALGORITHMS = ["pama", "morlhf"]
FRONT_PREFERENCES = [(0.1, 0.9), (0.3, 0.7), (0.5, 0.5), (0.7, 0.3), (0.9, 0.1)]
FRONT_SEED = 0
# The paper's claim, best first: every algorithm here at least as good as the next on every objective.
PAPER_ORDER = ["pama", "morlhf", "mgda_ub"]
FLUENCY = ["ref_logprob", "distinct2", "repeat_frac"]

# --quick: one task, PAMA against MORLHF, one seed, a 3-point front, a small budget, two runs at a time
# with one thread each (a second thread speeds one run up only about 1.6x: benchmark (c)).
QUICK = {
    "tasks": ["sentiment_length"],
    "algorithms": ["pama", "morlhf"],
    "seeds": [0],
    "front_preferences": [(0.2, 0.8), (0.5, 0.5), (0.8, 0.2)],
    "iterations": 8,
    "batch_size": 8,
    "max_new_tokens": 24,
    "eval_every": 8,
    # Half the held-out prompts: the two evaluations of 128 took over half of each quick run (about 170
    # of 310 s), and the six runs 934 s in all. One seed gives no interval over seeds anyway.
    "val_size": 64,
    "jobs": 2,
}

RUN_RECORD = "bench_run.json"  # the overrides, wall time and exit status of a run's invocations
SAVED_CONFIG = Path(".hydra") / "config.yaml"  # the config Hydra saves for every train.py run
# Config keys that differ between runs of one configuration: where the run writes (paths.*, which every
# other folder key interpolates) and whether this invocation resumed (ckpt_path).
PER_FOLDER_KEYS = ("paths", "ckpt_path", "eval.reference")
# Keys added to conf/ after runs on disk were trained, with the value that trains as those runs did
# (pama_lit.run.schema.ADDED_KEYS): a saved config without the key counts as having this value.
LOG = "bench.log"


# ------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class Run:
    """One training run: a task, an algorithm, a preference (None = uniform) and a seed.

    ``conditioning`` holds the overrides of a preference-conditioned run (benchmarks/conditioned.py),
    tagged ``conditioned``; empty for a run of one preference, whose overrides it leaves unchanged.
    """

    task: str
    algorithm: str
    preference: tuple[float, ...] | None
    seed: int
    conditioning: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        if self.conditioning:
            return "conditioned"
        if self.preference is None:
            return "uniform"
        return "w" + "-".join(f"{w:g}" for w in self.preference)

    def folder(self, out: Path) -> Path:
        return out / self.task / self.algorithm / self.tag / f"seed{self.seed}"


def canonical_preference(preference: Sequence[float]) -> tuple[float, ...] | None:
    """The preference as a run is keyed: None when all weights are equal (the uniform run)."""
    preference = tuple(float(w) for w in preference)
    if len(preference) != NUM_OBJECTIVES or not all(w > 0 for w in preference):
        raise ValueError(
            f"a front preference needs {NUM_OBJECTIVES} positive weights, got {list(preference)}"
        )
    return None if len(set(preference)) == 1 else preference


def plan_runs(args: argparse.Namespace) -> tuple[list[Run], list[Run]]:
    """(seed runs, front runs). A front point at the uniform preference is the uniform seed run."""
    seed_runs = [Run(t, a, None, s) for t in args.tasks for a in args.algorithms for s in args.seeds]
    front_runs = [
        Run(args.front_task, a, canonical_preference(p), args.front_seed)
        for a in args.front_algorithms
        for p in args.front_preferences
    ]
    return seed_runs, front_runs


def unique(runs: Sequence[Run]) -> list[Run]:
    return list(dict.fromkeys(runs))


# Budget flag -> the config key it sets.
BUDGET_KEYS = {
    "iterations": "iterations",
    "batch_size": "rollout.batch_size",
    "max_new_tokens": "rollout.max_new_tokens",
    "precision": "trainer.precision",
    "sampling_dtype": "rollout.sampling_dtype",
    "eval_every": "eval.every_n_iterations",
    "val_size": "data.val_size",
}


def task_budget(args: argparse.Namespace, task: str) -> dict[str, Any]:
    """``TASK_BUDGET[task]`` less the keys a flag, a ``--quick`` preset or an ``--extra`` override set."""
    return {
        key: value
        for key, value in args.task_budget.get(task, {}).items()
        if not any(o.startswith(BUDGET_KEYS[key] + "=") for o in args.extra)
    }


def budget_overrides(args: argparse.Namespace, task: str | None = None) -> list[str]:
    """The overrides every run of ``task`` gets, the same for every algorithm; ``--extra`` last, so it wins.

    Without ``task``: the budget common to every task (``TASK_BUDGET`` left out).
    """
    values = {key: getattr(args, key) for key in BUDGET_KEYS} | (task_budget(args, task) if task else {})
    return [
        *(f"{BUDGET_KEYS[key]}={value}" for key, value in values.items() if value is not None),
        "logger=csv",
        *args.extra,
    ]


def run_overrides(run: Run, budget: list[str]) -> list[str]:
    """Every override of ``run`` except its folder (so moving ``--out`` keeps finished runs).

    ``budget``: ``budget_overrides(args, run.task)``.
    """
    overrides = [f"experiment={TASKS[run.task]}", f"algorithm={run.algorithm}", f"seed={run.seed}"]
    if run.preference is not None:
        overrides.append("preference=[" + ",".join(f"{w:g}" for w in run.preference) + "]")
    return overrides + list(run.conditioning) + budget


def thread_env(jobs: int, cores: int | None = None) -> dict[str, str]:
    """The environment of a child: the cores split between the ``jobs`` running at once.

    Two torch processes with 2 OpenMP threads each on 2 cores wait on each other's threads and run
    10-50x slower, so each gets ``cores // jobs`` threads.
    """
    threads = str(max(1, (cores or os.cpu_count() or 1) // jobs))
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "PYTHONUNBUFFERED": "1",
            "HYDRA_FULL_ERROR": "1",
        }
    )
    return env


# --------------------------------------------------------------------------------------- running
def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and empty mappings are values."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@functools.cache
def composed(overrides: tuple[str, ...]):
    """The config ``train.py`` composes from ``overrides`` today (composed once per run; not to be changed)."""
    return compose(list(overrides))


@functools.cache
def planned_config(overrides: tuple[str, ...]) -> dict[str, Any]:
    """The flattened config ``train.py`` composes from ``overrides`` today, as Hydra saves it.

    Through YAML and unresolved, like ``.hydra/config.yaml``: interpolations stay ``${...}`` on both
    sides and enums become their names.
    """
    from omegaconf import OmegaConf

    yaml = OmegaConf.to_yaml(composed(overrides))
    return flatten(OmegaConf.to_container(OmegaConf.create(yaml), resolve=False))


def config_drift(folder: Path, overrides: list[str], accepted: Sequence[str] = ()) -> list[str]:
    """How the config ``folder``'s run trained under differs from the one ``overrides`` compose to today.

    Compares the effective config, not the overrides: a default changed in ``conf/`` since the run
    leaves its overrides as they were. Keys in ``PER_FOLDER_KEYS`` and ``accepted`` (keys or key
    prefixes the user judged harmless, ``--accept-drift``) are ignored; a key of ``ADDED_KEYS`` that the
    saved config lacks counts as its value there.

    Returns:
        one line per differing key, ``key: run <value>, now <value>`` (values as JSON; ``absent`` for
        a key one side lacks), sorted; or one line saying the folder has no saved config. Empty when
        the run is today's.
    """
    from omegaconf import OmegaConf

    path = folder / SAVED_CONFIG
    if not path.is_file():
        return [f"no {SAVED_CONFIG.as_posix()}: the configuration it trained under is unknown"]
    from pama_lit.run.schema import ADDED_KEYS

    saved = ADDED_KEYS | flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
    planned = planned_config(tuple(overrides))

    def ignored(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in (*PER_FOLDER_KEYS, *accepted))

    def show(config: dict, key: str) -> str:
        return json.dumps(config[key]) if key in config else "absent"

    return [
        f"{key}: run {show(saved, key)}, now {show(planned, key)}"
        for key in sorted(saved.keys() | planned.keys())
        if not ignored(key) and (key in saved, saved.get(key)) != (key in planned, planned.get(key))
    ]


def run_state(folder: Path, overrides: list[str], force: bool, accepted: Sequence[str] = ()) -> str:
    """What to do with a run's folder: "done", "resume", "fresh", or "mismatch".

    "mismatch": the folder holds a finished run trained under another configuration than the one
    ``overrides`` compose to today (another budget, or a default changed since; ``config_drift`` says
    which keys): neither reusable nor to be deleted without ``--force``. An unfinished run under
    another configuration starts over. Differences in ``accepted`` keys do not count.
    """
    if force:
        return "fresh"
    finished = (folder / "eval.json").is_file()
    resumable = (
        read_json(folder / RUN_RECORD) is not None and (folder / "checkpoints" / "last.ckpt").is_file()
    )
    if not (finished or resumable):
        return "fresh"
    same = not config_drift(folder, overrides, accepted)
    if finished:
        return "done" if same else "mismatch"
    return "resume" if same else "fresh"


def command(folder: Path, overrides: list[str], resume: bool, reference: Path | None = None) -> list[str]:
    return [
        sys.executable,
        "train.py",
        *overrides,
        *(["ckpt_path=last"] if resume else []),
        *([f"eval.reference={reference}"] if reference is not None else []),
        f"hydra.run.dir={folder}",
    ]


def shared_reference(task_folder: Path, key: str) -> Path | None:
    """A finished reference evaluation under ``task_folder`` whose ``reference_key`` is ``key``, or None.

    Every run of a task that is not conditioned evaluates the reference policy alike (the key names
    what that evaluation depends on, ``pama_lit.run.reference``); train.py checks the key again.
    """
    for path in sorted(task_folder.glob("*/*/seed*/reference/eval.json")):
        record = read_json(path)
        if isinstance(record, dict) and record.get("reference_key") == key and "shared_from" not in record:
            return path
    return None


def execute(
    folder: Path,
    overrides: list[str],
    budget: list[str],
    resume: bool,
    env: dict[str, str],
    reference: Callable[[], Path | None] = lambda: None,
) -> dict:
    """Run one ``train.py`` to the end, its output in ``<folder>/bench.log``; record how it went.

    A fresh run starts in an empty folder (a stale logger version or evaluations.jsonl of an
    interrupted attempt would otherwise mix in); a resumed one keeps its folder and adds its time.
    ``reference`` is asked at launch for another run's reference evaluation to take (``eval.reference``).
    """
    previous = read_json(folder / RUN_RECORD) if resume else None
    if not resume and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "overrides": overrides,
        "budget": budget,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "threads": env["OMP_NUM_THREADS"],
        "wall_s": (previous or {}).get("wall_s", 0.0),
        "attempts": (previous or {}).get("attempts", 0) + 1,
        "returncode": None,
    }
    # A resumed run that recorded its own reference evaluation keeps it (train.py does); else ask.
    own = resume and (folder / "reference" / "eval.json").is_file()
    shared = None if own else reference()
    if shared is not None:
        record["reference_from"] = str(shared)
    (folder / RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    start = time.perf_counter()
    with open(folder / LOG, "a" if resume else "w") as log:
        returncode = subprocess.run(
            command(folder, overrides, resume, shared),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        ).returncode
    record["wall_s"] += time.perf_counter() - start
    record["returncode"] = returncode
    (folder / RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def reference_finder(run: Run, args: argparse.Namespace) -> Callable[[], Path | None]:
    """What ``execute`` asks at launch for a reference evaluation ``run`` can take (never, with
    ``--no-shared-reference``): one finished by then under the run's task folder with the run's key."""
    if args.no_shared_reference:
        return lambda: None
    from pama_lit.run.reference import reference_key

    key = reference_key(composed(tuple(run_overrides(run, budget_overrides(args, run.task)))))
    return lambda: shared_reference(args.out / run.task, key)


def run_all(runs: list[Run], args: argparse.Namespace) -> list[tuple[Run, Path]]:
    """Train every run that is not done yet; returns the failed runs and their logs."""
    from tqdm.auto import tqdm

    budgets = {task: budget_overrides(args, task) for task in TASKS}
    overrides = {run: run_overrides(run, budgets[run.task]) for run in runs}
    env = thread_env(args.jobs)
    states = {
        run: run_state(run.folder(args.out), overrides[run], args.force, args.accept_drift) for run in runs
    }
    mismatched = [run for run, state in states.items() if state == "mismatch"]
    if mismatched:
        listing = ""
        for run in mismatched:
            drift = config_drift(run.folder(args.out), overrides[run], args.accept_drift)
            listing += f"\n  {run.folder(args.out)}:" + "".join(f"\n    {line}" for line in drift)
        raise SystemExit(
            f"{args.name}: {len(mismatched)} finished run(s) were trained under another configuration "
            f"than today's (run = the run's .hydra/config.yaml, now = its overrides composed today):{listing}\n"
            "retrain them with --force, give this configuration its own --out folder, or reuse them with "
            "--accept-drift KEY ... for keys whose difference does not change what the run trains"
        )
    todo = [run for run in runs if states[run] != "done"]
    print(f"{len(runs)} runs: {len(runs) - len(todo)} done already, {len(todo)} to train "
          f"({args.jobs} at a time, OMP_NUM_THREADS={env['OMP_NUM_THREADS']} each)")  # fmt: skip
    if args.dry_run:
        prefix = f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} MKL_NUM_THREADS={env['MKL_NUM_THREADS']}"
        for run in runs:
            folder = run.folder(args.out)
            cmd = shlex.join(command(folder, overrides[run], states[run] == "resume"))
            print(f"# done: {folder}" if states[run] == "done" else f"{prefix} {cmd}")
        return []
    references = {run: reference_finder(run, args) for run in todo}
    failed = []
    bar = tqdm(total=len(todo), unit="run", desc="training", dynamic_ncols=True)
    pool = ThreadPoolExecutor(max_workers=args.jobs)
    try:
        futures = {
            pool.submit(
                execute,
                run.folder(args.out),
                overrides[run],
                budgets[run.task],
                states[run] == "resume",
                env,
                references[run],
            ): run
            for run in todo
        }
        for future in as_completed(futures):
            run = futures[future]
            folder = run.folder(args.out)
            record = future.result()
            if record["returncode"] != 0 or not (folder / "eval.json").is_file():
                failed.append((run, folder / LOG))
                bar.write(f"FAILED (exit {record['returncode']}): {folder}; log: {folder / LOG}")
            bar.set_postfix_str(
                f"{run.task}/{run.algorithm}/{run.tag}/seed{run.seed} {record['wall_s']:.0f}s"
            )
            bar.update()
    except KeyboardInterrupt:
        # Ctrl-C reached the running children too; without cancelling, the queued runs would still start.
        pool.shutdown(wait=True, cancel_futures=True)
        raise SystemExit(f"{args.name}: interrupted; the same command continues where it stopped") from None
    finally:
        pool.shutdown(wait=True)
        bar.close()
    return failed


# ------------------------------------------------------------------------------------ statistics
def t_quantile(dof: int) -> float:
    """The two-sided 95% quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def t_half_width(values: Sequence[float]) -> float:
    """Half the 95% t-interval of the mean of ``values`` (two or more): t_{0.975,n-1} * s / sqrt(n)."""
    return t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def number(value: Any) -> float | None:
    """A scalar measure: a number, or the mean of a ``{"mean": ...}`` summary; None if absent."""
    if isinstance(value, dict):
        value = value.get("mean")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def mean_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def aggregate(evals: list[dict], objectives: Sequence[str]) -> dict:
    """One algorithm's row from its seeds' eval.json records.

    Each objective gets the mean over seeds and the 95% t-interval over seeds (mean +- t_{0.975,n-1}
    * s / sqrt(n), s the sample standard deviation of the seeds' means). With a single seed there is
    no spread over seeds: the interval is that run's own per-prompt 95% CI, marked ``"prompts"``.
    KL, length and fluency are means over seeds; a fluency measure the files lack is None.
    """
    n = len(evals)
    row: dict[str, Any] = {"n": n, "interval": "seeds" if n > 1 else "prompts", "objectives": {}}
    for objective in objectives:
        means = [float(e["rewards"][objective]["mean"]) for e in evals]
        mean = statistics.fmean(means)
        if n > 1:
            half = t_half_width(means)
            low, high = mean - half, mean + half
        else:
            low, high = (float(x) for x in evals[0]["rewards"][objective]["ci95"])
        row["objectives"][objective] = {"mean": mean, "low": low, "high": high, "seeds": means}
    return row | side_measures(evals)


def side_measures(records: list[dict]) -> dict:
    """KL to the reference, response length and fluency, each the mean over ``records`` (None if absent)."""
    return {
        "kl_ref": mean_or_none([number(r.get("kl_ref")) for r in records]),
        "response_length": mean_or_none([number(r.get("response_length")) for r in records]),
        "fluency": {
            name: mean_or_none([number((r.get("fluency") or {}).get(name)) for r in records])
            for name in FLUENCY
        },
    }


def reference_row(references: list[dict], objectives: Sequence[str]) -> tuple[dict, list[str]]:
    """The reference policy's row and warnings.

    The reference is the untrained policy evaluated with the fixed evaluation seed, so every run of a
    task should report the same numbers on the same held-out prompts. Then the row is that file's
    per-prompt 95% CI. If they differ (the held-out split follows the training seed, or the reference
    is not deterministic), a warning says by how much, and the row is the mean of the files' means
    with the envelope of their intervals (the widest: conservative for "beats the reference").
    """
    first = references[0]
    warnings_: list[str] = []
    differs = [
        o
        for o in objectives
        if max(r["rewards"][o]["mean"] for r in references) - min(r["rewards"][o]["mean"] for r in references)
        > 1e-9 * max(1.0, abs(first["rewards"][o]["mean"]))
    ]
    prompts_differ = len({tuple(s["prompt"] for s in r.get("samples", [])) for r in references}) > 1
    row: dict[str, Any] = {"n": len(references), "interval": "prompts", "objectives": {}}
    for objective in objectives:
        means = [float(r["rewards"][objective]["mean"]) for r in references]
        row["objectives"][objective] = {
            "mean": statistics.fmean(means),
            "low": min(float(r["rewards"][objective]["ci95"][0]) for r in references),
            "high": max(float(r["rewards"][objective]["ci95"][1]) for r in references),
            "seeds": means,
        }
    if differs or prompts_differ:
        spread = ", ".join(
            f"{o} {min(row['objectives'][o]['seeds']):.4g}..{max(row['objectives'][o]['seeds']):.4g}"
            for o in objectives
        )
        why = "different held-out prompts" if prompts_differ else "the same prompts"
        warnings_.append(
            f"the reference policy's numbers differ across the {len(references)} runs ({why}: {spread}); "
            "the reference row is their mean with the envelope of their per-prompt intervals"
        )
        row["interval"] = "envelope"
    return row | side_measures(references), warnings_


# -------------------------------------------------------------------------------------- verdicts
def _cell(stat: dict) -> str:
    return f"{stat['mean']:.4g} [{stat['low']:.4g}, {stat['high']:.4g}]"


def verdict_beats_reference(rows: dict[str, dict], reference: dict, objectives: Sequence[str]) -> dict:
    """Does PAMA at the uniform preference beat the reference on every objective, intervals apart?"""
    if "pama" not in rows:
        return {"holds": None, "text": "PAMA beats the reference: not measured (no pama runs)"}
    pama = rows["pama"]["objectives"]
    per = {o: pama[o]["low"] > reference["objectives"][o]["high"] for o in objectives}
    holds = all(per.values())
    detail = "; ".join(
        f"{o}: {_cell(pama[o])} vs {_cell(reference['objectives'][o])}"
        + (
            ""
            if per[o]
            else (" (overlap)" if pama[o]["mean"] > reference["objectives"][o]["mean"] else " (not above)")
        )
        for o in objectives
    )
    word = "holds" if holds else "does not hold"
    return {
        "holds": holds,
        "per_objective": per,
        "text": f"PAMA (uniform) beats the reference on every objective with non-overlapping 95% intervals: "
        f"{word} ({detail})",
    }


def verdict_paper_order(rows: dict[str, dict], objectives: Sequence[str]) -> dict:
    """Does PAMA >= MORLHF >= MGDA-UB hold on every objective's mean, and is each step significant?"""
    present = [a for a in PAPER_ORDER if a in rows]
    if len(present) < 2:
        return {
            "holds": None,
            "text": f"paper ordering {' >= '.join(PAPER_ORDER)}: not measured (runs of {present})",
        }
    per: dict[str, bool] = {}
    separated: dict[str, bool] = {}
    parts = []
    for o in objectives:
        stats = [rows[a]["objectives"][o] for a in present]
        per[o] = all(a["mean"] >= b["mean"] for a, b in zip(stats, stats[1:], strict=False))
        separated[o] = all(a["low"] > b["high"] for a, b in zip(stats, stats[1:], strict=False))
        parts.append(
            f"{o}: " + " vs ".join(f"{a} {s['mean']:.4g}" for a, s in zip(present, stats, strict=True))
        )
    holds = all(per.values())
    failing = [o for o in objectives if not per[o]]
    text = (
        f"paper ordering {' >= '.join(present)} on every objective: {'holds' if holds else 'does not hold'}"
    )
    if failing:
        text += f" (fails on {', '.join(failing)})"
    elif not all(separated.values()):
        text += " on the means, but the 95% intervals overlap on " + ", ".join(
            o for o in objectives if not separated[o]
        )
    return {
        "holds": holds,
        "per_objective": per,
        "separated": separated,
        "text": text + "; " + "; ".join(parts),
    }


def verdict_matched_kl(rows: dict[str, dict], reference: dict, objectives: Sequence[str]) -> dict:
    """Reward gained over the reference per unit of KL, and whether PAMA's leads came from drifting further.

    A lead on an objective where PAMA's KL to the reference exceeds the rival's is not a like-for-like
    win: a looser KL leash alone buys reward.
    """
    gains = {}
    for algorithm, row in rows.items():
        kl = row["kl_ref"]
        gain = {o: row["objectives"][o]["mean"] - reference["objectives"][o]["mean"] for o in objectives}
        per_kl = {o: (g / kl if kl is not None and kl > 0 else None) for o, g in gain.items()}
        gains[algorithm] = {"kl_ref": kl, "gain": gain, "gain_per_kl": per_kl}
    with_kl = {a: g["kl_ref"] for a, g in gains.items() if g["kl_ref"] is not None}
    if not with_kl:
        return {"algorithms": gains, "confounded": [], "text": "matched KL: no KL recorded"}
    furthest = max(with_kl, key=with_kl.get)
    kls = ", ".join(f"{a} {kl:.3g}" for a, kl in sorted(with_kl.items(), key=lambda x: -x[1]))
    confounded = []
    if "pama" in rows and gains["pama"]["kl_ref"] is not None:
        for rival, g in gains.items():
            if rival == "pama" or g["kl_ref"] is None or gains["pama"]["kl_ref"] <= g["kl_ref"]:
                continue
            leads = [
                o
                for o in objectives
                if rows["pama"]["objectives"][o]["mean"] > rows[rival]["objectives"][o]["mean"]
            ]
            if leads:
                confounded.append({"rival": rival, "objectives": leads})
    text = f"matched KL: KL to the reference {kls}; {furthest} drifted furthest"
    if confounded:
        text += (
            "; PAMA's lead over "
            + ", ".join(f"{c['rival']} (on {', '.join(c['objectives'])})" for c in confounded)
            + " comes with more KL, so it is not a like-for-like win"
        )
    elif "pama" in rows:
        text += "; PAMA's leads (if any) come at no more KL than the rival's"
    per_kl = "; ".join(
        f"{a}: " + ", ".join(f"{o} {v:+.3g}" for o, v in g["gain_per_kl"].items() if v is not None)
        for a, g in gains.items()
        if any(v is not None for v in g["gain_per_kl"].values())
    )
    if per_kl:
        text += f". Gain over the reference per unit KL: {per_kl}"
    return {"algorithms": gains, "furthest": furthest, "confounded": confounded, "text": text}


def read_path(folder: Path) -> tuple[list[float], dict[str, list[float]]] | None:
    """A run's (KL, reward) path from its ``evaluations.jsonl``; None without the file or with one point.

    Malformed lines are skipped with a logged warning (``pama_lit.fronts.read_history``); a file that
    leaves no path warns and the run is left out.
    """
    from pama_lit.fronts.collect import HISTORY_FILE, read_history
    from pama_lit.fronts.kl_curves import path_from_evaluations

    path = folder / HISTORY_FILE
    if not path.is_file():
        return None
    try:
        kls, rewards = path_from_evaluations(read_history(path))
    except ValueError as err:  # evaluations of different objectives: the report names the run's algorithm
        warnings.warn(f"{path}: no reward-vs-KL path ({err!r})", stacklevel=2)
        return None
    if not kls:
        warnings.warn(f"{path}: no reward-vs-KL path (no well-formed evaluation)", stacklevel=2)
    return (kls, rewards) if len(kls) > 1 else None


def compare_at(cells: dict[str, dict], mine: str, rival: str, objectives: Sequence[str]) -> dict:
    """Where ``mine`` leads ``rival`` at one KL: on the means, and with the seeds' 95% intervals apart."""
    ahead, above, below = [], [], []
    for o in objectives:
        a, b = cells[mine].get(o), cells[rival].get(o)
        if a is None or b is None:
            continue
        if a["mean"] > b["mean"]:
            ahead.append(o)
        if None not in (a["low"], b["low"]):
            if a["low"] > b["high"]:
                above.append(o)
            elif b["low"] > a["high"]:
                below.append(o)
    return {"algorithm": mine, "rival": rival, "ahead_on": ahead, "above_on": above, "below_on": below}


def seeds_at_kl(paths: Sequence[tuple], level: float, objectives: Sequence[str]) -> dict[str, dict | None]:
    """One algorithm's runs read at one KL: per objective the seeds' values, mean and 95% t-interval.

    None for an objective no run reaches at ``level``; a single seed has no interval (low = high = None).
    """
    from pama_lit.fronts.kl_curves import reward_at_kl

    cells: dict[str, dict | None] = {}
    for o in objectives:
        values = [v for kls, rewards in paths if (v := reward_at_kl(kls, rewards[o], level)) is not None]
        if not values:
            cells[o] = None
            continue
        mean = statistics.fmean(values)
        half = t_half_width(values) if len(values) > 1 else None
        cells[o] = {
            "mean": mean,
            "low": None if half is None else mean - half,
            "high": None if half is None else mean + half,
            "seeds": values,
        }
    return cells


def _cells_text(cells: dict[str, dict | None]) -> str:
    return ", ".join(
        f"{o} -"
        if c is None
        else f"{o} {c['mean']:.3g}" + ("" if c["low"] is None else f" [{c['low']:.3g}, {c['high']:.3g}]")
        for o, c in cells.items()
    )


def verdict_reward_at_kl(folders: dict[str, Sequence[Path]], objectives: Sequence[str]) -> dict:
    """Every algorithm's reward read at the same KL to the reference, along each run's evaluations.

    Each run's evaluations (the reference at KL 0 first) trace a (KL, reward) path; every path is read
    where it reaches a KL (``pama_lit.fronts.kl_curves``), and the seeds give a mean with a 95%
    t-interval. All algorithms are read at the largest KL that every run reaches and at half of it;
    each PAMA variant is also compared with each baseline at the largest KL both reach. This is the
    like-for-like comparison that "gain per unit of KL" only approximates (reward curves bend, so a
    ratio favours the run that drifted least). The reading is as fine as the evaluation schedule.
    """
    from pama_lit.fronts.kl_curves import common_kl

    paths = {a: [p for p in (read_path(f) for f in fs) if p is not None] for a, fs in folders.items()}
    paths = {a: ps for a, ps in paths.items() if ps}
    short = sorted(a for a, fs in folders.items() if len(paths.get(a, [])) < len(fs))
    if not paths:
        return {"kls": [], "text": "reward at matched KL: not measured (no run has two evaluations)"}

    def top_of(*algorithms: str) -> float | None:
        return common_kl(kls for a in algorithms for kls, _ in paths[a])

    top = top_of(*paths)
    if top is None or top <= 0:
        return {"kls": [], "text": "reward at matched KL: not measured (a run never left the reference)"}
    levels = [top / 2, top]
    table = {
        a: {f"{level:.6g}": seeds_at_kl(ps, level, objectives) for level in levels} for a, ps in paths.items()
    }
    lines = [
        f"at KL {level:.3g}: " + "; ".join(f"{a} {_cells_text(table[a][f'{level:.6g}'])}" for a in table)
        for level in levels
    ]
    comparison = []
    for mine in (a for a in paths if a.startswith("pama")):
        for rival in (a for a in paths if not a.startswith("pama")):
            level = top_of(mine, rival)
            if level is None or level <= 0:
                continue
            cells = {a: seeds_at_kl(paths[a], level, objectives) for a in (mine, rival)}
            comparison.append(compare_at(cells, mine, rival, objectives) | {"kl": level, "cells": cells})
    text = (
        "reward at matched KL (each run read where its KL reaches the level, linear between "
        f"evaluations, the best reading where it meets the level twice; {top:.3g} is the largest KL every run reaches): "
        + " | ".join(lines)
    )
    for c in comparison:
        text += (
            f". At KL {c['kl']:.3g} (the most both reach) {c['algorithm']} "
            f"{_cells_text(c['cells'][c['algorithm']])} vs {c['rival']} {_cells_text(c['cells'][c['rival']])}: "
            f"{c['algorithm']} ahead on the means on {', '.join(c['ahead_on']) or 'no objective'}; "
            f"intervals apart in its favour on {', '.join(c['above_on']) or 'none'}, against it on "
            f"{', '.join(c['below_on']) or 'none'}"
        )
    if short:
        text += f". Runs without an evaluation path were left out of {', '.join(short)}"
    return {
        "kls": levels,
        "common_kl": top,
        "algorithms": table,
        "comparison": comparison,
        "paths": {a: [{"kl": kls, "rewards": rewards} for kls, rewards in ps] for a, ps in paths.items()},
        "text": text,
    }


def plot_kl_curves(task: dict, png: Path) -> str | None:
    """Draw a task's reward-vs-KL paths to ``png``; the path written, or None without paths."""
    from pama_lit.fronts import plot_reward_kl

    verdict = task.get("verdicts", {}).get("reward_at_kl", {})
    if not verdict.get("paths"):
        return None
    paths = {a: [(p["kl"], p["rewards"]) for p in ps] for a, ps in verdict["paths"].items()}
    fig = plot_reward_kl(paths, task["objectives"], marks=verdict["kls"])
    fig.suptitle(f"{task['task']}: reward against KL to the reference, every evaluation of every seed")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    return str(png)


def verdict_paired(folders: Sequence[Path], objectives: Sequence[str], algorithm: str = "pama") -> dict:
    """Each of ``algorithm``'s runs against the reference on the same held-out prompts, prompt by prompt.

    Per seed, the mean over prompts of the run's score minus the reference's on the same prompt,
    with its 95% interval over prompts (``pama_lit.run.results.paired_difference``, from the runs'
    ``eval.responses.jsonl`` files). Pairing takes the prompts' difficulty out, so this asks whether
    each trained policy beats the reference on these prompts; the interval over seeds in the table
    asks whether training does, on average, whatever the seed. Not measured for runs without
    responses files (trained before they were written).
    """
    from pama_lit.run.results import paired_difference, read_responses

    seeds = []
    for folder in folders:
        policy = read_responses(folder / "eval.json")
        reference = read_responses(folder / "reference" / "eval.json")
        if policy is None or reference is None:
            return {"holds": None, "text": f"{algorithm} vs the reference, paired by prompt: not measured "
                    f"({folder} has no eval.responses.jsonl)"}  # fmt: skip
        seeds.append({o: paired_difference(policy, reference, o) for o in objectives})
    if not seeds:
        return {
            "holds": None,
            "text": f"{algorithm} vs the reference, paired by prompt: not measured (no runs)",
        }
    above = {o: all(d[o]["ci95"][0] > 0 for d in seeds) for o in objectives}
    holds = all(above.values())
    detail = "; ".join(
        f"{o}: "
        + ", ".join(f"{d[o]['mean']:+.3g} [{d[o]['ci95'][0]:+.3g}, {d[o]['ci95'][1]:+.3g}]" for d in seeds)
        for o in objectives
    )
    return {
        "holds": holds,
        "per_objective": above,
        "seeds": [{o: d[o] for o in objectives} for d in seeds],
        "text": f"{algorithm} minus the reference on the same prompts, per seed (95% interval over prompts): "
        f"above 0 in every seed on every objective: {'yes' if holds else 'no'} ({detail})",
    }


# ---------------------------------------------------------------------------------------- report
def load_result(folder: Path) -> dict | None:
    """A finished run's eval.json, reference/eval.json and bench record, or None if it has no eval.json."""
    evaluation = read_json(folder / "eval.json")
    if evaluation is None:
        return None
    return {
        "eval": evaluation,
        "reference": read_json(folder / "reference" / "eval.json"),
        "record": read_json(folder / RUN_RECORD) or {},
        "folder": str(folder),
    }


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def task_table(rows: dict[str, dict], reference: dict, objectives: Sequence[str], planned: int) -> str:
    headers = ["policy", "n", *(f"{o} (95% CI)" for o in objectives), "KL to ref", "length", *FLUENCY]
    lines = []
    for name, row in [*rows.items(), ("reference", reference)]:
        if name == "reference":
            seeds = "per-prompt CI" if row["interval"] == "prompts" else f"envelope of {row['n']}"
        else:
            seeds = f"{row['n']}/{planned} seeds"
        lines.append(
            [
                f"**{name}**" if name == "pama" else name,
                seeds,
                *(_cell(row["objectives"][o]) for o in objectives),
                fmt(row["kl_ref"], 3),
                fmt(row["response_length"], 3),
                *(fmt(row["fluency"][f], 3) for f in FLUENCY),
            ]
        )
    return markdown_table(headers, lines)


def report_task(task: str, runs: list[Run], results: dict[Run, dict], algorithms: Sequence[str]) -> dict:
    """Table and verdicts of one task from its uniform-preference runs."""
    done = [r for r in runs if results.get(r) is not None]
    if not done:
        return {"task": task, "markdown": f"### {task}\n\nno finished runs", "warnings": []}
    objectives = list(results[done[0]]["eval"]["objectives"])
    rows = {}
    for algorithm in algorithms:
        evals = [results[r]["eval"] for r in done if r.algorithm == algorithm]
        if evals:
            rows[algorithm] = aggregate(evals, objectives)
    references = [results[r]["reference"] for r in done if results[r]["reference"] is not None]
    warnings_ = []
    if not references:
        return {"task": task, "markdown": f"### {task}\n\nno reference/eval.json in the runs", "warnings": []}
    reference, ref_warnings = reference_row(references, objectives)
    warnings_ += ref_warnings
    missing = [r for r in runs if results.get(r) is None]
    if missing:
        warnings_.append(f"{len(missing)} of {len(runs)} runs have no eval.json (failed or not run)")
    if any(row["n"] == 1 for row in rows.values()):
        warnings_.append("rows with one seed show that run's per-prompt 95% CI, not an interval over seeds")
    verdicts = {
        "beats_reference": verdict_beats_reference(rows, reference, objectives),
        "paper_order": verdict_paper_order(rows, objectives),
        "matched_kl": verdict_matched_kl(rows, reference, objectives),
        "reward_at_kl": verdict_reward_at_kl(
            {a: [Path(results[r]["folder"]) for r in done if r.algorithm == a] for a in rows}, objectives
        ),
        "paired": verdict_paired(
            [Path(results[r]["folder"]) for r in done if r.algorithm == "pama"], objectives
        ),
    }
    planned = len({r.seed for r in runs})
    md = [f"### {task}", "", task_table(rows, reference, objectives, planned), ""]
    md += [f"- {v['text']}" for v in verdicts.values()]
    md += [f"- warning: {w}" for w in warnings_]
    return {
        "task": task,
        "objectives": objectives,
        "rows": rows,
        "reference": reference,
        "verdicts": verdicts,
        "warnings": warnings_,
        "markdown": "\n".join(md),
    }


def point_cell(row, objective: str) -> str:
    """A front point's mean on ``objective`` with its per-prompt 95% interval (a row of ``Sweep.runs``)."""
    return f"{row[f'{objective}_mean']:.4g} [{row[f'{objective}_ci95_low']:.4g}, {row[f'{objective}_ci95_high']:.4g}]"


def together(count: int) -> str:
    """Whose points IGD+ is measured against, in words: ``count`` algorithms' fronts together."""
    return (
        "the one algorithm's front"
        if count == 1
        else ("both algorithms together" if count == 2 else f"all {count} algorithms together")
    )


def report_fronts(runs: list[Run], results: dict[Run, dict], out: Path, png: Path) -> dict:
    """Front points, hypervolume (reference policy as the reference point), IGD+ and the plot."""
    from pama_lit.fronts import FrontsError, front_metrics, load_sweep, plot_front, reference_point

    folders = [r.folder(out) for r in runs if results.get(r) is not None]
    if not folders:
        return {"markdown": "### fronts\n\nno finished front runs"}
    try:
        sweep = load_sweep(folders, progress=False)
        ref, source = reference_point(sweep)
    except FrontsError as err:
        return {"markdown": f"### fronts\n\ncannot build the fronts: {err}"}
    metrics = front_metrics(sweep, ref)
    fig = plot_front(sweep.runs, sweep.objectives, ref, ref_label="reference policy")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=150)
    objectives = list(sweep.objectives)
    points = sweep.runs.sort_values(["algorithm", "preference"])
    table = markdown_table(
        ["algorithm", "preference", *objectives, "KL to ref", "non-dominated (all)"],
        [
            [
                row["algorithm"],
                row["preference"],
                *(point_cell(row, o) for o in objectives),
                fmt(row["kl_ref"], 3),
                "yes" if row["non_dominated_all"] else "no",
            ]
            for _, row in points.iterrows()
        ],
    )
    summary = markdown_table(
        ["algorithm", "points", "hypervolume (higher is better)", "IGD+ (lower is better)"],
        [
            [m["algorithm"], str(m["runs"]), fmt(m["hypervolume"]), fmt(m["igd_plus"])]
            for _, m in metrics.iterrows()
        ],
    )
    coords = ", ".join(f"{o}={v:.4g}" for o, v in zip(objectives, ref, strict=True))
    md = (
        f"### fronts ({runs[0].task}, seed {runs[0].seed})\n\n{table}\n\n{summary}\n\n"
        f"Hypervolume reference point: the reference policy ({coords}); IGD+ against the non-dominated "
        f"points of {together(len(metrics))}. Plot: {shown(png)}"
    )
    return {
        "objectives": objectives,
        "reference_point": [float(v) for v in ref],
        "reference_point_source": source,
        "points": json.loads(sweep.runs.to_json(orient="records")),
        "metrics": json.loads(metrics.to_json(orient="records")),
        "plot": shown(png),
        "markdown": md,
    }


def raw_numbers(evaluation: dict | None) -> dict | None:
    if evaluation is None:
        return None
    keys = ("num_prompts", "rewards", "kl_ref", "response_length", "fluency", "iteration", "preference")
    return {k: evaluation[k] for k in keys if k in evaluation}


def budget_record(args: argparse.Namespace, tasks: Sequence[str] | None = None) -> dict:
    """The budget flags as a result file records them; ``per_task``: ``TASK_BUDGET``'s part for ``tasks``
    (default ``args.tasks``)."""
    tasks = args.tasks if tasks is None else tasks
    return {
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "precision": args.precision,
        "sampling_dtype": args.sampling_dtype,
        "eval_every": args.eval_every,
        "val_size": args.val_size,
        "per_task": {t: budget for t in tasks if (budget := task_budget(args, t))},
        "extra": args.extra,
        "jobs": args.jobs,
        "threads_per_run": thread_env(args.jobs)["OMP_NUM_THREADS"],
        "quick": args.quick,
        "accepted_drift": args.accept_drift,
    }


def result_name(
    folder: Path,
    name: str,
    run_dirs: Sequence[str],
    now: datetime.datetime | None = None,
    run_key: str = "run_dir",
) -> str:
    """The stem of this report's files in ``folder``: ``name``, unless that would replace a report of more runs.

    A report of a subset (``--tasks``, ``--algorithms``, ``--seeds``, ``--no-fronts``...), or of other
    runs (another ``--out``), must not overwrite ``<name>.json`` holding runs it does not cover (the
    README's results, say): it then gets ``<name>_<date>-<time>`` instead, and says so. ``run_key``
    is the key naming a run's folder in the previous report's ``runs`` (``benchmarks/judge.py``: "folder").
    """
    previous = read_json(folder / f"{name}.json")
    runs = previous.get("runs") if isinstance(previous, dict) else None
    covered = {r.get(run_key) for r in runs if isinstance(r, dict)} if isinstance(runs, list) else set()
    left_out = covered - set(run_dirs)
    if not left_out:
        return name
    stem = f"{name}_{(now or datetime.datetime.now()).strftime('%Y%m%d-%H%M%S')}"
    print(
        f"{folder / name}.json reports {len(left_out)} run(s) this report does not cover: "
        f"kept, and this report goes to {stem}.json"
    )
    return stem


def report(args: argparse.Namespace, seed_runs: list[Run], front_runs: list[Run], failed: list) -> dict:
    """Read every planned run, build the tables, verdicts and fronts, write JSON and plot, print Markdown."""
    every = unique(seed_runs + front_runs)
    name = result_name(args.results, args.name, [str(run.folder(args.out)) for run in every])
    results = {run: load_result(run.folder(args.out)) for run in every}
    budgets = {  # each task's runs must share one budget (TASK_BUDGET may give tasks different ones)
        (run.task, json.dumps(r["record"]["budget"]))
        for run, r in results.items()
        if r and "budget" in r["record"]
    }
    tasks = [
        report_task(t, [r for r in seed_runs if r.task == t], results, args.algorithms) for t in args.tasks
    ]
    fronts = None
    if front_runs:
        fronts = report_fronts(unique(front_runs), results, args.out, args.results / f"{name}_front.png")
    for task in tasks:
        png = plot_kl_curves(task, args.results / f"{name}_{task['task']}_kl.png")
        if png:
            task["kl_plot"] = shown(png)
            task["markdown"] += f"\n- reward-vs-KL plot: {shown(png)}"
    markdown = "\n\n".join([t["markdown"] for t in tasks] + ([fronts["markdown"]] if fronts else []))
    mixed = sorted({task for task, _ in budgets if sum(t == task for t, _ in budgets) > 1})
    if mixed:
        markdown += (
            f"\n\nwarning: the runs of {', '.join(mixed)} were trained under different budgets "
            f"(see {name}.json: runs[].overrides)"
        )
    payload = {
        "benchmark": "quality",
        "machine": machine_info(),
        "command": sys.argv,
        "budget": budget_record(args),
        "runs": [
            {
                "task": run.task,
                "algorithm": run.algorithm,
                "preference": None if run.preference is None else list(run.preference),
                "seed": run.seed,
                "run_dir": str(run.folder(args.out)),
                "status": "done"
                if results[run]
                else ("failed" if run in {f for f, _ in failed} else "missing"),
                "wall_s": (results[run] or {}).get("record", {}).get("wall_s"),
                "attempts": (results[run] or {}).get("record", {}).get("attempts"),
                "overrides": (results[run] or {}).get("record", {}).get("overrides"),
                "eval": raw_numbers((results[run] or {}).get("eval")),
                "reference": raw_numbers((results[run] or {}).get("reference")),
            }
            for run in every
        ],
        "tasks": {t["task"]: {k: v for k, v in t.items() if k != "markdown"} for t in tasks},
        "fronts": None if fronts is None else {k: v for k, v in fronts.items() if k != "markdown"},
        "failed": [str(log) for _, log in failed],
        "markdown": markdown,
    }
    write_result(name, payload, folder=args.results)
    print("\n" + markdown)
    return payload


# ------------------------------------------------------------------------------------------- CLI
def _csv(kind):
    return lambda text: [kind(x) for x in text.split(",") if x.strip()]


def _preference(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def task_defaults(key: str) -> str:
    """``, 36 for harmless_length``: ``TASK_BUDGET``'s values of ``key``, for a flag's help."""
    return "".join(f", {budget[key]} for {task}" for task, budget in TASK_BUDGET.items() if key in budget)


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """The budget flags, their defaults filled in by :func:`resolve_budget`."""
    budget = parser.add_argument_group(
        "budget (the same for every run of a task; a flag sets it for every task, TASK_BUDGET's included)"
    )
    budget.add_argument(
        "--iterations",
        type=int,
        help=f"PPO iterations per run (default {ITERATIONS}{task_defaults('iterations')})",
    )
    budget.add_argument("--batch-size", type=int, help=f"rollout.batch_size (default {BATCH_SIZE})")
    budget.add_argument(
        "--max-new-tokens", type=int, help=f"rollout.max_new_tokens (default {MAX_NEW_TOKENS})"
    )
    budget.add_argument(
        "--precision", help=f"trainer.precision, e.g. 32-true or bf16-mixed (default {PRECISION})"
    )
    budget.add_argument(
        "--sampling-dtype",
        choices=["null", "float32", "bfloat16", "float16"],
        help=f"rollout.sampling_dtype, the dtype rollouts and evaluations sample in (default {SAMPLING_DTYPE}: "
        "the weights' own)",
    )
    budget.add_argument(
        "--eval-every",
        type=int,
        help=f"eval.every_n_iterations (default {EVAL_EVERY}{task_defaults('eval_every')})",
    )
    budget.add_argument(
        "--val-size",
        type=int,
        help="data.val_size, the held-out prompts of every evaluation (default: the experiment's, 128"
        f"{task_defaults('val_size')}; --quick 64)",
    )
    budget.add_argument(
        "--extra", nargs="+", default=[], metavar="OVERRIDE", help="Hydra overrides appended to every run"
    )


def add_how_arguments(parser: argparse.ArgumentParser) -> None:
    """Parallelism, folders and modes: --jobs, --out, --results, --force, --accept-drift, --dry-run, --report-only."""
    how = parser.add_argument_group("how")
    how.add_argument("--jobs", type=int, help="runs at once, each with cores // jobs threads (default 2)")
    how.add_argument(
        "--out",
        type=Path,
        help="run folders (default benchmarks/runs/quality, or quality_quick with --quick)",
    )
    how.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where the JSON and the plot go (default benchmarks/results)",
    )
    how.add_argument(
        "--name",
        help="the stem of the report's files in --results (default quality, quality_quick with --quick): "
        "letters, digits, '_', '-' and '.'",
    )
    how.add_argument("--force", action="store_true", help="retrain runs that are done already")
    how.add_argument(
        "--accept-drift",
        nargs="+",
        default=[],
        metavar="KEY",
        help="config keys or key prefixes (e.g. conditioning.svd_lora) whose difference between a run's "
        "saved config and today's does not stop its reuse: say, keys added since whose defaults keep "
        "the old behaviour",
    )
    how.add_argument(
        "--no-shared-reference",
        action="store_true",
        help="evaluate the reference policy in every run, instead of taking a finished run's evaluation "
        "made under the same settings (eval.reference; by default every run of a task after the first "
        "ones skips it)",
    )
    how.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    how.add_argument("--report-only", action="store_true", help="no training: report the runs on disk")


def fill_unset(args: argparse.Namespace, defaults: dict[str, Any], presets: dict[str, Any]) -> None:
    """Each flag in ``defaults`` left unset: ``presets``' value (``--quick``'s), else the default."""
    for key, default in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, presets.get(key, default))


def resolve_budget(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fill the budget and --jobs: a flag, else ``--quick``'s preset, else the default; resolve the folders.

    The run folders are ``benchmarks/runs/quality`` (``quality_quick`` with ``--quick``) for every
    script that shares these budgets, so a run one script trained is found by the other.
    """
    presets = QUICK if args.quick else {}
    defaults = {
        "iterations": ITERATIONS,
        "batch_size": BATCH_SIZE,
        "max_new_tokens": MAX_NEW_TOKENS,
        "precision": PRECISION,
        "sampling_dtype": SAMPLING_DTYPE,
        "eval_every": EVAL_EVERY,
        "val_size": None,
        "jobs": 2,  # two runs of one thread each: on 2 cores 1.25x the throughput of one run of two
    }
    # A task's own budget gives way to a flag or a preset for the same key (and, per run, to --extra).
    args.task_budget = {
        task: {k: v for k, v in budget.items() if getattr(args, k) is None and k not in presets}
        for task, budget in TASK_BUDGET.items()
    }
    fill_unset(args, defaults, presets)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.val_size is not None and args.val_size < 1:
        parser.error(f"--val-size must be >= 1 (held-out prompts per evaluation), got {args.val_size}")
    args.out = (
        args.out or ROOT / "benchmarks" / "runs" / ("quality_quick" if args.quick else "quality")
    ).resolve()
    args.results = args.results.resolve()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/quality.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_budget_arguments(parser)
    what = parser.add_argument_group("what to run")
    what.add_argument(
        "--tasks", type=_csv(str), help=f"of {', '.join(TASKS)} (default {','.join(DEFAULT_TASKS)})"
    )
    what.add_argument("--algorithms", type=_csv(str), help=f"default {','.join(ALGORITHMS)}")
    what.add_argument(
        "--seeds",
        type=_csv(int),
        help=f"uniform-preference runs per algorithm (default {','.join(map(str, SEEDS))})",
    )
    what.add_argument("--front-task", default=FRONT_TASK, choices=list(TASKS), help=f"default {FRONT_TASK}")
    what.add_argument("--front-algorithms", type=_csv(str), help=f"default {','.join(FRONT_ALGORITHMS)}")
    what.add_argument(
        "--front-preferences",
        nargs="+",
        type=_preference,
        metavar="W1,W2",
        help="front preference vectors (default "
        + " ".join(f"{a:g},{b:g}" for a, b in FRONT_PREFERENCES)
        + ")",
    )
    what.add_argument("--front-seed", type=int, default=FRONT_SEED, help=f"default {FRONT_SEED}")
    what.add_argument("--no-fronts", action="store_true", help="no front runs")
    what.add_argument(
        "--quick",
        action="store_true",
        help="the ~15-minute mode (see benchmarks/README.md); flags still override it",
    )
    add_how_arguments(parser)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags, then ``--quick``'s presets, then the defaults above, in that order of precedence."""
    parser = build_parser()
    args = parser.parse_args(argv)
    presets = QUICK if args.quick else {}
    defaults = {
        "tasks": DEFAULT_TASKS,
        "algorithms": ALGORITHMS,
        "seeds": SEEDS,
        "front_algorithms": FRONT_ALGORITHMS,
        "front_preferences": FRONT_PREFERENCES,
    }
    fill_unset(args, defaults, presets)
    resolve_budget(args, parser)
    if args.no_fronts:
        args.front_algorithms = []
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown:
        parser.error(f"--tasks: unknown {unknown}; known: {', '.join(TASKS)}")
    try:
        for preference in args.front_preferences:
            canonical_preference(preference)
    except ValueError as err:
        parser.error(f"--front-preferences: {err}")
    if args.name is None:
        args.name = "quality_quick" if args.quick else "quality"
    elif not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", args.name):
        parser.error(
            f"--name {args.name!r}: a file stem of letters, digits, '_', '-' and '.' (not starting with "
            "'.' or '-'), such as quality_no_noon; --results sets the folder"
        )
    return args


def print_problems(payload: dict, failed: list[tuple[Run, Path]], noun: str) -> bool:
    """Name on stderr the failed steps (their logs), else the runs without ``eval.json``; any of either?"""
    if failed:
        print(
            f"\n{len(failed)} {noun} failed:", *(f"  {log}" for _, log in failed), sep="\n", file=sys.stderr
        )
        return True
    missing = [r["run_dir"] for r in payload["runs"] if r["status"] != "done"]
    if missing:
        print(f"\n{len(missing)} run(s) have no eval.json:", *missing, sep="\n  ", file=sys.stderr)
    return bool(missing)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seed_runs, front_runs = plan_runs(args)
    failed: list[tuple[Run, Path]] = []
    if not args.report_only:
        failed = run_all(unique(seed_runs + front_runs), args)
        if args.dry_run:
            return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        payload = report(args, seed_runs, front_runs, failed)
    return 1 if print_problems(payload, failed, "run(s)") else 0


if __name__ == "__main__":
    sys.exit(main())
