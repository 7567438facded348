"""Reward functions as a user would write them, outside the package (imported by path in tests)."""

import numpy as np


def word_count(responses):
    return [len(r.split()) for r in responses]


def exclamations(prompts, responses, bonus=0.0):
    return np.array([r.count("!") + bonus * (p in r) for p, r in zip(prompts, responses, strict=True)])


def per_token(responses, response_lengths):
    return [len(r) / max(int(n), 1) for r, n in zip(responses, response_lengths, strict=True)]


def wrong_count(responses):
    return [0.0]


NOT_CALLABLE = 3
