"""benchmarks/quality.py: the report on synthetic eval.json files, the resume rule, and one real tiny run.

The benchmarks are scripts, not a package, so the module is loaded from its file.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = ["sentiment", "length"]
T_975_DOF2 = 4.302652729749462  # Student's t, two-sided 95%, 2 degrees of freedom (tables: 4.303)


def load_quality():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


quality = load_quality()


def eval_record(
    means,
    half=0.05,
    kl=1.0,
    policy="trained",
    algorithm="pama",
    preference=(0.5, 0.5),
    fluency=None,
    prompts=("p1", "p2"),
):
    record = {
        "format": "pama_lit.eval/1",
        "algorithm": algorithm,
        "objectives": OBJECTIVES,
        "preference": list(preference),
        "policy": policy,
        "iteration": 0 if policy == "reference" else 30,
        "seed": 1234,
        "num_prompts": 32,
        "rewards": {
            o: {"mean": m, "std": 0.1, "ci95": [m - half, m + half], "n": 32}
            for o, m in zip(OBJECTIVES, means, strict=True)
        },
        "kl_ref": 0.0 if policy == "reference" else kl,
        "response_length": 20.0,
        "samples": [{"prompt": p, "response": "r", "scores": {}} for p in prompts],
    }
    if fluency is not None:
        record["fluency"] = fluency
    return record


def write_run(folder: Path, means, reference=(0.0, 0.0), ref_prompts=("p1", "p2"), **kwargs) -> None:
    (folder / "reference").mkdir(parents=True, exist_ok=True)
    (folder / "eval.json").write_text(json.dumps(eval_record(means, **kwargs)))
    ref = eval_record(
        reference, policy="reference", algorithm=kwargs.get("algorithm", "pama"), prompts=ref_prompts
    )
    (folder / "reference" / "eval.json").write_text(json.dumps(ref))


# ------------------------------------------------------------------------------------ aggregation
def test_aggregate_is_the_t_interval_over_seeds():
    evals = [
        eval_record([0.2, 1.0], kl=1.0, fluency={"ref_logprob": -2.0, "distinct2": 0.5, "repeat_frac": 0.1}),
        eval_record([0.5, 2.0], kl=2.0, fluency={"ref_logprob": -3.0, "distinct2": 0.7, "repeat_frac": 0.2}),
        eval_record([0.8, 6.0], kl=6.0, fluency={"ref_logprob": -4.0, "distinct2": 0.9, "repeat_frac": 0.3}),
    ]
    row = quality.aggregate(evals, OBJECTIVES)
    # sentiment: mean 0.5, sample sd sqrt(((-.3)^2 + 0 + .3^2) / 2) = 0.3
    half = T_975_DOF2 * 0.3 / math.sqrt(3)
    assert row["objectives"]["sentiment"]["mean"] == pytest.approx(0.5)
    assert row["objectives"]["sentiment"]["low"] == pytest.approx(0.5 - half)
    assert row["objectives"]["sentiment"]["high"] == pytest.approx(0.5 + half)
    # length: mean 3, sd sqrt((4 + 1 + 9) / 2) = sqrt(7)
    half = T_975_DOF2 * math.sqrt(7) / math.sqrt(3)
    assert row["objectives"]["length"]["low"] == pytest.approx(3 - half)
    assert row["objectives"]["length"]["high"] == pytest.approx(3 + half)
    assert row["interval"] == "seeds"
    assert row["kl_ref"] == pytest.approx(3.0)
    assert row["fluency"] == pytest.approx({"ref_logprob": -3.0, "distinct2": 0.7, "repeat_frac": 0.2})


def test_one_seed_shows_its_per_prompt_interval():
    row = quality.aggregate([eval_record([0.4, 0.6], half=0.1)], OBJECTIVES)
    assert row["interval"] == "prompts"
    assert (row["objectives"]["sentiment"]["low"], row["objectives"]["sentiment"]["high"]) == pytest.approx(
        (0.3, 0.5)
    )


def test_missing_fluency_is_none_and_a_dash_in_the_table():
    with_mean = eval_record([0.4, 0.6], fluency={"ref_logprob": {"mean": -2.5}})
    row = quality.aggregate([eval_record([0.4, 0.6]), with_mean], OBJECTIVES)
    assert row["fluency"] == {"ref_logprob": -2.5, "distinct2": None, "repeat_frac": None}
    reference, _ = quality.reference_row([eval_record([0, 0], policy="reference")], OBJECTIVES)
    table = quality.task_table({"pama": row}, reference, OBJECTIVES, planned=2)
    pama_line = next(line for line in table.splitlines() if "pama" in line)
    assert pama_line.rstrip(" |").endswith("-2.5 | - | -")


def test_reference_differing_across_seeds_warns_and_widens():
    same, warned = quality.reference_row(
        [eval_record([0.1, 0.2], policy="reference"), eval_record([0.1, 0.2], policy="reference")], OBJECTIVES
    )
    assert warned == [] and same["interval"] == "prompts"
    other = eval_record([0.3, 0.2], policy="reference", prompts=("q1", "q2"))
    row, warned = quality.reference_row([eval_record([0.1, 0.2], policy="reference"), other], OBJECTIVES)
    assert (
        len(warned) == 1 and "different held-out prompts" in warned[0] and "sentiment 0.1..0.3" in warned[0]
    )
    assert row["objectives"]["sentiment"]["mean"] == pytest.approx(0.2)
    assert (row["objectives"]["sentiment"]["low"], row["objectives"]["sentiment"]["high"]) == pytest.approx(
        (0.05, 0.35)
    )


# --------------------------------------------------------------------------------------- verdicts
def row(means, half, kl):
    objectives = {
        o: {"mean": m, "low": m - half, "high": m + half} for o, m in zip(OBJECTIVES, means, strict=True)
    }
    return {"n": 3, "objectives": objectives, "kl_ref": kl}


REFERENCE = row([0.0, 0.0], 0.1, 0.0)


def test_beats_reference_needs_every_objective_clear_of_the_reference_interval():
    clear = quality.verdict_beats_reference({"pama": row([0.5, 0.5], 0.2, 1.0)}, REFERENCE, OBJECTIVES)
    assert clear["holds"] is True and "holds" in clear["text"]
    # length's interval [0.05, 0.25] overlaps the reference's [-0.1, 0.1]
    overlap = quality.verdict_beats_reference({"pama": row([0.5, 0.15], 0.1, 1.0)}, REFERENCE, OBJECTIVES)
    assert overlap["holds"] is False and overlap["per_objective"] == {"sentiment": True, "length": False}
    assert "does not hold" in overlap["text"] and "(overlap)" in overlap["text"]
    assert (
        quality.verdict_beats_reference({"morlhf": row([1, 1], 0.1, 1)}, REFERENCE, OBJECTIVES)["holds"]
        is None
    )


def test_paper_order_on_every_objective():
    rows = {
        "pama": row([0.5, 0.5], 0.01, 1),
        "morlhf": row([0.4, 0.4], 0.01, 1),
        "mgda_ub": row([0.3, 0.3], 0.01, 1),
    }
    verdict = quality.verdict_paper_order(rows, OBJECTIVES)
    assert verdict["holds"] is True and verdict["separated"] == {"sentiment": True, "length": True}
    rows["mgda_ub"] = row([0.3, 0.45], 0.2, 1)  # beats morlhf on length
    verdict = quality.verdict_paper_order(rows, OBJECTIVES)
    assert verdict["holds"] is False and verdict["per_objective"] == {"sentiment": True, "length": False}
    assert "does not hold (fails on length)" in verdict["text"] and "mgda_ub 0.45" in verdict["text"]
    rows["mgda_ub"] = row([0.3, 0.3], 0.2, 1)  # in order, but within morlhf's interval
    verdict = quality.verdict_paper_order(rows, OBJECTIVES)
    assert verdict["holds"] is True and "overlap" in verdict["text"]
    assert quality.verdict_paper_order({"pama": rows["pama"]}, OBJECTIVES)["holds"] is None


def write_responses(folder: Path, name: str, scores: list[tuple[float, float]]) -> None:
    lines = [{"prompt": f"p{i}", "response": "r", "scores": dict(zip(OBJECTIVES, s, strict=True))}
             for i, s in enumerate(scores)]  # fmt: skip
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_paired_verdict_needs_every_seed_above_the_reference_prompt_by_prompt(tmp_path):
    reference = [(0.0, 0.0), (0.5, 0.2), (1.0, 0.4), (0.2, 0.1)]
    gains = {"s0": [0.1, 0.12, 0.09, 0.11], "s1": [0.2, 0.18, 0.22, 0.2]}
    folders = []
    for seed, gain in gains.items():
        folder = tmp_path / seed
        write_responses(folder, "reference/eval.responses.jsonl", reference)
        write_responses(
            folder,
            "eval.responses.jsonl",
            [(a + g, b + g) for (a, b), g in zip(reference, gain, strict=True)],
        )
        folders.append(folder)
    verdict = quality.verdict_paired(folders, OBJECTIVES)
    assert verdict["holds"] is True
    assert [d["sentiment"]["mean"] for d in verdict["seeds"]] == pytest.approx([0.105, 0.2])
    # One seed whose gain is not clear of 0 on one objective: the verdict fails.
    write_responses(
        folders[1],
        "eval.responses.jsonl",
        [
            (a + g, b + (-1) ** i * 0.3)
            for i, ((a, b), g) in enumerate(zip(reference, gains["s1"], strict=True))
        ],
    )
    verdict = quality.verdict_paired(folders, OBJECTIVES)
    assert verdict["holds"] is False and verdict["per_objective"] == {"sentiment": True, "length": False}
    (folders[0] / "eval.responses.jsonl").unlink()
    missing = quality.verdict_paired(folders, OBJECTIVES)
    assert missing["holds"] is None and str(folders[0]) in missing["text"]


def test_matched_kl_flags_a_lead_bought_with_more_drift():
    rows = {"pama": row([0.5, 0.5], 0.01, 4.0), "morlhf": row([0.4, 0.6], 0.01, 2.0)}
    verdict = quality.verdict_matched_kl(rows, REFERENCE, OBJECTIVES)
    assert verdict["furthest"] == "pama"
    assert verdict["confounded"] == [{"rival": "morlhf", "objectives": ["sentiment"]}]
    assert verdict["algorithms"]["pama"]["gain_per_kl"] == pytest.approx(
        {"sentiment": 0.125, "length": 0.125}
    )
    assert "not a like-for-like win" in verdict["text"]
    rows["pama"]["kl_ref"] = 1.0  # the same lead at less KL
    verdict = quality.verdict_matched_kl(rows, REFERENCE, OBJECTIVES)
    assert verdict["confounded"] == [] and verdict["furthest"] == "morlhf"


def write_path(folder: Path, points) -> None:
    """evaluations.jsonl of one run: (iteration, KL, sentiment, length) per evaluation, reference first."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for iteration, kl, sentiment, length in points:
        record = eval_record([sentiment, length], kl=kl, policy="reference" if iteration == 0 else "trained")
        lines.append(json.dumps(record | {"iteration": iteration}))
    (folder / "evaluations.jsonl").write_text("\n".join(lines) + "\n")


