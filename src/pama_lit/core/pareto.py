"""Combining K per-objective advantages into one: PAMA's closed form and MGDA.

PAMA (Theorem 1): for scalars a_1..a_K, min over the simplex of (sum_i c_i a_i)^2 is attained at
s* = the projection of 0 onto [min_i a_i, max_i a_i]. After Noon every objective's per-token
gradient is the same vector scaled by A_i,t, so this scalar problem *is* the MGDA min-norm problem
at that token. ``min_norm_weights`` solves the general (vector) problem from a Gram matrix, for the
MGDA-UB baseline and for checking the identity.

Every PAMA combine takes an optional ``active`` (K,) bool mask: an objective outside it is left out
of the min altogether (it cannot veto a token) and the preference is renormalised over the rest, so
the combine is exactly PAMA over the active objectives. The module leaves out objectives whose scores
do not distinguish the batch's samples (``algorithm.min_score_std``) and, on request, objectives whose
preference weight is below ``algorithm.veto_threshold``. The token-granularity combine also takes one
mask per sample ((B,K) or (B,1,K)): with ``algorithm.satisfied_at_ceiling`` an objective is left out
at the tokens of the samples that already score its reward's ceiling.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pama_lit.core.ops import masked_mean


def closed_form_min_norm(
    a: torch.Tensor, active: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Theorem 1: the min-norm point of the convex hull of the scalars a_1..a_K, and its weights.

    s* = min_i a_i if all a_i > 0; max_i a_i if all a_i < 0; 0 otherwise. The weights are one-hot on
    the arg-min (all positive), one-hot on the arg-max (all negative), and otherwise the two-point mix
    c_min = max / (max - min), c_max = -min / (max - min) of arg-min and arg-max, so that
    sum_i c_i a_i = 0 (all zero: one-hot on the arg-min). Ties go to the lowest index.

    Args:
        a: (..., K) floating values, any device and dtype.
        active: optional bool mask: the hull is that of the active entries only; the others get weight 0
            whatever their value. (K,) applies to every row; (B,K) or (B,1,K), one mask per sample of
            (B,...,K) values. None: all are active.

    Returns:
        s_star (...) and weights (..., K): nonnegative, summing to 1, with (weights * a).sum(-1) equal
        to s_star up to rounding. Where no entry is active: s_star 0 and all weights 0.
    """
    if active is None:
        a_min, i_min = a.min(dim=-1)
        a_max, i_max = a.max(dim=-1)
    else:
        # +-inf never wins the min / max, so the arg-min and arg-max are active entries whenever one is.
        active = _as_mask(active, a)
        a_min, i_min = torch.where(active, a, torch.inf).min(dim=-1)
        a_max, i_max = torch.where(active, a, -torch.inf).max(dim=-1)
        none_active = ~active.any(-1)
        a_min = a_min.masked_fill(none_active, 0)
        a_max = a_max.masked_fill(none_active, 0)
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    s_star = torch.where(a_min > 0, a_min, torch.where(a_max < 0, a_max, zero))

    spread = a_max - a_min
    mixed = (a_min <= 0) & (a_max >= 0) & (spread > 0)
    safe_spread = torch.where(mixed, spread, torch.ones_like(spread))
    # Outside the mixed case all entries are positive, all negative, or all zero: one point carries all.
    c_max = torch.where(mixed, -a_min / safe_spread, (a_max < 0).to(a.dtype))
    c_min = torch.where(mixed, a_max / safe_spread, 1 - c_max)

    weights = torch.zeros_like(a)
    weights.scatter_add_(-1, i_min.unsqueeze(-1), c_min.unsqueeze(-1))
    weights.scatter_add_(-1, i_max.unsqueeze(-1), c_max.unsqueeze(-1))
    if active is not None:
        weights = weights * active.any(-1, keepdim=True).to(a.dtype)
    return s_star, weights


