"""Benchmark (d, second judge): score a quality benchmark's policies again with a judge they never trained on.

``benchmarks/quality.py`` trains every policy on a reward and scores it with the same reward. A gain
that a second judge, trained on other data, does not see is a reward hack, not an improvement. This
script reads each run's held-out responses (``eval.responses.jsonl`` beside ``eval.json``, and the
reference policy's beside ``reference/eval.json``), scores every response with the judge, and reports
per algorithm the judge's mean over seeds with a 95% t-interval beside the training reward's, the KL
to the reference, how many responses open with the most common first three words, and each seed's
difference from the reference under the judge, paired prompt by prompt.

Runs trained before the responses files were written have none: ``--evaluate`` samples them again
with ``evaluate.py`` into ``<run>/judged/`` (the same held-out prompts and evaluation seed, so the
same responses; the script checks the new summary's reward means against the run's ``eval.json``)
and scores those.

Run::

    python benchmarks/judge.py --out benchmarks/runs/quality_vf0 --task sentiment_length [--evaluate]

The judge of each task is in ``JUDGES`` (sentiment: ``reward=sentiment_tweets``, a classifier trained on
human-labelled tweets, where the task trains on VADER's lexicon); ``--judge OBJECTIVE=REWARD`` names
another one from ``conf/reward/``. Writes ``benchmarks/results/judge_<task>.json`` (``--results``), or
``judge_<task>_by_<rewards>.json`` when the judges are not the task's default ones (so a report by
another judge does not replace the default one), and prints the table as Markdown. Where that file
reports runs this one does not cover (another ``--out``, fewer seeds), it is kept and this report goes
to ``<name>_<date>-<time>.json``, as in ``benchmarks/quality.py``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from common import RESULTS, ROOT, machine_info, write_result  # noqa: E402

# Task -> {objective the task trains on: the reward config (conf/reward/) that judges it again}.
JUDGES = {"sentiment_length": {"sentiment": "sentiment_tweets"}}
JUDGED = "judged"  # <run>/judged/: where --evaluate writes a run's evaluation when it has no responses
REPRODUCED_TOLERANCE = 1e-4  # how far a re-evaluation's reward means may sit from the run's own


# ------------------------------------------------------------------------------------------ files
def responses_result(folder: Path, reference: bool = False) -> Path | None:
    """The result file whose ``eval.responses.jsonl`` holds ``folder``'s responses (the run's own, else
    the one ``--evaluate`` wrote under ``judged/``), or None."""
    from pama_lit.run.results import responses_path

    tail = Path("reference", "eval.json") if reference else Path("eval.json")
    for result in (folder / tail, folder / JUDGED / tail):
        if result.is_file() and responses_path(result).is_file():
            return result
    return None


def reevaluate(folder: Path, reference: bool, threads: dict[str, str]) -> Path:
    """Sample ``folder``'s policy (or its reference) again into ``judged/`` with ``evaluate.py``.

    Raises:
        RuntimeError: evaluate.py failed, or its reward means are not the run's own (then the responses
            would not be the ones the run was scored on).
    """
    tail = Path("reference", "eval.json") if reference else Path("eval.json")
    output = folder / JUDGED / tail
    command = [
        sys.executable, "evaluate.py", f"run_dir={folder}", f"policy={'reference' if reference else 'trained'}",
        f"output={output}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=threads, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    gap = reward_gap(quality.read_json(folder / tail), quality.read_json(output))
    if gap is None or gap > REPRODUCED_TOLERANCE:
        raise RuntimeError(
            f"{output} does not reproduce {folder / tail} (largest reward-mean difference {gap}); its "
            "responses are not the ones the run was scored on"
        )
    return output


def reward_gap(original: dict | None, again: dict | None) -> float | None:
    """The largest difference between two evaluations' reward means (None: not comparable)."""
    if not original or not again or set(original.get("rewards", {})) != set(again.get("rewards", {})):
        return None
    return max(
        abs(float(original["rewards"][o]["mean"]) - float(again["rewards"][o]["mean"]))
        for o in original["rewards"]
    )


# ---------------------------------------------------------------------------------------- scoring
def build_judge(name: str):
    """The reward ``conf/reward/<name>.yaml`` builds."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    path = ROOT / "conf" / "reward" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise SystemExit(f"judge {name!r}: no conf/reward/{name}.yaml; known: {', '.join(known)}")
    return instantiate(OmegaConf.load(path))


def judge_scores(judge, records: list[dict]) -> list[float]:
    """The judge's score of every response, in order."""
    import torch

    lengths = torch.tensor([int(r.get("length", 0)) for r in records])
    scores = judge([r["prompt"] for r in records], [r["response"] for r in records], lengths)
    return [float(s) for s in scores]


def opener_share(records: list[dict], words: int = 3) -> float:
    """The share of responses that open with the most common first ``words`` words (collapse onto a
    stock opener reads near 1; the reference policy's replies, near 0)."""
    openers = Counter(" ".join(r["response"].lower().split()[:words]) for r in records)
    return openers.most_common(1)[0][1] / len(records) if records else float("nan")


