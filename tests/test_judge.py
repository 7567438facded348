"""benchmarks/judge.py: a benchmark's runs scored again by a second judge, on synthetic run folders.

The judge here is ``reward=length`` (clip(tokens / 32, 0, 1.5)), a rule that reads the records' token
counts, so the numbers have a closed form; the tweet-sentiment judge is tested in test_tweet_sentiment.py.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

from pama_lit.run.results import mean_ci, write_result

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


judge = load("judge")
PROMPTS = [f"prompt {i}" for i in range(6)]


def records(lengths: list[int], sentiment: float, openers: list[str] | None = None) -> list[dict]:
    openers = openers or [f"word{i} reply" for i in range(len(lengths))]
    return [
        {"prompt": p, "response": f"{o} text", "scores": {"sentiment": sentiment, "length": n / 32},
         "length": n, "kl_ref": 0.1, "ref_logprob": -2.0}
        for p, n, o in zip(PROMPTS, lengths, openers, strict=True)
    ]  # fmt: skip


def summary(recs: list[dict], kl: float) -> dict:
    return {
        "format": "pama_lit.eval/1",
        "rewards": {o: mean_ci([r["scores"][o] for r in recs]) for o in ("sentiment", "length")},
        "kl_ref": kl,
    }


def write_run(folder: Path, lengths: list[int], kl: float, reference_lengths: list[int], sentiment=0.5, **kw):
    mine, ref = records(lengths, sentiment, **kw), records(reference_lengths, 0.1)
    write_result(folder / "eval.json", summary(mine, kl), mine)
    write_result(folder / "reference" / "eval.json", summary(ref, 0.0), ref)


REFERENCE = [8, 8, 16, 16, 8, 8]
RUNS = {  # algorithm -> the token counts of its three seeds' responses
    "pama": [[40, 40, 32, 40, 40, 36], [32, 40, 40, 48, 40, 40], [40, 44, 40, 40, 36, 40]],
    "morlhf": [[16, 8, 16, 24, 16, 8], [8, 8, 16, 16, 8, 16], [16, 16, 8, 8, 16, 8]],
}


@pytest.fixture
def benchmark(tmp_path) -> dict[str, list[Path]]:
    folders = {}
    for algorithm, seeds in RUNS.items():
        folders[algorithm] = []
        for seed, lengths in enumerate(seeds):
            folder = tmp_path / "sentiment_length" / algorithm / "uniform" / f"seed{seed}"
            write_run(folder, lengths, kl=1.0 + seed, reference_lengths=REFERENCE)
            folders[algorithm].append(folder)
    return folders


def test_the_judge_scores_every_response_and_the_rows_are_over_seeds(benchmark):
    report = judge.judge_task("sentiment_length", benchmark, {"sentiment": "length"})
    pama = report["rows"]["pama"]
    # Each seed's judge mean is the mean of clip(n / 32, 0, 1.5) over its responses; the row, over seeds.
    seeds = [statistics.fmean(min(n / 32, 1.5) for n in lengths) for lengths in RUNS["pama"]]
    assert pama["objectives"]["judge:sentiment"]["seeds"] == pytest.approx(seeds)
    assert pama["objectives"]["judge:sentiment"]["mean"] == pytest.approx(statistics.fmean(seeds))
    assert pama["objectives"]["sentiment"]["mean"] == pytest.approx(0.5)  # the reward it trained on
    assert pama["kl_ref"] == pytest.approx(2.0)
    # Paired: per seed, the mean over prompts of the judge's score minus the reference's on that prompt.
    for paired, lengths in zip(pama["paired"], RUNS["pama"], strict=True):
        diffs = [min(n / 32, 1.5) - r / 32 for n, r in zip(lengths, REFERENCE, strict=True)]
        assert paired["judge:sentiment"]["mean"] == pytest.approx(statistics.fmean(diffs))
    reference = report["reference"]["rewards"]["judge:sentiment"]
    assert reference["mean"] == pytest.approx(statistics.fmean(n / 32 for n in REFERENCE))
    # PAMA's judge interval clears the reference's; MORLHF's does not: the verdicts say so.
    assert report["verdicts"]["beats_reference"]["holds"] is True
    assert report["verdicts"]["order"]["holds"] is True
    assert report["verdicts"]["agreement"]["sentiment"]["policies"] == 3
    assert "judge length" in report["markdown"] and "pama" in report["markdown"]
    assert report["missing"] == []


def test_a_run_without_responses_is_named_and_the_rest_is_judged(benchmark):
    lone = benchmark["morlhf"][2]
    (lone / "eval.responses.jsonl").unlink()
    report = judge.judge_task("sentiment_length", benchmark, {"sentiment": "length"})
    assert report["rows"]["morlhf"]["n"] == 2
    assert len(report["missing"]) == 1 and str(lone) in report["missing"][0]
    assert "--evaluate" in report["missing"][0]


def test_a_reevaluation_under_judged_is_read_when_the_run_has_none(benchmark):
    folder = benchmark["pama"][0]
    (folder / "eval.responses.jsonl").rename(folder / "moved.jsonl")
    assert judge.responses_result(folder) is None
    (folder / judge.JUDGED).mkdir()
    (folder / judge.JUDGED / "eval.json").write_text((folder / "eval.json").read_text())
    (folder / "moved.jsonl").rename(folder / judge.JUDGED / "eval.responses.jsonl")
    assert judge.responses_result(folder) == folder / judge.JUDGED / "eval.json"
    assert judge.responses_result(folder, reference=True) == folder / "reference" / "eval.json"


def test_a_reevaluation_must_reproduce_the_runs_reward_means():
    a = {"rewards": {"sentiment": {"mean": 0.5}, "length": {"mean": 1.0}}}
    assert judge.reward_gap(a, a) == 0.0
    b = {"rewards": {"sentiment": {"mean": 0.5}, "length": {"mean": 1.25}}}
    assert judge.reward_gap(a, b) == pytest.approx(0.25)
    assert judge.reward_gap(a, {"rewards": {"sentiment": {"mean": 0.5}}}) is None
    assert judge.reward_gap(None, a) is None


def test_opener_share_against_a_naive_count():
    recs = records(
        [8] * 6, 0.0, openers=["thank you so", "thank you so", "Thank you SO", "i am", "you", "i am"]
    )
    assert judge.opener_share(recs) == pytest.approx(3 / 6)  # first three words, case folded
    assert judge.opener_share(records([8] * 6, 0.0)) == pytest.approx(1 / 6)


def test_bad_judge_specs_name_the_value_and_the_form():
    assert judge.parse_judges([], "sentiment_length") == {"sentiment": "sentiment_tweets"}
    assert judge.parse_judges(["harmless=harmless"], "harmless_length") == {"harmless": "harmless"}
    with pytest.raises(SystemExit, match="OBJECTIVE=REWARD"):
        judge.parse_judges(["sentiment"], "sentiment_length")
    with pytest.raises(SystemExit, match="no default judge for 'humor_length'"):
        judge.parse_judges([], "humor_length")
    with pytest.raises(SystemExit, match="no conf/reward/nope.yaml; known: .*sentiment_tweets"):
        judge.build_judge("nope")


def test_a_judge_other_than_the_default_writes_its_own_result_file():
    assert (
        judge.result_name("sentiment_length", {"sentiment": "sentiment_tweets"}) == "judge_sentiment_length"
    )
    assert (
        judge.result_name("sentiment_length", {"sentiment": "sentiment"})
        == "judge_sentiment_length_by_sentiment"
    )
    two = {"sentiment": "sentiment_tweets", "length": "length_hh"}
    assert (
        judge.result_name("sentiment_length", two) == "judge_sentiment_length_by_length_hh_sentiment_tweets"
    )
    assert (
        judge.result_name("harmless_length", {"harmless": "harmless"}) == "judge_harmless_length_by_harmless"
    )


def test_the_command_writes_its_report(benchmark, tmp_path, capsys):
    out = tmp_path
    code = judge.main(["--out", str(out), "--judge", "sentiment=length", "--algorithms", "pama,morlhf",
                       "--results", str(tmp_path / "results")])  # fmt: skip
    assert code == 0
    payload = json.loads((tmp_path / "results" / "judge_sentiment_length_by_length.json").read_text())
    assert payload["judges"] == {"sentiment": "length"} and set(payload["rows"]) == {"pama", "morlhf"}
    assert all("records" not in run for run in payload["runs"])
    assert "second judge" in capsys.readouterr().out


def test_a_report_of_other_runs_keeps_the_one_already_written(benchmark, tmp_path, capsys):
    """Rerunning a README command over another --out must not replace a committed report of other runs."""
    results = tmp_path / "results"
    results.mkdir()
    kept = {"runs": [{"folder": str(tmp_path / "elsewhere" / "seed0")}], "rows": "the committed report"}
    (results / "judge_sentiment_length_by_length.json").write_text(json.dumps(kept))
    code = judge.main(["--out", str(tmp_path), "--judge", "sentiment=length", "--algorithms", "pama,morlhf",
                       "--results", str(results)])  # fmt: skip
    assert code == 0
    assert json.loads((results / "judge_sentiment_length_by_length.json").read_text()) == kept
    (written,) = results.glob("judge_sentiment_length_by_length_*.json")
    assert set(json.loads(written.read_text())["rows"]) == {"pama", "morlhf"}
    assert "this report does not cover" in capsys.readouterr().out
