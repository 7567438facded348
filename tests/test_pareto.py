"""PAMA's closed form, the combiners and the MGDA min-norm solver against brute-force oracles."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pama_lit.core.ops import masked_mean, noon
from pama_lit.core.pareto import (
    closed_form_min_norm,
    combine_pama_batch,
    combine_pama_token,
    combine_stats,
    min_norm_two,
    min_norm_weights,
    scale_by_preference,
)

FAST = settings(max_examples=60, deadline=None)


def simplex_points(k: int, steps: int) -> torch.Tensor:
    """(N,K) float64: every point of the simplex whose entries are multiples of 1/steps (zeros included)."""
    points = []
    for cuts in itertools.combinations(range(steps + k - 1), k - 1):
        bounds = (-1, *cuts, steps + k - 1)
        points.append([bounds[i + 1] - bounds[i] - 1 for i in range(k)])
    return torch.tensor(points, dtype=torch.float64) / steps


def exact_min_norm(gram: torch.Tensor) -> float:
    """min over the simplex of c^T G c by enumerating supports and solving each one's KKT system."""
    k = gram.shape[0]
    best = float("inf")
    for r in range(1, k + 1):
        for support in itertools.combinations(range(k), r):
            idx = list(support)
            kkt = torch.zeros(r + 1, r + 1, dtype=torch.float64)
            kkt[:r, :r] = gram[idx][:, idx]
            kkt[:r, r] = 1
            kkt[r, :r] = 1
            rhs = torch.zeros(r + 1, dtype=torch.float64)
            rhs[r] = 1
            solution = torch.linalg.lstsq(kkt, rhs).solution[:r]
            if solution.sum() <= 0 or (solution < -1e-12).any():
                continue
            c = torch.zeros(k, dtype=torch.float64)
            c[idx] = solution.clamp(min=0) / solution.clamp(min=0).sum()
            best = min(best, float(c @ gram @ c))
    return best


# ---- Theorem 1 ------------------------------------------------------------------------------------

special = st.sampled_from([0.0, 0.0, 1.0, -1.0, 2.5, -2.5, 1e-9, -1e-9])
entries = st.one_of(special, st.floats(-100, 100, allow_nan=False))
vectors = st.integers(1, 6).flatmap(lambda k: st.lists(entries, min_size=k, max_size=k))


@FAST
@given(vectors)
def test_closed_form_weights_are_on_the_simplex_and_reach_s_star(values):
    a = torch.tensor(values, dtype=torch.float64)
    s_star, weights = closed_form_min_norm(a)
    assert s_star.shape == () and weights.shape == a.shape
    assert torch.all(weights >= 0)
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    scale = float(a.abs().max()) + 1.0
    assert float((weights * a).sum()) == pytest.approx(float(s_star), abs=1e-12 * scale)
    # s* is the projection of 0 onto [min, max].
    assert float(s_star) == float(torch.clamp(torch.tensor(0.0, dtype=torch.float64), a.min(), a.max()))
    if (a > 0).all():
        assert weights[a.argmin()] == 1 and s_star == a.min()
    if (a < 0).all():
        assert weights[a.argmax()] == 1 and s_star == a.max()
    assert (weights > 0).sum() <= 2


@pytest.mark.parametrize("k,steps", [(2, 1000), (3, 150)])
def test_closed_form_against_brute_force_on_the_simplex(k, steps):
    grid = simplex_points(k, steps)
    g = torch.Generator().manual_seed(k)
    cases = [torch.randn(k, generator=g, dtype=torch.float64) * 3 for _ in range(30)]
    cases += [
        torch.tensor(v, dtype=torch.float64) for v in itertools.product([-2.0, 0.0, 1.0, 3.0], repeat=k)
    ]
    for a in cases:
        s_star, weights = closed_form_min_norm(a)
        grid_min = float(((grid @ a) ** 2).min())
        resolution = float((a.max() - a.min()) / steps) ** 2
        assert float(s_star) ** 2 <= grid_min + 1e-12
        assert grid_min <= float(s_star) ** 2 + resolution + 1e-12
        assert float((weights @ a) ** 2) == pytest.approx(float(s_star) ** 2, abs=1e-12)


