"""One PPO minibatch of the gradient-based baselines: ``algorithm=mgda_ub`` and ``algorithm=mgda``.

``PamaModule.minibatch_step`` hands over to ``mgda_backward`` for these algorithms. It runs one
forward pass, builds the K per-objective PPO losses, computes the K gradients (with respect to the
last hidden states or to the shared trainable parameters), solves the min-norm problem and leaves the
combined gradient in ``.grad``; the module then checks, clips and steps as for every algorithm.
The math is in ``gradient_methods``; see its docstring for the method and the preference variant.

Timers: ``objective_grads`` covers the K per-objective backward passes, ``pareto_solve`` the
weighting step itself (Gram matrix, min-norm solve, combination), the key PAMA's closed form uses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pama_lit import distributed, ops
from pama_lit.gradient_methods import (
    combine_gradients,
    flatten_gradients,
    gram_matrix,
    per_objective_ppo_losses,
    solve_min_norm,
    write_gradients,
)
from pama_lit.models.policy import PolicyWithValueHeads
from pama_lit.rollout import Rollout
from pama_lit.timing import PhaseTimer

GRADIENT_SPACES = ("representation", "parameters")


def mgda_backward(
    policy: PolicyWithValueHeads,
    backward: Callable[[torch.Tensor], None],
    space: str,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    idx: torch.Tensor,
    preference: torch.Tensor,
    ppo: dict,
    timer: PhaseTimer,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward one minibatch, solve MGDA's min-norm problem and leave the update in ``.grad``.

    Every trainable parameter's ``.grad`` must be None or zero on entry.

    Args:
        policy: the policy with K value heads.
        backward: the module's ``manual_backward`` (precision scaling and strategy hooks).
        space: "representation" (MGDA-UB: gradients w.r.t. the last hidden states, one backward of
            the weighted loss) or "parameters" (MGDA: gradients w.r.t. the shared trainable
            parameters, their combination written to ``.grad``).
        rollout: the iteration's samples.
        advantages: (B,T,K) per-objective advantages of the whole batch.
        returns: (B,T,K) per-objective returns.
        idx: (M,) the minibatch's row indices.
        preference: (K,) positive weights summing to 1.
        ppo: PPO settings (clip_coef, vf_clip, vf_coef).
        timer: accumulates ``objective_grads`` and ``pareto_solve``.

    Returns:
        the weighted total loss sum_i a_i L_i (detached) and the minibatch stats: the module's keys
        plus "pareto/weight" (K,) and "pareto/min_norm" (0-dim).
    """
    if space not in GRADIENT_SPACES:
        raise ValueError(f"unknown gradient space {space!r}; allowed: {', '.join(GRADIENT_SPACES)}")
    if space == "parameters" and distributed.world_size() > 1:
        raise NotImplementedError(
            "algorithm=mgda writes .grad directly, past DDP's gradient reducer: train it in one process, "
            "or use algorithm=mgda_ub, which all-reduces its Gram matrix"
        )
    mask = rollout.response_mask[idx]
    logits, values, hidden = policy(
        rollout.input_ids[idx], rollout.attention_mask[idx], rollout.num_response, return_hidden=True
    )
    logprobs = ops.logprobs_from_logits(logits, rollout.responses[idx])
    with torch.no_grad():
        entropy = ops.masked_mean(ops.entropy_from_logits(logits), mask)
    del logits
    pg, vf, pg_stats = per_objective_ppo_losses(
        logprobs,
        rollout.logprobs[idx],
        advantages[idx],
        values,
        rollout.values[idx],
        returns[idx],
        mask,
        ppo["clip_coef"],
        ppo["vf_clip"],
    )
    losses = pg + ppo["vf_coef"] * vf
    heads = list(policy.value_head.parameters())
    if space == "representation":
        solution = _representation_step(
            losses, vf, hidden, heads, backward, preference, ppo["vf_coef"], timer
        )
    else:
        shared = [p for p in policy.lm.parameters() if p.requires_grad]
        solution = _parameter_step(losses, shared, heads, preference, timer)
    coef = solution.coefficients.to(losses)
    return (coef * losses).sum().detach(), {
        "loss/policy": (coef * pg).sum().detach(),
        "loss/value": vf.mean().detach(),
        "loss/value_heads": vf.detach(),
        "policy/entropy": entropy,
        "policy/clipfrac": pg_stats["clipfrac"].mean(),
        "policy/approx_kl": pg_stats["approx_kl"],
        "pareto/weight": solution.weights.detach().to(losses),
        "pareto/min_norm": solution.norm.detach().to(losses),
    }


def _representation_step(losses, vf, hidden, heads, backward, preference, vf_coef, timer):
    """MGDA-UB: K gradients w.r.t. the hidden states, min-norm weights, one backward of sum_i a_i L_i."""
    k = losses.shape[0]
    with timer("objective_grads"):
        # Each only runs back through the LM head and the value heads: the layers below are shared.
        grads = torch.stack([torch.autograd.grad(losses[i], hidden, retain_graph=True)[0] for i in range(k)])
        head_grads = torch.autograd.grad(vf_coef * vf.sum(), heads, retain_graph=True)
    with timer("pareto_solve"):
        # Each rank's hidden states are its own coordinates of the global batch, and the global loss
        # is the mean of the rank losses: the global gradient is each rank's divided by the world
        # size, so the global Gram is the sum of the rank Grams over world^2.
        gram = distributed.all_reduce_sum(gram_matrix(grads)) / distributed.world_size() ** 2
        head_grads = [distributed.mean(g) for g in head_grads]
        solution = solve_min_norm(gram, preference)
    backward((solution.coefficients.to(losses).detach() * losses).sum())
    # Task-specific value heads take their own, unweighted gradient (Sener and Koltun, Algorithm 2).
    for p, g in zip(heads, head_grads, strict=True):
        p.grad = g.to(p.dtype)
    return solution


def _parameter_step(losses, shared, heads, preference, timer):
    """MGDA: K full backward passes, the Gram matrix of the flat shared gradients, written back."""
    k = losses.shape[0]
    params = shared + heads
    head_grads = [torch.zeros_like(p) for p in heads]
    with timer("objective_grads"):
        flat = None
        for i in range(k):
            grads = torch.autograd.grad(losses[i], params, retain_graph=i < k - 1, allow_unused=True)
            g_shared = flatten_gradients(grads[: len(shared)], shared)
            if flat is None:
                flat = g_shared.new_empty(k, g_shared.numel())
            flat[i] = g_shared
            for acc, g in zip(head_grads, grads[len(shared) :], strict=True):
                if g is not None:
                    acc.add_(g)
    with timer("pareto_solve"):
        solution = solve_min_norm(gram_matrix(flat), preference)
        write_gradients(shared, combine_gradients(flat, solution.coefficients))
        for p, g in zip(heads, head_grads, strict=True):
            p.grad = g
    return solution
