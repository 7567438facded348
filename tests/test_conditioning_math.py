"""Conditioning's pure math: per-prompt preference draws, their grid, the prompt line, per-sample PAMA."""

from __future__ import annotations

import itertools

import pytest
import torch

from pama_lit.core.ops import noon
from pama_lit.core.pareto import combine_pama_token, scale_by_preference
from pama_lit.core.preference import (
    preference_prefix,
    quantize_preferences,
    sample_preferences,
    simplex_corners,
    simplex_grid,
)
from pama_lit.fronts.metrics import spearman


def test_corners_are_the_vertices_then_the_edge_midpoints():
    assert simplex_corners(3).tolist() == [
        [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
    ]  # fmt: skip
    assert simplex_corners(1).tolist() == [[1.0]]


def test_draws_are_seeded_by_their_seed_alone():
    a = sample_preferences(64, 3, 1.0, 0.2, [0, 5, 0])
    torch.manual_seed(123)  # the global stream plays no part
    assert torch.equal(a, sample_preferences(64, 3, 1.0, 0.2, [0, 5, 0]))
    assert not torch.equal(a, sample_preferences(64, 3, 1.0, 0.2, [0, 5, 1]))  # another rank
    assert not torch.equal(a, sample_preferences(64, 3, 1.0, 0.2, [0, 6, 0]))  # another iteration


@pytest.mark.parametrize("k", [2, 3])
def test_draws_follow_dirichlet_and_corner_statistics(k):
    n, share, alpha = 20000, 0.3, 2.0
    rows = sample_preferences(n, k, alpha, share, [7])
    assert torch.allclose(rows.sum(-1), torch.ones(n, dtype=torch.float64))
    corners = simplex_corners(k)
    is_corner = (rows[:, None, :] == corners[None]).all(-1)  # (n, corners)
    # Corners: the configured share, spread evenly over the vertices and edge midpoints.
    assert abs(is_corner.any(-1).double().mean() - share) < 0.015
    per_corner = is_corner.double().mean(0)
    assert torch.allclose(per_corner, torch.full_like(per_corner, share / len(corners)), atol=0.01)
    # The rest: Dirichlet(alpha): mean 1/K, variance (1/K)(1 - 1/K) / (K alpha + 1).
    rest = rows[~is_corner.any(-1)]
    assert torch.allclose(rest.mean(0), torch.full((k,), 1 / k, dtype=torch.float64), atol=0.01)
    var = (1 / k) * (1 - 1 / k) / (k * alpha + 1)
    assert torch.allclose(rest.var(0), torch.full((k,), var, dtype=torch.float64), rtol=0.05)


def test_no_corner_share_never_draws_a_corner_and_full_share_only_corners():
    assert not (sample_preferences(500, 2, 1.0, 0.0, [1]) == 0).any()
    corners = {tuple(r) for r in simplex_corners(3).tolist()}
    assert {tuple(r) for r in sample_preferences(500, 3, 1.0, 1.0, [1]).tolist()} == corners


def _naive_quantize(w: list[float], steps: int) -> list[float]:
    """The grid point nearest to w in squared distance, by brute force over the whole grid."""
    return min(
        simplex_grid(len(w), steps), key=lambda p: sum((pi - wi) ** 2 for pi, wi in zip(p, w, strict=True))
    )


@pytest.mark.parametrize("k,steps", [(2, 10), (3, 10), (3, 7), (4, 12)])
def test_quantize_matches_the_nearest_grid_point(k, steps):
    w = sample_preferences(200, k, 0.7, 0.0, [k, steps])  # no corners: no ties between grid points
    q = quantize_preferences(w, steps)
    for row, qrow in zip(w.tolist(), q.tolist(), strict=True):
        assert qrow == pytest.approx(_naive_quantize(row, steps), abs=1e-6)


def test_quantize_lifts_vertices_and_keeps_grid_points():
    lifted = quantize_preferences(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 100)
    assert torch.allclose(lifted, torch.tensor([[0.99, 0.01], [0.01, 0.99]]))
    assert quantize_preferences(torch.tensor([0.5, 0.5]), 100).tolist() == [0.5, 0.5]
    assert torch.allclose(quantize_preferences(torch.tensor([0.8, 0.2]), 100), torch.tensor([0.8, 0.2]))
    # Corners of three objectives: each zero lifted to one unit, taken from the lowest-index heavy entry.
    assert (quantize_preferences(simplex_corners(3), 10) * 10).round().tolist() == [
        [8, 1, 1], [1, 8, 1], [1, 1, 8], [4, 5, 1], [4, 1, 5], [1, 4, 5],
    ]  # fmt: skip
    assert (quantize_preferences(torch.tensor([1.0, 0.0, 0.0]), 3) * 3).round().tolist() == [1, 1, 1]
    for steps in (3, 7, 100):  # every row a grid point, whatever the draw
        q = quantize_preferences(sample_preferences(300, 3, 0.3, 0.5, [steps]), steps) * steps
        assert torch.allclose(q, q.round(), atol=1e-4) and (q.round() >= 1).all()
        assert (q.round().sum(-1) == steps).all()
    with pytest.raises(ValueError, match="steps >= k"):
        quantize_preferences(torch.tensor([0.5, 0.5]), 1)


def test_prefix_is_fixed_width_and_names_objectives_in_order():
    assert (
        preference_prefix([0.7, 0.3], ["sentiment", "length"], 2)
        == "[preference: sentiment 0.70, length 0.30]\n"
    )
    widths = {len(preference_prefix([w, 1 - w], ["a", "b"], 2)) for w in (0.01, 0.5, 0.99)}
    assert len(widths) == 1


@pytest.mark.parametrize("seed,k", itertools.product(range(3), [2, 3]))
@pytest.mark.parametrize("shape", ["BK", "B1K"])
def test_pama_token_per_sample_preference_equals_the_loop_over_rows(seed, k, shape):
    g = torch.Generator().manual_seed(seed)
    adv = noon(torch.randn(5, 7, k, generator=g))
    prefs = quantize_preferences(sample_preferences(5, k, 1.0, 0.3, [seed]), 100)
    given = prefs if shape == "BK" else prefs[:, None, :]
    combined, weights = combine_pama_token(adv, given)
    for b in range(5):
        c_b, w_b = combine_pama_token(adv[b : b + 1], prefs[b])
        assert torch.equal(combined[b], c_b[0])
        assert torch.equal(weights[b], w_b[0])
    # With an active mask too: each row is PAMA over the active objectives with its own weights.
    active = torch.tensor([True] * (k - 1) + [False])
    scaled = scale_by_preference(adv, given, active)
    for b in range(5):
        assert torch.equal(scaled[b], scale_by_preference(adv[b], prefs[b], active))


def test_per_sample_preference_of_the_wrong_shape_is_refused():
    adv = torch.zeros(4, 3, 2)
    with pytest.raises(ValueError, match=r"one row per sample \(\(B,K\) or \(B,1,K\)\), with K = 2"):
        combine_pama_token(adv, torch.full((3, 2), 0.5))  # 3 rows for 4 samples
    with pytest.raises(ValueError, match="K = 2"):
        combine_pama_token(adv, torch.full((4, 3), 1 / 3))


def test_spearman_named_cases_and_against_scipy():
    assert spearman([0.25, 0.5, 0.75], [1.0, 2.0, 9.0]) == pytest.approx(1.0)
    assert spearman([0.25, 0.5, 0.75], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) != spearman([1, 2, 3], [5, 5, 5])  # NaN: constant, undefined
    assert spearman([1], [2]) != spearman([1], [2])
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    for n in (3, 5, 20):
        x = torch.randint(0, 4, (n,), generator=g).tolist()  # ties too
        y = torch.randn(n, generator=g).tolist()
        expected = stats.spearmanr(x, y).statistic
        if expected == expected:  # scipy's NaN cases are ours too
            assert spearman(x, y) == pytest.approx(expected)
