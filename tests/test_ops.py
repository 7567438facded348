"""The tensor math of one iteration against naive element-by-element oracles."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pama_lit.core.ops import (
    entropy_from_logits,
    explained_variance,
    gae,
    kl_penalty,
    last_token_index,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    noon,
    shape_rewards,
)

FAST = settings(max_examples=40, deadline=None)


def ragged_mask(lengths: list[int], num_steps: int) -> torch.Tensor:
    """(B,T) mask whose row b is True on its first lengths[b] positions."""
    return torch.arange(num_steps) < torch.tensor(lengths).unsqueeze(-1)


@st.composite
def batches(draw, min_len: int = 0):
    """(seed, lengths, T, K): a ragged batch description."""
    num_steps = draw(st.integers(1, 7))
    lengths = draw(st.lists(st.integers(min_len, num_steps), min_size=1, max_size=5))
    k = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    return seed, lengths, num_steps, k


# ---- masked statistics ----------------------------------------------------------------------------


def test_masked_mean_reduces_mask_dims_and_keeps_objectives():
    x = torch.arange(2 * 3 * 2, dtype=torch.float64).reshape(2, 3, 2)
    mask = ragged_mask([2, 1], 3)
    selected = [x[0, 0], x[0, 1], x[1, 0]]
    expected = torch.stack(selected).mean(0)
    torch.testing.assert_close(masked_mean(x, mask), expected)
    torch.testing.assert_close(masked_mean(x, mask, dim=(0, 1)), expected)
    per_row = masked_mean(x, mask, dim=1)
    torch.testing.assert_close(per_row, torch.stack([x[0, :2].mean(0), x[1, :1].mean(0)]))
    assert masked_mean(x[..., 0], mask).shape == ()


def test_masked_mean_of_empty_mask_is_zero_and_padding_never_leaks():
    x = torch.full((2, 3, 2), float("nan"))
    out = masked_mean(x, torch.zeros(2, 3, dtype=torch.bool))
    assert torch.equal(out, torch.zeros(2))
    x[0, 0] = 1.0
    mask = ragged_mask([1, 0], 3)
    torch.testing.assert_close(masked_mean(x, mask), torch.ones(2))
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([[1.0, 1.0], [0.0, 0.0]]))


def test_masked_mean_rejects_a_mask_that_does_not_cover_leading_dims():
    with pytest.raises(ValueError, match="leading dims"):
        masked_mean(torch.zeros(2, 3, 4), torch.ones(3, 4, dtype=torch.bool))


@FAST
@given(batches(), st.booleans())
def test_masked_var_matches_torch_var_on_selected_elements(batch, unbiased):
    seed, lengths, num_steps, k = batch
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), num_steps, k, generator=g, dtype=torch.float64)
    mask = ragged_mask(lengths, num_steps)
    selected = x[mask]  # (N, K)
    out = masked_var(x, mask, unbiased=unbiased)
    assert out.shape == (k,)
    if len(selected) < 2:
        expected = torch.zeros(k, dtype=torch.float64)
    else:
        expected = selected.var(0, unbiased=unbiased)
    torch.testing.assert_close(out, expected)


@FAST
@given(batches())
def test_masked_whiten_gives_zero_mean_unit_variance_per_objective(batch):
    seed, lengths, num_steps, k = batch
    mask = ragged_mask(lengths, num_steps)
    if mask.sum() < 2:
        return
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(k, generator=g, dtype=torch.float64) * 10 + 0.1
    x = torch.randn(len(lengths), num_steps, k, generator=g, dtype=torch.float64) * scale + 3 * scale
    white = masked_whiten(x, mask, eps=0.0)
    selected = white[mask]
    if torch.any(x[mask].var(0) < 1e-12):
        return
    torch.testing.assert_close(selected.mean(0), torch.zeros(k, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(selected.var(0), torch.ones(k, dtype=torch.float64))
    assert torch.all(white[~mask] == 0)


@FAST
@given(batches())
def test_explained_variance_matches_numpy_on_selected_elements(batch):
    import numpy as np

    seed, lengths, num_steps, k = batch
    g = torch.Generator().manual_seed(seed)
    returns = torch.randn(len(lengths), num_steps, k, generator=g, dtype=torch.float64)
    values = returns + 0.5 * torch.randn(len(lengths), num_steps, k, generator=g, dtype=torch.float64)
    values[~ragged_mask(lengths, num_steps)] = 1e6  # padding must not count
    mask = ragged_mask(lengths, num_steps)
    out = explained_variance(values, returns, mask)
    assert out.shape == (k,)
    y, v = returns[mask].numpy(), values[mask].numpy()  # (N, K)
    for i in range(k):
        if len(y) < 2:
            assert math.isnan(out[i])
        else:
            assert out[i].item() == pytest.approx(1 - np.var(y[:, i] - v[:, i]) / np.var(y[:, i]), rel=1e-9)


def test_explained_variance_of_perfect_constant_and_undefined_heads():
    returns = torch.tensor([[[1.0, 2.0, 5.0], [3.0, 4.0, 5.0]]])  # (1,2,3): varying, varying, constant
    values = returns.clone()
    values[..., 1] = 7.0  # a constant prediction explains nothing, whatever the constant
    out = explained_variance(values, returns, torch.ones(1, 2, dtype=torch.bool))
    assert out[0] == 1 and out[1] == 0 and math.isnan(out[2])


def test_masked_whiten_without_shift_keeps_the_mean():
    x = torch.tensor([[[2.0], [4.0], [6.0], [100.0]]], dtype=torch.float64)
    mask = ragged_mask([3], 4)
    out = masked_whiten(x, mask, shift_mean=False, eps=0.0)
    # x = (2, 4, 6): mean 4, std 2, so (x - 4) / 2 + 4 = (3, 4, 5).
    torch.testing.assert_close(out[0, :3, 0], torch.tensor([3.0, 4.0, 5.0], dtype=torch.float64))
    assert out[0, 3, 0] == 0
    torch.testing.assert_close(masked_mean(out, mask), torch.tensor([4.0], dtype=torch.float64))


# ---- KL estimates ---------------------------------------------------------------------------------


def test_kl_estimators_match_their_formulas():
    logp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=torch.float64)
    ref = torch.tensor([[-1.5, -1.0, -0.5]], dtype=torch.float64)
    diff = logp - ref
    log_r = ref - logp
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), diff)
    torch.testing.assert_close(kl_penalty(logp, ref), diff)
    torch.testing.assert_close(kl_penalty(logp, ref, "k3"), (log_r.exp() - 1) - log_r)
    torch.testing.assert_close(kl_penalty(logp, ref, "abs"), diff.abs())
    torch.testing.assert_close(kl_penalty(logp, ref, "mse"), 0.5 * diff**2)


def test_unknown_kl_estimator_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"'k2'.*k1, k3, abs, mse"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k2")


@FAST
@given(
    st.lists(st.floats(-30, 0), min_size=1, max_size=20), st.lists(st.floats(-30, 0), min_size=1, max_size=20)
)
def test_k3_is_nonnegative_and_zero_only_at_equality(a, b):
    n = min(len(a), len(b))
    logp = torch.tensor(a[:n]).unsqueeze(0)
    ref = torch.tensor(b[:n]).unsqueeze(0)
    k3 = kl_penalty(logp, ref, "k3")
    assert torch.all(k3 >= 0)
    assert torch.all(kl_penalty(logp, logp, "k3") == 0)


def test_k3_is_accurate_for_tiny_differences():
    logp = torch.tensor([[1e-6]], dtype=torch.float64)
    ref = torch.zeros(1, 1, dtype=torch.float64)
    # (r - 1) - log r = x^2 / 2 + O(x^3) for log r = -x.
    torch.testing.assert_close(kl_penalty(logp, ref, "k3"), torch.tensor([[0.5e-12]], dtype=torch.float64))


# ---- reward shaping and GAE -----------------------------------------------------------------------


def test_last_token_index_handles_empty_rows():
    mask = ragged_mask([3, 0, 1], 4)
    assert last_token_index(mask).tolist() == [2, -1, 0]


@FAST
@given(batches(), st.floats(0, 1))
def test_shape_rewards_puts_the_score_on_the_last_real_token(batch, beta):
    seed, lengths, num_steps, k = batch
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(len(lengths), k, generator=g, dtype=torch.float64)
    kl = torch.randn(len(lengths), num_steps, generator=g, dtype=torch.float64)
    mask = ragged_mask(lengths, num_steps)
    rewards = shape_rewards(scores, kl, mask, beta)
    assert rewards.shape == (len(lengths), num_steps, k)
    for b, length in enumerate(lengths):
        for t in range(num_steps):
            for i in range(k):
                expected = 0.0
                if t < length:
                    expected = -beta * kl[b, t].item() + (scores[b, i].item() if t == length - 1 else 0.0)
                assert rewards[b, t, i].item() == pytest.approx(expected, abs=1e-12)


def test_shape_rewards_accepts_a_tensor_beta():
    mask = ragged_mask([2], 2)
    rewards = shape_rewards(torch.tensor([[1.0]]), torch.tensor([[1.0, 2.0]]), mask, torch.tensor(0.5))
    torch.testing.assert_close(rewards, torch.tensor([[[-0.5], [0.0]]]))


def naive_gae(rewards, values, lengths, gamma, lam):
    """CleanRL's reverse loop, one sample and one objective at a time, in Python floats."""
    batch, num_steps, k = rewards.shape
    advantages = torch.zeros_like(rewards)
    returns = torch.zeros_like(rewards)
    for b in range(batch):
        length = lengths[b]
        for i in range(k):
            last_gae = 0.0
            for t in reversed(range(length)):
                next_value = values[b, t + 1, i].item() if t + 1 < length else 0.0
                delta = rewards[b, t, i].item() + gamma * next_value - values[b, t, i].item()
                last_gae = delta + gamma * lam * last_gae
                advantages[b, t, i] = last_gae
                returns[b, t, i] = last_gae + values[b, t, i].item()
    return advantages, returns


