"""Embedded rewards: probe orderings, shapes, devices, batching, frozen-ness, wrappers, build_rewards."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from pama_lit.rewards import (
    CallableReward,
    HumorClassifier,
    LengthReward,
    Normalized,
    ProfanityHarmless,
    Reward,
    VaderSentiment,
    build_rewards,
    cache_dir,
)

FIXTURES = Path(__file__).parent / "rewards"


def score(reward: Reward, responses: list[str], prompts: list[str] | None = None) -> torch.Tensor:
    prompts = prompts if prompts is not None else ["Say something."] * len(responses)
    lengths = torch.tensor([len(r.split()) + 1 for r in responses])
    return reward(prompts, responses, lengths)


@pytest.fixture(scope="module")
def humor(tmp_path_factory) -> HumorClassifier:
    """One classifier trained on first use into a module-private cache (the slowest step here)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAMA_LIT_CACHE", str(tmp_path_factory.mktemp("pama_cache")))
        reward = HumorClassifier()
        score(reward, ["warm-up"])  # trains and writes the artifact
        assert (cache_dir() / "humor_classifier_v1" / "classifier.json").exists()
    return reward


# Probe orderings -------------------------------------------------------------------------------


def test_sentiment_orders_praise_above_insult():
    s = score(
        VaderSentiment(),
        ["What a wonderful, kind and brilliant answer, thank you!", "This is awful, you idiot."],
    )
    assert s[0] > 0.5 > -0.5 > s[1]


def test_harmless_orders_thanks_above_threat():
    s = score(
        ProfanityHarmless(),
        ["Thank you so much, that was really helpful.", "Shut up or I will kill you, bitch."],
    )
    assert s[0] > 0.9 and s[1] < 0.1
    assert ((s >= 0) & (s <= 1)).all()


def test_harmless_can_read_the_prompt():
    prompts = ["You stupid fucking idiot, answer me.", "Could you help me?"]
    both = score(ProfanityHarmless(reads="prompt+response"), ["Sure.", "Sure."], prompts)
    alone = score(ProfanityHarmless(), ["Sure.", "Sure."], prompts)
    assert both[0] < both[1] and alone[0] == alone[1]


def test_length_is_clipped_tokens_over_scale():
    reward = LengthReward(scale=10, low=0.5, high=1.5)
    s = reward(["p"] * 4, ["a"] * 4, torch.tensor([1, 7, 12, 40]))
    assert s.tolist() == pytest.approx([0.5, 0.7, 1.2, 1.5])
    with pytest.raises(ValueError):
        LengthReward(scale=0)


def test_humor_orders_jokes_above_plain_text(humor):
    probes = json.loads((FIXTURES / "humor_probes.json").read_text())
    jokes, plain = score(humor, probes["jokes"]), score(humor, probes["plain"])
    assert ((jokes > 0) & (jokes < 1)).all()
    assert jokes.mean() > plain.mean() + 0.15
    wins = (jokes[:, None] > plain[None, :]).float().mean().item()  # probe AUC, ~0.85 when trained
    assert wins > 0.75
    joke, fact = score(humor, [probes["jokes"][1], "The French Revolution began in 1789."])
    assert joke > fact


def test_humor_logit_output_is_the_probability_logit(humor):
    logit = HumorClassifier(output="logit")
    logit.info, logit.embedder, logit.coef, logit.intercept = (
        humor.info,
        humor.embedder,
        humor.coef,
        humor.intercept,
    )
    texts = ["Why did the bicycle fall over? It was two tired.", "See you tomorrow."]
    assert torch.sigmoid(score(logit, texts)) == pytest.approx(score(humor, texts), abs=1e-6)


def test_humor_artifact_is_versioned_json_with_provenance(humor):

    info = humor.info
    assert info["format"] == "pama_lit.humor_classifier" and info["version"] == 1
    assert len(info["coef"]) == 384 and info["cv_auc"] > 0.85
    assert 0.35 < info["length_only_auc"] < 0.65  # negatives are length-matched
    names = {d["name"] for d in info["data"]}
    assert {"pyjokes", "chatterbot-humor", "mallard-funny", "chitchat"} <= names
    assert all(d["package"] and d["version"] and d["used"] > 0 for d in info["data"])
    assert info["n_jokes"] + info["n_not_jokes"] < 5000  # first-use training stays quick


