"""One PPO minibatch of the gradient-based baselines: ``algorithm=mgda_ub`` and ``algorithm=mgda``.

``MgdaModule.minibatch_backward`` (``training.mgda_module``) hands over to ``mgda_backward``. It runs one
forward pass, builds the K per-objective PPO losses, computes the K gradients (with respect to the
last hidden states or to the shared trainable parameters), solves the min-norm problem and leaves the
combined gradient in ``.grad``; the module then checks, clips and steps as for every algorithm.
The math is in ``core.mgda``; see its docstring for the method and the preference variant.

``pareto_diagnostic`` reuses the same pieces (per-objective losses and gradients, the min-norm
solve) to measure Pareto stationarity for every algorithm (``train/diag/*``), leaving ``.grad`` alone.

Timers: ``objective_grads`` covers the K per-objective backward passes, ``pareto_solve`` the
weighting step itself (Gram matrix, min-norm solve, combination), the key PAMA's closed form uses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pama_lit.core import ops
from pama_lit.core.mgda import (
    combine_gradients,
    gram_matrix,
    mean_pairwise_cosine,
    per_objective_gradients,
    per_objective_policy_losses,
    per_objective_ppo_losses,
    solve_min_norm,
    write_gradients,
)
from pama_lit.infra import distributed
from pama_lit.models.policy import PolicyWithValueHeads
from pama_lit.training.rollout import Rollout
from pama_lit.training.timing import PhaseTimer

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
    temperature: float = 1.0,
    kl_term: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None,
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
        temperature: the sampling temperature; log-probabilities are those of softmax(logits / temperature).
        kl_term: (logprobs, ref_logprobs, mask) -> the KL loss term or None (``PamaModule.kl_loss_term``,
            ``ppo.kl.placement=loss``). Shared by every objective, it stays outside the min-norm
            problem: its gradient is added to the combined one, as the module adds it to PAMA's surrogate.

    Returns:
        the weighted total loss sum_i a_i L_i (plus the KL term; detached) and the minibatch stats: the
        module's keys plus "pareto/weight" (K,) and "pareto/min_norm" (0-dim), and "loss/kl" with a KL term.
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
    logprobs = ops.logprobs_from_logits(logits, rollout.responses[idx], temperature)
    with torch.no_grad():
        entropy = ops.masked_mean(ops.entropy_from_logits(logits, temperature), mask)
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
    kl = kl_term(logprobs, rollout.ref_logprobs[idx], mask) if kl_term is not None else None
    heads = list(policy.value_head.parameters())
    if space == "representation":
        solution = _representation_step(
            losses, vf, hidden, heads, backward, preference, ppo["vf_coef"], timer, kl
        )
    else:
        shared = [p for p in policy.lm.parameters() if p.requires_grad]
        solution = _parameter_step(losses, shared, heads, preference, timer, kl)
    coef = solution.coefficients.to(losses)
    total = (coef * losses).sum().detach()
    extra = {}
    if kl is not None:
        total = total + kl.detach()
        extra["loss/kl"] = kl.detach()
    return total, extra | {
        "loss/policy": (coef * pg).sum().detach(),
        "loss/value": vf.mean().detach(),
        "loss/value_heads": vf.detach(),
        "policy/entropy": entropy,
        "policy/clipfrac": pg_stats["clipfrac"].mean(),
        "policy/approx_kl": pg_stats["approx_kl"],
        "pareto/weight": solution.weights.detach().to(losses),
        "pareto/min_norm": solution.norm.detach().to(losses),
    }


def _representation_step(losses, vf, hidden, heads, backward, preference, vf_coef, timer, kl=None):
    """MGDA-UB: K gradients w.r.t. the hidden states, min-norm weights, one backward of sum_i a_i L_i (+ kl)."""
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
    weighted = (solution.coefficients.to(losses).detach() * losses).sum()
    backward(weighted if kl is None else weighted + kl)
    # Task-specific value heads take their own, unweighted gradient (Sener and Koltun, Algorithm 2).
    for p, g in zip(heads, head_grads, strict=True):
        p.grad = g.to(p.dtype)
    return solution


def _parameter_step(losses, shared, heads, preference, timer, kl=None):
    """MGDA: K full backward passes, the Gram matrix of the flat shared gradients, written back (+ kl's)."""
    k = losses.shape[0]
    with timer("objective_grads"):
        # The KL term, if any, is one more row of the same passes (its value-head part is zero).
        flat = per_objective_gradients(
            losses if kl is None else torch.cat([losses, kl.reshape(1)]), shared + heads
        )
    num_shared = sum(p.numel() for p in shared)
    with timer("pareto_solve"):
        solution = solve_min_norm(gram_matrix(flat[:k, :num_shared]), preference)
        combined = combine_gradients(flat[:k, :num_shared], solution.coefficients)
        write_gradients(shared, combined if kl is None else combined + flat[k, :num_shared])
        # Task-specific value heads: each takes its own objective's gradient, unweighted.
        write_gradients(heads, flat[:k, num_shared:].sum(0))
    return solution


def pareto_diagnostic(
    policy: PolicyWithValueHeads,
    rollout: Rollout,
    advantages: torch.Tensor,
    idx: torch.Tensor,
    clip_coef: float,
    temperature: float = 1.0,
) -> dict[str, torch.Tensor]:
    """How close the policy is to Pareto stationarity: MGDA's min-norm point of K policy gradients.

    Objective i's gradient g_i is that of its own clipped surrogate with ``advantages[..., i]``,
    with respect to the shared trainable parameters (the value heads take no part in a policy
    loss). On several ranks each g_i is averaged over ranks first, as DDP averages gradients. The
    min-norm problem is solved without preference: stationarity is a property of the objectives,
    not of the weights an algorithm trains with. No ``.grad`` changes.

    Args:
        policy: the policy with its value heads.
        rollout: the iteration's samples.
        advantages: (B,T,K) each objective's own advantages over the whole batch.
        idx: (M,) the rows of the minibatch the gradients are taken on.
        clip_coef: policy ratio clip epsilon.
        temperature: the sampling temperature; log-probabilities are those of softmax(logits / temperature).

    Returns:
        detached "diag/min_norm" (0-dim): ||sum_i c_i g_i|| at the min-norm weights c (0 at a
        Pareto-stationary point); "diag/weight" (K,): c, on the simplex; "diag/grad_norm" (K,):
        ||g_i||; and, for K >= 2, "diag/grad_cos" (0-dim): the mean pairwise cosine of the g_i.
    """
    logits, _ = policy(
        rollout.input_ids[idx],
        rollout.attention_mask[idx],
        rollout.num_response,
        preferences=rollout.rows(idx),
    )
    logprobs = ops.logprobs_from_logits(logits, rollout.responses[idx], temperature)
    del logits
    losses, _ = per_objective_policy_losses(
        logprobs, rollout.logprobs[idx], advantages[idx], rollout.response_mask[idx], clip_coef
    )
    shared = [p for p in policy.lm.parameters() if p.requires_grad]
    gram = gram_matrix(distributed.mean(per_objective_gradients(losses, shared)))
    solution = solve_min_norm(gram)
    stats = {
        "diag/min_norm": solution.norm,
        "diag/weight": solution.weights,
        "diag/grad_norm": gram.diagonal().clamp(min=0).sqrt(),
    }
    if gram.shape[0] > 1:
        stats["diag/grad_cos"] = mean_pairwise_cosine(gram)
    return {key: value.detach() for key, value in stats.items()}