def judged_record(records: list[dict], scores: dict[str, list[float]]) -> list[dict]:
    """``records`` with each judge's score added to ``scores`` (key ``judge:<objective>``)."""
    return [
        r | {"scores": r["scores"] | {key: values[i] for key, values in scores.items()}}
        for i, r in enumerate(records)
    ]


def evaluation_of(records: list[dict], keys: Sequence[str], kl: float | None) -> dict:
    """An ``eval.json``-shaped summary of ``keys`` over ``records`` (for ``quality.aggregate``)."""
    from pama_lit.run.results import mean_ci

    rewards = {}
    for key in keys:
        stats = mean_ci([float(r["scores"][key]) for r in records])
        rewards[key] = {"mean": stats["mean"], "ci95": stats["ci95"]}
    return {"rewards": rewards, "kl_ref": kl}


# ----------------------------------------------------------------------------------------- report
def judge_task(
    task: str,
    folders: dict[str, list[Path]],
    judges: dict[str, str],
    evaluate: bool = False,
    threads: dict[str, str] | None = None,
) -> dict:
    """Score every run in ``folders`` (algorithm -> seed folders) and its reference with ``judges``."""
    from pama_lit.run.results import paired_difference, read_responses

    built = {objective: build_judge(name) for objective, name in judges.items()}
    keys = [f"judge:{o}" for o in judges]
    threads = threads or quality.thread_env(1)

    def records_of(folder: Path, reference: bool) -> tuple[list[dict] | None, str]:
        result = responses_result(folder, reference)
        if result is None and evaluate:
            result = reevaluate(folder, reference, threads)
        if result is None:
            return None, "no eval.responses.jsonl (--evaluate samples them again)"
        records = read_responses(result)
        scored = {f"judge:{o}": judge_scores(j, records) for o, j in built.items()}
        return judged_record(records, scored), str(result)

    reference_records, reference_source = None, None
    runs, missing = [], []
    for algorithm, seed_folders in folders.items():
        for folder in seed_folders:
            if not (folder / "eval.json").is_file():
                missing.append(f"{folder}: not finished (no eval.json)")
                continue
            records, source = records_of(folder, reference=False)
            if records is None:
                missing.append(f"{folder}: {source}")
                continue
            if reference_records is None:
                reference_records, reference_source = records_of(folder, reference=True)
            evaluation = quality.read_json(folder / "eval.json") or {}
            runs.append(
                {
                    "algorithm": algorithm,
                    "folder": str(folder),
                    "responses": source,
                    "records": records,
                    "kl_ref": quality.number(evaluation.get("kl_ref")),
                }
            )
    if reference_records is None:
        raise SystemExit(f"judge: no run of {task} with responses to judge:\n  " + "\n  ".join(missing))

    trained_on = list(judges)
    measured = keys + trained_on
    rows = {}
    for algorithm in folders:
        mine = [r for r in runs if r["algorithm"] == algorithm]
        if not mine:
            continue
        row = quality.aggregate([evaluation_of(r["records"], measured, r["kl_ref"]) for r in mine], measured)
        row["opener_share"] = statistics.fmean(opener_share(r["records"]) for r in mine)
        row["paired"] = [
            {key: paired_difference(r["records"], reference_records, key) for key in keys} for r in mine
        ]
        rows[algorithm] = row
    reference = evaluation_of(reference_records, measured, 0.0)
    reference["opener_share"] = opener_share(reference_records)
    verdicts = {
        "beats_reference": quality.verdict_beats_reference(rows, reference_bounds(reference), keys)
        if "pama" in rows
        else None,
        "order": quality.verdict_paper_order(rows, keys),
        "agreement": agreement(rows, reference, judges),
    }
    return {
        "task": task,
        "judges": judges,
        "rows": rows,
        "reference": reference,
        "reference_responses": reference_source,
        "verdicts": verdicts,
        "missing": missing,
        "runs": [{k: v for k, v in r.items() if k != "records"} for r in runs],
        "markdown": judge_table(task, rows, reference, judges, verdicts, missing),
    }


def reference_bounds(reference: dict) -> dict:
    """The reference's row as ``quality.verdict_beats_reference`` reads it: mean and per-prompt interval."""
    return {
        "objectives": {
            key: {"mean": stats["mean"], "low": stats["ci95"][0], "high": stats["ci95"][1]}
            for key, stats in reference["rewards"].items()
        }
    }


