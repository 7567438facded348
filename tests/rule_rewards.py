"""Character-class rewards of prompt and response, imported by path from test configs.

They vary from sample to sample even where a random tiny model answers every prompt alike (greedy
decoding), so each objective has non-zero advantages, and the two disagree often enough for a
min-norm solve to do real work.
"""

from __future__ import annotations


def vowel_fraction(prompts: list[str], responses: list[str]) -> list[float]:
    """Fraction of the prompt-and-response characters that are vowels."""
    texts = [p + r for p, r in zip(prompts, responses, strict=True)]
    return [sum(c in "aeiouAEIOU" for c in t) / max(1, len(t)) for t in texts]


def space_fraction(prompts: list[str], responses: list[str]) -> list[float]:
    """Fraction of the prompt-and-response characters that are spaces."""
    texts = [p + r for p, r in zip(prompts, responses, strict=True)]
    return [t.count(" ") / max(1, len(t)) for t in texts]