def test_humor_artifact_validation(tmp_path):
    from pama_lit.rewards.humor_train import load_artifact

    bad = tmp_path / "a.json"
    bad.write_text(json.dumps({"format": "pama_lit.humor_classifier", "version": 0}))
    with pytest.raises(ValueError, match="version"):
        load_artifact(bad)
    bad.write_text(
        json.dumps({"format": "pama_lit.humor_classifier", "version": 1, "coef": [1.0], "intercept": 0})
    )
    with pytest.raises(ValueError, match="malformed"):
        load_artifact(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        load_artifact(bad)


def test_humor_without_artifact_and_training_disabled_says_how_to_train(tmp_path):
    reward = HumorClassifier(artifact=str(tmp_path / "missing.json"), train_if_missing=False)
    with pytest.raises(FileNotFoundError, match="humor_train"):
        reward._load()


def test_humor_train_command_parses_its_options():
    from pama_lit.rewards.humor_train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0


# Shapes, devices, batching, frozen ----------------------------------------------------------------

TEXTS = [
    "Thank you, that was lovely!",
    "I hate this, it is terrible.",
    "Why do cows wear bells? Because their horns don't work.",
    "The train leaves at eight.",
    "",
    "Okay.",
    "What a great idea, let's do it together tomorrow morning.",
]


def embedded(humor) -> dict[str, Reward]:
    return {
        "sentiment": VaderSentiment(),
        "harmless": ProfanityHarmless(),
        "length": LengthReward(scale=32, low=0.0, high=1.5),
        "humor": humor,
    }


def test_shapes_dtype_device_and_empty_batch(humor):
    for name, reward in embedded(humor).items():
        s = score(reward, TEXTS)
        assert s.shape == (len(TEXTS),) and s.dtype == torch.float32 and s.device.type == "cpu", name
        assert torch.isfinite(s).all(), name
        assert not s.requires_grad, name
        assert score(reward, []).shape == (0,), name
        with pytest.raises(ValueError, match="must match"):
            reward(["p"], ["a", "b"], torch.tensor([1, 2]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_scores_land_on_the_lengths_device(humor):
    lengths = torch.ones(len(TEXTS), dtype=torch.long, device="cuda")
    for name, reward in embedded(humor).items():
        assert reward.to("cuda")(["p"] * len(TEXTS), TEXTS, lengths).device.type == "cuda", name
    humor.to("cpu")


def test_small_batches_give_the_same_scores(humor):
    for name, reward in embedded(humor).items():
        full = score(reward, TEXTS)
        saved, reward.batch_size = reward.batch_size, 2
        try:
            chunked = score(reward, TEXTS)
        finally:
            reward.batch_size = saved
        torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5, msg=name)


def test_no_reward_is_trainable_or_checkpointed(humor):
    holder = torch.nn.Module()
    holder.rewards = embedded(humor)  # how a LightningModule holds them: a plain dict attribute
    assert holder.state_dict() == {} and list(holder.parameters()) == []
    for name, reward in holder.rewards.items():
        assert not isinstance(reward, torch.nn.Module), name
        for attr in vars(reward).values():
            if isinstance(attr, torch.nn.Module):
                assert not attr.training, name
                assert not any(p.requires_grad for p in attr.parameters()), name


# Callable rewards ---------------------------------------------------------------------------------


@pytest.fixture
def user_module(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))


def test_callable_reward_by_import_path(user_module):
    s = score(CallableReward("user_rewards:word_count"), ["one two", "one two three", ""])
    assert s.tolist() == [2.0, 3.0, 0.0]
    s = score(CallableReward("user_rewards.word_count"), ["a b c d"])
    assert s.tolist() == [4.0]


def test_callable_reward_reads_prompt_kwargs_and_lengths(user_module):
    reward = CallableReward("user_rewards:exclamations", reads="prompt+response", kwargs={"bonus": 10.0})
    s = reward(["hi", "yo"], ["hi!!", "nope!"], torch.tensor([3, 2]))
    assert s.tolist() == [12.0, 1.0]
    lengths = CallableReward("user_rewards:per_token", lengths=True)(["p"], ["abcd"], torch.tensor([2]))
    assert lengths.tolist() == [2.0]
    assert score(CallableReward(lambda responses: [len(r) for r in responses]), ["abc"]).tolist() == [3.0]


def test_callable_reward_errors(user_module):
    with pytest.raises(ValueError, match="returned 1 scores for 2"):
        score(CallableReward("user_rewards:wrong_count"), ["a", "b"])
    with pytest.raises(ImportError, match="no_such_module"):
        CallableReward("no_such_module:f")
    with pytest.raises(ImportError, match="has no attribute"):
        CallableReward("user_rewards:missing")
    with pytest.raises(TypeError, match="not a callable"):
        CallableReward("user_rewards:NOT_CALLABLE")
    with pytest.raises(ValueError, match="reads"):
        CallableReward("user_rewards:word_count", reads="prompt")


# Normalisation ------------------------------------------------------------------------------------


def test_fixed_normalisation():
    reward = Normalized(LengthReward(scale=1, low=0, high=100), kind="fixed", mean=10.0, std=2.0)
    s = reward(["p"] * 3, ["a"] * 3, torch.tensor([8, 10, 14]))
    assert s.tolist() == pytest.approx([-1.0, 0.0, 2.0], abs=1e-5)
    assert reward.state_dict()["count"] == 0


def test_running_normalisation_matches_the_moments_of_all_scores():
    rng = np.random.default_rng(0)
    reward = Normalized(LengthReward(scale=1, low=0, high=1000), kind="running")
    seen = []
    for n in (5, 3, 8):
        lengths = torch.tensor(rng.integers(1, 200, size=n))
        seen += lengths.tolist()
        out = reward(["p"] * n, ["a"] * n, lengths)
    assert reward.mean == pytest.approx(np.mean(seen)) and reward.var == pytest.approx(np.var(seen))
    expected = (np.array(seen[-8:]) - np.mean(seen)) / (np.std(seen) + reward.eps)
    assert out.numpy() == pytest.approx(expected, rel=1e-5)
    metrics = reward.metrics()
    assert metrics["norm_mean"] == pytest.approx(np.mean(seen)) and metrics["raw_mean"] == pytest.approx(
        np.mean(seen[-8:])
    )

    state = reward.state_dict()
    restored = Normalized(LengthReward(scale=1, low=0, high=1000), kind="running")
    restored.load_state_dict(json.loads(json.dumps(state)))  # plain floats: any checkpoint format holds them
    assert restored.state_dict() == state

    reward.eval()
    reward(["p"], ["a"], torch.tensor([10_000]))
    assert reward.state_dict() == state  # eval mode freezes the statistics
    with pytest.raises(ValueError, match="kind"):
        Normalized(LengthReward(), kind="fixed").load_state_dict(state)


def test_ema_normalisation_tracks_recent_batches():
    reward = Normalized(LengthReward(scale=1, low=0, high=1000), kind="running", momentum=0.5)
    reward(["p"] * 2, ["a"] * 2, torch.tensor([10, 10]))
    assert reward.mean == pytest.approx(10.0)  # the first batch replaces the start values
    reward(["p"] * 2, ["a"] * 2, torch.tensor([20, 20]))
    assert reward.mean == pytest.approx(15.0) and reward.var == pytest.approx(25.0)
    with pytest.raises(ValueError):
        Normalized(LengthReward(), momentum=0.0)


# build_rewards ------------------------------------------------------------------------------------


def test_build_rewards_keeps_order_and_names(user_module):
    cfg = OmegaConf.create(
        {
            "words": {"_target_": "pama_lit.rewards.CallableReward", "fn": "user_rewards:word_count"},
            "length": {"_target_": "pama_lit.rewards.LengthReward", "scale": 4.0, "low": 0.0, "high": 2.0},
            "sentiment": {"_target_": "pama_lit.rewards.VaderSentiment"},
        }
    )
    rewards = build_rewards(cfg)
    assert list(rewards) == ["words", "length", "sentiment"]
    assert isinstance(rewards["length"], LengthReward) and rewards["length"].scale == 4.0


def test_build_rewards_rejects_what_is_not_a_reward():
    with pytest.raises(TypeError, match="reward 'x': builtins.dict built a dict"):
        build_rewards(OmegaConf.create({"x": {"_target_": "builtins.dict"}}))
    with pytest.raises(TypeError, match="reward 'y': expected a config with a _target_"):
        build_rewards(OmegaConf.create({"y": 3}))
    with pytest.raises(ValueError, match="no rewards"):
        build_rewards(OmegaConf.create({}))


def test_build_rewards_normalisation_is_off_by_default_and_per_objective():
    cfg = OmegaConf.create(
        {
            "a": {"_target_": "pama_lit.rewards.LengthReward"},
            "b": {"_target_": "pama_lit.rewards.VaderSentiment"},
        }
    )
    assert not any(isinstance(r, Normalized) for r in build_rewards(cfg).values())
    both = build_rewards(cfg, normalize={"kind": "running"})
    assert all(isinstance(r, Normalized) and r.kind == "running" for r in both.values())
    one = build_rewards(cfg, normalize={"a": {"kind": "fixed", "mean": 1.0, "std": 2.0}})
    assert isinstance(one["a"], Normalized) and not isinstance(one["b"], Normalized)
    assert math.isclose(one["a"].mean, 1.0)
