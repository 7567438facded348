"""Training diagnostics: the pre-clip gradient norm, explained variance and Pareto stationarity."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from omegaconf import open_dict
from omegaconf.errors import ValidationError
from test_distributed import RULE_REWARDS
from test_gradient_methods import tiny_policy, tiny_rollout
from tiny import TINY
from train_runs import TINY as RUN

from pama_lit.core import ops
from pama_lit.run.config import ConfigError, validate_config
from pama_lit.run.train import train
from pama_lit.training.mgda_step import pareto_diagnostic
from pama_lit.training.module import PamaModule


def logged_rows(cfg) -> dict[int, dict[str, float]]:
    """Per-iteration ``train/`` metrics of a finished run, keyed by step (timings included)."""
    (path,) = Path(cfg.paths.output_dir).rglob("metrics.csv")
    rows: dict[int, dict[str, float]] = {}
    for row in csv.DictReader(path.open()):
        values = {k: float(v) for k, v in row.items() if k.startswith("train/") and v}
        if values:
            rows[int(row["step"])] = values
    return rows


# tiny_cfg (conftest): the tiny model, 2 iterations of 4 prompts, 2 epochs of 2 minibatches, CSV logs.
def test_grad_norm_is_the_pre_clip_norm_averaged_over_minibatches(tiny_cfg, monkeypatch):
    seen: list[float] = []
    original = PamaModule.clip_gradients

    def spy(self, *args, **kwargs):
        grads = [p.grad.detach().reshape(-1) for p in self.policy.parameters() if p.grad is not None]
        seen.append(float(torch.cat(grads).norm()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PamaModule, "clip_gradients", spy)
    with open_dict(tiny_cfg):
        tiny_cfg.ppo.max_grad_norm = 1e-4  # clipping binds: a post-clip norm would read 1e-4
        tiny_cfg.ppo.vf_coef = 0.1  # a critic's loss: no minibatch of the tiny run has a zero gradient
    train(tiny_cfg)
    rows = logged_rows(tiny_cfg)
    per_iteration = tiny_cfg.ppo.epochs * tiny_cfg.ppo.num_minibatches
    assert len(seen) == per_iteration * len(rows) and min(seen) > 1e-3
    for step, metrics in rows.items():
        expected = sum(seen[step * per_iteration : (step + 1) * per_iteration]) / per_iteration
        assert metrics["train/policy/grad_norm"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("algorithm", "streams"), [("pama", ["sentiment", "length"]), ("morlhf", ["scalarised"])]
)
def test_explained_variance_is_logged_per_value_head(tiny_cfg, algorithm, streams):
    with open_dict(tiny_cfg):
        tiny_cfg.algorithm.name = algorithm
        tiny_cfg.algorithm.noon = algorithm == "pama"
    train(tiny_cfg)
    for metrics in logged_rows(tiny_cfg).values():
        keys = {k for k in metrics if k.startswith("train/value/explained_var/")}
        assert keys == {f"train/value/explained_var/{s}" for s in streams}
        # NaN where the returns do not vary: the first iteration's responses all have the same length.
        assert all(not metrics[k] > 1 for k in keys)


# ------------------------------------------------------------------- Pareto stationarity, one minibatch
def flat_policy_gradients(policy, rollout, advantages, rows) -> torch.Tensor:
    """Oracle: (K, D) gradients of -mean_t A_i,t * ratio_t, one objective at a time, through ``.grad``.

    The policy is at pi_old, where the clipped surrogate's gradient is the unclipped one's.
    """
    shared = [p for p in policy.lm.parameters() if p.requires_grad]
    mask = rollout.response_mask[rows]
    out = []
    for i in range(advantages.shape[-1]):
        logits, _ = policy(rollout.input_ids[rows], rollout.attention_mask[rows], rollout.num_response)
        ratio = torch.exp(ops.logprobs_from_logits(logits, rollout.responses[rows]) - rollout.logprobs[rows])
        policy.zero_grad(set_to_none=True)
        (-(advantages[rows][..., i] * ratio)[mask].mean()).backward()
        out.append(
            torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in shared])
        )
    policy.zero_grad(set_to_none=True)
    return torch.stack(out).double()


def brute_force_min_norm(grads: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest ||sum_i c_i g_i|| over a simplex grid of resolution 1/steps, and its c."""
    k = grads.shape[0]
    points = torch.tensor(
        [c for c in itertools.product(range(steps + 1), repeat=k) if sum(c) == steps], dtype=grads.dtype
    )
    norms = (points / steps @ grads).norm(dim=-1)
    best = int(norms.argmin())
    return norms[best], points[best] / steps


