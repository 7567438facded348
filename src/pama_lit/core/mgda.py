"""Gradient-based multi-objective baselines (MGDA-UB and MGDA): the pure tensor math.

Both baselines of the paper solve MGDA's min-norm problem over the K per-objective gradients,
min over the simplex of ||sum_i c_i g_i||^2, where PAMA solves it in closed form per token:

- ``mgda_ub`` (Sener and Koltun 2018, "upper bound"): g_i is the gradient of objective i's PPO loss
  with respect to the shared representation, the policy's last hidden states (B, Tq+T, H). K cheap
  backward passes through the LM and value heads only, then one backward of the weighted loss.
- ``mgda``: g_i is the gradient with respect to the trainable parameters of the shared network (the
  LoRA adapters): K full backward passes, the K x K Gram matrix of the flattened gradients, and the
  combined gradient written back to ``.grad``.

Objective i's loss is its own PPO loss, L_i = clipped surrogate with A_i + vf_coef * value loss of
head i. The value heads are task-specific parameters in Sener and Koltun's sense: they take their
own gradient (Algorithm 2 of their paper), only the shared network takes the min-norm combination.
With K identical objectives every c gives the same combined gradient, that of one objective, and
the update is single-objective PPO.

Preference (this project's extension, mirroring PAMA's A_i / (K w_i)): the min-norm problem is
solved over the scaled gradients g_i / (K w_i). Its solution d satisfies <d, g_i> >= K w_i ||d||^2
for every i, with equality where c_i > 0: each objective's first-order improvement is at least
proportional to its weight, so a heavier objective gets more of the step. Uniform w is plain MGDA.
The update direction is sum_i a_i g_i with coefficients a_i = c_i / (K w_i).

Nothing here imports Lightning; ``training.mgda_step`` sequences these functions in the training loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pama_lit.core.losses import policy_loss, value_loss
from pama_lit.core.pareto import min_norm_weights


def per_objective_policy_losses(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Each objective's clipped surrogate from one forward pass.

    Args:
        logprobs: (B,T) log pi_theta of the response tokens (with grad).
        old_logprobs: (B,T) log pi_old.
        advantages: (B,T,K) per-objective advantages.
        mask: (B,T) bool, True on real response tokens.
        clip_coef: policy ratio clip epsilon.

    Returns:
        policy losses (K,) with grad; detached stats "clipfrac" (K,) and "approx_kl" (0-dim).
    """
    # policy_loss broadcasts: the shared ratio (B,T,1) against K advantage columns (B,T,K).
    pg, stats = policy_loss(logprobs.unsqueeze(-1), old_logprobs.unsqueeze(-1), advantages, mask, clip_coef)
    return pg, {"clipfrac": stats["clipfrac"], "approx_kl": stats["approx_kl"].squeeze(-1)}


