"""Front indicators against hand-computed values and naive oracles (all objectives maximised)."""

import math

import numpy as np
import pytest
import torch

from pama_lit.fronts import HypervolumeMetric, IGDPlusMetric
from pama_lit.fronts.metrics import additive_epsilon, hypervolume, igd_plus, non_dominated, spacing

STAIRS_2D = [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]
CORNERS_3D = [[2.0, 1.0, 1.0], [1.0, 2.0, 1.0], [1.0, 1.0, 2.0]]


def naive_hypervolume_2d(points, ref):
    """Sum of vertical slabs between consecutive x of the non-dominated staircase."""
    pts = sorted((x, y) for x, y in points if x > ref[0] and y > ref[1])
    volume, left = 0.0, ref[0]
    for i, (x, _) in enumerate(pts):
        height = max(y for _, y in pts[i:]) - ref[1]
        volume += (x - left) * height
        left = x
    return volume


def naive_igd_plus(points, front):
    return np.mean([min(np.linalg.norm(np.maximum(z - a, 0.0)) for a in points) for z in front])


def naive_epsilon(points, front):
    return max(min(np.max(z - a) for a in points) for z in front)


def test_non_dominated_2d():
    # (1,1) is dominated by (2,2); (0.5,3) by (1,3); both copies of (2,2) stay.
    points = [*STAIRS_2D, [1.0, 1.0], [2.0, 2.0], [0.5, 3.0]]
    assert non_dominated(points).tolist() == [True, True, True, False, True, False]


def test_non_dominated_3d_and_empty():
    # (1,1,1) is dominated by each corner; (0,0,3) is best on the third objective.
    points = [*CORNERS_3D, [1.0, 1.0, 1.0], [0.0, 0.0, 3.0]]
    assert non_dominated(points).tolist() == [True, True, True, False, True]
    assert non_dominated(np.zeros((0, 2))).tolist() == []


def test_hypervolume_2d_by_hand():
    # Staircase (1,3), (2,2), (3,1) from ref (0,0): slabs x in [0,1] height 3, [1,2] height 2,
    # [2,3] height 1 -> 3 + 2 + 1 = 6.
    assert hypervolume(STAIRS_2D, [0.0, 0.0]) == pytest.approx(6.0)
    # From ref (0.5,0.5): [0.5,1] x 2.5 + [1,2] x 1.5 + [2,3] x 0.5 = 1.25 + 1.5 + 0.5 = 3.25.
    assert hypervolume(STAIRS_2D, [0.5, 0.5]) == pytest.approx(3.25)
    # (4,-1) is below the ref in y and (0,5) level with it in x: neither contributes. The dominated
    # (1,1) lies inside the staircase and adds nothing.
    assert hypervolume([*STAIRS_2D, [4.0, -1.0], [0.0, 5.0], [1.0, 1.0]], [0.0, 0.0]) == pytest.approx(6.0)


def test_hypervolume_3d_by_hand():
    # Three boxes of volume 2 from the origin; every pair and the triple intersect in the unit cube:
    # 3*2 - 3*1 + 1 = 4. (3,0,3) is level with the ref in y, (0.5,0.5,0.5) is dominated.
    assert hypervolume(CORNERS_3D, [0.0, 0.0, 0.0]) == pytest.approx(4.0)
    assert hypervolume([*CORNERS_3D, [3.0, 0.0, 3.0], [0.5] * 3], [0.0] * 3) == pytest.approx(4.0)
    # From ref (1,1,1) each corner is a unit box beyond the cube and they do not overlap: 0.
    assert hypervolume(CORNERS_3D, [1.0, 1.0, 1.0]) == pytest.approx(0.0)