@FAST
@given(batches(), st.floats(0, 1), st.floats(0, 1))
def test_gae_matches_the_naive_loop_on_ragged_batches(batch, gamma, lam):
    seed, lengths, num_steps, k = batch
    g = torch.Generator().manual_seed(seed)
    shape = (len(lengths), num_steps, k)
    rewards = torch.randn(shape, generator=g, dtype=torch.float64)
    values = torch.randn(shape, generator=g, dtype=torch.float64)
    mask = ragged_mask(lengths, num_steps)
    advantages, returns = gae(rewards, values, mask, gamma=gamma, lam=lam)
    expected_adv, expected_ret = naive_gae(rewards, values, lengths, gamma, lam)
    torch.testing.assert_close(advantages, expected_adv)
    torch.testing.assert_close(returns, expected_ret)


def test_gae_with_lambda_one_and_gamma_one_gives_reward_to_go():
    rewards = torch.tensor([[[1.0], [2.0], [3.0], [9.0]]])
    values = torch.tensor([[[0.5], [0.1], [0.2], [7.0]]])
    mask = ragged_mask([3], 4)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(returns[0, :, 0], torch.tensor([6.0, 5.0, 3.0, 0.0]))
    torch.testing.assert_close(advantages[0, :, 0], torch.tensor([5.5, 4.9, 2.8, 0.0]))


