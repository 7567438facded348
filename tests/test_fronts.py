"""The fronts command and its collection functions on a synthetic sweep folder.

`write_fake_sweep` is also used by test_notebook.py.
"""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pama_lit.fronts import (
    FrontsError,
    front_metrics,
    hypervolume_history,
    load_history,
    load_sweep,
    plot_front,
    reference_point,
)
from pama_lit.fronts.__main__ import main

OBJECTIVES = ["sentiment", "length"]
PREFERENCES = [[0.1, 0.9], [0.3, 0.7], [0.5, 0.5], [0.7, 0.3], [0.9, 0.1]]
# pama lands on an evenly spaced front; morlhf sits 0.05 inside it and its last run (0.1, 0.1) is
# dominated by its own others. The reference policy scores (0, 0).
MEANS = {
    "pama": [[0.1, 0.5], [0.2, 0.4], [0.3, 0.3], [0.4, 0.2], [0.5, 0.1]],
    "morlhf": [[0.05, 0.45], [0.15, 0.35], [0.25, 0.25], [0.35, 0.15], [0.1, 0.1]],
}
# From ref (0,0), slabs of width 0.1 under the staircase: pama 0.1*(0.1+0.2+0.3+0.4+0.5) = 0.15;
# morlhf 0.05*0.1 + 0.15*0.1 + 0.25*0.1 + 0.35*0.15 = 0.0975.
HYPERVOLUME = {"pama": 0.15, "morlhf": 0.0975}
# The union front is pama's five points. morlhf falls short of the first four by (0.05, 0.05)
# -> d+ = 0.0707107 each, and of (0.5, 0.1) best by (0.35, 0.15) -> 0.15:
# IGD+ = (4 * 0.0707107 + 0.15) / 5 = 0.0865685; additive epsilon = 0.15.
IGD_PLUS = {"pama": 0.0, "morlhf": (4 * 0.05 * 2**0.5 + 0.15) / 5}
EPSILON = {"pama": 0.0, "morlhf": 0.15}
ITERATIONS = [0, 10, 20]


def eval_object(algorithm, means, preference=None, policy="trained", iteration=20, objectives=None):
    objectives = objectives or OBJECTIVES
    return {
        "format": "pama_lit.eval/1",
        "run_dir": "/elsewhere/on/the/training/machine",
        "algorithm": algorithm,
        "objectives": objectives,
        "preference": preference,
        "policy": policy,
        "iteration": iteration,
        "seed": 0,
        "num_prompts": 64,
        "rewards": {
            o: {"mean": m, "std": 0.1, "ci95": [m - 0.02, m + 0.02]}
            for o, m in zip(objectives, means, strict=True)
        },
        "kl_ref": 10 * sum(means),
        "response_length": 30.0,
        "samples": [
            {
                "prompt": f"prompt {j}",
                "response": f"{algorithm} {preference} response {j}",
                "scores": dict(zip(objectives, means, strict=True)),
            }
            for j in range(3)
        ],
    }


