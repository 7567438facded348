"""PAMA leaves out of the min the objectives that cannot express a preference: degenerate scores and
(on request) weights below algorithm.veto_threshold; the module's wiring and its metrics."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import compose_config
from lightning.pytorch.loggers import CSVLogger
from rule_rewards import vowel_fraction
from torch.utils.data import DataLoader
from train_runs import iteration_metrics

from pama_lit.rewards import CallableReward
from pama_lit.run.config import ConfigError, validate_config
from pama_lit.run.train import build_module

PROMPTS = ["Tell me a joke.", "What is the capital of France?", "Write a haiku.", "Why is the sky blue?"]


def constant(responses: list[str]) -> list[float]:
    return [1.0] * len(responses)


def rewards() -> dict:
    return {
        "const": CallableReward(constant),
        "vowels": CallableReward(vowel_fraction, reads="prompt+response"),
    }


def module_for(overrides: list[str]):
    cfg = compose_config(["model=tiny", "rollout.batch_size=4", "rollout.max_new_tokens=6", *overrides])
    validate_config(cfg)
    return build_module(cfg, rewards())


def fake_rollout(batch: int) -> SimpleNamespace:
    return SimpleNamespace(response_mask=torch.ones(batch, 3, dtype=torch.bool))


def test_a_constant_objective_is_left_out_and_warned_about_once(caplog):
    module = module_for([])
    scores = torch.tensor([[1.0, 0.2], [1.0, 0.5], [1.0, 0.1]])
    with caplog.at_level(logging.WARNING, logger="pama_lit.training.module"):
        first = module.active_objectives(scores, fake_rollout(3))
        again = module.active_objectives(scores, fake_rollout(3))
    assert first.tolist() == [False, True] and again.tolist() == [False, True]
    warnings = [r.getMessage() for r in caplog.records if r.name == "pama_lit.training.module"]
    assert len(warnings) == 1 and "'const'" in warnings[0] and "std 0 " in warnings[0]


def test_skipped_samples_do_not_count_in_the_spread():
    module = module_for(["algorithm.min_score_std=0.1"])
    scores = torch.tensor([[1.0, 0.2], [1.0, 0.5], [5.0, 0.0]])
    rollout = SimpleNamespace(response_mask=torch.tensor([[True], [True], [False]]))
    assert module.active_objectives(scores, rollout).tolist() == [False, True]


def test_veto_threshold_leaves_out_light_objectives_only_for_pama():
    scores = torch.tensor([[1.0, 0.2], [2.0, 0.5], [3.0, 0.1]])
    pama = module_for(["preference=[0.95,0.05]", "algorithm.veto_threshold=0.1"])
    assert pama.active_objectives(scores, fake_rollout(3)).tolist() == [True, False]
    batch = module_for(["algorithm=pama_batch", "preference=[0.05,0.95]", "algorithm.veto_threshold=0.1"])
    assert batch.active_objectives(scores, fake_rollout(3)).tolist() == [False, True]
    off = module_for(["preference=[0.95,0.05]"])
    assert off.active_objectives(scores, fake_rollout(3)).tolist() == [True, True]
    morlhf = module_for(["algorithm=morlhf"])
    assert morlhf.active_objectives(torch.ones(3, 2), fake_rollout(3)).tolist() == [True, True]


@pytest.mark.parametrize(
    "override,match",
    [
        ("algorithm.veto_threshold=0.6", r"algorithm.veto_threshold=0.6: .*\[0, 0.5\]"),
        ("algorithm.veto_threshold=-0.1", r"algorithm.veto_threshold=-0.1: .*>= 0"),
        ("algorithm.min_score_std=-1", r"algorithm.min_score_std=-1(\.0)?: .*>= 0"),
        # Accepted and silently ignored once the key moved to the shared algorithm schema.
        (
            "algorithm=morlhf algorithm.veto_threshold=0.3",
            r"veto_threshold=0.3: algorithm=morlhf .*pama, pama_batch",
        ),
        ("algorithm=mgda_ub algorithm.veto_threshold=0.3", r"veto_threshold=0.3: algorithm=mgda_ub"),
        (
            "algorithm=morlhf algorithm.min_score_std=0.01",
            r"min_score_std=0.01: algorithm=morlhf .*ignore this; .*pama, pama_batch .*default 1e-06",
        ),
    ],
)
def test_bad_exclusion_settings_are_refused(override, match):
    with pytest.raises(ConfigError, match=match):
        module_for(override.split())


@pytest.mark.parametrize("algorithm", ["pama", "pama_batch"])
def test_a_constant_objective_no_longer_stops_the_update(algorithm, tmp_path):
    """Iteration 1 (policy = reference, values 0): a constant score whitens to advantage 0 on every
    token, so its veto made the combined advantage 0 everywhere and nothing moved."""
    module = module_for([f"algorithm={algorithm}", "ppo.epochs=1", "ppo.num_minibatches=1"])
    module.configure_model()
    before = {k: v.detach().clone() for k, v in module.policy.trainable_state_dict().items()}
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0,
        logger=CSVLogger(tmp_path), log_every_n_steps=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    torch.manual_seed(0)
    trainer.fit(
        module, train_dataloaders=DataLoader(PROMPTS, batch_size=4, collate_fn=lambda b: {"prompt": b})
    )
    lora = [k for k in before if "lora" in k]
    assert any(not torch.equal(before[k], module.policy.trainable_state_dict()[k]) for k in lora)
    (metrics,) = iteration_metrics(tmp_path / "lightning_logs" / "version_0" / "metrics.csv").values()
    assert metrics["train/pareto/excluded/const"] == 1 and metrics["train/pareto/excluded/vowels"] == 0
    assert metrics["train/pareto/active_frac"] > 0
    assert metrics["train/pareto/noon_zero_frac/const"] == 1  # whitened to exactly 0
    assert 0 < metrics["train/pareto/noon_zero_frac/vowels"] < 1
    if algorithm == "pama":
        assert (
            metrics["train/pareto/binding_frac/const"] == 0
            and metrics["train/pareto/binding_frac/vowels"] == 1
        )
