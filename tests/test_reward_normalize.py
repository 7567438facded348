"""``reward.normalize``: running moments shape training, survive a resume, and leave validation raw."""

from __future__ import annotations

import pytest
from conftest import compose_config
from train_runs import iteration_metrics

from pama_lit.infra.checkpointing import read_run_state
from pama_lit.run.train import train

TINY = [
    "debug=tiny",
    "rollout.max_new_tokens=6",
    "data.val_size=2",
    "logger=csv",
    "eval.every_n_iterations=10",
]
NORMALIZE = "reward.normalize={sentiment:running,length:{kind:fixed,mean:0.5,std:0.25}}"
EVERY_2 = "callbacks.checkpoint.every_n_iterations=2"  # step8.ckpt after iteration 2 of 3 (4 steps each)


def _normalizers(path):
    return read_run_state(path)["reward_normalizers"]


def _stats(run_dir):
    """Each iteration's logged normaliser state of sentiment (its moments after that iteration's scores)."""
    rows = iteration_metrics(run_dir / "csv" / "version_0" / "metrics.csv")
    return {
        step: (m["train/reward_stats/norm_mean/sentiment"], m["train/reward_stats/norm_std/sentiment"])
        for step, m in rows.items()
    }


def test_running_moments_resume_where_they_stopped(tmp_path):
    whole = tmp_path / "whole"
    straight = train(compose_config([*TINY, NORMALIZE, EVERY_2, "iterations=3"], whole))
    saved = _normalizers(whole / "checkpoints" / "step8.ckpt")
    assert saved["sentiment"]["count"] == 2 * 4  # every training score of 2 iterations of 4 prompts
    assert saved["length"] == {"kind": "fixed", "mean": 0.5, "var": 0.0625, "count": 0}

    # Resume after iteration 2 (in a new folder: the first one holds a finished run).
    more = tmp_path / "more"
    ckpt = f"ckpt_path={whole / 'checkpoints' / 'step8.ckpt'}"
    resumed = train(compose_config([*TINY, NORMALIZE, EVERY_2, "iterations=3", ckpt], more))
    expected, got = _stats(whole), _stats(more)
    assert len(expected) == 3 and list(got) == list(expected)[2:]
    # Not restored, iteration 3 would normalise with the moments of its own 4 scores alone.
    assert got == {step: expected[step] for step in got}
    # Validation scores the raw rewards: the same as an unnormalised run's.
    raw = train(compose_config([*TINY, "iterations=3"], tmp_path / "raw"))
    for run in (straight, resumed):
        assert run["end"]["rewards"] == raw["end"]["rewards"]


def test_resume_with_another_normalize_setting_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    train(compose_config([*TINY, "reward.normalize=running", "iterations=1"], run_dir))
    ckpt = f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    with pytest.raises(
        ValueError, match=r"checkpoint normalises objectives \['length', 'sentiment'\], this run \[\]"
    ):
        train(compose_config([*TINY, "iterations=2", ckpt], tmp_path / "more"))
