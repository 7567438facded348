"""The evaluation summary (eval.json fields) and the end-of-run table printed by train.print_summary."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pama_lit.run.results import SUMMARY_KEYS, mean_ci, summarise
from pama_lit.run.train import print_summary


def records(scale: float) -> list[dict]:
    texts = ["so good!!!!", "fine thanks", "fine thanks", "ok ok ok ok"]
    return [
        {
            "prompt": f"p{i}",
            "response": text,
            "scores": {"sentiment": scale * i, "length": 0.5 + i},
            "kl_ref": float(i),
            "ref_logprob": -2.0 * (i + 1),
            "length": i + 1,
        }
        for i, text in enumerate(texts)
    ]


def test_summary_holds_fluency_and_kl_spread():
    summary = summarise(records(0.1), ["sentiment", "length"], num_samples=2)
    assert summary["num_prompts"] == 4
    assert summary["kl_ref"] == pytest.approx(1.5)
    assert summary["kl_ref_ci95"] == pytest.approx(mean_ci([0.0, 1.0, 2.0, 3.0])["ci95"])
    # Every response's per-token log-prob is -2: the pooled per-token mean is -2 whatever the lengths.
    assert summary["fluency"]["ref_logprob"] == pytest.approx(-2.0)
    # Bigrams: (so,good!!!!), (fine,thanks) x2, (ok,ok) x3: 3 distinct of 6.
    assert summary["fluency"]["distinct2"] == pytest.approx(0.5)
    assert summary["fluency"]["repeat_frac"] == pytest.approx(0.5)
    assert [s["prompt"] for s in summary["samples"]] == ["p0", "p1"]
    # SUMMARY_KEYS (what a shared reference evaluation's copy keeps) names exactly these keys.
    assert set(summary) == set(SUMMARY_KEYS)


def test_print_summary_names_every_row_once_with_confidence_intervals(capsys, tmp_path):
    start, end = (
        summarise(records(0.1), ["sentiment", "length"], num_samples=8),
        summarise(records(0.3), ["sentiment", "length"], num_samples=8),
    )
    print_summary(["sentiment", "length"], start, end, tmp_path)
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        label = line.split()[0] if line.strip() else ""
        assert label not in rows or label == "", f"row {label!r} printed twice"
        rows[label] = line
    for label in (
        "reward/sentiment",
        "reward/length",
        "kl_ref",
        "response_tokens",
        "fluency/ref_logprob",
        "fluency/distinct2",
        "fluency/repeat_frac",
    ):
        assert label in rows, out
    lo, hi = end["rewards"]["sentiment"]["ci95"]
    assert f"[{lo:.4f}, {hi:.4f}]" in rows["reward/sentiment"]
    lo, hi = start["kl_ref_ci95"]
    assert f"[{lo:.4f}, {hi:.4f}]" in rows["kl_ref"]
    change = end["rewards"]["sentiment"]["mean"] - start["rewards"]["sentiment"]["mean"]
    assert rows["reward/sentiment"].split()[-1] == f"{change:+.4f}"
    assert rows["response_tokens"].split()[1:] == ["2.5000", "2.5000", "+0.0000"]


def test_summary_of_no_records_is_nan_not_an_error():
    summary = summarise([], ["sentiment"], num_samples=8)
    assert summary["num_prompts"] == 0
    assert all(math.isnan(v) for v in summary["fluency"].values())


@pytest.mark.parametrize("saved_split_seed", [None, 5])
def test_evaluate_keeps_the_split_of_the_run(tmp_path, saved_split_seed):
    """A run saved before data.split_seed existed split with data.seed: evaluate.py keeps that split."""
    from conftest import compose_config
    from omegaconf import OmegaConf, open_dict

    from pama_lit.run.evaluate import load_run_config

    cfg = compose_config(["seed=3"], tmp_path)
    with open_dict(cfg):
        if saved_split_seed is None:
            del cfg.data.split_seed
        else:
            cfg.data.split_seed = saved_split_seed
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    loaded = load_run_config(tmp_path)
    assert loaded.data.split_seed == (3 if saved_split_seed is None else saved_split_seed)


# ------------------------------------------------------------------ responses files and paired differences
def _response(prompt: str, score: float) -> dict:
    return {"prompt": prompt, "response": f"r-{prompt}", "scores": {"a": score}, "length": 3, "kl_ref": 0.1,
            "ref_logprob": -4.0, "extra": "not kept"}  # fmt: skip


def test_responses_file_sits_beside_its_result_and_round_trips(tmp_path):
    from pama_lit.run.results import read_responses, responses_path, write_result

    assert responses_path(tmp_path / "eval.json") == tmp_path / "eval.responses.jsonl"
    assert responses_path(tmp_path / "ref" / "x.json") == tmp_path / "ref" / "x.responses.jsonl"
    records = [_response("p1", 0.5), _response("p2", -1.0)]
    write_result(tmp_path / "eval.json", {"format": "pama_lit.eval/1", "n": 2}, records)
    assert json.loads((tmp_path / "eval.json").read_text()) == {"format": "pama_lit.eval/1", "n": 2}
    back = read_responses(tmp_path / "eval.json")
    assert back == [{k: v for k, v in r.items() if k != "extra"} for r in records]
    # Without records: the result alone, and read_responses says there are none.
    write_result(tmp_path / "old.json", {"n": 0}, None)
    assert (
        not responses_path(tmp_path / "old.json").exists() and read_responses(tmp_path / "old.json") is None
    )


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5)), min_size=2, max_size=40))
def test_paired_difference_is_the_mean_of_per_prompt_differences(pairs):
    from pama_lit.run.results import paired_difference

    policy = [_response(f"p{i}", a) for i, (a, _) in enumerate(pairs)]
    reference = [_response(f"p{i}", b) for i, (_, b) in enumerate(pairs)]
    got = paired_difference(policy, reference, "a")
    diffs = [a - b for a, b in pairs]  # the naive oracle
    n = len(diffs)
    mean = sum(diffs) / n
    std = (sum((d - mean) ** 2 for d in diffs) / (n - 1)) ** 0.5
    assert got["n"] == n and got["mean"] == pytest.approx(mean, abs=1e-9)
    assert got["ci95"] == pytest.approx([mean - 1.96 * std / n**0.5, mean + 1.96 * std / n**0.5], abs=1e-9)


def test_paired_difference_refuses_responses_to_other_prompts():
    from pama_lit.run.results import paired_difference

    with pytest.raises(ValueError, match="not to the same prompts"):
        paired_difference([_response("p1", 1.0)], [_response("p2", 0.0)], "a")
    with pytest.raises(ValueError, match="not to the same prompts"):
        paired_difference([_response("p1", 1.0)], [_response("p1", 0.0), _response("p2", 0.0)], "a")