def test_noon_clamps_negative_advantages():
    assert noon(torch.tensor([-1.0, 0.0, 2.0])).tolist() == [0.0, 0.0, 2.0]


# ---- logits -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_logprobs_from_logits_matches_a_naive_softmax(dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 4, 11, generator=g) * 3).to(dtype)
    labels = torch.randint(0, 11, (3, 4), generator=g)
    out = logprobs_from_logits(logits, labels)
    assert out.shape == (3, 4) and out.dtype == torch.float32
    ref = logits.double()
    for b in range(3):
        for t in range(4):
            row = ref[b, t]
            expected = row[labels[b, t]] - math.log(row.exp().sum().item())
            assert out[b, t].item() == pytest.approx(expected.item(), abs=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logprobs_and_entropy_with_a_temperature_are_those_of_the_sampling_distribution(dtype):
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(3, 4, 11, generator=g) * 3).to(dtype)
    labels = torch.randint(0, 11, (3, 4), generator=g)
    tempered = logits.float() / 0.7
    expected = tempered.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logprobs_from_logits(logits, labels, temperature=0.7), expected)
    entropy = torch.distributions.Categorical(logits=tempered).entropy()
    torch.testing.assert_close(entropy_from_logits(logits, temperature=0.7), entropy, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logprobs_from_logits(logits, labels), expected), "0.7 must change something"


