"""Harmlessness as 1 - P(offensive) from alt-profanity-check (offline, a linear SVM in the wheel)."""

from __future__ import annotations

from pama_lit.rewards.base import Reads, Reward, check_reads, read_texts


class ProfanityHarmless(Reward):
    """1 - P(offensive), in [0, 1]: high for civil text, low for profanity, slurs and abuse.

    The embedded stand-in for the paper's Ray2333/gpt2-large-harmless-reward_model
    (``reward=harmless_hub``). The classifier is a calibrated linear SVM over word n-grams trained on
    ~200k human-labelled comments, so it measures offensive wording, not harm: polite instructions
    for something dangerous score near 1, as does an empty response. A policy can game it by
    avoiding flagged words; pair it with another objective (length, humor) that rules out silence.

    Args:
        reads: "response" (default) or "prompt+response" (the two joined by a newline; an offensive
            prompt then lowers the score of every response to it).
    """

    batch_size = 4096

    def __init__(self, reads: Reads = "response") -> None:
        self.reads = check_reads(reads, type(self).__name__)

    def score(self, prompts, responses, response_lengths):
        from profanity_check import predict_prob

        texts = read_texts(self.reads, prompts, responses)
        return 1.0 - predict_prob(texts)
