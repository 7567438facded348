"""Benchmark (d): how far a preference sweep moves PAMA's combined advantage, with and without the veto.

With the weighted rule min_i A_i / (K w_i) after Noon, an objective whose advantage is 0 (about half of
all tokens) still vetoes the token however small its weight w_i, so PAMA cannot reach the front's ends
the way linear scalarisation can. For w_1 = 0.9, 0.5, 0.1, 0.01 (two objectives) this measures, on
synthetic advantages, the fraction of response tokens the update reinforces (combined advantage > 0)
and the correlation of the combined advantage with each objective's whitened advantage A_1, A_2
(before Noon), for:

- ``pama``: the paper's rule (``algorithm.veto_threshold=0``);
- ``pama+veto``: objectives whose weight is below ``algorithm.veto_threshold=0.1`` left out of the min;
- ``linear``: w_1 A_1 + w_2 A_2, the scalarisation MORLHF's direction follows, for reference.

Two advantage models: ``iid`` (independent standard normal per token and objective) and ``rollout``
(real-like: per-sample scores with correlation rho, a shared per-token KL penalty, GAE with gamma =
lambda = 1 and zero values, whitening per objective over the batch's tokens, as in iteration 1).
Pure tensor math, seconds: ``.venv/bin/python benchmarks/preference_reach.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, write_result  # noqa: E402

from pama_lit import ops  # noqa: E402
from pama_lit.core.pareto import combine_pama_token  # noqa: E402

W1 = (0.9, 0.5, 0.1, 0.01)
VETO_THRESHOLD = 0.1


def iid_advantages(g: torch.Generator, batch: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,T,2) whitened advantages and an all-true (B,T) mask."""
    return torch.randn(batch, steps, 2, generator=g, dtype=torch.float64), torch.ones(
        batch, steps, dtype=torch.bool
    )


def rollout_advantages(
    g: torch.Generator, batch: int, steps: int, rho: float, beta: float = 0.05
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whitened GAE advantages of correlated scores and a shared KL penalty, ragged lengths."""
    z = torch.randn(batch, 2, generator=g, dtype=torch.float64)
    scores = torch.stack([z[:, 0], rho * z[:, 0] + (1 - rho**2) ** 0.5 * z[:, 1]], dim=-1)
    lengths = torch.randint(steps // 4, steps + 1, (batch, 1), generator=g)
    mask = torch.arange(steps) < lengths
    kl = 0.05 + 0.1 * torch.randn(batch, steps, generator=g, dtype=torch.float64)
    rewards = ops.shape_rewards(scores, kl, mask, beta)
    advantages, _ = ops.gae(rewards, torch.zeros_like(rewards), mask, gamma=1.0, lam=1.0)
    return ops.masked_whiten(advantages, mask), mask


def corr(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    x, y = x[mask], y[mask]
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x.norm() * y.norm()).clamp(min=1e-300))


def measure(advantages: torch.Tensor, mask: torch.Tensor) -> list[dict]:
    rows = []
    clamped = ops.noon(advantages)
    for w1 in W1:
        w = torch.tensor([w1, 1 - w1], dtype=advantages.dtype)
        variants = {
            "pama": combine_pama_token(clamped, w)[0],
            "pama+veto": combine_pama_token(clamped, w, w >= VETO_THRESHOLD)[0],
            "linear": (advantages * w).sum(-1),  # linear scalarisation
        }
        for name, combined in variants.items():
            rows.append(
                {
                    "w1": w1,
                    "variant": name,
                    "active_frac": float((combined > 0)[mask].double().mean()),
                    "corr_A1": corr(combined, advantages[..., 0], mask),
                    "corr_A2": corr(combined, advantages[..., 1], mask),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(args.seed)
    models = {
        "iid": iid_advantages(g, args.batch, args.steps),
        "rollout rho=0": rollout_advantages(g, args.batch, args.steps, 0.0),
        "rollout rho=-0.5": rollout_advantages(g, args.batch, args.steps, -0.5),
    }
    results = {}
    for model, (advantages, mask) in models.items():
        results[model] = measure(advantages, mask)
        print(f"\n{model}: {int(mask.sum())} tokens")
        print(f"{'w1':>5}  {'variant':>9}  {'active':>6}  {'corr A1':>7}  {'corr A2':>7}")
        for r in results[model]:
            print(
                f"{r['w1']:>5}  {r['variant']:>9}  {r['active_frac']:>6.3f}  {r['corr_A1']:>7.3f}  {r['corr_A2']:>7.3f}"
            )
    write_result(
        "preference_reach",
        {"machine": machine_info(), "args": vars(args), "veto_threshold": VETO_THRESHOLD, "results": results},
    )


if __name__ == "__main__":
    main()