@pytest.mark.parametrize(
    "a,s_star,weights",
    [
        ([2.0, 1.0, 3.0], 1.0, [0, 1, 0]),
        ([-2.0, -1.0, -3.0], -1.0, [0, 1, 0]),
        ([-1.0, 3.0], 0.0, [0.75, 0.25]),
        ([0.0, 0.0, 0.0], 0.0, [1, 0, 0]),
        ([0.0, 2.0], 0.0, [1, 0]),
        ([-2.0, 0.0], 0.0, [0, 1]),
        ([1.0, 1.0], 1.0, [1, 0]),
        ([5.0], 5.0, [1]),
        ([-5.0], -5.0, [1]),
        ([0.0], 0.0, [1]),
    ],
)
def test_closed_form_named_cases(a, s_star, weights):
    out, w = closed_form_min_norm(torch.tensor(a))
    assert out.item() == s_star
    torch.testing.assert_close(w, torch.tensor(weights, dtype=torch.float32))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_closed_form_is_batched_and_keeps_dtype(dtype):
    a = torch.randn(4, 5, 3).to(dtype)
    s_star, weights = closed_form_min_norm(a)
    assert s_star.shape == (4, 5) and weights.shape == (4, 5, 3)
    assert s_star.dtype == dtype and weights.dtype == dtype
    for index in itertools.product(range(4), range(5)):
        expected, expected_w = closed_form_min_norm(a[index].double())
        assert float(s_star[index]) == pytest.approx(float(expected), abs=1e-2)
        torch.testing.assert_close(weights[index].double(), expected_w, atol=1e-2, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_closed_form_on_cuda_matches_cpu():
    a = torch.randn(64, 32, 3, dtype=torch.float64)
    s_cpu, w_cpu = closed_form_min_norm(a)
    s_gpu, w_gpu = closed_form_min_norm(a.cuda())
    torch.testing.assert_close(s_gpu.cpu(), s_cpu)
    torch.testing.assert_close(w_gpu.cpu(), w_cpu)


# ---- combiners ------------------------------------------------------------------------------------


def test_scale_by_preference():
    a = torch.tensor([[[1.0, 2.0, 3.0]]])
    torch.testing.assert_close(scale_by_preference(a, torch.full((3,), 1 / 3)), a)
    w = torch.tensor([0.5, 0.25, 0.25])
    torch.testing.assert_close(scale_by_preference(a, w), a / (3 * w))
    with pytest.raises(ValueError, match="objectives"):
        scale_by_preference(a, torch.tensor([0.5, 0.5]))


@FAST
@given(st.integers(0, 2**31 - 1), st.integers(1, 4))
def test_pama_token_with_uniform_preference_is_the_min_after_noon(seed, k):
    g = torch.Generator().manual_seed(seed)
    advantages = noon(torch.randn(3, 5, k, generator=g, dtype=torch.float64))
    combined, weights = combine_pama_token(advantages, torch.full((k,), 1 / k, dtype=torch.float64))
    torch.testing.assert_close(combined, advantages.min(-1).values)
    torch.testing.assert_close((weights * advantages).sum(-1), combined)


def test_pama_token_with_preference_divides_before_the_min():
    advantages = torch.tensor([[[1.0, 1.0], [0.4, 1.0], [2.0, 0.0]]])
    w = torch.tensor([0.8, 0.2])
    combined, weights = combine_pama_token(advantages, w)
    # Scaled: A_1 / 1.6 and A_2 / 0.4, so the heavier objective 1 binds unless A_2 is 4x smaller.
    torch.testing.assert_close(combined, torch.tensor([[0.625, 0.25, 0.0]]))
    torch.testing.assert_close(weights[0, :, 0], torch.tensor([1.0, 1.0, 0.0]))


def naive_pama_batch(advantages, mask, preference, ratio, clip_coef):
    """Python loops: the mean over real tokens of A * 1[ratio <= 1 + eps], then Theorem 1 by cases."""
    batch, num_steps, k = advantages.shape
    scaled = advantages / (k * preference)
    a = [0.0] * k
    n = int(mask.sum())
    for b in range(batch):
        for t in range(num_steps):
            if mask[b, t] and ratio[b, t] <= 1 + clip_coef:
                for i in range(k):
                    a[i] += scaled[b, t, i].item() / n
    lo, hi = min(a), max(a)
    c = [0.0] * k
    if lo > 0 or lo == hi:
        c[a.index(lo)] = 1.0
    elif hi < 0:
        c[a.index(hi)] = 1.0
    else:
        c[a.index(lo)] += hi / (hi - lo)
        c[a.index(hi)] += -lo / (hi - lo)
    c = torch.tensor(c, dtype=advantages.dtype)
    return (scaled * c).sum(-1) * mask, c


@FAST
@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.booleans())
def test_pama_batch_matches_the_naive_version(seed, k, use_noon):
    g = torch.Generator().manual_seed(seed)
    advantages = torch.randn(3, 6, k, generator=g, dtype=torch.float64)
    if use_noon:
        advantages = noon(advantages)
    mask = torch.arange(6) < torch.randint(1, 7, (3, 1), generator=g)
    preference = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    preference = preference / preference.sum()
    ratio = 1 + 0.4 * torch.randn(3, 6, generator=g, dtype=torch.float64)
    combined, weights = combine_pama_batch(advantages, mask, preference, ratio, clip_coef=0.2)
    expected, expected_weights = naive_pama_batch(advantages, mask, preference, ratio, 0.2)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(combined, expected)
    assert combined.shape == (3, 6) and weights.shape == (k,)