def test_hypervolume_edge_cases():
    assert hypervolume(np.zeros((0, 2)), [0.0, 0.0]) == 0.0
    assert hypervolume(torch.tensor([2.0, 3.0]), torch.tensor([1.0, 1.0])) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="objectives"):
        hypervolume(STAIRS_2D, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        hypervolume([[1.0, float("nan")]], [0.0, 0.0])


def test_hypervolume_matches_naive_oracle_2d():
    rng = np.random.default_rng(0)
    for _ in range(20):
        points = rng.normal(size=(rng.integers(1, 12), 2))
        ref = rng.normal(size=2) - 1.0
        assert hypervolume(points, ref) == pytest.approx(naive_hypervolume_2d(points, ref))


def test_igd_plus_2d_by_hand():
    front = [[1.0, 4.0], [4.0, 1.0], [2.5, 2.5]]
    # d+(z, a) = ||max(z - a, 0)||:
    #   z=(1,4):     (1,3) -> (0,1) = 1;  (2,2) -> (0,2) = 2;  (3,1) -> (0,3) = 3      min 1
    #   z=(4,1):     (3,1) -> (1,0) = 1                                                min 1
    #   z=(2.5,2.5): (2,2) -> (.5,.5) = 0.7071; (1,3) -> (1.5,0) = 1.5; (3,1) -> 1.5   min 0.7071
    # IGD+ = (1 + 1 + sqrt(0.5)) / 3 = 0.902369
    assert igd_plus(STAIRS_2D, front) == pytest.approx((2 + math.sqrt(0.5)) / 3)
    # A set that weakly dominates the front is at distance 0 (plain IGD would not be).
    assert igd_plus([[1.5, 4.5], [4.0, 2.0], [3.0, 3.0]], front) == pytest.approx(0.0)
    assert igd_plus(np.zeros((0, 2)), front) == math.inf


def test_igd_plus_3d_by_hand():
    # z=(2,2,2): every corner falls short by 1 in two objectives -> sqrt(2).
    # z=(3,1,1): (2,1,1) falls short by (1,0,0) -> 1; others by 2.  IGD+ = (sqrt(2) + 1) / 2.
    front = [[2.0, 2.0, 2.0], [3.0, 1.0, 1.0]]
    assert igd_plus(CORNERS_3D, front) == pytest.approx((math.sqrt(2) + 1) / 2)


def test_additive_epsilon_by_hand():
    # eps = max_z min_a max_k (z_k - a_k):
    #   z=(1,4): (1,3) -> 1;  z=(4,1): (3,1) -> 1;  z=(2.5,2.5): (2,2) -> 0.5   => eps = 1
    assert additive_epsilon(STAIRS_2D, [[1.0, 4.0], [4.0, 1.0], [2.5, 2.5]]) == pytest.approx(1.0)
    # (2,2) beats (1,1) by 1 everywhere: eps = -1.
    assert additive_epsilon([[2.0, 2.0]], [[1.0, 1.0]]) == pytest.approx(-1.0)
    # 3-D: z=(2,2,2) needs (2,1,1) + 1; z=(3,1,1) needs (2,1,1) + 1   => eps = 1
    assert additive_epsilon(CORNERS_3D, [[2.0, 2.0, 2.0], [3.0, 1.0, 1.0]]) == pytest.approx(1.0)
    assert additive_epsilon(np.zeros((0, 2)), [[1.0, 1.0]]) == math.inf


def test_igd_plus_and_epsilon_match_naive_oracles():
    rng = np.random.default_rng(1)
    for k in (2, 3, 4):
        points, front = rng.normal(size=(7, k)), rng.normal(size=(5, k))
        assert igd_plus(points, front) == pytest.approx(naive_igd_plus(points, front))
        assert additive_epsilon(points, front) == pytest.approx(naive_epsilon(points, front))


def test_spacing_by_hand():
    # Evenly spaced staircase: every nearest L1 distance is 2 -> spacing 0.
    assert spacing(STAIRS_2D) == pytest.approx(0.0)
    # (0,4),(1,3),(3,1): nearest L1 distances 2, 2, 4; mean 8/3; squared deviations 4/9, 4/9, 16/9;
    # sum 24/9 over (n-1)=2 -> 4/3; spacing = sqrt(4/3) = 1.154701.
    assert spacing([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0]]) == pytest.approx(math.sqrt(4 / 3))
    # 3-D: (0,0,0),(1,0,0),(1,1,1): pairwise L1 1, 3, 2; nearest 1, 1, 2; mean 4/3;
    # squared deviations 1/9, 1/9, 4/9 -> 6/9 / 2 = 1/3; spacing = sqrt(1/3).
    assert spacing([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]) == pytest.approx(math.sqrt(1 / 3))
    assert math.isnan(spacing([[1.0, 2.0]]))


def test_hypervolume_metric_matches_function():
    metric = HypervolumeMetric(ref_point=[0.0, 0.0])
    metric.update(torch.tensor(STAIRS_2D[:2]))
    metric.update(torch.tensor(STAIRS_2D[2]))
    metric.update(torch.tensor([[1.0, 1.0]]))
    expected = hypervolume([*STAIRS_2D, [1.0, 1.0]], [0.0, 0.0])
    assert metric.compute().item() == pytest.approx(expected)
    assert metric.higher_is_better
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert metric.compute().item() == 0.0
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        metric.update(torch.zeros(3, 3))


def test_igd_plus_metric_matches_function():
    front = [[1.0, 4.0], [4.0, 1.0], [2.5, 2.5]]
    metric = IGDPlusMetric(reference_front=front)
    for point in STAIRS_2D:
        metric.update(torch.tensor(point))
    assert metric.compute().item() == pytest.approx(igd_plus(STAIRS_2D, front))
    assert not metric.higher_is_better
