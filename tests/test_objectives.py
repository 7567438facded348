"""``objective=a+b+c``: any +-joined reward names compose, in the order written."""

from __future__ import annotations

import pytest
from conftest import compose_config
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
