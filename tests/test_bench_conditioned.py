"""benchmarks/conditioned.py: the off-grid check, the report on synthetic runs, the plan and --dry-run.

The benchmarks are scripts, not a package, so the module is loaded from its file.
"""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from test_bench_quality import OBJECTIVES, eval_record, save_config, write_run

ROOT = Path(__file__).resolve().parents[1]


def load_conditioned():
    spec = importlib.util.spec_from_file_location("bench_conditioned", ROOT / "benchmarks" / "conditioned.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


conditioned = load_conditioned()
quality = conditioned.quality


# ---------------------------------------------------------------------------------- off-grid check
GRID = {(0.1, 0.9): [0.0, 1.0], (0.3, 0.7): [0.2, 0.8], (0.5, 0.5): [0.4, 0.6]}


def test_between_neighbours_hand_cases():
    off = {(0.2, 0.8): [0.1, 0.9], (0.4, 0.6): [0.45, 0.7]}
    check = conditioned.between_neighbours(GRID, off, OBJECTIVES, tolerance=0.05)
    first, second = check["points"]
    assert first["neighbours"] == [[0.1, 0.9], [0.3, 0.7]] and first["between"] and first["between_strict"]
    # (0.4, 0.6): neighbours (0.3, 0.7) and (0.5, 0.5); sentiment 0.45 is 0.05 above [0.2, 0.4], and
    # the tolerance is 0.05 x the grid's sentiment range 0.4 = 0.02; length 0.7 is inside [0.6, 0.8].
    assert second["neighbours"] == [[0.3, 0.7], [0.5, 0.5]]
    assert second["objectives"]["sentiment"] == pytest.approx(
        {"reward": 0.45, "low": 0.2, "high": 0.4, "outside": 0.05, "between": False}
    )
    assert second["objectives"]["length"]["outside"] == 0 and second["objectives"]["length"]["between"]
    assert not second["between"]
    assert check["tolerance"] == pytest.approx({"sentiment": 0.02, "length": 0.02})
    assert (check["fraction"], check["fraction_strict"]) == (0.5, 0.5)
    # A wider tolerance (0.2 x 0.4 = 0.08 > 0.05) takes it in; the strict fraction stays.
    wide = conditioned.between_neighbours(GRID, off, OBJECTIVES, tolerance=0.2)
    assert (wide["fraction"], wide["fraction_strict"]) == (1.0, 0.5)


def test_between_neighbours_falling_rewards_and_missing_side():
    falling = {(0.1, 0.9): [0.5, 0.0], (0.9, 0.1): [0.1, 0.0]}  # the interval is [min, max] either way
    check = conditioned.between_neighbours(falling, {(0.5, 0.5): [0.3, 0.0]}, OBJECTIVES, 0.0)
    assert check["points"][0]["neighbours"] == [[0.1, 0.9], [0.9, 0.1]] and check["fraction"] == 1.0
    with pytest.raises(ValueError, match="no on-grid neighbour"):
        conditioned.between_neighbours(GRID, {(0.7, 0.3): [0.5, 0.5]}, OBJECTIVES, 0.05)


def test_controllability_is_spearman_of_weight_and_reward():
    monotone = {(0.1, 0.9): [0.1, 0.5], (0.5, 0.5): [0.3, 0.3], (0.9, 0.1): [0.5, 0.1]}
    assert conditioned.controllability(monotone, OBJECTIVES) == pytest.approx({"sentiment": 1, "length": 1})
    swapped = {
        (0.1 * i, 1 - 0.1 * i): [r, 1.0] for i, r in zip(range(1, 6), [0.1, 0.3, 0.2, 0.4, 0.5], strict=True)
    }
    control = conditioned.controllability(swapped, OBJECTIVES)
    assert control["sentiment"] == pytest.approx(0.9)  # one adjacent swap of five: 1 - 6 * 2 / 120
    assert math.isnan(control["length"])  # constant rewards: undefined


def test_preferences_are_checked():
    assert conditioned.midpoints(quality.FRONT_PREFERENCES) == [
        (0.2, 0.8),
        (0.4, 0.6),
        (0.6, 0.4),
        (0.8, 0.2),
    ]
    assert conditioned.check_preferences(quality.FRONT_PREFERENCES, [(0.2, 0.8)]) is None
    assert "multiples of 0.01" in conditioned.check_preferences([(0.125, 0.875), (0.5, 0.5)], [])
    assert "strictly between" in conditioned.check_preferences(quality.FRONT_PREFERENCES, [(0.95, 0.05)])
    assert "strictly between" in conditioned.check_preferences(quality.FRONT_PREFERENCES, [(0.3, 0.7)])
    with pytest.raises(SystemExit):
        conditioned.parse_args(["--off-grid", "0.05,0.95"])


# ------------------------------------------------------------------------------ report from files
SWEEP = [[0.1, 0.5], [0.2, 0.4], [0.3, 0.3], [0.4, 0.2], [0.5, 0.1]]  # HV from (0, 0): 0.15
PAMA = [[0.95 * a, 0.95 * b] for a, b in SWEEP]  # HV 0.15 x 0.95^2 = 0.135375: 0.9025x the sweep's
MORLHF = [[0.5 * a, 0.5 * b] for a, b in SWEEP]  # HV 0.15 / 4: 0.25x
# Off-grid points of conditioned PAMA: three between their neighbours; (0.8, 0.2) has sentiment 0.6,
# 0.125 above its neighbours' [0.38, 0.475], beyond the tolerance 0.05 x (0.475 - 0.095) = 0.019.
PAMA_OFF = {
    (0.2, 0.8): [0.14, 0.43],
    (0.4, 0.6): [0.24, 0.33],
    (0.6, 0.4): [0.33, 0.24],
    (0.8, 0.2): [0.6, 0.15],
}


def record(folder: Path, overrides: list[str], wall_s: float, threads: str = "1") -> None:
    (folder / quality.RUN_RECORD).write_text(
        json.dumps({"overrides": overrides, "wall_s": wall_s, "threads": threads, "returncode": 0})
    )


def write_conditioned(out: Path, args, algorithm: str, grid: list, off: dict, wall_s: float) -> None:
    run = quality.Run(conditioned.TASK, algorithm, None, 0, conditioned.CONDITIONING)
    folder = run.folder(out)
    write_run(folder, [0.3, 0.3], algorithm=f"{algorithm}_prompt")
    record(folder, quality.run_overrides(run, quality.budget_overrides(args, run.task)), wall_s)
    points = {**dict(zip(quality.FRONT_PREFERENCES, grid, strict=True)), **off}
    for preference, means in points.items():
        path = folder / "preferences" / "-".join(f"{w:g}" for w in preference) / "eval.json"
        path.parent.mkdir(parents=True)
        path.write_text(
            json.dumps(eval_record(means, algorithm=f"{algorithm}_prompt", preference=preference))
        )


def write_benchmark(out: Path) -> None:
    args = conditioned.parse_args(["--out", str(out)])
    _, sweep = conditioned.plan_runs(args)
    for run, means in zip(sweep, SWEEP, strict=True):
        write_run(run.folder(out), means, preference=run.preference or (0.5, 0.5))
        record(run.folder(out), quality.run_overrides(run, quality.budget_overrides(args, run.task)), 100.0)
    write_conditioned(out, args, "pama", PAMA, PAMA_OFF, 120.0)
    between = [
        [(a + c) / 2 for a, c in zip(p, q, strict=True)] for p, q in zip(MORLHF, MORLHF[1:], strict=False)
    ]
    morlhf_off = dict(zip(conditioned.midpoints(quality.FRONT_PREFERENCES), between, strict=True))
    write_conditioned(out, args, "morlhf", MORLHF, morlhf_off, 110.0)


def test_report_only_measures_the_fronts_the_target_and_the_off_grid_points(tmp_path, capsys):
    write_benchmark(tmp_path / "runs")
    argv = ["--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--report-only"]
    assert conditioned.main(argv) == 0
    payload = json.loads((tmp_path / "results" / "conditioned.json").read_text())
    assert (tmp_path / "results" / "conditioned_front.png").stat().st_size > 10_000
    fronts = payload["fronts"]["fronts"]
    assert payload["fronts"]["reference_point"] == [0.0, 0.0]
    sweep, pama, morlhf = fronts["pama"], fronts["pama_prompt"], fronts["morlhf_prompt"]
    assert [f["points"] for f in (sweep, pama, morlhf)] == [5, 5, 5]
    assert sweep["hypervolume"] == pytest.approx(0.15) and sweep["igd_plus"] == pytest.approx(0)
    assert pama["hypervolume"] == pytest.approx(0.135375) and pama["hv_ratio"] == pytest.approx(0.9025)
    assert morlhf["hv_ratio"] == pytest.approx(0.25)
    # Each of PAMA's points is 0.05 x the sweep point's norm short of it, and nearest to it.
    assert pama["igd_plus"] == pytest.approx(statistics.fmean(0.05 * math.hypot(*z) for z in SWEEP))
    assert pama["controllability"] == pytest.approx({"sentiment": 1.0, "length": 1.0})
    assert sweep["compute"] == {"runs": 5, "train_wall_s": 500.0, "samples": 5 * 12 * 16, "threads": ["1"]}
    assert pama["compute_ratio_samples"] == pytest.approx(0.2) and pama[
        "compute_ratio_wall"
    ] == pytest.approx(0.24)
    assert pama["target"] == {
        "met": True,
        "parts": {"hypervolume": True, "compute": True, "controllability": True},
    }
    assert morlhf["target"]["met"] is False and morlhf["target"]["parts"]["hypervolume"] is False
    off = pama["off_grid"]
    assert off["fraction"] == 0.75 and off["fraction_strict"] == 0.75
    assert [p["between"] for p in off["points"]] == [True, True, True, False]
    assert off["tolerance"]["sentiment"] == pytest.approx(0.05 * (0.475 - 0.095))
    assert morlhf["off_grid"]["fraction"] == 1.0
    assert {r["status"] for r in payload["runs"]} == {"done"} and len(payload["runs"]) == 7
    printed = capsys.readouterr().out
    assert "| pama conditioned | 5 | 0.1354 | 0.902x |" in printed
    assert "pama conditioned: target" in printed and "**met**" in printed and "**not met**" in printed
    assert "75% of 4 points" in printed and "Off-grid means off the evaluation grid" in printed


def test_report_without_the_conditioned_evaluations_is_partial_and_exits_non_zero(tmp_path, capsys):
    write_benchmark(tmp_path / "runs")
    pama = tmp_path / "runs" / "sentiment_length" / "pama" / "conditioned" / "seed0"
    (pama / "preferences" / "0.7-0.3" / "eval.json").unlink()
    argv = ["--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--report-only"]
    assert conditioned.main(argv) == 1
    payload = json.loads((tmp_path / "results" / "conditioned.json").read_text())
    fronts = payload["fronts"]["fronts"]
    assert fronts["pama_prompt"]["points"] == 4 and fronts["pama_prompt"]["hv_ratio"] is None
    assert fronts["pama_prompt"]["target"]["met"] is None and "off_grid" not in fronts["pama_prompt"]
    assert payload["missing_evaluations"] == {str(pama): [[0.7, 0.3]]}
    assert "not evaluated at every preference" in capsys.readouterr().err
    # A sweep run missing: no ratio to the four others' front.
    (tmp_path / "runs" / "sentiment_length" / "pama" / "w0.9-0.1" / "seed0" / "eval.json").unlink()
    assert conditioned.main(argv) == 1
    fronts = json.loads((tmp_path / "results" / "conditioned.json").read_text())["fronts"]["fronts"]
    assert fronts["pama"]["points"] == 4 and fronts["morlhf_prompt"]["points"] == 5
    assert fronts["morlhf_prompt"]["hv_ratio"] is None and fronts["morlhf_prompt"]["target"]["met"] is None


# ---------------------------------------------------------------------------------- orchestration
def test_the_sweep_is_quality_py_s_front_runs():
    args = conditioned.parse_args([])
    runs, sweep = conditioned.plan_runs(args)
    _, fronts = quality.plan_runs(quality.parse_args([]))
    budget = quality.budget_overrides(args)
    assert {(r.folder(args.out), tuple(quality.run_overrides(r, budget))) for r in sweep} == {
        (r.folder(args.out), tuple(quality.run_overrides(r, budget))) for r in fronts if r.algorithm == "pama"
    }
    assert [r.folder(args.out).relative_to(args.out).as_posix() for r in runs] == [
        "sentiment_length/pama/conditioned/seed0",
        "sentiment_length/morlhf/conditioned/seed0",
    ]
    assert "conditioning=prompt" in quality.run_overrides(runs[0], budget)
    quick = conditioned.parse_args(["--quick"])
    assert quick.out.name == "quality_quick" and quick.preferences == quality.QUICK["front_preferences"]
    assert quick.off_grid == [(0.35, 0.65), (0.65, 0.35)] and quick.iterations == quality.QUICK["iterations"]


def test_dry_run_prints_training_and_evaluation_of_what_is_missing(tmp_path, capsys):
    out = tmp_path / "runs"
    args = conditioned.parse_args(["--out", str(out)])
    runs, sweep = conditioned.plan_runs(args)
    done = sweep[0].folder(out)  # one sweep run finished under the same overrides (by quality.py, say)
    write_run(done, SWEEP[0], preference=sweep[0].preference)
    record(done, quality.run_overrides(sweep[0], quality.budget_overrides(args, sweep[0].task)), 100.0)
    save_config(done, quality.run_overrides(sweep[0], quality.budget_overrides(args, sweep[0].task)))
    half = runs[1].folder(out) / "preferences" / "0.1-0.9" / "eval.json"  # MORLHF evaluated at one point
    half.parent.mkdir(parents=True)
    half.write_text(json.dumps(eval_record([0.1, 0.1], algorithm="morlhf_prompt", preference=(0.1, 0.9))))
    assert conditioned.main(["--out", str(out), "--dry-run", "--jobs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "7 runs: 1 done already, 6 to train (2 at a time" in printed
    assert f"# done: {done}" in printed
    trains = [line for line in printed.splitlines() if " train.py " in line]
    assert (
        len(trains) == 6
        and sum("conditioning=prompt conditioning.eval_grid_steps=null" in t for t in trains) == 2
    )
    evals = [line for line in printed.splitlines() if " evaluate.py --multirun " in line]
    all_nine = "'preference=[0.1,0.9],[0.3,0.7],[0.5,0.5],[0.7,0.3],[0.9,0.1],[0.2,0.8],[0.4,0.6],[0.6,0.4],[0.8,0.2]'"
    assert len(evals) == 2 and all_nine in evals[0] and "'preference=[0.3,0.7]," in evals[1]
    assert f"hydra.sweep.dir={runs[0].folder(out)}/.evaluate/multirun" in evals[0]
    assert not (tmp_path / "results").exists() and not runs[0].folder(out).exists()


@pytest.mark.slow
def test_real_tiny_runs_through_the_benchmark(tmp_path):
    """Tiny-model runs as subprocesses: a conditioned PAMA run, a 2-run sweep, one real evaluate.py multirun."""
    results = tmp_path / "results"
    cmd = [sys.executable, "benchmarks/conditioned.py", "--jobs", "2", "--conditioned-algorithms", "pama",
           "--preferences", "0.2,0.8", "0.8,0.2", "--off-grid", "0.5,0.5", "--iterations", "2", "--batch-size", "4",
           "--max-new-tokens", "4", "--eval-every", "2", "--out", str(tmp_path / "runs"), "--results", str(results),
           "--extra", "debug=tiny", "data.val_size=4"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    payload = json.loads((results / "conditioned.json").read_text())
    assert [r["status"] for r in payload["runs"]] == ["done"] * 3 and payload["missing_evaluations"] == {}
    pama = payload["fronts"]["fronts"]["pama_prompt"]
    assert pama["points"] == 2 and pama["compute_ratio_samples"] == pytest.approx(0.5)
    assert [p["preference"] for p in pama["off_grid"]["points"]] == [[0.5, 0.5]]
    folder = Path(payload["runs"][0]["run_dir"])
    assert payload["runs"][0]["evaluation"]["returncode"] == 0
    assert sorted(p.name for p in (folder / "preferences").iterdir()) == ["0.2-0.8", "0.5-0.5", "0.8-0.2"]