def test_pama_batch_ratio_masking_changes_which_objective_binds():
    # Token 0 favours objective 0, token 1 favours objective 1; without token 1, objective 1 has the
    # smaller mean and binds. With token 1 (ratio inside the clip range) objective 0 binds instead.
    advantages = torch.tensor([[[1.0, 0.5], [0.0, 3.0]]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    uniform = torch.tensor([0.5, 0.5])
    _, all_tokens = combine_pama_batch(advantages, mask, uniform)
    torch.testing.assert_close(all_tokens, torch.tensor([1.0, 0.0]))
    _, clipped = combine_pama_batch(
        advantages, mask, uniform, ratio=torch.tensor([[1.0, 1.5]]), clip_coef=0.2
    )
    torch.testing.assert_close(clipped, torch.tensor([0.0, 1.0]))
    none_ratio, _ = combine_pama_batch(advantages, mask, uniform, ratio=None)
    ones_ratio, _ = combine_pama_batch(advantages, mask, uniform, ratio=torch.ones(1, 2))
    torch.testing.assert_close(none_ratio, ones_ratio)


def test_pama_batch_zeroes_padding():
    advantages = torch.ones(2, 3, 2)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    combined, _ = combine_pama_batch(advantages, mask, torch.tensor([0.5, 0.5]))
    assert torch.equal(combined, mask.float())
    assert masked_mean(combined, mask) == 1


# ---- active objectives (excluded ones never veto) ------------------------------------------------

masks = st.integers(1, 4).flatmap(lambda k: st.lists(st.booleans(), min_size=k, max_size=k))


@FAST
@given(st.integers(0, 2**31 - 1), masks)
def test_closed_form_with_an_active_mask_is_the_closed_form_of_the_active_entries(seed, active):
    g = torch.Generator().manual_seed(seed)
    active = torch.tensor(active)
    a = torch.randn(5, active.numel(), generator=g, dtype=torch.float64)
    s_star, weights = closed_form_min_norm(a, active)
    assert torch.all(weights[:, ~active] == 0)
    if not active.any():
        assert torch.all(s_star == 0) and torch.all(weights == 0)
        return
    expected_s, expected_w = closed_form_min_norm(a[:, active])
    torch.testing.assert_close(s_star, expected_s)
    torch.testing.assert_close(weights[:, active], expected_w)


@FAST
@given(st.integers(0, 2**31 - 1), masks)
def test_pama_token_and_batch_with_an_active_mask_are_pama_over_the_active_objectives(seed, active):
    g = torch.Generator().manual_seed(seed)
    active = torch.tensor(active)
    k = active.numel()
    advantages = noon(torch.randn(3, 6, k, generator=g, dtype=torch.float64))
    mask = torch.arange(6) < torch.randint(1, 7, (3, 1), generator=g)
    preference = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    preference = preference / preference.sum()
    ratio = 1 + 0.4 * torch.randn(3, 6, generator=g, dtype=torch.float64)
    token, token_w = combine_pama_token(advantages, preference, active)
    batch, batch_w = combine_pama_batch(advantages, mask, preference, ratio, 0.2, active=active)
    # An excluded objective never binds, however small (0 after Noon) its advantage.
    assert torch.all(token_w[..., ~active] == 0) and torch.all(batch_w[~active] == 0)
    if not active.any():
        assert torch.all(token == 0) and torch.all(batch == 0)
        assert torch.all(token_w == 0) and torch.all(batch_w == 0)
        return
    # The preference restricted to the active objectives and renormalised: PAMA over them alone.
    sub_advantages, sub_preference = advantages[..., active], preference[active] / preference[active].sum()
    torch.testing.assert_close(token, combine_pama_token(sub_advantages, sub_preference)[0])
    expected_batch, expected_w = combine_pama_batch(sub_advantages, mask, sub_preference, ratio, 0.2)
    torch.testing.assert_close(batch, expected_batch)
    torch.testing.assert_close(batch_w[active], expected_w)


def test_an_all_true_mask_changes_nothing():
    g = torch.Generator().manual_seed(3)
    advantages = noon(torch.randn(4, 7, 3, generator=g))
    w = torch.tensor([0.5, 0.3, 0.2])
    every = torch.ones(3, dtype=torch.bool)
    for with_mask, without in zip(
        combine_pama_token(advantages, w, every), combine_pama_token(advantages, w), strict=True
    ):
        torch.testing.assert_close(with_mask, without)


def test_a_light_objective_left_out_leaves_objective_one_alone():
    """veto_threshold's effect: at w = (0.95, 0.05) without objective 2, PAMA is Noon PPO on objective 1."""
    g = torch.Generator().manual_seed(0)
    advantages = noon(torch.randn(8, 16, 2, generator=g))
    w = torch.tensor([0.95, 0.05])
    combined, _ = combine_pama_token(advantages, w, torch.tensor([True, False]))
    torch.testing.assert_close(combined, advantages[..., 0])
    vetoed, _ = combine_pama_token(advantages, w)
    assert (vetoed > 0).float().mean() < 0.35, "with the veto about half of objective 1's tokens are lost"


# ---- combine diagnostics ---------------------------------------------------------------------------


def naive_combine_stats(advantages, combined, weights, mask):
    batch, num_steps, k = advantages.shape
    binding, n_active, n_tokens, zeros = [0.0] * k, 0, 0, [0] * k
    for b in range(batch):
        for t in range(num_steps):
            if not mask[b, t]:
                continue
            n_tokens += 1
            for i in range(k):
                zeros[i] += int(advantages[b, t, i] == 0)
            if combined[b, t] > 0:
                n_active += 1
                for i in range(k):
                    binding[i] += float(weights[b, t, i])
    return (
        torch.tensor([x / max(n_active, 1) for x in binding], dtype=advantages.dtype),
        n_active / max(n_tokens, 1),
        torch.tensor([z / max(n_tokens, 1) for z in zeros], dtype=advantages.dtype),
    )


@FAST
@given(st.integers(0, 2**31 - 1), st.integers(1, 4))
def test_combine_stats_match_a_naive_loop(seed, k):
    g = torch.Generator().manual_seed(seed)
    advantages = noon(torch.randn(3, 6, k, generator=g, dtype=torch.float64))
    mask = torch.arange(6) < torch.randint(0, 7, (3, 1), generator=g)
    preference = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    combined, weights = combine_pama_token(advantages, preference / preference.sum())
    stats = combine_stats(advantages, combined, weights, mask)
    binding, active_frac, zero_frac = naive_combine_stats(advantages, combined, weights, mask)
    torch.testing.assert_close(stats["binding"], binding)
    assert float(stats["active_frac"]) == pytest.approx(active_frac)
    torch.testing.assert_close(stats["zero_frac"], zero_frac)
    batch_weights = torch.full((k,), 1 / k, dtype=torch.float64)  # batch granularity: passed through
    torch.testing.assert_close(
        combine_stats(advantages, combined, batch_weights, mask)["binding"], batch_weights
    )


def test_binding_of_two_iid_objectives_splits_evenly_over_active_tokens():
    g = torch.Generator().manual_seed(0)
    advantages = noon(torch.randn(64, 512, 2, generator=g, dtype=torch.float64))
    mask = torch.ones(64, 512, dtype=torch.bool)
    combined, weights = combine_pama_token(advantages, torch.tensor([0.5, 0.5], dtype=torch.float64))
    stats = combine_stats(advantages, combined, weights, mask)
    torch.testing.assert_close(
        stats["binding"], torch.tensor([0.5, 0.5], dtype=torch.float64), atol=0.01, rtol=0
    )
    assert float(stats["active_frac"]) == pytest.approx(0.25, abs=0.01)  # both objectives positive
    torch.testing.assert_close(
        stats["zero_frac"], torch.tensor([0.5, 0.5], dtype=torch.float64), atol=0.01, rtol=0
    )
    # Averaged over every token, the ties at 0 (to the lowest index) and the zero objective's binds
    # would read 0.625 / 0.375: what the module logged before.
    every_token = masked_mean(weights, mask)
    torch.testing.assert_close(
        every_token, torch.tensor([0.625, 0.375], dtype=torch.float64), atol=0.01, rtol=0
    )


# ---- MGDA min-norm solver ---------------------------------------------------------------------------


@FAST
@given(st.integers(0, 2**31 - 1), st.integers(1, 4))
def test_min_norm_two_against_a_line_search(seed, dim):
    g = torch.Generator().manual_seed(seed)
    g1, g2 = torch.randn(2, dim, generator=g, dtype=torch.float64)
    weights = min_norm_two(g1 @ g1, g1 @ g2, g2 @ g2)
    assert weights.shape == (2,) and torch.all(weights >= 0)
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    cs = torch.linspace(0, 1, 10001, dtype=torch.float64).unsqueeze(-1)
    grid_min = float(((cs * g1 + (1 - cs) * g2) ** 2).sum(-1).min())
    value = float(((weights[0] * g1 + weights[1] * g2) ** 2).sum())
    assert value <= grid_min + 1e-12


def test_min_norm_two_edge_cases():
    torch.testing.assert_close(min_norm_two(1.0, 1.0, 1.0), torch.tensor([0.5, 0.5], dtype=torch.float64))
    # g_1 = 2 g_2: the shorter one alone.
    torch.testing.assert_close(min_norm_two(4.0, 2.0, 1.0), torch.tensor([0.0, 1.0], dtype=torch.float64))
    # Opposite vectors of equal length: the midpoint is 0.
    torch.testing.assert_close(min_norm_two(1.0, -1.0, 1.0), torch.tensor([0.5, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("k,steps", [(2, 400), (3, 120), (4, 40), (5, 24)])
def test_min_norm_weights_against_brute_force_simplex_search(k, steps):
    grid = simplex_points(k, steps)
    g = torch.Generator().manual_seed(100 + k)
    for trial in range(8):
        dim = [k + 3, k, 1, 2][trial % 4]
        vectors = torch.randn(k, dim, generator=g, dtype=torch.float64)
        gram = vectors @ vectors.T
        weights, value = min_norm_weights(gram)
        assert weights.shape == (k,) and torch.all(weights >= 0)
        torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
        torch.testing.assert_close(value, weights @ gram @ weights)
        grid_min = float(torch.einsum("nk,kl,nl->n", grid, gram, grid).min())
        assert float(value) <= grid_min + 1e-9


@pytest.mark.parametrize("k", [3, 4, 5])
def test_min_norm_weights_against_the_exact_solution(k):
    g = torch.Generator().manual_seed(k)
    for _ in range(20):
        # Full-rank Gram matrices (gradients in many more dims than objectives, as in MGDA).
        vectors = torch.randn(k, 3 * k, generator=g, dtype=torch.float64) + 0.5
        gram = vectors @ vectors.T
        _, value = min_norm_weights(gram)
        assert float(value) == pytest.approx(exact_min_norm(gram), rel=1e-6, abs=1e-9)


def test_min_norm_weights_small_cases():
    weights, value = min_norm_weights(torch.tensor([[4.0]]))
    assert weights.tolist() == [1.0] and value.item() == 4.0
    # Opposite vectors: 0 is in the hull.
    gram = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    weights, value = min_norm_weights(gram)
    assert value.item() == pytest.approx(0.0, abs=1e-8)
    assert weights.dtype == torch.float32
    with pytest.raises(ValueError, match="square"):
        min_norm_weights(torch.zeros(2, 3))


# ---- per-sample masks (algorithm.satisfied_at_ceiling) --------------------------------------------

sample_masks = st.integers(1, 4).flatmap(
    lambda k: st.lists(st.lists(st.booleans(), min_size=k, max_size=k), min_size=3, max_size=3)
)


@FAST
@given(st.integers(0, 2**31 - 1), sample_masks, st.booleans())
def test_a_per_sample_mask_is_each_row_combined_alone_with_its_mask(seed, rows, per_sample_preference):
    """The oracle: combining (B,T,K) with a (B,K) mask equals combining each sample alone with its row."""
    g = torch.Generator().manual_seed(seed)
    active = torch.tensor(rows)
    b, k = active.shape
    advantages = noon(torch.randn(b, 5, k, generator=g, dtype=torch.float64))
    preference = torch.rand(b if per_sample_preference else 1, k, generator=g, dtype=torch.float64) + 0.1
    preference = preference / preference.sum(-1, keepdim=True)
    if not per_sample_preference:
        preference = preference[0]
    combined, weights = combine_pama_token(advantages, preference, active)
    for shaped in (active.unsqueeze(1), active):  # (B,1,K) and (B,K) alike
        again, _ = combine_pama_token(advantages, preference, shaped)
        torch.testing.assert_close(again, combined)
    for row in range(b):
        row_pref = preference[row] if per_sample_preference else preference
        expected, expected_w = combine_pama_token(advantages[row : row + 1], row_pref, active[row])
        torch.testing.assert_close(combined[row : row + 1], expected)
        torch.testing.assert_close(weights[row : row + 1], expected_w)
        assert torch.all(weights[row][:, ~active[row]] == 0)


def test_a_satisfied_objective_no_longer_binds_its_sample():
    """Objective 0 at its ceiling in sample 0 only: there the update follows objective 1; sample 1 keeps the min."""
    advantages = torch.tensor([[[0.1, 2.0], [0.2, 1.0]], [[0.1, 2.0], [0.2, 1.0]]])
    active = torch.tensor([[False, True], [True, True]])
    combined, weights = combine_pama_token(advantages, torch.tensor([0.5, 0.5]), active)
    torch.testing.assert_close(combined, torch.tensor([[2.0, 1.0], [0.1, 0.2]]))
    assert weights[0, :, 1].eq(1).all() and weights[1, :, 0].eq(1).all()


def test_masks_of_the_wrong_shape_are_refused():
    advantages = noon(torch.randn(3, 4, 2))
    with pytest.raises(ValueError, match=r"active has shape \(3, 3\) .* 2 objectives"):
        combine_pama_token(advantages, torch.tensor([0.5, 0.5]), torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"active has shape \(2, 2\): a per-sample mask"):
        combine_pama_token(advantages, torch.tensor([0.5, 0.5]), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="per-sample masks need the token granularity"):
        combine_pama_batch(
            advantages, torch.ones(3, 4, dtype=torch.bool), torch.tensor([0.5, 0.5]),
            active=torch.ones(3, 2, dtype=torch.bool),
        )  # fmt: skip
