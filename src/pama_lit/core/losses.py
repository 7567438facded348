"""PPO losses over masked response tokens: the clipped surrogate, the clipped multi-head value loss
and the KL-to-reference loss term (``ppo.kl.placement=loss``)."""

from __future__ import annotations

import torch

from pama_lit.core.ops import kl_penalty, masked_mean

# Estimators whose gradient pulls pi_theta towards pi_ref when used as a loss. k1's gradient is the
# score function, zero in expectation on-policy, and abs's has the sign of log r only.
KL_LOSS_ESTIMATORS = ("k3", "mse")


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate: -mean_t min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t), rho = pi / pi_old.

    Args:
        logprobs: (B,T) log pi_theta of the sampled tokens (with grad).
        old_logprobs: (B,T) log pi_old at rollout time.
        advantages: (B,T) the combined advantage (e.g. from ``combine_pama_token``).
        mask: (B,T) bool, True on real response tokens.
        clip_coef: epsilon, the clip range (CleanRL's ``clip_coef``, TRL's ``cliprange``).

    Returns:
        loss (0-dim, masked mean over tokens) and detached 0-dim stats:
        "clipfrac": fraction of tokens where the clipped term is the active one (its gradient is 0);
        "approx_kl": masked mean of the k3 estimate (rho - 1) - log rho of KL(pi_old || pi_theta);
        "ratio_mean": masked mean of rho.
    """
    log_ratio = logprobs - old_logprobs.detach()
    ratio = log_ratio.exp()
    advantages = advantages.detach()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(ratio.dtype), mask),
            "approx_kl": masked_mean((ratio - 1) - log_ratio, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, {name: value.detach() for name, value in stats.items()}


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss, one per value head, averaged over heads.

    Per head i: 0.5 * masked_mean(max((v - G)^2, (clip(v, v_old - c, v_old + c) - G)^2)). The mean,
    not the sum: the K heads share one trunk, and a sum would give the value loss K times the weight
    of MORLHF's single head at the same ``vf_coef``.

    Args:
        values: (B,T,K) current value-head outputs (with grad).
        old_values: (B,T,K) values at rollout time.
        returns: (B,T,K) GAE returns G.
        mask: (B,T) bool, True on real response tokens.
        clip_coef: value clip range (CleanRL's ``clip_coef`` with ``clip_vloss``, TRL's ``cliprange_value``).

    Returns:
        total (0-dim, the mean over heads) and per_head (K,) detached.
    """
    old_values = old_values.detach()
    returns = returns.detach()
    clipped_values = old_values + (values - old_values).clamp(-clip_coef, clip_coef)
    losses = torch.maximum((values - returns).square(), (clipped_values - returns).square())
    per_head = 0.5 * masked_mean(losses, mask)
    return per_head.mean(), per_head.detach()


def kl_loss(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, estimator: str = "k3"
) -> torch.Tensor:
    """The KL to the reference as a loss term: masked_mean_t kl_t(logprobs, ref_logprobs).

    GRPO's (and verl's ``use_kl_loss``) way of holding the policy near the reference: the penalty
    is differentiated directly, outside the advantages, instead of being folded into every
    objective's reward. With ``estimator="k3"`` (r - 1) - log r, r = pi_ref / pi_theta, the
    per-token gradient with respect to log pi_theta is 1 - r: positive where the policy puts more
    mass on the sampled token than the reference does, so a step lowers it. With ``"mse"``
    0.5 (log pi_theta - log pi_ref)^2 it is log pi_theta - log pi_ref, whose expectation on-policy
    is the gradient of KL(pi_theta || pi_ref).

    Args:
        logprobs: (B,T) log pi_theta of the sampled tokens (with grad).
        ref_logprobs: (B,T) log pi_ref of the same tokens.
        mask: (B,T) bool, True on real response tokens.
        estimator: one of ``KL_LOSS_ESTIMATORS``.

    Returns:
        0-dim loss, the mean over real tokens.

    Raises:
        ValueError: for an estimator outside ``KL_LOSS_ESTIMATORS``.
    """
    if estimator not in KL_LOSS_ESTIMATORS:
        raise ValueError(
            f"KL estimator {estimator!r} cannot be a loss; allowed: {', '.join(KL_LOSS_ESTIMATORS)} "
            "(k1's gradient is zero in expectation on-policy)"
        )
    return masked_mean(kl_penalty(logprobs, ref_logprobs.detach(), estimator), mask)