def test_reward_at_kl_reads_every_run_at_the_kl_all_of_them_reach(tmp_path):
    # pama's seeds reach KL 4 and 6 with sentiment rising 0.1 per unit of KL; morlhf's reach KL 8 and 10
    # rising 0.05 per unit: at its end morlhf scores more (0.4-0.5 against 0.4-0.6) only by drifting.
    folders = {"pama": [], "morlhf": []}
    for algorithm, slope, ends in (("pama", 0.1, (4.0, 6.0)), ("morlhf", 0.05, (8.0, 10.0))):
        for seed, end in enumerate(ends):
            folder = tmp_path / algorithm / f"seed{seed}"
            write_path(
                folder,
                [(0, 0.0, 0.0, 0.0), (10, end / 2, slope * end / 2, 1.0), (20, end, slope * end, 1.0 + seed)],
            )
            folders[algorithm].append(folder)
    folders["morlhf"].append(tmp_path / "morlhf" / "seed2")  # no evaluations.jsonl: left out, and said so
    verdict = quality.verdict_reward_at_kl(folders, OBJECTIVES)
    assert verdict["common_kl"] == 4.0 and verdict["kls"] == [2.0, 4.0]
    at_4 = {a: verdict["algorithms"][a]["4"] for a in ("pama", "morlhf")}
    assert at_4["pama"]["sentiment"]["seeds"] == pytest.approx([0.4, 0.4])
    assert at_4["morlhf"]["sentiment"]["seeds"] == pytest.approx([0.2, 0.2])
    assert at_4["pama"]["sentiment"]["low"] == pytest.approx(
        0.4
    )  # no spread over seeds: a zero-width interval
    # length: pama's seed 1 ends at 2.0 from 1.0 at KL 3, so at KL 4 it reads 1 + (4 - 3) / 3
    assert at_4["pama"]["length"]["seeds"] == pytest.approx([1.0, 1 + 1 / 3])
    [comparison] = verdict["comparison"]
    assert (comparison["algorithm"], comparison["rival"], comparison["kl"]) == ("pama", "morlhf", 4.0)
    # length at KL 4: pama 1.0 and 1.33, morlhf 1.0 and 0.8: ahead on the means, intervals overlapping
    assert comparison["ahead_on"] == ["sentiment", "length"] and comparison["above_on"] == ["sentiment"]
    assert comparison["below_on"] == []
    assert "left out of morlhf" in verdict["text"] and "(the most both reach)" in verdict["text"]
    assert [len(p) for p in verdict["paths"].values()] == [2, 2]


