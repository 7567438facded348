"""Preference vectors: normalisation, the error messages, and the sweep grid."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pama_lit.core.preference import resolve_preference, simplex_grid

OBJECTIVES = ["sentiment", "length"]


def test_none_is_uniform():
    out = resolve_preference(None, ["a", "b", "c", "d"])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((4,), 0.25))


@pytest.mark.parametrize(
    "preference",
    [[1, 3], (0.5, 1.5), torch.tensor([2.0, 6.0]), {"length": 0.75, "sentiment": 0.25}],
)
def test_weights_are_normalised_in_objective_order(preference):
    out = resolve_preference(preference, OBJECTIVES)
    assert out.dtype == torch.float32 and out.shape == (2,)
    torch.testing.assert_close(out, torch.tensor([0.25, 0.75]))


def test_wrong_length_names_objectives_and_vector():
    with pytest.raises(ValueError) as info:
        resolve_preference([0.3, 0.2, 0.5], OBJECTIVES)
    assert str(info.value) == (
        "preference [0.3, 0.2, 0.5] has 3 entries but there are 2 objectives (sentiment, length); "
        "give one positive weight per objective in that order"
    )


@pytest.mark.parametrize(
    "preference,fragment",
    [
        ([0.5, -0.5], "negative entry -0.5 for objective 'length'"),
        ([1.0, 0.0], "zero entry 0.0 for objective 'length'"),
        ([0.0, 0.0], "zero entry 0.0 for objective 'sentiment'"),
        ([float("nan"), 1.0], "non-finite entry nan for objective 'sentiment'"),
        ([1.0, float("inf")], "non-finite entry inf for objective 'length'"),
        (["a", 1.0], "non-numeric entry 'a' for objective 'sentiment'"),
        ([1.0, None], "non-numeric entry None for objective 'length'"),
        ([True, 1.0], "non-numeric entry True"),
        ("0.5,0.5", "is not a list of weights"),
        (0.5, "is not a list of weights"),
        ({"sentiment": 1.0}, "missing: ['length']"),
        ({"sentiment": 1.0, "length": 1.0, "humor": 1.0}, "unknown: ['humor']"),
    ],
)
def test_bad_vectors_are_rejected_with_the_objectives_named(preference, fragment):
    with pytest.raises(ValueError) as info:
        resolve_preference(preference, OBJECTIVES)
    message = str(info.value)
    assert fragment in message
    assert "sentiment, length" in message


def test_no_objectives_is_an_error():
    with pytest.raises(ValueError, match="at least one objective"):
        resolve_preference(None, [])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=6))
def test_resolved_preference_is_positive_and_sums_to_one(weights):
    out = resolve_preference(weights, [f"objective{i}" for i in range(len(weights))])
    assert torch.all(out > 0)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-6)
    total = sum(weights)
    torch.testing.assert_close(out, torch.tensor([w / total for w in weights], dtype=torch.float32))


def test_simplex_grid_two_objectives():
    grid = simplex_grid(2, 6)
    assert len(grid) == 5
    assert grid == [[i / 6, (6 - i) / 6] for i in range(1, 6)]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(0, 6))
def test_simplex_grid_is_every_positive_composition_in_order(k, extra):
    steps = k + extra
    grid = simplex_grid(k, steps)
    assert len(grid) == math.comb(steps - 1, k - 1)
    parts = [[round(x * steps) for x in vector] for vector in grid]
    assert parts == sorted(parts) and len({tuple(p) for p in parts}) == len(parts)
    for vector, p in zip(grid, parts, strict=True):
        assert len(vector) == k and all(x > 0 for x in vector)
        assert sum(p) == steps and math.isclose(sum(vector), 1.0)
        assert vector == [x / steps for x in p]


@pytest.mark.parametrize("k,steps", [(3, 2), (2, 1), (0, 3)])
def test_simplex_grid_rejects_too_coarse_grids(k, steps):
    with pytest.raises(ValueError, match="simplex_grid"):
        simplex_grid(k, steps)