def test_identical_objectives_give_half_weights_and_the_gradient_norm():
    policy = tiny_policy(2)
    rollout = tiny_rollout(policy)
    adv = torch.randn(4, 5, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rows = torch.arange(4)
    stats = pareto_diagnostic(policy, rollout, adv.repeat(1, 1, 2), rows, clip_coef=0.2)
    assert all(p.grad is None for p in policy.parameters()), "the diagnostic must leave .grad alone"
    (g,) = flat_policy_gradients(policy, rollout, adv, rows)
    torch.testing.assert_close(stats["diag/weight"], torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(stats["diag/min_norm"], g.norm())
    torch.testing.assert_close(stats["diag/grad_norm"], g.norm().repeat(2))
    torch.testing.assert_close(stats["diag/grad_cos"], torch.tensor(1.0, dtype=torch.float64))


def test_opposite_objectives_are_pareto_stationary():
    policy = tiny_policy(2)
    rollout = tiny_rollout(policy)
    adv = torch.randn(4, 5, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    stats = pareto_diagnostic(policy, rollout, torch.cat([adv, -adv], -1), torch.arange(4), clip_coef=0.2)
    assert stats["diag/min_norm"] < 1e-10 * stats["diag/grad_norm"].max()
    torch.testing.assert_close(stats["diag/weight"], torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(stats["diag/grad_cos"], torch.tensor(-1.0, dtype=torch.float64))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_min_norm_of_a_minibatch_matches_the_brute_force_oracle(k):
    policy = tiny_policy(k)
    rollout = tiny_rollout(policy)
    advantages = torch.randn(4, 5, k, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    rows = torch.tensor([0, 2, 3])  # a minibatch: only its rows count
    stats = pareto_diagnostic(policy, rollout, advantages, rows, clip_coef=0.2)
    grads = flat_policy_gradients(policy, rollout, advantages, rows)
    best, weights = brute_force_min_norm(grads, steps=400 if k <= 2 else 60)
    assert stats["diag/min_norm"] <= best + 1e-12
    assert stats["diag/min_norm"] >= best - 0.02 * grads.norm(dim=-1).max()  # the grid's resolution
    direction = stats["diag/weight"] @ grads
    torch.testing.assert_close(stats["diag/min_norm"], direction.norm())
    torch.testing.assert_close(stats["diag/grad_norm"], grads.norm(dim=-1))
    if k == 1:
        assert "diag/grad_cos" not in stats
        return
    unit = grads / grads.norm(dim=-1, keepdim=True)
    cosines = [float(unit[i] @ unit[j]) for i in range(k) for j in range(i + 1, k)]
    assert float(stats["diag/grad_cos"]) == pytest.approx(sum(cosines) / len(cosines), abs=1e-9)
    if k == 2:
        torch.testing.assert_close(stats["diag/weight"], weights, atol=2.5e-3, rtol=0)


# ---------------------------------------------------------------------------------- in the training loop
def naive_monte_carlo_advantages(scores, kl, mask, beta, gamma) -> torch.Tensor:
    """Oracle: each objective's discounted return of -beta * kl_t + [t last] * score, whitened over tokens."""
    batch, num_steps = mask.shape
    out = torch.zeros(batch, num_steps, scores.shape[1], dtype=torch.float64)
    for b in range(batch):
        length = int(mask[b].sum())
        for i in range(scores.shape[1]):
            for t in range(length):
                out[b, t, i] = sum(
                    gamma ** (s - t) * (-beta * float(kl[b, s]) + (s == length - 1) * float(scores[b, i]))
                    for s in range(t, length)
                )
    selected = out[mask]
    out[mask] = (selected - selected.mean(0)) / (selected.var(0) + 1e-8).sqrt()
    return out


def naive_kl_share(scores, kl, mask, beta, gamma) -> list[float]:
    """Per objective: the variance over response tokens of the KL penalty's part of the return, over
    that part's plus the score's part's variance, by loops."""
    shares = []
    for i in range(scores.shape[1]):
        score_part, kl_part = [], []
        for b in range(scores.shape[0]):
            length = int(mask[b].sum())
            for t in range(length):
                score_part.append(gamma ** (length - 1 - t) * float(scores[b, i]))
                kl_part.append(sum(gamma ** (s - t) * -beta * float(kl[b, s]) for s in range(t, length)))
        var_score = torch.tensor(score_part, dtype=torch.float64).var()
        var_kl = torch.tensor(kl_part, dtype=torch.float64).var()
        shares.append(float(var_kl / (var_kl + var_score)))
    return shares


@pytest.mark.parametrize("algorithm", ["pama", "morlhf", "mgda"])
def test_logged_stationarity_is_the_oracle_of_each_objectives_own_return(tmp_path, monkeypatch, algorithm):
    """The same measure whatever the algorithm: morlhf's scalarised stream and Noon play no part."""
    oracles: list[torch.Tensor] = []
    shares: list[list[float]] = []
    original = PamaModule.pareto_diagnostics

    def spy(self, rollout, scores, kl):
        advantages = naive_monte_carlo_advantages(
            scores, kl, rollout.response_mask, self.kl_ctl.value, self.ppo_cfg.gamma
        ).to(rollout.logprobs.dtype)
        shares.append(
            naive_kl_share(scores, kl, rollout.response_mask, self.kl_ctl.value, self.ppo_cfg.gamma)
        )
        rows = torch.arange(len(rollout.texts) // self.ppo_cfg.num_minibatches)
        oracles.append(flat_policy_gradients(self.policy, rollout, advantages, rows))
        return original(self, rollout, scores, kl)

    monkeypatch.setattr(PamaModule, "pareto_diagnostics", spy)
    # Rule rewards of prompt and response vary between samples: two moving, disagreeing objectives.
    cfg = compose_config(
        [*RUN, *RULE_REWARDS, "iterations=3", "rollout.batch_size=8", f"algorithm={algorithm}",
         "diagnostics.every_n_iterations=2"],
        output_dir=tmp_path,
    )  # fmt: skip
    train(cfg)
    rows = logged_rows(cfg)
    measured = [step for step, metrics in rows.items() if not math.isnan(metrics["train/diag/min_norm"])]
    assert measured == [0, 2] and len(oracles) == 2
    assert all(0 < s < 1 for s in shares[1]), "after an update the KL part varies too"
    # Between measurements every diag value is NaN, not the last measurement again.
    assert all(math.isnan(v) for k, v in rows[1].items() if k.startswith("train/diag/"))
    assert {k for k in rows[1] if "/diag/" in k} == {k for k in rows[0] if "/diag/" in k}
    for step, grads, share in zip(measured, oracles, shares, strict=True):
        logged = rows[step]
        assert [logged["train/diag/kl_share/vowels"], logged["train/diag/kl_share/spaces"]] == pytest.approx(
            share, rel=1e-4, abs=1e-7
        )
        norms = grads.norm(dim=-1)
        best, _ = brute_force_min_norm(grads, steps=2000)
        assert logged["train/diag/min_norm"] == pytest.approx(float(best), abs=1e-3 * float(norms.max()))
        weights = torch.tensor([logged[f"train/diag/weight/{n}"] for n in ("vowels", "spaces")]).double()
        assert float(weights.sum()) == pytest.approx(1.0) and (weights >= 0).all()
        assert float((weights @ grads).norm()) == pytest.approx(logged["train/diag/min_norm"], rel=1e-3)
        assert [
            logged["train/diag/grad_norm/vowels"],
            logged["train/diag/grad_norm/spaces"],
        ] == pytest.approx(norms.tolist(), rel=1e-3)
        cosine = float(grads[0] @ grads[1] / (norms[0] * norms[1]))
        assert logged["train/diag/grad_cos"] == pytest.approx(cosine, abs=1e-3)
        assert norms.min() > 0 and cosine < 0.99, "a degenerate case would prove little"


def test_single_objective_reports_its_gradient_norm_and_no_cosine(tiny_cfg):
    with open_dict(tiny_cfg):
        tiny_cfg.diagnostics.every_n_iterations = 1
    cfg = compose_config(
        [*TINY, "iterations=2", "rollout.max_new_tokens=6", "logger=csv", "algorithm=noon_ppo",
         "objective=sentiment", "diagnostics.every_n_iterations=1"],
        output_dir=tiny_cfg.paths.output_dir,
    )  # fmt: skip
    train(cfg)
    for metrics in logged_rows(cfg).values():
        assert metrics["train/diag/weight/sentiment"] == 1
        assert metrics["train/diag/min_norm"] == pytest.approx(metrics["train/diag/grad_norm/sentiment"])
        assert "train/diag/grad_cos" not in metrics


def final_trainable(cfg, monkeypatch) -> dict[str, torch.Tensor]:
    captured = {}
    original = PamaModule.on_fit_end

    def keep(self):
        captured.update({n: p.detach().clone() for n, p in self.policy.named_parameters() if p.requires_grad})
        return original(self)

    with monkeypatch.context() as patch:  # undone before the next run wraps on_fit_end again
        patch.setattr(PamaModule, "on_fit_end", keep)
        train(cfg)
    return captured


@pytest.mark.parametrize("algorithm", ["pama", "mgda"])
def test_the_diagnostic_does_not_change_training(tmp_path, monkeypatch, algorithm):
    weights = []
    for every in (1, 0):
        cfg = compose_config(
            [*TINY, "iterations=2", "rollout.max_new_tokens=6", f"algorithm={algorithm}",
             f"diagnostics.every_n_iterations={every}"],
            output_dir=tmp_path / str(every),
        )  # fmt: skip
        weights.append(final_trainable(cfg, monkeypatch))
    assert weights[0].keys() == weights[1].keys() and weights[0]
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


def test_bad_diagnostics_interval_is_refused(tiny_cfg):
    with open_dict(tiny_cfg):
        tiny_cfg.diagnostics.every_n_iterations = -1
    with pytest.raises(ConfigError, match=r"diagnostics\.every_n_iterations=-1: .*an integer >= 0"):
        validate_config(tiny_cfg)


@pytest.mark.parametrize("value", [1.5, "often"])
def test_diagnostics_interval_of_another_type_is_refused_by_the_schema(tiny_cfg, value):
    with pytest.raises(ValidationError, match=r"full_key: diagnostics\.every_n_iterations"):
        tiny_cfg.diagnostics.every_n_iterations = value