def test_logprobs_from_logits_is_differentiable():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    labels = torch.randint(0, 5, (2, 3))
    logprobs_from_logits(logits, labels).sum().backward()
    expected = torch.nn.functional.one_hot(labels, 5) - logits.detach().softmax(-1)
    torch.testing.assert_close(logits.grad, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_entropy_from_logits_matches_categorical(dtype):
    logits = (torch.randn(2, 3, 7) * 2).to(dtype)
    out = entropy_from_logits(logits)
    assert out.shape == (2, 3) and out.dtype == torch.float32
    expected = torch.distributions.Categorical(logits=logits.float()).entropy()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_entropy_ignores_masked_vocabulary():
    logits = torch.tensor([[[0.0, 0.0, -float("inf")]]], requires_grad=True)
    out = entropy_from_logits(logits)
    torch.testing.assert_close(out, torch.tensor([[math.log(2)]]))


def test_entropy_keeps_no_graph_on_logits_that_carry_one():
    # The fused rollout computes the entropy metric on the update's logits with grad enabled: a graph
    # here would hold several (B,T,V) intermediates through the backward.
    logits = torch.randn(2, 3, 7, requires_grad=True) * 1.0
    out = entropy_from_logits(logits)
    assert not out.requires_grad and out.grad_fn is None


def _naive_logprobs(logits, labels, temperature=1.0):
    return (logits.double() / temperature).log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk_elements", [1, 40, 1 << 22])  # a position per chunk, a few, one chunk
def test_chunked_logprobs_match_the_unchunked_oracle_in_value_and_gradient(
    dtype, temperature, chunk_elements, monkeypatch
):
    monkeypatch.setattr("pama_lit.core.ops._CHUNK_ELEMENTS", chunk_elements)
    g = torch.Generator().manual_seed(3)
    # A slice of a longer tensor, as the policy passes ``out.logits[:, :-1]``: not contiguous.
    full = (torch.randn(3, 6, 11, generator=g, dtype=torch.float64) * 3).to(dtype).requires_grad_(True)
    logits = full[:, :-1]
    labels = torch.randint(0, 11, (3, 5), generator=g)
    weights = torch.randn(3, 5, generator=g, dtype=torch.float64)
    out = logprobs_from_logits(logits, labels, temperature)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    (out.double() * weights).sum().backward()
    oracle_leaf = full.detach().double().requires_grad_(True)
    expected = _naive_logprobs(oracle_leaf[:, :-1], labels, temperature)
    (expected * weights).sum().backward()
    tol = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 1e-5}[dtype]
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=tol)
    assert full.grad.dtype == dtype
    grad_tol = 1e-2 if dtype == torch.bfloat16 else tol  # the gradient is stored in bf16
    torch.testing.assert_close(full.grad.double(), oracle_leaf.grad, atol=grad_tol, rtol=grad_tol)


def test_logprobs_keep_no_full_vocabulary_tensor_but_the_logits():
    logits = torch.randn(4, 16, 1000, requires_grad=True)
    labels = torch.randint(0, 1000, (4, 16))
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logprobs_from_logits(logits, labels, temperature=0.7)
    large = [t for t in saved if t.numel() >= logits.numel()]
    # log_softmax + gather would save the (B,T,V) log-softmax output as well.
    assert large and all(t.data_ptr() == logits.data_ptr() for t in large)
