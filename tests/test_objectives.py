"""``objective=a+b+c``: any +-joined reward names compose, in the order written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import CONF, ROOT, compose_config
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

HUMOR = {
    "_target_": "pama_lit.rewards.HumorClassifier",
    "output": "prob",
    "reads": "response",
    "artifact": None,
    "train_if_missing": True,
    "batch_size": 64,
}
HARMLESS = {"_target_": "pama_lit.rewards.ProfanityHarmless", "reads": "response"}
LENGTH = {"_target_": "pama_lit.rewards.LengthReward", "scale": 32.0, "low": 0.0, "high": 1.5}
SENTIMENT = {"_target_": "pama_lit.rewards.VaderSentiment"}

# What the hand-written conf/objective/<a+b...>.yaml files composed to (a defaults list of
# `/reward@rewards.<id>: <id>` in the written order), kept here as the oracle of the synthesised ones.
HAND_WRITTEN = {
    "sentiment": {"sentiment": SENTIMENT},
    "humor+harmless": {"humor": HUMOR, "harmless": HARMLESS},
    "length+sentiment": {"length": LENGTH, "sentiment": SENTIMENT},
    "harmless+humor": {"harmless": HARMLESS, "humor": HUMOR},
    "sentiment+humor+harmless+length": {
        "sentiment": SENTIMENT,
        "humor": HUMOR,
        "harmless": HARMLESS,
        "length": LENGTH,
    },
}


@pytest.mark.parametrize("objective", list(HAND_WRITTEN))
def test_objective_equals_the_hand_written_file(objective, tmp_path):
    cfg = compose_config([f"objective={objective}"], tmp_path)
    rewards = OmegaConf.to_container(cfg.objective, resolve=True)["rewards"]
    assert list(rewards) == list(HAND_WRITTEN[objective])  # the order sets the objective order
    assert rewards == HAND_WRITTEN[objective]
    assert list(OmegaConf.to_container(cfg.objective)) == ["rewards"]


def test_any_order_of_three_composes_in_the_order_written(tmp_path):
    cfg = compose_config(["objective=length+sentiment+humor"], tmp_path)
    assert list(cfg.objective.rewards) == ["length", "sentiment", "humor"]
    assert OmegaConf.to_container(cfg.objective.rewards.humor) == HUMOR


def test_hub_and_paper_variants_compose_by_their_reward_names(tmp_path):
    cfg = compose_config(["objective=sentiment_hub+length_imdb"], tmp_path)
    assert list(cfg.objective.rewards) == ["sentiment_hub", "length_imdb"]
    assert cfg.objective.rewards.length_imdb.low == 0.5
    named = compose_config(["objective=paper_imdb"], tmp_path)  # a named file still wins
    assert list(named.objective.rewards) == ["sentiment", "length"]


@pytest.mark.parametrize(
    ("objective", "parts"),
    [
        ("sentiment+nope", ["objective=sentiment+nope", "unknown reward 'nope'"]),
        ("sentiment+", ["objective=sentiment+", "an empty name"]),
        ("length+length", ["objective=length+length", "length appears twice"]),
    ],
)
def test_bad_objective_names_the_bad_part_and_the_rewards(objective, parts, tmp_path):
    with pytest.raises(MissingConfigException) as err:
        compose_config([f"objective={objective}"], tmp_path)
    message = str(err.value)
    missing = [p for p in parts if p not in message]
    assert not missing, message
    if "nope" in objective:
        for name in ("harmless", "humor_hub", "length_hh", "sentiment", "paper_imdb"):
            assert name in message


def test_multirun_sweeps_over_synthesised_objectives(tmp_path):
    """A fresh process (plugin discovery) and Hydra's sweeper: one job per objective value."""
    app = tmp_path / "app.py"
    app.write_text(
        "import json, hydra\n"
        f"@hydra.main(version_base='1.3', config_path={str(CONF)!r}, config_name='train')\n"
        "def main(cfg):\n"
        f"    with open({str(tmp_path / 'seen.jsonl')!r}, 'a') as f:\n"
        "        f.write(json.dumps(list(cfg.objective.rewards)) + '\\n')\n"
        "main()\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(app),
            "-m",
            "objective=humor+length,length+sentiment+harmless",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        },
    )
    assert proc.returncode == 0, proc.stderr
    seen = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
    assert seen == [["humor", "length"], ["length", "sentiment", "harmless"]]
