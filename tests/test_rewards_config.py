"""Objectives compose (synthesised from reward names, or named files); embedded ones build; hub ones load nothing."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from pama_lit.rewards import (
    HumorClassifier,
    LengthReward,
    ProfanityHarmless,
    RewardModelReward,
    SequenceClassifierReward,
    VaderSentiment,
    build_rewards,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
NAMED = sorted(p.stem for p in (CONF / "objective").glob("*.yaml"))
CANONICAL = ["sentiment", "humor", "harmless", "length"]
# Every subset in the canonical order and every pair in both orders (the objectives that used to ship as files).
OBJECTIVES = sorted(
    {"+".join(ids) for k in (1, 2, 3, 4) for ids in combinations(CANONICAL, k)}
    | {f"{b}+{a}" for a, b in combinations(CANONICAL, 2)}
)
EMBEDDED = {
    "sentiment": VaderSentiment,
    "humor": HumorClassifier,
    "harmless": ProfanityHarmless,
    "length": LengthReward,
}
PAPER = {
    "paper_imdb": {"sentiment": "lvwerra/distilbert-imdb", "length": (140.0, 0.5, 1.5)},
    "paper_humor": {"humor": "mohameddhiab/humor-no-humor", "length": (140.0, 0.0, 4096 / 140)},
    "paper_harmless": {
        "harmless": "Ray2333/gpt2-large-harmless-reward_model",
        "length": (140.0, 0.0, 4096 / 140),
    },
}


def compose_rewards(*overrides: str):
    # config_name=None: compose the objective group alone, independent of conf/train.yaml.
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=None, overrides=list(overrides)).objective.rewards


def test_only_named_objectives_ship_as_files():
    """+-joined objectives are synthesised (pama_lit.run.objectives): no file per permutation."""
    assert NAMED == ["paper_harmless", "paper_humor", "paper_imdb"]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_embedded_objectives_compose_and_build_in_file_order(objective):
    cfg = compose_rewards(f"+objective={objective}")
    ids = objective.split("+")
    assert list(cfg) == ids
    rewards = build_rewards(cfg)
    assert list(rewards) == ids
    for name, reward in rewards.items():
        assert type(reward) is EMBEDDED[name]


@pytest.mark.parametrize("objective", sorted(PAPER))
def test_paper_objectives_compose_without_loading(objective):
    cfg = compose_rewards(f"+objective={objective}")
    assert list(cfg) == list(PAPER[objective])
    for name, expected in PAPER[objective].items():
        if name == "length":
            assert (cfg[name].scale, cfg[name].low, cfg[name].high) == pytest.approx(expected)
        else:
            assert cfg[name].model_name == expected
    assert cfg.get("harmless", {}).get("reads", "prompt+response") == "prompt+response"
    assert cfg.get("humor", {}).get("reads", "response") == "response"


def test_hub_targets_are_the_adapters():
    cfg = compose_rewards("+objective=humor+harmless")
    assert cfg.humor._target_ == "pama_lit.rewards.HumorClassifier"
    swapped = compose_rewards(
        "+objective=humor+harmless",
        "reward@objective.rewards.humor=humor_hub",
        "reward@objective.rewards.harmless=harmless_hub",
    )
    assert swapped.humor._target_.endswith(SequenceClassifierReward.__name__) and swapped.humor.label == 1
    assert swapped.harmless._target_.endswith(RewardModelReward.__name__)
    assert "Human: {prompt}" in swapped.harmless.template


def test_reward_configs_say_what_they_are_and_name_their_hub_counterpart():
    for path in (CONF / "reward").glob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and len(first) > 20, path.name
    for name in ("sentiment", "humor", "harmless"):
        assert f"{name}_hub" in (CONF / "reward" / f"{name}.yaml").read_text()


def test_composed_embedded_rewards_score_a_batch():
    rewards = build_rewards(compose_rewards("+objective=sentiment+harmless+length"))
    lengths = torch.tensor([12, 60])
    scores = {
        k: r(["hi", "hi"], ["Thank you, lovely!", "Go to hell, idiot."], lengths) for k, r in rewards.items()
    }
    assert scores["sentiment"][0] > scores["sentiment"][1]
    assert scores["harmless"][0] > scores["harmless"][1]
    assert scores["length"].tolist() == pytest.approx([12 / 32, 1.5])
