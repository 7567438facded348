"""Pure tensor math of one PPO iteration: masked statistics, KL estimates, reward shaping, GAE.

Nothing here knows about Lightning, Hydra or models. Shapes follow the project's vocabulary:
mask (B,T) bool True on real response tokens (a contiguous prefix of each row), logprobs (B,T),
values (B,T,K), scores (B,K), rewards/advantages/returns (B,T,K).

A mask always covers the *leading* dims of the tensor it masks; any trailing dims (the K
objectives) are kept by reductions and treated independently.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

KL_ESTIMATORS = ("k1", "k3", "abs", "mse")


def _expand_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape ``mask`` (leading dims of ``x``) so that it broadcasts against ``x``."""
    if mask.shape != x.shape[: mask.dim()]:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not cover the leading dims of {tuple(x.shape)}"
        )
    return mask.bool().reshape(*mask.shape, *([1] * (x.dim() - mask.dim())))


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None
) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is True.

    Args:
        x: (*M, *E) values, e.g. (B,T) or (B,T,K).
        mask: (*M) bool, e.g. (B,T); it broadcasts over the trailing dims *E of ``x``.
        dim: dims to reduce. None reduces over all of the mask's dims and keeps *E, so x (B,T,K)
            with mask (B,T) gives (K,), one mean per objective. An int or tuple reduces exactly those
            dims of ``x`` (``dim=1`` gives per-row means (B,) or (B,K)).

    Returns:
        The masked mean, shape of ``x`` without the reduced dims. Where no position is selected
        the result is 0, never NaN; values outside the mask (even inf or NaN) never leak in.
    """
    m = _expand_mask(mask, x)
    if dim is None:
        dim = tuple(range(mask.dim()))
    total = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim)
    count = m.expand_as(x).sum(dim)
    return total / count.clamp(min=1).to(total.dtype)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the masked positions, one per trailing dim.

    Args:
        x: (*M, *E) values, e.g. advantages (B,T,K).
        mask: (*M) bool, e.g. (B,T).
        unbiased: apply Bessel's correction n / (n - 1), n = number of masked positions.

    Returns:
        (*E) variances, e.g. (K,). Zero where fewer than two positions are selected (never NaN).
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum().to(var.dtype)
        var = var * n / (n - 1).clamp(min=1)
    return var


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    eps: float = 1e-8,
    mean_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    var_fn: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """Whiten ``x`` over the masked positions, each trailing dim (objective) on its own.

    Args:
        x: (*M, *E) values, e.g. advantages (B,T,K).
        mask: (*M) bool, e.g. (B,T).
        shift_mean: subtract the masked mean; if False the mean is added back after scaling, so only
            the spread changes (TRL's ``shift_mean``).
        eps: added to the variance before the square root.
        mean_fn, var_fn: the statistics, ``masked_mean(x, mask)`` and ``masked_var(x, mask,
            unbiased=True)`` by default; ``distributed`` passes its all-rank versions.

    Returns:
        Tensor shaped like ``x`` with masked mean 0 and unbiased masked variance 1 per trailing dim
        (up to ``eps``); 0 at positions outside the mask.
    """
    mean = (mean_fn or masked_mean)(x, mask)
    var = (var_fn or masked_var)(x, mask, unbiased=True)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(_expand_mask(mask, x), whitened, torch.zeros((), dtype=x.dtype, device=x.device))


def explained_variance(
    values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    var_fn: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """How much of the returns' spread the value heads predict: 1 - Var(G - V) / Var(G), masked.

    1 is a perfect value head, 0 one no better than a constant, below 0 one worse than a constant.

    Args:
        values: (*M, *E) value estimates V, e.g. (B,T,K).
        returns: (*M, *E) the targets G, e.g. the GAE returns (B,T,K).
        mask: (*M) bool, e.g. (B,T).
        var_fn: the variance, ``masked_var(x, mask, unbiased=True)`` by default; ``distributed``
            passes its all-rank version. Its Bessel correction cancels in the ratio.

    Returns:
        (*E) one value per trailing dim, e.g. (K,); NaN where the returns do not vary (fewer than two
        masked positions, or constant returns), where the ratio is undefined.
    """
    var = var_fn or masked_var
    var_returns = var(returns, mask, unbiased=True)
    var_residual = var(returns - values, mask, unbiased=True)
    defined = var_returns > 0
    ratio = var_residual / torch.where(defined, var_returns, torch.ones_like(var_returns))
    return torch.where(defined, 1 - ratio, torch.full_like(ratio, float("nan")))


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from sampled-token logprobs (TRL's ``kl_penalty``).

    Args:
        logprobs: (B,T) log pi(y_t) of the sampled tokens under the policy.
        ref_logprobs: (B,T) the same under the reference model.
        estimator: "k1": logp - logp_ref (unbiased, can be negative); "k3": (r - 1) - log r with
            log r = logp_ref - logp (unbiased, nonnegative); "abs": |logp - logp_ref|;
            "mse": 0.5 * (logp - logp_ref)^2.

    Returns:
        (B,T) per-token estimates; padding positions are not masked here.

    Raises:
        ValueError: for an unknown estimator.
    """
    diff = logprobs - ref_logprobs
    if estimator == "k1":
        return diff
    if estimator == "k3":
        # expm1 keeps (r - 1) - log r accurate near r = 1; clamp removes rounding below the true bound 0.
        return (torch.expm1(-diff) + diff).clamp(min=0)
    if estimator == "abs":
        return diff.abs()
    if estimator == "mse":
        return 0.5 * diff.square()
    raise ValueError(f"unknown KL estimator {estimator!r}; allowed: {', '.join(KL_ESTIMATORS)}")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True position of each row.

    Args:
        mask: (B,T) bool.

    Returns:
        (B,) long, -1 for rows without any True position.
    """
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, -1).amax(-1)


def shape_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float | torch.Tensor
) -> torch.Tensor:
    """Per-token, per-objective rewards: a KL penalty on every token plus the score at the end.

    r_i,t = -beta * kl_t + [t is the last real token] * scores_i.

    Args:
        scores: (B,K) one score per sample and objective.
        kl: (B,T) per-token KL estimate (see ``kl_penalty``).
        mask: (B,T) bool, True on real response tokens.
        beta: KL coefficient (float or 0-dim tensor).

    Returns:
        (B,T,K) rewards, 0 outside the mask. A row with an empty mask receives no score.
    """
    mask = mask.bool()
    dtype = torch.promote_types(scores.dtype, kl.dtype)
    penalty = torch.where(mask, -beta * kl.to(dtype), torch.zeros((), dtype=dtype, device=kl.device))
    positions = torch.arange(mask.shape[-1], device=mask.device)
    is_last = positions == last_token_index(mask).unsqueeze(-1)
    return penalty.unsqueeze(-1) + is_last.unsqueeze(-1).to(dtype) * scores.to(dtype).unsqueeze(1)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, every objective at once.

    One reverse loop over T, vectorised over the batch and the objectives. The episode ends at the
    last real token of each row: the value after it is 0 (no bootstrap).

    Args:
        rewards: (B,T,K) per-token rewards (see ``shape_rewards``).
        values: (B,T,K) value-head estimates at each token.
        mask: (B,T) bool, True on real response tokens (a contiguous prefix of each row).
        gamma: discount.
        lam: GAE lambda (CleanRL's ``gae_lambda``, TRL's ``lam``).

    Returns:
        advantages (B,T,K) and returns = advantages + values (B,T,K), both 0 outside the mask.
    """
    m = _expand_mask(mask, rewards).to(rewards.dtype)
    rewards = rewards * m
    values = values * m
    num_steps = rewards.shape[1]
    last_gae = torch.zeros_like(rewards[:, 0])
    reversed_advantages = []
    for t in reversed(range(num_steps)):
        next_value = values[:, t + 1] if t + 1 < num_steps else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = (delta + gamma * lam * last_gae) * m[:, t]
        reversed_advantages.append(last_gae)
    advantages = torch.stack(reversed_advantages[::-1], dim=1)
    returns = (advantages + values) * m
    return advantages, returns


def noon(advantages: torch.Tensor) -> torch.Tensor:
    """Noon ("no negative"): clamp advantages at 0 so that every objective's gradient points one way.

    Args:
        advantages: any shape, usually (B,T,K).

    Returns:
        max(advantages, 0), same shape.
    """
    return advantages.clamp(min=0)


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


# Elements of float32 per chunk of positions (16 MiB): what the log-prob and entropy paths add at their
# peak, whatever the batch, length and vocabulary.
_CHUNK_ELEMENTS = 1 << 22


def _position_chunks(logits: torch.Tensor) -> list[slice]:
    """Slices over the sequence dim (-2) of (B,T,V) logits, each about ``_CHUNK_ELEMENTS`` floats."""
    batch, length, vocab = logits.shape
    step = max(1, _CHUNK_ELEMENTS // max(1, batch * vocab))
    return [slice(s, min(s + step, length)) for s in range(0, max(length, 1), step)]


class _GatheredLogprobs(torch.autograd.Function):
    """log softmax(logits / tau)[label] = logits[label] / tau - logsumexp(logits / tau), chunk by chunk.

    No (B,T,V) tensor is built: the forward keeps the logits (already held by the model's output) and
    the (B,T) logsumexp, and the backward writes softmax - one_hot into one gradient tensor a chunk of
    positions at a time. A ``log_softmax`` + ``gather`` would keep its full-vocabulary output for the
    backward and build two more in it.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        out = torch.empty(labels.shape, dtype=dtype, device=logits.device)
        lse = torch.empty_like(out)
        for s in _position_chunks(logits):
            x = logits[:, s].to(dtype)
            if temperature != 1.0:
                x = x / temperature
            lse[:, s] = x.logsumexp(-1)
            out[:, s] = x.gather(-1, labels[:, s].unsqueeze(-1)).squeeze(-1) - lse[:, s]
        ctx.save_for_backward(logits, labels, lse)
        ctx.temperature = temperature
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, labels, lse = ctx.saved_tensors
        tau = ctx.temperature
        grad = torch.empty_like(logits)
        for s in _position_chunks(logits):
            x = logits[:, s].to(lse.dtype)
            if tau != 1.0:
                x = x / tau
            g = grad_out[:, s].unsqueeze(-1).to(lse.dtype)
            # d/dx_v [x_label - lse(x)] = one_hot_v - softmax_v; chain rule through x = logits / tau.
            chunk = (x - lse[:, s].unsqueeze(-1)).exp_().mul_(-g)
            chunk.scatter_add_(-1, labels[:, s].unsqueeze(-1), g)
            grad[:, s] = chunk / tau if tau != 1.0 else chunk
        return grad, None, None


def _entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature != 1.0:
        logits = logits / temperature
    logp = logits.log_softmax(-1)
    # A -inf logit would give 0 * -inf = NaN; clamping gives 0 * finite = 0 instead.
    logp = logp.clamp(min=torch.finfo(logp.dtype).min)
    return -(logp.exp() * logp).sum(-1)


def logprobs_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Log-probabilities of ``labels`` under softmax(logits / temperature) (gather - logsumexp).

    Computed a chunk of positions at a time, forward and backward, so the only full-vocabulary tensors
    are the logits themselves and, in the backward, their gradient.

    Args:
        logits: (B,T,V) in any floating dtype; bf16/fp16 are upcast to float32 a chunk at a time.
        labels: (B,T) long token ids.
        temperature: the sampling temperature (``rollout.temperature``). Tokens sampled at temperature
            tau come from softmax(logits / tau): pi_old, pi_theta and pi_ref must all be that
            distribution for the PPO ratio and the KL to refer to what was sampled (TRL does the same).

    Returns:
        (B,T) float32 (float64 for float64 logits) log-probabilities; differentiable once (the
        gradient with respect to ``logits`` has the logits' dtype).
    """
    return _GatheredLogprobs.apply(logits, labels, float(temperature))


@torch.no_grad()
def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of the categorical distribution softmax(logits / temperature) at each position.

    A diagnostic, never differentiated: computed without grad, so that calling it on logits that carry
    the update's graph keeps none of its full-vocabulary intermediates alive.

    Args:
        logits: (B,T,V) in any floating dtype; bf16/fp16 are upcast to float32.
        temperature: the sampling temperature, as in ``logprobs_from_logits``.

    Returns:
        (B,T) float32 (float64 for float64 logits) entropies in nats, without grad.
    """
    # A chunk of positions at a time: the (B,T,V) intermediates would otherwise add several copies of
    # the logits to the peak.
    return torch.cat([_entropy(_upcast(logits[:, s]), temperature) for s in _position_chunks(logits)], dim=1)
