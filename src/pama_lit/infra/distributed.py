"""Statistics over every rank's shard of the rollout batch, for Lightning's data-parallel strategies.

Under ``trainer=ddp`` each process samples and scores its own ``rollout.batch_size`` prompts. The
PPO update is then data-parallel (DDP all-reduces the gradients), but a few statistics must be
taken over the whole batch or the ranks would drift apart and differ from a one-process run on the
same prompts: advantage whitening (mean and variance), the KL controller's input, pama_batch's
per-objective means and the logged means. These helpers compute them.

In one process, or before ``torch.distributed`` is initialised, every helper returns exactly what
the local computation gives (``ops`` is called directly), so the single-device path is unchanged.
Every helper is a collective: all ranks must call it, in the same order, with same-shaped inputs.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from pama_lit.core import ops

log = logging.getLogger(__name__)


def world_size() -> int:
    """Number of processes in the default process group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Elementwise sum over ranks, as a new detached tensor (``x`` itself in one process)."""
    if world_size() == 1:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y


def mean(x: torch.Tensor) -> torch.Tensor:
    """Elementwise mean over ranks of a per-rank value (equal weight per rank: equal shard sizes)."""
    n = world_size()
    return x if n == 1 else all_reduce_sum(x) / n


def mean_floats(values: dict[str, float | torch.Tensor], device: torch.device) -> dict[str, float]:
    """Mean over ranks of each value of a dict, in one collective; every rank must pass the same keys."""
    if world_size() == 1:
        return {k: float(v) for k, v in values.items()}
    stacked = torch.tensor([float(v) for v in values.values()], dtype=torch.float64, device=device)
    reduced = mean(stacked).tolist()
    return dict(zip(values, reduced, strict=True))


def all_true(flag: bool, device: torch.device) -> bool:
    """True only if ``flag`` is True on every rank (so that every rank takes the same branch)."""
    if world_size() == 1:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def sum_int(value: int, device: torch.device) -> int:
    """Sum of an integer count over ranks."""
    if world_size() == 1:
        return int(value)
    return int(all_reduce_sum(torch.tensor([int(value)], dtype=torch.int64, device=device)).item())


def _masked_sum_count(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global masked sum (*E) and count (*E) of ``x`` over the mask's dims, in one collective."""
    m = ops._expand_mask(mask, x)
    dims = tuple(range(mask.dim()))
    total = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dims)
    count = m.expand_as(x).sum(dims).to(total.dtype)
    both = all_reduce_sum(torch.stack([total, count]))
    return both[0], both[1]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``ops.masked_mean`` (``dim=None``) over the union of every rank's masked positions.

    Args:
        x: (*M, *E), e.g. (B,T,K) on each rank.
        mask: (*M) bool, e.g. (B,T).

    Returns:
        (*E) the same on every rank, e.g. (K,). Not differentiable across ranks (statistics only).
    """
    if world_size() == 1:
        return ops.masked_mean(x, mask)
    total, count = _masked_sum_count(x, mask)
    return total / count.clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """``ops.masked_var`` over every rank's masked positions: (*E), the same on every rank."""
    if world_size() == 1:
        return ops.masked_var(x, mask, unbiased=unbiased)
    mu = masked_mean(x, mask)
    total, count = _masked_sum_count((x - mu) ** 2, mask)
    var = total / count.clamp(min=1)
    if unbiased:
        n = count.reshape(-1)[0] if count.dim() else count
        var = var * n / (n - 1).clamp(min=1)
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """``ops.masked_whiten`` with the mean and variance of the whole (all-rank) batch.

    Args:
        x: (*M, *E) local values, e.g. advantages (B,T,K).
        mask: (*M) bool, e.g. (B,T).

    Returns:
        Shaped like ``x``: whitened with global statistics, 0 outside the mask.
    """
    return ops.masked_whiten(x, mask, shift_mean=shift_mean, eps=eps, mean_fn=masked_mean, var_fn=masked_var)


def gather_objects(obj: object) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    n = world_size()
    if n == 1:
        return [obj]
    out: list = [None] * n
    dist.all_gather_object(out, obj)
    return out


def decorrelate_rng() -> None:
    """Give every rank > 0 its own torch sampling stream, derived from the run's seed and the rank.

    Lightning seeds every rank alike so that weights start identical; left so, every rank would
    draw the same random numbers to sample its responses. Rank 0 keeps its stream, so the first
    rank of a multi-process run samples like a one-process run.
    """
    r = rank()
    if r > 0:
        torch.manual_seed((torch.initial_seed() + 1_000_003 * r) % 2**63)