def per_objective_ppo_losses(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_coef: float,
    vf_clip: float,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Each objective's PPO losses from one forward pass: K surrogates and K value losses.

    Args:
        logprobs: (B,T) log pi_theta of the response tokens (with grad).
        old_logprobs: (B,T) log pi_old.
        advantages: (B,T,K) per-objective advantages.
        values: (B,T,K) value-head outputs (with grad).
        old_values: (B,T,K) values at rollout time.
        returns: (B,T,K) per-objective GAE returns.
        mask: (B,T) bool, True on real response tokens.
        clip_coef: policy ratio clip epsilon.
        vf_clip: value clip range.

    Returns:
        policy losses (K,) and value losses (K,), both with grad; detached stats "clipfrac" (K,)
        and "approx_kl" (0-dim).
    """
    pg, stats = per_objective_policy_losses(logprobs, old_logprobs, advantages, mask, clip_coef)
    vf = torch.stack(
        [
            value_loss(
                values[..., k : k + 1], old_values[..., k : k + 1], returns[..., k : k + 1], mask, vf_clip
            )[0]
            for k in range(advantages.shape[-1])
        ]
    )
    return pg, vf, stats


def flatten_gradients(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """One flat (D,) vector of a gradient tuple, zeros where a parameter got no gradient."""
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
    )


def per_objective_gradients(losses: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The flat gradient of each of K losses with respect to ``params``: one backward pass each.

    ``torch.autograd.grad`` returns the gradients instead of accumulating them, so no ``.grad``
    changes; the graph is freed after the last pass.

    Args:
        losses: (K,) losses sharing one graph.
        params: the D parameters' tensors, in the order of the flat vectors.

    Returns:
        (K, D) one flat gradient per loss, zeros where a parameter got none.
    """
    k = losses.shape[0]
    flat = None
    for i in range(k):
        grads = torch.autograd.grad(losses[i], params, retain_graph=i < k - 1, allow_unused=True)
        g = flatten_gradients(grads, params)
        if flat is None:
            flat = g.new_empty(k, g.numel())
        flat[i] = g
    return flat


def gram_matrix(grads: torch.Tensor) -> torch.Tensor:
    """(K,K) Gram matrix G_ij = <g_i, g_j> of K gradients, accumulated in float32 at least.

    Args:
        grads: (K, ...) one gradient per objective, any trailing shape.
    """
    flat = grads.reshape(grads.shape[0], -1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    return flat @ flat.T


@dataclass
class MinNormSolution:
    """The min-norm combination of K preference-scaled gradients.

    Attributes:
        weights: (K,) c on the simplex, the min-norm weights of the scaled gradients g_i / (K w_i).
        coefficients: (K,) a_i = c_i / (K w_i), the weights of the raw gradients (and losses) in the
            update direction d = sum_i a_i g_i; equal to ``weights`` for uniform w.
        norm: 0-dim ||d||, the min-norm value (0 at a Pareto-stationary point).
    """

    weights: torch.Tensor
    coefficients: torch.Tensor
    norm: torch.Tensor


def preference_scales(preference: torch.Tensor) -> torch.Tensor:
    """(K,) 1 / (K w_i): PAMA's preference scaling, applied to each objective's gradient."""
    return 1.0 / (preference.numel() * preference)


def solve_min_norm(gram: torch.Tensor, preference: torch.Tensor | None = None) -> MinNormSolution:
    """Min-norm weights of K gradients given their Gram matrix and a preference vector.

    The scaled Gram matrix S G S (S = diag(1 / (K w_i))) goes to ``pareto.min_norm_weights``: exact
    for K <= 2, Frank-Wolfe with away steps for more.

    Args:
        gram: (K,K) Gram matrix of the raw (unscaled) gradients.
        preference: (K,) positive weights summing to 1, or None for uniform.

    Returns:
        a ``MinNormSolution`` in ``gram``'s dtype and device.
    """
    k = gram.shape[0]
    if preference is None:
        preference = torch.full((k,), 1.0 / k, dtype=gram.dtype, device=gram.device)
    scales = preference_scales(preference.to(gram))
    weights, value = min_norm_weights(gram * scales[:, None] * scales[None, :])
    return MinNormSolution(weights=weights, coefficients=weights * scales, norm=value.sqrt())


def mean_pairwise_cosine(gram: torch.Tensor) -> torch.Tensor:
    """Mean cosine <g_i, g_j> / (||g_i|| ||g_j||) over the pairs i < j, from the (K,K) Gram matrix.

    The cosine of the two gradients for K = 2; a zero gradient counts as orthogonal (cosine 0).

    Args:
        gram: (K,K) Gram matrix, K >= 2.

    Returns:
        0-dim, in [-1, 1].
    """
    k = gram.shape[0]
    if k < 2:
        raise ValueError(f"a pairwise cosine needs at least two gradients, got {k}")
    norms = gram.diagonal().clamp(min=0).sqrt()
    outer = norms[:, None] * norms[None, :]
    cosines = torch.where(outer > 0, gram / torch.where(outer > 0, outer, 1), torch.zeros_like(gram))
    i, j = torch.triu_indices(k, k, offset=1, device=gram.device)
    return cosines[i, j].clamp(-1, 1).mean()


def combine_gradients(grads: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """The update direction d = sum_i a_i g_i of (K, ...) gradients, shape (...)."""
    return torch.tensordot(coefficients.to(grads), grads, dims=1)


def write_gradients(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Write a flat (D,) gradient into the ``.grad`` of each parameter, in order."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone()
        offset += n
    if offset != flat.numel():
        raise ValueError(f"flat gradient has {flat.numel()} entries, the parameters {offset}")