def write_fake_sweep(root: Path, reference: bool = True, malformed: bool = True) -> Path:
    """A Hydra-like multirun folder: 2 algorithms x 5 preferences with eval.json and
    evaluations.jsonl (iterations 0, 10, 20 moving linearly from the reference's (0, 0) to the
    final means), a reference-policy eval.json, and one truncated eval.json of a crashed run."""
    sweep = root / "multirun" / "2026-11-27" / "10-00-00"
    member = 0
    for algorithm, points in MEANS.items():
        for preference, means in zip(PREFERENCES, points, strict=True):
            run = sweep / str(member)
            run.mkdir(parents=True)
            (run / "eval.json").write_text(json.dumps(eval_object(algorithm, means, preference)))
            lines = [
                eval_object(algorithm, [m * it / ITERATIONS[-1] for m in means], preference, iteration=it)
                for it in ITERATIONS
            ]
            (run / "evaluations.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
            member += 1
    if malformed:
        (sweep / str(member)).mkdir()
        (sweep / str(member) / "eval.json").write_text('{"format": "pama_lit.eval/1", "algorithm": "pa')
    if reference:
        (root / "multirun" / "reference").mkdir()
        (root / "multirun" / "reference" / "eval.json").write_text(
            json.dumps(eval_object("reference", [0.0, 0.0], policy="reference", iteration=0))
        )
    return root / "multirun"


@pytest.fixture
def sweep_dir(tmp_path):
    return write_fake_sweep(tmp_path / "results")


def metrics_from_stdout(stdout: str) -> dict[str, list[float]]:
    """{algorithm: [runs, front_size, hypervolume, igd_plus, additive_epsilon, spacing]}."""
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in MEANS:
            rows[parts[0]] = [float(v) for v in parts[1:]]
    return rows


def test_load_sweep_reads_runs_and_skips_malformed(sweep_dir, caplog):
    with caplog.at_level(logging.WARNING):
        sweep = load_sweep([sweep_dir], progress=False)
    assert sweep.objectives == ("sentiment", "length")
    assert sweep.algorithms == ["morlhf", "pama"]
    assert len(sweep.runs) == 10 and len(sweep.records) == 10
    assert len(sweep.references) == 1
    [(skipped, reason)] = sweep.skipped
    assert skipped.parent.name == "10" and "invalid JSON" in reason
    assert str(skipped) in caplog.text
    np.testing.assert_allclose(sweep.points("pama"), MEANS["pama"])


def test_overlapping_folders_count_each_run_once(sweep_dir):
    sweep = load_sweep([sweep_dir, sweep_dir / "2026-11-27"], progress=False)
    assert len(sweep.runs) == 10


def test_front_metrics_match_hand_values(sweep_dir):
    sweep = load_sweep([sweep_dir], progress=False)
    ref, source = reference_point(sweep)
    np.testing.assert_allclose(ref, [0.0, 0.0])
    assert "reference policy" in source
    metrics = front_metrics(sweep, ref).set_index("algorithm")
    for algorithm in MEANS:
        assert metrics.at[algorithm, "runs"] == 5
        assert metrics.at[algorithm, "hypervolume"] == pytest.approx(HYPERVOLUME[algorithm])
        assert metrics.at[algorithm, "igd_plus"] == pytest.approx(IGD_PLUS[algorithm])
        assert metrics.at[algorithm, "additive_epsilon"] == pytest.approx(EPSILON[algorithm], abs=1e-12)
    assert metrics.at["morlhf", "front_size"] == 4
    # Both fronts are evenly spaced: every nearest L1 distance is 0.2.
    assert metrics.at["pama", "spacing"] == pytest.approx(0.0, abs=1e-12)


def test_reference_point_sources(sweep_dir, tmp_path):
    sweep = load_sweep([sweep_dir], progress=False)
    ref, source = reference_point(sweep, [0.1, 0.1])
    assert source == "given explicitly"
    # From (0.1, 0.1) the pama staircase keeps slabs [0.1,0.2] x 0.3, [0.2,0.3] x 0.2, [0.3,0.4] x 0.1.
    assert front_metrics(sweep, ref).set_index("algorithm").at["pama", "hypervolume"] == pytest.approx(0.06)
    ref, source = reference_point(sweep, shift=0.1)
    np.testing.assert_allclose(ref, [-0.1, -0.1])
    assert "shifted down by 0.1" in source
    with pytest.raises(FrontsError, match="sentiment, length"):
        reference_point(sweep, [0.0])

    no_reference = load_sweep([write_fake_sweep(tmp_path / "noref", reference=False)], progress=False)
    ref, source = reference_point(no_reference)
    np.testing.assert_allclose(ref, [0.05, 0.1])
    assert "minimum" in source


def test_history_hypervolume_per_iteration(sweep_dir):
    sweep = load_sweep([sweep_dir], progress=False)
    history = load_history(sweep)
    assert len(history) == 10 * len(ITERATIONS)
    hv = hypervolume_history(history, sweep.objectives, [0.0, 0.0])
    pama = hv[hv["algorithm"] == "pama"]
    assert pama["iteration"].tolist() == ITERATIONS
    assert pama["runs"].tolist() == [5, 5, 5]
    # Halving every coordinate quarters the area.
    np.testing.assert_allclose(pama["hypervolume"], [0.0, 0.15 / 4, 0.15])


def test_history_skips_malformed_lines(sweep_dir, caplog):
    sweep = load_sweep([sweep_dir], progress=False)
    path = Path(sweep.runs.at[0, "run_dir"]) / "evaluations.jsonl"
    path.write_text(path.read_text() + "{not json\n")
    with caplog.at_level(logging.WARNING):
        history = load_history(sweep)
    assert len(history) == 10 * len(ITERATIONS)
    assert f"line 4 of {path}" in caplog.text


def test_cli_writes_tables_plot_and_prints_hypervolumes(sweep_dir, tmp_path, capsys):
    out = tmp_path / "fronts"
    assert main([str(sweep_dir), "--out", str(out), "--no-progress"]) == 0
    stdout = capsys.readouterr().out

    printed = metrics_from_stdout(stdout)
    for algorithm in MEANS:
        runs, _, hv, igd, eps, _ = printed[algorithm]
        assert runs == 5
        assert hv == pytest.approx(HYPERVOLUME[algorithm], rel=1e-5)
        assert igd == pytest.approx(IGD_PLUS[algorithm], rel=1e-5, abs=1e-9)
        assert eps == pytest.approx(EPSILON[algorithm], rel=1e-5, abs=1e-9)
    assert "skipped 1 malformed file(s)" in stdout
    assert "reference point: sentiment=0, length=0 (reference policy scores from" in stdout

    combined = pd.read_csv(out / "runs_all.csv")
    assert len(combined) == 10
    for column in [
        "run_dir",
        "algorithm",
        "preference",
        "sentiment_mean",
        "sentiment_ci95_low",
        "sentiment_ci95_high",
        "length_mean",
        "kl_ref",
        "response_length",
        "non_dominated",
    ]:
        assert column in combined.columns
    assert combined["non_dominated_all"].tolist() == [a == "pama" for a in combined["algorithm"]]
    morlhf = pd.read_csv(out / "runs_morlhf.csv")
    assert morlhf["non_dominated"].tolist() == [True, True, True, True, False]
    assert json.loads(morlhf.at[4, "preference"]) == PREFERENCES[4]
    assert morlhf.at[4, "sentiment_ci95_low"] == pytest.approx(0.08)
    pama = pd.read_csv(out / "runs_pama.csv")
    np.testing.assert_allclose(pama[["sentiment_mean", "length_mean"]], MEANS["pama"])
    assert pd.read_csv(out / "metrics.csv")["algorithm"].tolist() == ["morlhf", "pama"]
    assert (out / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_ref_point_flag(sweep_dir, tmp_path, capsys):
    assert (
        main([str(sweep_dir), "--out", str(tmp_path / "o"), "--ref-point", "0.1", "0.1", "--no-progress"])
        == 0
    )
    stdout = capsys.readouterr().out
    assert "(given explicitly)" in stdout
    assert metrics_from_stdout(stdout)["pama"][2] == pytest.approx(0.06)


def test_cli_as_module(sweep_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pama_lit.fronts", str(sweep_dir), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert metrics_from_stdout(result.stdout)["pama"][2] == pytest.approx(0.15)
    assert "skipping malformed" in result.stderr


def test_cli_errors(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main([str(missing), "--out", str(tmp_path / "o")]) == 1
    assert f"folder not found: {missing}" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), "--out", str(tmp_path / "o")]) == 1
    assert f"no eval.json found under {empty}" in capsys.readouterr().err

    sweep_dir = write_fake_sweep(tmp_path / "mixed")
    other = sweep_dir / "humor" / "eval.json"
    other.parent.mkdir()
    other.write_text(json.dumps(eval_object("pama", [0.1, 0.2], objectives=["sentiment", "humor"])))
    assert main([str(sweep_dir), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "objective sets differ" in err and str(other) in err and "10-00-00/0/eval.json" in err

    assert main([str(tmp_path / "results_missing"), str(sweep_dir), "--out", str(tmp_path / "o")]) == 1

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "eval.json").write_text("[]")
    assert main([str(broken), "--out", str(tmp_path / "o")]) == 1
    assert "every eval.json under" in capsys.readouterr().err

    sweep_dir = write_fake_sweep(tmp_path / "ok")
    assert main([str(sweep_dir), "--out", str(tmp_path / "o"), "--ref-point", "0", "--no-progress"]) == 1
    assert "1 values but there are 2 objectives: sentiment, length" in capsys.readouterr().err


def test_pairs_plot_for_three_objectives(tmp_path):
    objectives = ["sentiment", "length", "humor"]
    for i, means in enumerate([[0.1, 0.5, 0.2], [0.5, 0.1, 0.2], [0.2, 0.2, 0.5], [0.1, 0.1, 0.1]]):
        run = tmp_path / "sweep" / str(i)
        run.mkdir(parents=True)
        (run / "eval.json").write_text(json.dumps(eval_object("pama", means, objectives=objectives)))
    sweep = load_sweep([tmp_path / "sweep"], progress=False)
    assert sweep.runs["non_dominated"].tolist() == [True, True, True, False]
    fig = plot_front(sweep.runs, sweep.objectives, [0.0, 0.0, 0.0])
    assert len(fig.axes) == 9
    fig.savefig(tmp_path / "pairs.png")
    assert (tmp_path / "pairs.png").stat().st_size > 0
