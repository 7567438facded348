"""Fluency measures against naive oracles: token-pooled log-prob, distinct-2 and the repetition test."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pama_lit.core.fluency import distinct_n, is_repetitive, mean_token_logprob, repeat_fraction

FAST = settings(max_examples=60, deadline=None)

# Few distinct characters and words, so that runs and repeated bigrams come up often.
CHARS = st.text(alphabet="aAb!. 1\n", max_size=24)
WORDS = st.lists(st.sampled_from(["ha", "HA", "ha,", "the", "cat", "!!", "x"]), max_size=10).map(" ".join)
TEXTS = st.one_of(CHARS, WORDS)


def naive_token_mean(logprobs: list[list[float]], lengths: list[int]) -> float:
    total, count = 0.0, 0
    for row, n in zip(logprobs, lengths, strict=True):
        for t in range(n):
            total += row[t]
            count += 1
    return total / count if count else float("nan")


def naive_distinct2(texts: list[str]) -> float:
    bigrams = []
    for text in texts:
        w = text.lower().split()
        for i in range(len(w) - 1):
            bigrams.append((w[i], w[i + 1]))
    unique = []
    for b in bigrams:
        if b not in unique:
            unique.append(b)
    return len(unique) / len(bigrams) if bigrams else float("nan")


def naive_repetitive(text: str) -> bool:
    s = text.lower()
    for i in range(len(s) - 3):
        c = s[i]
        if not c.isspace() and not c.isdecimal() and s[i + 1] == c and s[i + 2] == c and s[i + 3] == c:
            return True
    w = s.split()
    return any(w[i] == w[i + 1] == w[i + 2] == w[i + 3] for i in range(len(w) - 3))


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12)


@FAST
@given(st.lists(st.integers(0, 6), max_size=6), st.integers(0, 2**31 - 1))
def test_mean_token_logprob_pools_every_token(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    logprobs = -torch.rand(len(lengths), 6, generator=g, dtype=torch.float64) * 5
    mask = torch.arange(6) < torch.tensor(lengths, dtype=torch.long).unsqueeze(-1)
    sums = (logprobs * mask).sum(-1).tolist()
    assert same(mean_token_logprob(sums, lengths), naive_token_mean(logprobs.tolist(), lengths))


def test_mean_token_logprob_weighs_long_responses_by_their_tokens():
    # One token at -1, three at -3: per token (-1 - 9) / 4 = -2.5, not the per-sample mean (-1 - 3) / 2.
    assert mean_token_logprob([-1.0, -9.0], [1, 3]) == pytest.approx(-2.5)
    with pytest.raises(ValueError, match="2 log-prob sums but 1 lengths"):
        mean_token_logprob([-1.0, -2.0], [1])


@FAST
@given(st.lists(TEXTS, max_size=6))
def test_distinct2_matches_naive_count(texts):
    assert same(distinct_n(texts, 2), naive_distinct2(texts))


def test_distinct2_examples():
    assert distinct_n(["the cat the cat"]) == pytest.approx(2 / 3)  # (the,cat) twice, (cat,the) once
    assert distinct_n(["The cat", "the CAT"]) == pytest.approx(1 / 2)  # lower-cased, pooled over texts
    assert distinct_n(["a b", "c d"]) == 1.0  # (b, c) spans two texts: not a bigram
    assert math.isnan(distinct_n(["one", ""]))
    assert distinct_n(["a b a"], 1) == pytest.approx(2 / 3)


@FAST
@given(TEXTS)
def test_is_repetitive_matches_naive_scan(text):
    assert is_repetitive(text) == naive_repetitive(text)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Great!!!!", True),
        ("soooo good", True),
        ("Aaaa", True),
        ("no no no no", True),
        ("Ha ha HA ha", True),
        ("ha ha ha", False),
        ("ha ha, ha ha", False),
        ("wait... what", False),
        ("in 10000 years", False),
        ("line\n\n\n\nbreaks    and spaces", False),
        ("", False),
    ],
)
def test_is_repetitive_examples(text, expected):
    assert is_repetitive(text) is expected


def test_repeat_fraction_counts_texts():
    assert repeat_fraction(["fine", "yes!!!!", "ok ok ok ok", "good"]) == pytest.approx(0.5)
    assert math.isnan(repeat_fraction([]))
