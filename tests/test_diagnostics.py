"""Training diagnostics: the pre-clip gradient norm, explained variance and Pareto stationarity."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from pama_lit.module import PamaModule
from pama_lit.train import train


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
