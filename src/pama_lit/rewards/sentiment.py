"""Sentiment as the VADER compound score in [-1, 1] (offline, lexicon shipped in the wheel)."""

from __future__ import annotations

import torch

from pama_lit.rewards.base import Reward


class VaderSentiment(Reward):
    """VADER compound polarity of the response, in [-1, 1].

    The embedded stand-in for the paper's ``lvwerra/distilbert-imdb`` positive logit
    (``reward=sentiment_hub``). Reads the response only.
    """

    reads = "response"
    batch_size = 4096

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, prompts, responses, response_lengths):
        return torch.tensor([self._analyzer.polarity_scores(r)["compound"] for r in responses])
