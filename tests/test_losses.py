"""The clipped PPO losses against element-by-element Python versions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pama_lit.core.losses import kl_loss, policy_loss, value_loss

FAST = settings(max_examples=40, deadline=None)


def ragged_mask(lengths: list[int], num_steps: int) -> torch.Tensor:
    return torch.arange(num_steps) < torch.tensor(lengths).unsqueeze(-1)


def naive_policy_loss(logprobs, old_logprobs, advantages, mask, clip_coef):
    losses, clipped, kls, ratios = [], [], [], []
    for b in range(logprobs.shape[0]):
        for t in range(logprobs.shape[1]):
            if not mask[b, t]:
                continue
            ratio = math.exp(logprobs[b, t].item() - old_logprobs[b, t].item())
            adv = advantages[b, t].item()
            unclipped = -adv * ratio
            clipped_term = -adv * min(max(ratio, 1 - clip_coef), 1 + clip_coef)
            losses.append(max(unclipped, clipped_term))
            clipped.append(float(clipped_term > unclipped))
            kls.append((ratio - 1) - math.log(ratio))
            ratios.append(ratio)
    n = max(len(losses), 1)
    return sum(losses) / n, {
        "clipfrac": sum(clipped) / n,
        "approx_kl": sum(kls) / n,
        "ratio_mean": sum(ratios) / n,
    }


@FAST
@given(st.integers(0, 2**31 - 1), st.lists(st.integers(0, 6), min_size=1, max_size=4), st.floats(0.05, 0.5))
def test_policy_loss_matches_the_naive_version(seed, lengths, clip_coef):
    g = torch.Generator().manual_seed(seed)
    shape = (len(lengths), 6)
    old = -torch.rand(shape, generator=g, dtype=torch.float64) * 3
    logprobs = old + 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
    advantages = torch.randn(shape, generator=g, dtype=torch.float64)
    mask = ragged_mask(lengths, 6)
    loss, stats = policy_loss(logprobs, old, advantages, mask, clip_coef)
    expected, expected_stats = naive_policy_loss(logprobs, old, advantages, mask, clip_coef)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert set(stats) == {"clipfrac", "approx_kl", "ratio_mean"}
    for name, value in stats.items():
        assert value.shape == () and not value.requires_grad
        assert value.item() == pytest.approx(expected_stats[name], abs=1e-12)


def test_policy_loss_gradient_vanishes_only_where_clipping_binds():
    # ratios e^0.5 (above 1 + eps) and e^-0.5 (below 1 - eps), for a positive and a negative advantage.
    old = torch.zeros(1, 4, dtype=torch.float64)
    logprobs = torch.tensor([[0.5, 0.5, -0.5, -0.5]], dtype=torch.float64, requires_grad=True)
    advantages = torch.tensor([[1.0, -1.0, 1.0, -1.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    loss, stats = policy_loss(logprobs, old, advantages, mask, clip_coef=0.2)
    loss.backward()
    grad = logprobs.grad[0]
    # Clipped (no gradient): a positive advantage above the range, a negative one below it.
    assert grad[0] == 0 and grad[3] == 0
    # Unclipped: d/dlogp of -A * ratio / 4 tokens.
    assert grad[1].item() == pytest.approx(math.exp(0.5) / 4)
    assert grad[2].item() == pytest.approx(-math.exp(-0.5) / 4)
    assert stats["clipfrac"].item() == 0.5


def test_policy_loss_at_ratio_one_is_minus_the_mean_advantage():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    advantages = torch.tensor([[1.0, 2.0, 100.0]])
    mask = torch.tensor([[True, True, False]])
    loss, stats = policy_loss(logprobs, logprobs.detach(), advantages, mask, clip_coef=0.2)
    assert loss.item() == pytest.approx(-1.5)
    assert (
        stats["approx_kl"].item() == 0 and stats["ratio_mean"].item() == 1 and stats["clipfrac"].item() == 0
    )
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-0.5, -1.0, 0.0]]))


def naive_value_loss(values, old_values, returns, mask, clip_coef):
    batch, num_steps, k = values.shape
    per_head = []
    for i in range(k):
        terms = []
        for b in range(batch):
            for t in range(num_steps):
                if mask[b, t]:
                    v, old, ret = values[b, t, i].item(), old_values[b, t, i].item(), returns[b, t, i].item()
                    clipped = min(max(v, old - clip_coef), old + clip_coef)
                    terms.append(max((v - ret) ** 2, (clipped - ret) ** 2))
        per_head.append(0.5 * sum(terms) / max(len(terms), 1))
    return per_head


@FAST
@given(st.integers(0, 2**31 - 1), st.lists(st.integers(0, 5), min_size=1, max_size=4), st.integers(1, 3))
def test_value_loss_matches_the_naive_version(seed, lengths, k):
    g = torch.Generator().manual_seed(seed)
    shape = (len(lengths), 5, k)
    old = torch.randn(shape, generator=g, dtype=torch.float64)
    values = (old + 0.5 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()
    returns = torch.randn(shape, generator=g, dtype=torch.float64)
    mask = ragged_mask(lengths, 5)
    total, per_head = value_loss(values, old, returns, mask, clip_coef=0.2)
    expected = naive_value_loss(values, old, returns, mask, 0.2)
    assert per_head.shape == (k,) and not per_head.requires_grad
    torch.testing.assert_close(per_head, torch.tensor(expected, dtype=torch.float64))
    assert total.item() == pytest.approx(sum(expected) / k)  # the mean over heads, not the sum
    total.backward()
    assert torch.all(values.grad[~mask] == 0)


def test_value_loss_clip_takes_the_pessimistic_term():
    old = torch.zeros(1, 1, 1)
    returns = torch.ones(1, 1, 1)
    mask = torch.ones(1, 1, dtype=torch.bool)
    # v = 0.5 moves towards the return beyond the clip range: clipped to 0.2 it is further from the
    # return, so the clipped error counts and the update gets no gradient.
    values = torch.full((1, 1, 1), 0.5, requires_grad=True)
    total, _ = value_loss(values, old, returns, mask, clip_coef=0.2)
    assert total.item() == pytest.approx(0.5 * 0.8**2)
    total.backward()
    assert values.grad.item() == 0
    # v = -0.5 moves away from the return: the unclipped error is larger and counts, with its gradient.
    values = torch.full((1, 1, 1), -0.5, requires_grad=True)
    total, _ = value_loss(values, old, returns, mask, clip_coef=0.2)
    assert total.item() == pytest.approx(0.5 * 1.5**2)
    total.backward()
    assert values.grad.item() == pytest.approx(-1.5)


@pytest.mark.parametrize("estimator", ["k3", "mse"])
def test_kl_loss_is_the_masked_token_mean_and_its_gradient_pulls_towards_the_reference(estimator):
    gen = torch.Generator().manual_seed(0)
    logprobs = (-3 * torch.rand(3, 5, generator=gen, dtype=torch.float64)).requires_grad_()
    ref = -3 * torch.rand(3, 5, generator=gen, dtype=torch.float64)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False
    mask[2, 1:] = False
    loss = kl_loss(logprobs, ref, mask, estimator)
    loss.backward()
    # Oracle: a loop over the real tokens, each term written out from its definition.
    tokens = [(b, t) for b in range(3) for t in range(5) if mask[b, t]]
    terms, grads = [], torch.zeros(3, 5, dtype=torch.float64)
    for b, t in tokens:
        lp, lr = logprobs[b, t].item(), ref[b, t].item()
        if estimator == "k3":
            r = math.exp(lr - lp)
            terms.append((r - 1) - math.log(r))
            grads[b, t] = (1 - r) / len(tokens)
        else:
            terms.append(0.5 * (lp - lr) ** 2)
            grads[b, t] = (lp - lr) / len(tokens)
    assert loss.item() == pytest.approx(sum(terms) / len(tokens), rel=1e-12)
    torch.testing.assert_close(logprobs.grad, grads)
    # A gradient step lowers every real token's log-prob where it exceeds the reference's, and raises it below.
    diff = (logprobs - ref).detach()
    assert torch.equal(torch.sign(logprobs.grad[mask]), torch.sign(diff[mask]))


def test_kl_loss_refuses_estimators_whose_gradient_does_not_pull_towards_the_reference():
    x = torch.zeros(1, 2)
    for estimator in ("k1", "abs"):
        with pytest.raises(ValueError, match=rf"{estimator}.*cannot be a loss; allowed: k3, mse"):
            kl_loss(x, x, torch.ones(1, 2, dtype=torch.bool), estimator)