def test_a_malformed_evaluations_file_leaves_its_run_out_with_a_warning(tmp_path):
    write_path(tmp_path / "good", [(0, 0.0, 0.0, 0.0), (10, 2.0, 0.2, 0.2)])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "evaluations.jsonl").write_text(
        json.dumps({"iteration": 0, "kl_ref": 0.0, "rewards": {"sentiment": {}}}) + "\n{cut"
    )
    with pytest.warns(UserWarning, match="no reward-vs-KL path"):
        verdict = quality.verdict_reward_at_kl({"pama": [tmp_path / "good", tmp_path / "bad"]}, OBJECTIVES)
    assert verdict["common_kl"] == 2.0 and "left out of pama" in verdict["text"]


def test_reward_at_kl_without_evaluation_files_is_not_measured(tmp_path):
    verdict = quality.verdict_reward_at_kl({"pama": [tmp_path / "a"]}, OBJECTIVES)
    assert verdict["kls"] == [] and "not measured" in verdict["text"]
    write_path(tmp_path / "b", [(0, 0.0, 0.0, 0.0), (10, 0.0, 0.1, 0.1)])  # never left the reference
    verdict = quality.verdict_reward_at_kl({"pama": [tmp_path / "b"]}, OBJECTIVES)
    assert verdict["kls"] == [] and "never left the reference" in verdict["text"]


# ------------------------------------------------------------------------------ report from files
# The front of test_fronts.py: pama on an evenly spaced front, morlhf inside it, reference at (0, 0).
FRONT = {
    "pama": [[0.1, 0.5], [0.2, 0.4], [0.3, 0.3], [0.4, 0.2], [0.5, 0.1]],
    "morlhf": [[0.05, 0.45], [0.15, 0.35], [0.25, 0.25], [0.35, 0.15], [0.1, 0.1]],
}
# Staircase areas from (0, 0): pama 0.1 * (0.1+0.2+0.3+0.4+0.5) = 0.15; morlhf 0.05*0.1 + 0.15*0.1 +
# 0.25*0.1 + 0.35*0.15 = 0.0975. IGD+ against pama's points: morlhf is (0.05, 0.05) short of four
# (0.0707107 each) and 0.15 short of (0.5, 0.1): (4 * 0.0707107 + 0.15) / 5.
HYPERVOLUME = {"pama": 0.15, "morlhf": 0.0975}
IGD_PLUS = {"pama": 0.0, "morlhf": (4 * math.sqrt(0.005) + 0.15) / 5}
SEED_MEANS = {
    "pama": [[0.3, 0.3], [0.35, 0.32], [0.4, 0.34]],
    "morlhf": [[0.25, 0.25], [0.2, 0.26], [0.3, 0.24]],
}