def _as_mask(active: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """An ``active`` mask as bool on ``like``'s device, shaped to broadcast against (..., K) ``like``.

    (K,) applies to every row; (B,K) or (B,1,K), one mask per sample, becomes (B,1,...,1,K).
    """
    active = torch.as_tensor(active, device=like.device).to(torch.bool)
    k = like.shape[-1]
    if active.shape[-1:] != (k,):
        raise ValueError(
            f"active has shape {tuple(active.shape)} but the advantages have {k} objectives (last dim of "
            f"{tuple(like.shape)}): give (K,) or one row per sample ((B,K) or (B,1,K)), with K = {k}"
        )
    if active.dim() == 1:
        return active
    if like.dim() < 2 or active.numel() != like.shape[0] * k:
        raise ValueError(
            f"active has shape {tuple(active.shape)}: a per-sample mask is (B,K) or (B,1,K) for (B,...,K) "
            f"advantages, here {tuple(like.shape)}"
        )
    return active.reshape(like.shape[0], *([1] * (like.dim() - 2)), k)


def _as_weights(preference: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The preference in ``like``'s dtype and device, shaped to broadcast against it.

    (K,) applies to every row; (B,K) or (B,1,K), one preference per sample, becomes (B,1,...,1,K)
    for (B,...,K) advantages, so that each sample's tokens use its own weights.
    """
    preference = torch.as_tensor(preference, dtype=like.dtype, device=like.device)
    k = like.shape[-1]
    per_sample = preference.dim() >= 2 and preference.shape[0] == like.shape[0]
    if preference.shape[-1:] != (k,) or (preference.dim() >= 2 and not per_sample):
        raise ValueError(
            f"preference has shape {tuple(preference.shape)} but the advantages have {k} objectives (last dim "
            f"of {tuple(like.shape)}): give (K,) weights, or one row per sample ((B,K) or (B,1,K)), with K = {k}"
        )
    if per_sample:
        if preference.numel() != like.shape[0] * k:
            raise ValueError(
                f"preference has shape {tuple(preference.shape)}: a per-sample preference is (B,K) or "
                f"(B,1,K), here B = {like.shape[0]}, K = {k}"
            )
        preference = preference.reshape(like.shape[0], *([1] * (like.dim() - 2)), k)
    return preference


def scale_by_preference(
    advantages: torch.Tensor, preference: torch.Tensor, active: torch.Tensor | None = None
) -> torch.Tensor:
    """Divide each objective by K * w_i before the min, so that heavier objectives bind more often.

    Args:
        advantages: (..., K), e.g. (B,T,K).
        preference: (K,) positive weights summing to 1, or one such row per sample ((B,K) or
            (B,1,K), for (B,...,K) advantages: conditioning); uniform weights leave ``advantages``
            unchanged.
        active: optional (K,) bool, or one mask per sample ((B,K) or (B,1,K)). The preference is
            restricted to the active objectives and renormalised (w'_i = w_i / sum_active w), K becomes
            their number K', and the left-out objectives are scaled to 0: the scaling of PAMA over the
            active objectives alone (per sample, with per-sample masks).

    Returns:
        (..., K) scaled advantages A_i / (K * w_i) (A_i / (K' * w'_i) and 0 with ``active``).
    """
    w = _as_weights(preference, advantages)
    if active is None:
        return advantages / (w.shape[-1] * w)
    active = _as_mask(active, advantages)
    w = torch.where(active, w, 0)
    # K' w'_i = K' w_i / sum_active w; the clamps only matter when nothing is active (all scaled to 0).
    count = active.sum(-1, keepdim=True).clamp(min=1)
    scale = count * w / w.sum(-1, keepdim=True).clamp(min=torch.finfo(w.dtype).tiny)
    return torch.where(active, advantages / torch.where(active, scale, 1), 0)


def combine_pama_token(
    advantages: torch.Tensor, preference: torch.Tensor, active: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """PAMA at token granularity: the closed form of the preference-scaled advantages at each token.

    With Noon and uniform preference this is min_i A_i,t: a token is reinforced only when every
    objective rates it above average, by the weakest margin.

    Args:
        advantages: (B,T,K) per-objective advantages (usually after Noon).
        preference: (K,) positive weights summing to 1, or (B,K) / (B,1,K): each sample's own
            (``conditioning``), the same as combining each row alone with its weights.
        active: optional (K,) bool: only these objectives take part (see ``scale_by_preference``); an
            excluded one never binds, and with none active the combined advantage is 0. (B,K) or
            (B,1,K): each sample's own mask, the same as combining each row alone with its mask.

    Returns:
        combined (B,T) and weights (B,T,K); the weights apply to the *scaled* advantages, i.e.
        combined = (weights * scale_by_preference(advantages, preference, active)).sum(-1).
    """
    return closed_form_min_norm(scale_by_preference(advantages, preference, active), active)


def combine_pama_batch(
    advantages: torch.Tensor,
    mask: torch.Tensor,
    preference: torch.Tensor,
    ratio: torch.Tensor | None = None,
    clip_coef: float = 0.2,
    mean_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = masked_mean,
    active: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PAMA at batch granularity: one set of weights for the whole (mini)batch.

    a_i = masked mean over tokens of A_i,t * 1[ratio_t <= 1 + clip_coef], scaled by the preference;
    c = Theorem-1 weights of (a_1..a_K); combined_t = sum_i c_i * scaled A_i,t. Tokens whose ratio
    is above the clip range contribute no gradient to a positive advantage, so they are left out of a.

    Args:
        advantages: (B,T,K) per-objective advantages (usually after Noon).
        mask: (B,T) bool, True on real response tokens.
        preference: (K,) positive weights summing to 1.
        ratio: (B,T) pi_theta / pi_old per token, or None for all ones (e.g. in the first epoch).
        clip_coef: the PPO clip range epsilon.
        mean_fn: the masked mean (x, mask) -> (K,); data-parallel runs pass one over every rank's
            minibatch, so that all ranks use the same weights.
        active: optional (K,) bool: only these objectives take part (see ``combine_pama_token``).
            One set of weights serves the whole batch, so a per-sample mask is refused.

    Returns:
        combined (B,T), 0 outside the mask, and weights (K,) applied to the scaled advantages.
    """
    if active is not None and torch.as_tensor(active).dim() != 1:
        raise ValueError(
            f"combine_pama_batch takes a (K,) active mask, got shape {tuple(torch.as_tensor(active).shape)}: "
            "its weights are one set for the whole batch; per-sample masks need the token granularity (pama)"
        )
    scaled = scale_by_preference(advantages, preference, active)
    inside = mask.bool()
    if ratio is not None:
        inside = inside & (ratio.detach() <= 1 + clip_coef)
    # Dividing by all real tokens, not only the unclipped ones, scales every a_i alike: the weights are
    # invariant to that.
    a = mean_fn(scaled * inside.unsqueeze(-1).to(scaled.dtype), mask)
    _, weights = closed_form_min_norm(a, active)
    combined = (scaled * weights).sum(-1) * mask.to(scaled.dtype)
    return combined, weights


def combine_stats(
    advantages: torch.Tensor, combined: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Diagnostics of one combine step: which objective binds where the update acts, and how often.

    A token with combined advantage 0 gets no policy gradient, whichever objective the closed form
    names there (after Noon that is the objective at 0, or the lowest index when several are), so
    the binding fractions count only the *active* tokens, those with a positive combined advantage.

    Args:
        advantages: (B,T,K) the advantages the combine saw (after Noon where the algorithm uses it).
        combined: (B,T) the combined advantage.
        weights: (B,T,K) per-token weights (token granularity) or (K,) (batch granularity).
        mask: (B,T) bool, True on real response tokens.

    Returns:
        "binding" (K,): token weights averaged over active tokens (0 when none is active); batch
        weights unchanged. "active_frac" (): fraction of response tokens with combined > 0.
        "zero_frac" (K,): fraction of response tokens where objective i's advantage is exactly 0.
    """
    mask = mask.bool()
    positive = combined > 0
    binding = weights if weights.dim() == 1 else masked_mean(weights, mask & positive)
    return {
        "binding": binding,
        "active_frac": masked_mean(positive.to(combined.dtype), mask),
        "zero_frac": masked_mean((advantages == 0).to(advantages.dtype), mask),
    }


def min_norm_two(
    g11: float | torch.Tensor, g12: float | torch.Tensor, g22: float | torch.Tensor
) -> torch.Tensor:
    """Exact min-norm weights of two vectors from their Gram entries.

    min over c in [0, 1] of ||c g_1 + (1 - c) g_2||^2 = c^2 g11 + 2 c (1 - c) g12 + (1 - c)^2 g22,
    solved by c = clip((g22 - g12) / (g11 + g22 - 2 g12), 0, 1). Equal vectors (zero denominator)
    get (0.5, 0.5).

    Args:
        g11: <g_1, g_1>.
        g12: <g_1, g_2>.
        g22: <g_2, g_2>.

    Returns:
        (2,) weights (c, 1 - c), float64 for Python floats, else the inputs' dtype.
    """
    g11, g12, g22 = (
        torch.as_tensor(g, dtype=torch.float64) if not torch.is_tensor(g) else g for g in (g11, g12, g22)
    )
    denom = g11 + g22 - 2 * g12
    half = torch.full_like(denom, 0.5)
    c = torch.where(denom > 0, ((g22 - g12) / torch.where(denom > 0, denom, 1)).clamp(0, 1), half)
    return torch.stack([c, 1 - c])


def min_norm_weights(
    gram: torch.Tensor, max_iter: int = 250, tol: float = 1e-10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-norm point of the convex hull of K vectors: min over the simplex of c^T G c.

    Exact for K <= 2 (``min_norm_two``). For K > 2, Frank-Wolfe as in MGDA-UB (Sener and Koltun 2018):
    start from the best pair, then step towards the vertex with the smallest directional derivative
    with an exact line search. Plain Frank-Wolfe zig-zags when the optimum lies on a face (up to 2e-3
    relative error in the value after 250 steps on random Gram matrices), so it also takes away steps
    (Lacoste-Julien and Jaggi 2015), which converge linearly: about 1e-8 relative on full-rank Gram
    matrices, still up to 4e-4 on ill-conditioned rank-deficient ones. The K x K solve runs in float64
    on the CPU: it is tiny, and on an accelerator each iteration would cost a device sync.

    Args:
        gram: (K,K) symmetric positive semi-definite Gram matrix G_ij = <g_i, g_j>.
        max_iter: Frank-Wolfe iterations at most.
        tol: stop when the Frank-Wolfe duality gap c^T G c - min_t (G c)_t, an upper bound on how far
            c^T G c is above the minimum, falls below ``tol * max_i G_ii``.

    Returns:
        weights (K,) on the simplex and value = c^T G c (0-dim), in ``gram``'s dtype and device.
    """
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] == 0:
        raise ValueError(f"gram must be a non-empty square (K,K) matrix, got shape {tuple(gram.shape)}")
    G = gram.detach().to(device="cpu", dtype=torch.float64)
    k = G.shape[0]
    if k == 1:
        c = torch.ones(1, dtype=torch.float64)
    elif k == 2:
        c = min_norm_two(G[0, 0], G[0, 1], G[1, 1])
    else:
        c = _best_pair(G)
        scale = float(G.diagonal().max().clamp(min=torch.finfo(torch.float64).tiny))
        for _ in range(max_iter):
            Gc = G @ c
            value = c @ Gc
            toward = int(torch.argmin(Gc))
            away = int(torch.argmax(torch.where(c > 0, Gc, -torch.inf)))
            fw_gap, away_gap = value - Gc[toward], Gc[away] - value
            if fw_gap <= tol * scale:
                break
            if fw_gap >= away_gap:
                direction = -c
                direction[toward] += 1
                max_step = 1.0
            else:
                # Moving mass off the worst vertex in the support: at most until it is empty.
                direction = c.clone()
                direction[away] -= 1
                max_step = float(c[away] / (1 - c[away]))
            curvature = direction @ G @ direction
            step = (
                max_step if curvature <= 0 else min(max(float(-(direction @ Gc) / curvature), 0.0), max_step)
            )
            c = (c + step * direction).clamp(min=0)
            c = c / c.sum()
    # Rounding in a float32 Gram matrix can make it slightly indefinite; the true value is >= 0.
    value = (c @ G @ c).clamp(min=0)
    return c.to(device=gram.device, dtype=gram.dtype), value.to(device=gram.device, dtype=gram.dtype)


def _best_pair(G: torch.Tensor) -> torch.Tensor:
    """Weights of the pair (i, j) whose two-vector min-norm point is smallest: Frank-Wolfe's start."""
    k = G.shape[0]
    best_value, best = None, None
    for i in range(k):
        for j in range(i + 1, k):
            pair = min_norm_two(G[i, i], G[i, j], G[j, j])
            value = pair[0] ** 2 * G[i, i] + 2 * pair[0] * pair[1] * G[i, j] + pair[1] ** 2 * G[j, j]
            if best_value is None or value < best_value:
                best_value, best = value, (i, j, pair)
    i, j, pair = best
    c = torch.zeros(k, dtype=G.dtype)
    c[i], c[j] = pair[0], pair[1]
    return c
