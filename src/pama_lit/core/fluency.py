"""Fluency of evaluated responses: signs that a policy games its rewards with degenerate text.

A policy pushed hard on sentiment or length can drift into repetition ("!!!!", "love love love love")
that a reward model scores well. These measures catch that without another model: the reference
policy's log-probability of the responses, bigram diversity and the share of repetitive responses.
Pure functions of strings and numbers; no Lightning, no Hydra.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

# The same character, other than whitespace or a digit, four or more times in a row ("!!!!", "aaaa").
# Digits are left out so that numbers such as "10000" do not count as repetition.
_CHAR_RUN = re.compile(r"([^\s\d])\1{3,}")
RUN_LENGTH = 4


def words(text: str) -> list[str]:
    """Lower-cased whitespace-separated words (punctuation stays attached: "ha," differs from "ha")."""
    return text.lower().split()


def mean_token_logprob(logprob_sums: Sequence[float], lengths: Sequence[int]) -> float:
    """Mean log-probability per token, pooled over every token of every response.

    Args:
        logprob_sums: (N,) sum of the per-token log-probabilities of each response.
        lengths: (N,) the number of tokens each sum covers.

    Returns:
        sum(logprob_sums) / sum(lengths): a long response weighs in proportion to its tokens, so
        the value is the per-token average over all evaluated tokens; NaN when there are no tokens.
    """
    if len(logprob_sums) != len(lengths):
        raise ValueError(f"{len(logprob_sums)} log-prob sums but {len(lengths)} lengths")
    tokens = sum(int(n) for n in lengths)
    return math.fsum(float(s) for s in logprob_sums) / tokens if tokens > 0 else float("nan")


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct-n: distinct word n-grams over all n-grams, pooled over every text.

    Words are :func:`words` (lower-cased, split on whitespace); n-grams never span two texts.

    Returns:
        A value in (0, 1]; 1 means no n-gram occurs twice. NaN when no text has n words.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        w = words(text)
        grams = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else float("nan")


def is_repetitive(text: str) -> bool:
    """True when the text (lower-cased) holds a run of 4+ equal characters other than whitespace and
    digits, or the same word (:func:`words`) 4+ times in a row."""
    lowered = text.lower()
    if _CHAR_RUN.search(lowered):
        return True
    w = lowered.split()
    run = 1
    for prev, cur in zip(w, w[1:], strict=False):
        run = run + 1 if cur == prev else 1
        if run >= RUN_LENGTH:
            return True
    return False


def repeat_fraction(texts: Sequence[str]) -> float:
    """Fraction of texts for which :func:`is_repetitive` holds; NaN for no texts."""
    return sum(map(is_repetitive, texts)) / len(texts) if texts else float("nan")