def write_benchmark(out: Path, fluency: bool = False) -> None:
    """Seed runs 0-2 of pama and morlhf on sentiment_length, and both fronts; seed 0 = the 0.5 point."""
    for algorithm, points in FRONT.items():
        for seed, means in enumerate(SEED_MEANS[algorithm]):
            if seed == 0:
                means = points[2]
            fl = {"ref_logprob": -2.0, "distinct2": 0.8, "repeat_frac": 0.05} if fluency else None
            folder = out / "sentiment_length" / algorithm / "uniform" / f"seed{seed}"
            write_run(folder, means, algorithm=algorithm, kl=1.0 + seed, fluency=fl)
        for preference, means in zip(quality.FRONT_PREFERENCES, points, strict=True):
            if preference != (0.5, 0.5):
                tag = f"w{preference[0]:g}-{preference[1]:g}"
                write_run(
                    out / "sentiment_length" / algorithm / tag / "seed0",
                    means,
                    algorithm=algorithm,
                    preference=preference,
                )


def report_args(tmp_path: Path) -> list[str]:
    return ["--tasks", "sentiment_length", "--algorithms", "pama,morlhf", "--out", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results")]  # fmt: skip


def test_report_only_reads_seeds_fronts_and_writes_json_and_plot(tmp_path, capsys):
    write_benchmark(tmp_path / "runs")
    assert quality.main([*report_args(tmp_path), "--report-only"]) == 0
    payload = json.loads((tmp_path / "results" / "quality.json").read_text())
    assert (tmp_path / "results" / "quality_front.png").stat().st_size > 10_000
    task = payload["tasks"]["sentiment_length"]
    pama = task["rows"]["pama"]["objectives"]["sentiment"]
    assert pama["seeds"] == pytest.approx([0.3, 0.35, 0.4])  # seed 0 is the front's 0.5 point
    assert pama["high"] - pama["mean"] == pytest.approx(T_975_DOF2 * 0.05 / math.sqrt(3))
    assert task["verdicts"]["beats_reference"]["holds"] is True
    assert task["verdicts"]["paper_order"]["holds"] is True
    assert (
        task["verdicts"]["paired"]["holds"] is None and "not measured" in task["verdicts"]["paired"]["text"]
    )
    assert task["warnings"] == []
    metrics = {m["algorithm"]: m for m in payload["fronts"]["metrics"]}
    for algorithm in FRONT:
        assert metrics[algorithm]["runs"] == 5
        assert metrics[algorithm]["hypervolume"] == pytest.approx(HYPERVOLUME[algorithm])
        assert metrics[algorithm]["igd_plus"] == pytest.approx(IGD_PLUS[algorithm])
    assert payload["fronts"]["reference_point"] == [0.0, 0.0]
    assert {r["status"] for r in payload["runs"]} == {"done"} and len(payload["runs"]) == 14
    assert payload["budget"]["iterations"] == quality.ITERATIONS and "git_commit" in payload["machine"]
    printed = capsys.readouterr().out
    assert "| **pama** | 3/3 seeds | 0.35 [" in printed and "### fronts" in printed
    assert "IGD+ against the non-dominated points of both algorithms together" in printed
    assert "reward at matched KL: not measured" in printed  # these runs wrote no evaluations.jsonl
    assert not list((tmp_path / "results").glob("*_kl.png"))


def test_a_front_of_one_algorithm_says_whose_points_igd_is_against(tmp_path, capsys):
    write_benchmark(tmp_path / "runs")
    argv = [*report_args(tmp_path), "--algorithms", "pama", "--front-algorithms", "pama", "--report-only"]
    assert quality.main(argv) == 0
    printed = capsys.readouterr().out
    assert "IGD+ against the non-dominated points of the one algorithm's front" in printed
    assert "both algorithms" not in printed
    assert quality.together(3) == "all 3 algorithms together"


def test_report_only_plots_reward_against_kl_from_the_runs_evaluations(tmp_path, capsys):
    write_benchmark(tmp_path / "runs")
    for folder in (tmp_path / "runs" / "sentiment_length").glob("*/uniform/seed*"):
        write_path(folder, [(0, 0.0, 0.0, 0.0), (10, 1.0, 0.2, 0.2), (30, 2.0, 0.3, 0.3)])
    assert quality.main([*report_args(tmp_path), "--report-only"]) == 0
    payload = json.loads((tmp_path / "results" / "quality.json").read_text())
    task = payload["tasks"]["sentiment_length"]
    assert task["verdicts"]["reward_at_kl"]["common_kl"] == 2.0
    assert Path(task["kl_plot"]).stat().st_size > 10_000
    assert "reward-vs-KL plot:" in capsys.readouterr().out


def test_report_marks_missing_runs_and_exits_non_zero(tmp_path, capsys):
    write_benchmark(tmp_path / "runs")
    (tmp_path / "runs" / "sentiment_length" / "morlhf" / "uniform" / "seed2" / "eval.json").unlink()
    assert quality.main([*report_args(tmp_path), "--report-only", "--no-fronts"]) == 1
    payload = json.loads((tmp_path / "results" / "quality.json").read_text())
    assert payload["tasks"]["sentiment_length"]["rows"]["morlhf"]["n"] == 2
    assert [r["run_dir"].split("runs/")[1] for r in payload["runs"] if r["status"] == "missing"] == [
        "sentiment_length/morlhf/uniform/seed2"
    ]
    assert "1 of 6 runs have no eval.json" in capsys.readouterr().out


# ---------------------------------------------------------------------------------- orchestration
def test_the_harmless_task_has_its_own_budget_unless_a_flag_preset_or_extra_sets_the_key():
    """TASK_BUDGET: harmless_length evaluates on 512 prompts and trains 36 iterations, evaluating once."""
    keys = ("data.val_size=", "iterations=", "eval.every_n_iterations=")

    def budgets(*flags: str) -> dict[str, list[str]]:
        args = quality.parse_args(
            ["--tasks", "sentiment_length,harmless_length", "--algorithms", "pama", *flags]
        )
        seed_runs, _ = quality.plan_runs(args)
        return {
            run.task: [
                o
                for o in quality.run_overrides(run, quality.budget_overrides(args, run.task))
                if o.startswith(keys)
            ]
            for run in seed_runs
        }

    common = [f"iterations={quality.ITERATIONS}", f"eval.every_n_iterations={quality.EVAL_EVERY}"]
    assert budgets() == {
        "sentiment_length": common,
        "harmless_length": ["iterations=36", "eval.every_n_iterations=36", "data.val_size=512"],
    }
    # A flag sets its key for every task, TASK_BUDGET's included; the other keys keep the task's.
    assert budgets("--val-size", "64")["harmless_length"] == [
        "iterations=36", "eval.every_n_iterations=36", "data.val_size=64"
    ]  # fmt: skip
    assert budgets("--iterations", "20")["harmless_length"] == [
        "iterations=20", "eval.every_n_iterations=36", "data.val_size=512"
    ]  # fmt: skip
    # An --extra override of the key, once, after the budget.
    assert budgets("--extra", "data.val_size=100")["harmless_length"] == [
        "iterations=36", "eval.every_n_iterations=36", "data.val_size=100"
    ]  # fmt: skip
    # --quick's presets give way to no task: its small budget is the same for both.
    quick = budgets("--quick", "--no-fronts")
    assert quick["harmless_length"] == quick["sentiment_length"] == [
        "iterations=8", "eval.every_n_iterations=8", "data.val_size=64"
    ]  # fmt: skip
    # The budget without a task is the common one, and the report records the per-task part.
    args = quality.parse_args(["--tasks", "sentiment_length,harmless_length"])
    assert [o for o in quality.budget_overrides(args) if o.startswith(keys)] == common
    assert quality.budget_record(args)["per_task"] == {
        "harmless_length": quality.TASK_BUDGET["harmless_length"]
    }
    assert quality.budget_record(quality.parse_args(["--tasks", "sentiment_length"]))["per_task"] == {}
    run = quality.Run("harmless_length", "pama", None, 0)
    composed = quality.planned_config(
        tuple(quality.run_overrides(run, quality.budget_overrides(args, run.task)))
    )
    assert (composed["data.val_size"], composed["iterations"], composed["eval.every_n_iterations"]) == (
        512,
        36,
        36,
    )


def test_plan_reuses_the_uniform_run_as_the_middle_of_the_front():
    args = quality.parse_args(["--tasks", "sentiment_length", "--algorithms", "pama,morlhf,mgda_ub"])
    seed_runs, front_runs = quality.plan_runs(args)
    every = quality.unique(seed_runs + front_runs)
    assert len(seed_runs) == 9 and len(front_runs) == 10
    assert len(every) == 9 + 8  # the two [0.5, 0.5] points are the seed-0 uniform runs
    assert quality.Run("sentiment_length", "pama", None, 0) in front_runs


def test_quick_presets_give_way_to_flags():
    quick = quality.parse_args(["--quick"])
    assert (quick.tasks, quick.algorithms, quick.seeds, quick.jobs) == (
        ["sentiment_length"],
        ["pama", "morlhf"],
        [0],
        2,
    )
    assert quick.out.name == "quality_quick" and quick.name == "quality_quick"
    assert len(quality.unique(sum(quality.plan_runs(quick), []))) == 6
    mixed = quality.parse_args(["--quick", "--iterations", "3", "--jobs", "1", "--no-fronts"])
    assert (mixed.iterations, mixed.batch_size, mixed.jobs, mixed.front_algorithms) == (3, 8, 1, [])
    full = quality.parse_args([])
    assert (full.iterations, full.batch_size, full.max_new_tokens, full.jobs) == (12, 16, 48, 2)
    # --quick evaluates on 64 held-out prompts; the full benchmark leaves the experiment's 128 alone.
    assert "data.val_size=64" in quality.budget_overrides(quick)
    assert not any(o.startswith("data.val_size") for o in quality.budget_overrides(full))
    assert "data.val_size=32" in quality.budget_overrides(quality.parse_args(["--quick", "--val-size", "32"]))
    with pytest.raises(SystemExit):
        quality.parse_args(["--val-size", "0"])
    # The sampling dtype reaches every run, and every run gets the same one.
    assert f"rollout.sampling_dtype={quality.SAMPLING_DTYPE}" in quality.budget_overrides(full)
    assert "rollout.sampling_dtype=float32" in quality.budget_overrides(
        quality.parse_args(["--sampling-dtype", "float32"])
    )
    with pytest.raises(SystemExit):
        quality.parse_args(["--sampling-dtype", "int8"])


def test_threads_split_the_cores_between_jobs():
    assert quality.thread_env(1, cores=2)["OMP_NUM_THREADS"] == "2"
    assert quality.thread_env(2, cores=2)["MKL_NUM_THREADS"] == "1"
    assert quality.thread_env(3, cores=2)["OMP_NUM_THREADS"] == "1"
    assert quality.thread_env(2, cores=16)["OMP_NUM_THREADS"] == "8"


def save_config(folder: Path, overrides: list[str], changes: dict | None = None) -> None:
    """What Hydra writes for every train.py run: the composed config, here with its folder spelled out."""
    cfg = compose_config(overrides, output_dir=folder)
    for key, value in (changes or {}).items():
        OmegaConf.update(cfg, key, value)
    (folder / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")


def test_run_state_resume_rules(tmp_path):
    overrides = ["algorithm=pama", "iterations=30"]
    folder = tmp_path / "run"
    assert quality.run_state(folder, overrides, force=False) == "fresh"
    folder.mkdir()
    (folder / quality.RUN_RECORD).write_text(json.dumps({"overrides": overrides}))
    save_config(folder, overrides)
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert quality.run_state(folder, overrides, force=False) == "resume"
    assert quality.run_state(folder, ["algorithm=pama", "iterations=8"], force=False) == "fresh"
    (folder / "eval.json").write_text("{}")
    assert quality.run_state(folder, overrides, force=False) == "done"
    assert quality.run_state(folder, ["algorithm=pama", "iterations=8"], force=False) == "mismatch"
    assert quality.run_state(folder, overrides, force=True) == "fresh"


# A finished run of the one-run plan below, whose overrides are today's too.
ONE_RUN = ["--tasks", "sentiment_length", "--algorithms", "pama", "--seeds", "0", "--no-fronts"]


def finished_run(out: Path) -> tuple[Path, list[str]]:
    args = quality.parse_args([*ONE_RUN, "--out", str(out)])
    (run,), _ = quality.plan_runs(args)
    overrides = quality.run_overrides(run, quality.budget_overrides(args, run.task))
    folder = run.folder(out)
    write_run(folder, [0.3, 0.3])
    (folder / quality.RUN_RECORD).write_text(json.dumps({"overrides": overrides}))
    return folder, overrides


def test_a_run_trained_under_another_default_is_a_mismatch_naming_the_key(tmp_path, capsys):
    """Same overrides, but a default in conf/ changed since: the run is not today's, and the message says why."""
    folder, overrides = finished_run(tmp_path / "runs")
    now = compose_config(overrides).ppo.vf_coef
    save_config(folder, overrides, {"ppo.vf_coef": now + 0.1})
    assert quality.run_state(folder, overrides, force=False) == "mismatch"
    with pytest.raises(SystemExit, match=rf"ppo\.vf_coef: run {now + 0.1}, now {now}") as stop:
        quality.main([*ONE_RUN, "--out", str(tmp_path / "runs"), "--dry-run"])
    assert str(folder) in str(stop.value) and "--force" in str(stop.value)
    # Accepted by the user, the key (or a prefix of it, not a partial name) no longer counts.
    assert quality.run_state(folder, overrides, force=False, accepted=["ppo.vf_coef"]) == "done"
    assert quality.run_state(folder, overrides, force=False, accepted=["ppo.vf"]) == "mismatch"
    assert (
        quality.main([*ONE_RUN, "--out", str(tmp_path / "runs"), "--dry-run", "--accept-drift", "ppo"]) == 0
    )
    assert f"# done: {folder}" in capsys.readouterr().out
    # Unfinished, it starts over instead of resuming under the old default.
    (folder / "eval.json").unlink()
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert quality.run_state(folder, overrides, force=False) == "fresh"


def test_a_run_trained_under_today_s_config_is_done_whatever_its_folder(tmp_path, capsys):
    folder, overrides = finished_run(tmp_path / "runs")
    save_config(folder, overrides)  # paths.output_dir is this folder, not the planned run's placeholder
    assert quality.run_state(folder, overrides, force=False) == "done"
    assert quality.config_drift(folder, overrides) == []
    assert quality.main([*ONE_RUN, "--out", str(tmp_path / "runs"), "--dry-run"]) == 0
    assert f"# done: {folder}" in capsys.readouterr().out


def test_a_run_from_before_a_key_was_added_is_today_s_only_at_the_value_that_trains_as_it_did(tmp_path):
    """ppo.kl.placement came after the runs on disk: absent from a saved config, it counts as "reward"."""
    folder, overrides = finished_run(tmp_path / "runs")
    save_config(folder, overrides)
    path = folder / ".hydra" / "config.yaml"
    saved = OmegaConf.to_container(OmegaConf.load(path))
    del saved["ppo"]["kl"]["placement"]  # as a run trained before the key existed saved it
    OmegaConf.save(OmegaConf.create(saved), path)
    assert quality.config_drift(folder, overrides) == []
    assert quality.run_state(folder, overrides, force=False) == "done"
    loss = [*overrides, "ppo.kl.placement=loss", "ppo.kl.estimator=k3"]
    assert quality.config_drift(folder, loss) == [
        'ppo.kl.estimator: run "k1", now "k3"',
        'ppo.kl.placement: run "reward", now "loss"',
    ]


def test_a_run_without_its_saved_config_is_a_mismatch(tmp_path):
    folder, overrides = finished_run(tmp_path / "runs")
    assert quality.run_state(folder, overrides, force=False) == "mismatch"
    with pytest.raises(SystemExit, match=r"no \.hydra/config\.yaml"):
        quality.main([*ONE_RUN, "--out", str(tmp_path / "runs"), "--dry-run"])


def fake_train(calls, fail=()):
    """A stand-in for subprocess.run of train.py: writes eval.json unless the run is in ``fail``."""
    real = subprocess.run

    def run(cmd, **kwargs):
        if "train.py" not in cmd:
            return real(cmd, **kwargs)
        calls.append(cmd)
        folder = Path(next(a for a in cmd if a.startswith("hydra.run.dir=")).split("=", 1)[1])
        save_config(folder, [a for a in cmd[2:] if not a.startswith("hydra.")])
        algorithm = next(a for a in cmd if a.startswith("algorithm=")).split("=", 1)[1]
        if any(f in str(folder) for f in fail):
            kwargs["stdout"].write("Traceback: boom\n")
            return subprocess.CompletedProcess(cmd, 1)
        write_run(folder, [0.3, 0.3], algorithm=algorithm)
        return subprocess.CompletedProcess(cmd, 0)

    return run


def test_done_runs_are_skipped_failures_reported_and_exit_non_zero(tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs"
    args = [
        *report_args(tmp_path),
        "--seeds",
        "0,1",
        "--no-fronts",
        "--iterations",
        "7",
        "--jobs",  # one at a time: the fake composes configs with Hydra, whose global state is not thread-safe
        "1",
        "--extra",
        "debug=tiny",
    ]
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", fake_train(calls, fail=["morlhf/uniform/seed1"]))
    assert quality.main(args) == 1
    assert len(calls) == 4
    assert all(
        "iterations=7" in c and c[-2] == "debug=tiny" for c in calls
    )  # --extra last, before the folder
    log = out / "sentiment_length" / "morlhf" / "uniform" / "seed1" / "bench.log"
    assert "boom" in log.read_text() and str(log) in capsys.readouterr().err
    record = json.loads((log.parent / quality.RUN_RECORD).read_text())
    assert record["returncode"] == 1 and record["attempts"] == 1

    calls.clear()  # a second invocation trains only the failed run, from its checkpoint
    (log.parent / "checkpoints").mkdir()
    (log.parent / "checkpoints" / "last.ckpt").write_bytes(b"")
    monkeypatch.setattr(subprocess, "run", fake_train(calls))
    assert quality.main(args) == 0
    assert [c[-2:] for c in calls] == [["ckpt_path=last", f"hydra.run.dir={log.parent}"]]
    record = json.loads((log.parent / quality.RUN_RECORD).read_text())
    assert record["returncode"] == 0 and record["attempts"] == 2 and "boom" in log.read_text()
    calls.clear()
    assert quality.main([*args, "--force"]) == 0  # retrains all four in emptied folders
    assert len(calls) == 4 and not any("ckpt_path=last" in c for c in calls)
    assert "boom" not in log.read_text() and not (log.parent / "checkpoints").exists()
    with pytest.raises(SystemExit, match="iterations: run 7, now 9"):
        quality.main([*args[:-4], "--iterations", "9"])


# ------------------------------------------------------------------------------------- real smoke
def test_real_tiny_runs_through_the_benchmark(tmp_path):
    """Two tiny-model runs (a uniform one and a front point) as subprocesses, then the report."""
    results = tmp_path / "results"
    cmd = [sys.executable, "benchmarks/quality.py", "--quick", "--jobs", "2", "--algorithms", "pama",
           "--front-algorithms", "pama", "--front-preferences", "0.5,0.5", "0.8,0.2", "--iterations", "2",
           "--batch-size", "4", "--max-new-tokens", "4", "--eval-every", "2", "--out", str(tmp_path / "runs"),
           "--results", str(results), "--extra", "debug=tiny", "data.val_size=4"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    payload = json.loads((results / "quality_quick.json").read_text())
    assert [r["status"] for r in payload["runs"]] == ["done", "done"]
    assert all(r["overrides"][-1] == "data.val_size=4" and r["wall_s"] > 0 for r in payload["runs"])
    assert payload["runs"][1]["eval"]["preference"] == pytest.approx([0.8, 0.2])
    assert payload["fronts"]["metrics"][0]["runs"] == 2 and (results / "quality_quick_front.png").is_file()
    paired = payload["tasks"]["sentiment_length"]["verdicts"]["paired"]  # from the runs' responses files
    assert paired["holds"] is not None and len(paired["seeds"]) == 1
    assert paired["seeds"][0]["length"]["n"] == 4
    assert "2 runs: 0 done already, 2 to train" in done.stdout
    # The configs Hydra saved for the real runs are today's: a rerun reuses both.
    again = subprocess.run([*cmd, "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "2 runs: 2 done already, 0 to train" in again.stdout, again.stderr[
        -3000:
    ]


def test_later_runs_of_a_task_take_the_first_run_s_reference_evaluation(tmp_path):
    """One job: the second run finds the first's reference evaluation, made under its settings, and takes it."""
    out = tmp_path / "runs"
    cmd = [sys.executable, "benchmarks/quality.py", "--jobs", "1", "--tasks", "sentiment_length", "--algorithms",
           "pama,morlhf", "--seeds", "0", "--no-fronts", "--iterations", "1", "--batch-size", "4",
           "--max-new-tokens", "4", "--eval-every", "1", "--out", str(out), "--results", str(tmp_path / "results"),
           "--extra", "debug=tiny", "data.val_size=4"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    first, second = (out / "sentiment_length" / a / "uniform" / "seed0" for a in ("pama", "morlhf"))
    original = json.loads((first / "reference" / "eval.json").read_text())
    taken = json.loads((second / "reference" / "eval.json").read_text())
    assert "shared_from" not in original and "reference_key" in original
    assert taken == {**original, "shared_from": str((first / "reference" / "eval.json").resolve())}
    assert json.loads((second / quality.RUN_RECORD).read_text())["reference_from"] == str(
        first / "reference" / "eval.json"
    )
    assert "reference_from" not in json.loads((first / quality.RUN_RECORD).read_text())
    # eval.reference is the folder's own business: both runs are today's.
    again = subprocess.run([*cmd, "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "2 runs: 2 done already, 0 to train" in again.stdout, again.stderr[
        -3000:
    ]


def test_shared_reference_takes_only_an_original_evaluation_with_the_run_s_key(tmp_path):
    def reference(run: str, record: dict) -> Path:
        path = tmp_path / run / "uniform" / "seed0" / "reference" / "eval.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(record))
        return path

    reference("a_other", {"reference_key": "other"})
    reference("b_copy", {"reference_key": "k", "shared_from": "elsewhere"})
    assert quality.shared_reference(tmp_path, "k") is None
    (tmp_path / "c_broken" / "uniform" / "seed0" / "reference").mkdir(parents=True)
    (tmp_path / "c_broken" / "uniform" / "seed0" / "reference" / "eval.json").write_text("{")
    original = reference("d_original", {"reference_key": "k"})
    assert quality.shared_reference(tmp_path, "k") == original
    args = quality.parse_args([*ONE_RUN, "--no-shared-reference"])
    (run,), _ = quality.plan_runs(args)
    assert quality.reference_finder(run, args)() is None


def test_a_report_of_fewer_runs_never_replaces_a_fuller_one(tmp_path, capsys):
    import datetime

    now = datetime.datetime(2026, 11, 30, 6, 10, 5)
    assert quality.result_name(tmp_path, "quality", ["a"], now) == "quality"  # nothing there yet
    (tmp_path / "quality.json").write_text(json.dumps({"runs": [{"run_dir": "a"}, {"run_dir": "b"}]}))
    assert quality.result_name(tmp_path, "quality", ["a", "b"], now) == "quality"  # the same runs: replaced
    assert quality.result_name(tmp_path, "quality", ["b", "a", "c"], now) == "quality"  # more runs: replaced
    assert quality.result_name(tmp_path, "quality", ["a"], now) == "quality_20261130-061005"
    assert "reports 1 run(s) this report does not cover" in capsys.readouterr().out
    (tmp_path / "quality.json").write_text("{not json")  # unreadable: nothing to keep
    assert quality.result_name(tmp_path, "quality", ["a"], now) == "quality"


def test_report_only_of_a_subset_keeps_the_fuller_report(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    full = {"runs": [{"run_dir": str(tmp_path / "runs" / "elsewhere")}], "markdown": "the full report"}
    (results / "quality.json").write_text(json.dumps(full))
    quality.main([*ONE_RUN, "--out", str(tmp_path / "runs"), "--results", str(results), "--report-only"])
    assert json.loads((results / "quality.json").read_text()) == full
    (written,) = [p for p in results.glob("quality_*.json")]
    assert json.loads(written.read_text())["runs"][0]["run_dir"].endswith("seed0")


def test_name_sets_the_report_stem_and_rejects_a_path(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    full = {"runs": [{"run_dir": str(tmp_path / "runs" / "elsewhere")}], "markdown": "the full report"}
    (results / "quality.json").write_text(json.dumps(full))
    argv = [*ONE_RUN, "--out", str(tmp_path / "runs"), "--results", str(results), "--report-only"]
    quality.main([*argv, "--name", "quality_no_noon"])
    assert json.loads((results / "quality.json").read_text()) == full  # the default stem is left alone
    written = json.loads((results / "quality_no_noon.json").read_text())
    assert written["runs"][0]["run_dir"].endswith("seed0")
    assert sorted(p.name for p in results.iterdir()) == ["quality.json", "quality_no_noon.json"]
    assert quality.parse_args(["--quick", "--name", "mine"]).name == "mine"
    for bad in ("../escape", "a/b", "", ".hidden", "-x", "two words"):
        with pytest.raises(SystemExit):
            quality.parse_args(["--name", bad])


def test_a_resumed_run_with_its_own_reference_evaluation_is_given_no_other(tmp_path, monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(
        subprocess, "run", lambda cmd, **kw: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0)
    )
    other = tmp_path / "other.json"
    folder = tmp_path / "run"
    (folder / "reference").mkdir(parents=True)
    env = {"OMP_NUM_THREADS": "1"}
    record = quality.execute(
        folder, ["algorithm=pama"], [], True, env, reference=lambda: other
    )  # still has none
    assert "reference_from" in record and f"eval.reference={other}" in calls[-1]
    (folder / "reference" / "eval.json").write_text("{}")
    record = quality.execute(folder, ["algorithm=pama"], [], True, env, reference=lambda: other)
    assert "reference_from" not in record and not any(a.startswith("eval.reference=") for a in calls[-1])
    record = quality.execute(
        folder, ["algorithm=pama"], [], False, env, reference=lambda: other
    )  # fresh: asks
    assert record["reference_from"] == str(other)