def agreement(rows: dict, reference: dict, judges: dict[str, str]) -> dict:
    """Does the judge rank the policies as the training reward does? Spearman's rho over the policies
    (the algorithms' means and the reference), per judged objective."""
    from scipy.stats import spearmanr

    out = {}
    for objective in judges:
        trained = [row["objectives"][objective]["mean"] for row in rows.values()]
        judged = [row["objectives"][f"judge:{objective}"]["mean"] for row in rows.values()]
        trained.append(reference["rewards"][objective]["mean"])
        judged.append(reference["rewards"][f"judge:{objective}"]["mean"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = spearmanr(trained, judged).statistic if len(trained) > 2 else float("nan")
        out[objective] = {"spearman": float(rho), "policies": len(trained)}
    return out


def judge_table(
    task: str, rows: dict, reference: dict, judges: dict[str, str], verdicts: dict, missing: list[str]
) -> str:
    headers = ["policy"]
    for objective, name in judges.items():
        headers += [
            f"{objective}, judge {name}",
            f"{objective}, trained on",
            "judge paired vs reference (per seed)",
        ]
    headers += ["KL to reference", "top 3-word opener"]
    lines = []
    for algorithm, row in rows.items():
        cells = [algorithm]
        for objective in judges:
            key = f"judge:{objective}"
            paired = ", ".join(
                f"{p[key]['mean']:+.3f}" + ("*" if p[key]["ci95"][0] > 0 else "") for p in row["paired"]
            )
            cells += [
                quality._cell(row["objectives"][key]),
                quality._cell(row["objectives"][objective]),
                paired,
            ]
        cells += [quality.fmt(row.get("kl_ref"), 3), f"{row['opener_share']:.3f}"]
        lines.append(cells)
    cells = ["reference"]
    for objective in judges:
        for key in (f"judge:{objective}", objective):
            stats = reference["rewards"][key]
            cells.append(f"{stats['mean']:.3f} [{stats['ci95'][0]:.3f}, {stats['ci95'][1]:.3f}]")
        cells.append("0")
    cells += ["0", f"{reference['opener_share']:.3f}"]
    lines.append(cells)
    text = [
        f"### {task}: the policies scored again by a second judge",
        quality.markdown_table(headers, lines),
    ]
    text.append(
        "Intervals: over seeds (t, n-1 degrees of freedom) for the algorithms, over prompts for the "
        "reference; paired: each seed's mean over prompts of its judge score minus the reference's on "
        "the same prompt, * where its 95% interval over prompts is above 0."
    )
    for name, verdict in verdicts.items():
        if verdict is None:
            continue
        if name == "agreement":
            text.append(
                "- judge and training reward rank the policies alike: "
                + "; ".join(
                    f"{o}: Spearman {a['spearman']:.2f} over {a['policies']} policies"
                    for o, a in verdict.items()
                )
            )
        else:
            text.append(f"- {verdict['text']}")
    text += [f"- missing: {line}" for line in missing]
    return "\n\n".join(text[:3]) + "\n\n" + "\n".join(text[3:])


# -------------------------------------------------------------------------------------------- CLI
def parse_judges(specs: Sequence[str], task: str) -> dict[str, str]:
    """``["sentiment=sentiment_tweets"]`` -> ``{"sentiment": "sentiment_tweets"}``; the task's default if none."""
    if not specs:
        if task not in JUDGES:
            raise SystemExit(f"judge: no default judge for {task!r}; name one with --judge OBJECTIVE=REWARD")
        return dict(JUDGES[task])
    judges = {}
    for spec in specs:
        objective, sep, name = spec.partition("=")
        if not sep or not objective or not name:
            raise SystemExit(
                f"judge: --judge {spec!r}: expected OBJECTIVE=REWARD, e.g. sentiment=sentiment_tweets"
            )
        judges[objective] = name
    return judges


def result_name(task: str, judges: dict[str, str]) -> str:
    """``judge_<task>`` for the task's default judges, else ``judge_<task>_by_<their reward names>``."""
    if judges == JUDGES.get(task):
        return f"judge_{task}"
    return f"judge_{task}_by_" + "_".join(judges[objective] for objective in sorted(judges))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/judge.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "quality",
                        help="the quality benchmark's run folders (default benchmarks/runs/quality)")  # fmt: skip
    parser.add_argument("--task", default="sentiment_length", choices=list(quality.TASKS))
    parser.add_argument("--algorithms", type=quality._csv(str), default=quality.ALGORITHMS,
                        help=f"default {','.join(quality.ALGORITHMS)}")  # fmt: skip
    parser.add_argument("--seeds", type=quality._csv(int), default=quality.SEEDS, help="default 0,1,2")
    parser.add_argument("--judge", action="append", default=[], metavar="OBJECTIVE=REWARD",
                        help=f"the judge of an objective, a conf/reward/ name (default {JUDGES})")  # fmt: skip
    parser.add_argument("--evaluate", action="store_true",
                        help="sample runs without responses files again (evaluate.py, into <run>/judged/)")  # fmt: skip
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    judges = parse_judges(args.judge, args.task)
    folders = {
        a: [quality.Run(args.task, a, None, s).folder(args.out) for s in args.seeds] for a in args.algorithms
    }
    report = judge_task(args.task, folders, judges, args.evaluate, quality.thread_env(1))
    payload = {
        "benchmark": "judge",
        "machine": machine_info(),
        "command": sys.argv,
        "out": str(args.out),
    } | {k: v for k, v in report.items() if k != "markdown"}
    # A report of other runs (another --out, fewer seeds or algorithms) keeps the one already there.
    run_dirs = [str(folder) for runs in folders.values() for folder in runs]
    name = quality.result_name(args.results, result_name(args.task, judges), run_dirs, run_key="folder")
    write_result(name, json.loads(json.dumps(payload, default=float)), args.results)
    print(report["markdown"])
    return 1 if report["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
