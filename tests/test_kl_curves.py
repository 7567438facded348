"""Reward-vs-KL curves (pama_lit.fronts.kl_curves) against a dense-sampling oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pama_lit.fronts.kl_curves import common_kl, path_from_evaluations, reward_at_kl


def oracle_reward_at_kl(kls, rewards, kl, samples=20001, tol=1e-3):
    """Walk every segment of the path in small steps; the best reward seen within ``tol`` of ``kl``."""
    seen = [y for x, y in zip(kls, rewards, strict=True) if abs(x - kl) <= tol]
    for i in range(1, len(kls)):
        t = np.linspace(0.0, 1.0, samples)
        xs = kls[i - 1] + t * (kls[i] - kls[i - 1])
        ys = rewards[i - 1] + t * (rewards[i] - rewards[i - 1])
        seen += ys[np.abs(xs - kl) <= tol].tolist()
    return max(seen) if seen else None


paths = st.integers(1, 6).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 10), min_size=n, max_size=n),
        st.lists(st.floats(-1, 1), min_size=n, max_size=n),
    )
)
levels = st.one_of(
    st.integers(-1, 11).map(float),
    st.tuples(st.integers(-1, 10), st.floats(0.01, 0.99)).map(lambda p: p[0] + p[1]),
)


@settings(max_examples=150, deadline=None)
@given(paths, levels)
def test_reward_at_kl_is_the_best_reading_of_the_piecewise_linear_path(path, kl):
    kls, rewards = [float(k) for k in path[0]], path[1]
    got = reward_at_kl(kls, rewards, kl)
    want = oracle_reward_at_kl(kls, rewards, kl)
    if not min(kls) <= kl <= max(kls):  # a continuous path reaches exactly the KLs between its extremes
        assert got is None and want is None
        return
    assert got is not None and want is not None
    # integer KLs: every non-vertical segment has |slope| <= 2, so the oracle's tolerance costs <= 2e-3
    assert got == pytest.approx(want, abs=2.5e-3)
    assert min(rewards) - 1e-12 <= got <= max(rewards) + 1e-12


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.1, 3), min_size=1, max_size=6), st.data())
def test_a_path_whose_kl_only_grows_is_plain_interpolation(steps, data):
    kls = np.concatenate([[0.0], np.cumsum(steps)])
    rewards = data.draw(st.lists(st.floats(-1, 1), min_size=len(kls), max_size=len(kls)))
    kl = data.draw(st.floats(0, float(kls[-1])))
    assert reward_at_kl(kls.tolist(), rewards, kl) == pytest.approx(float(np.interp(kl, kls, rewards)))


def test_a_run_that_falls_back_in_kl_is_read_at_its_best_crossing():
    kls, rewards = [0.0, 6.0, 4.0], [0.0, 0.1, 0.3]
    assert reward_at_kl(kls, rewards, 4.0) == pytest.approx(0.3)  # the final checkpoint, not 4/6 * 0.1
    assert reward_at_kl(kls, rewards, 5.0) == pytest.approx(0.2)  # the way back beats the way out
    assert reward_at_kl(kls, rewards, 2.0) == pytest.approx(2 / 6 * 0.1)
    assert reward_at_kl(kls, rewards, 6.5) is None


@pytest.mark.parametrize(
    ("kls", "rewards", "kl", "match"),
    [
        ([0.0, 1.0], [0.0], 0.5, "one reward per KL"),
        ([], [], 0.5, "at least one"),
        ([0.0, float("nan")], [0.0, 1.0], 0.5, "KL #1 must be a finite number"),
        ([0.0, 1.0], [0.0, float("inf")], 0.5, "reward #1"),
        ([0.0, 1.0], [0.0, 1.0], None, "kl must be a finite number"),
    ],
)
def test_bad_paths_are_refused_by_name(kls, rewards, kl, match):
    with pytest.raises(ValueError, match=match):
        reward_at_kl(kls, rewards, kl)


def test_common_kl_is_the_largest_kl_every_path_reaches():
    assert common_kl([[0.0, 3.0, 5.0], [0.0, 7.0, 4.0], [0.0, 4.5]]) == 4.5
    assert common_kl([]) is None
    for path in ([0.0, 3.0, 5.0], [0.0, 7.0, 4.0], [0.0, 4.5]):
        assert reward_at_kl(path, [0.0] * len(path), 4.5) is not None


def record(iteration, kl, sentiment, length=1.0, objectives=("sentiment", "length")):
    values = {"sentiment": sentiment, "length": length}
    return {"iteration": iteration, "kl_ref": kl, "rewards": {o: {"mean": values[o]} for o in objectives}}


def test_path_from_evaluations_orders_by_iteration_and_keeps_a_resumed_run_s_last_record():
    records = [
        record(10, 3.0, 0.2),
        record(0, 0.0, 0.1),
        record(10, 3.5, 0.25),  # the resumed run evaluated iteration 10 again
        {"iteration": 20, "kl_ref": None, "rewards": {}},  # no KL: skipped
        record(20, float("nan"), 0.9),  # a non-finite KL: skipped
        record(30, 6.0, 0.4),
    ]
    kls, rewards = path_from_evaluations(records)
    assert kls == [0.0, 3.5, 6.0]
    assert rewards == {"sentiment": [0.1, 0.25, 0.4], "length": [1.0, 1.0, 1.0]}
    assert path_from_evaluations([]) == ([], {})


def test_path_from_evaluations_refuses_records_of_other_objectives():
    with pytest.raises(ValueError, match="iteration 10 scores \\['sentiment'\\]"):
        path_from_evaluations([record(0, 0.0, 0.1), record(10, 1.0, 0.2, objectives=("sentiment",))])
