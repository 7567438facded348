"""Humor as P(joke) from the project's own MiniLM + logistic-regression classifier (offline)."""

from __future__ import annotations

import torch

from pama_lit.rewards.embedding import EmbeddingClassifier


class HumorClassifier(EmbeddingClassifier):
    """P(joke) (or its logit) of a text, from MiniLM sentence embeddings and logistic regression.

    The embedded stand-in for the paper's mohameddhiab/humor-no-humor (``reward=humor_hub``). The
    classifier is trained by ``python -m pama_lit.rewards.humor_train`` (see there for the data) and
    stored as JSON in the user cache; when the cached artifact is missing or damaged (checked against
    its manifest) the first score trains it (tens of seconds on 2 CPU cores).

    How it can be gamed: it learned what jokes *look like* in a few hundred packaged examples, not
    what is funny. Joke templates score high whatever follows ("Why did the X ...? Because ...",
    "Knock knock", "What do you call ..."), as do the pyjokes themes (Chuck Norris, programmers,
    bars); a policy can recite stock jokes regardless of the prompt. Plain factual answers and polite
    assistant boilerplate score low. Pair it with an objective that keeps responses on topic, and
    read samples, not only the curve.

    Args:
        output: "prob" (P(joke) in [0, 1]) or "logit" (unbounded, the paper's convention for
            classifier rewards).
        reads: "response" (default) or "prompt+response".
        artifact: the classifier's JSON file; by default ``humor_classifier_v1/classifier.json`` in
            the cache, trained again when damaged (a file given here never is).
        train_if_missing: train the classifier when the artifact does not exist (else raise).
        batch_size: texts per MiniLM forward pass.
        device: where MiniLM runs until ``to(device)`` moves it.
    """

    trainer = "pama_lit.rewards.humor_train"
    train_function = "train_humor_classifier"
    what = "humor classifier"
    OUTPUTS = ("prob", "logit")

    def score(self, prompts, responses, response_lengths):
        logits = self.logits(prompts, responses)[:, 0]
        return logits if self.output == "logit" else torch.sigmoid(logits)
