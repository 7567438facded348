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
from rule_rewards import space_fraction, vowel_fraction
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


# ---- algorithm.satisfied_at_ceiling: per sample, an objective at its reward's ceiling sits out ----


def capped_rewards() -> dict:
    """A clipped space fraction (ceiling 0.15, which some random responses reach and some do not) and
    the vowel fraction (no ceiling)."""

    def capped_spaces(prompts: list[str], responses: list[str]) -> list[float]:
        return [min(s, 0.15) for s in space_fraction(prompts, responses)]

    capped = CallableReward(capped_spaces, reads="prompt+response")
    capped.ceiling = 0.15
    return {"spaces": capped, "vowels": CallableReward(vowel_fraction, reads="prompt+response")}


def satisfied_module(overrides: list[str], rewards_=capped_rewards):
    cfg = compose_config(
        [
            "model=tiny",
            "rollout.batch_size=4",
            "rollout.max_new_tokens=6",
            "algorithm=pama_satisfied",
            *overrides,
        ]
    )
    validate_config(cfg)
    return build_module(cfg, rewards_())


def test_samples_at_a_ceiling_are_satisfied_and_objectives_without_one_never_are():
    module = satisfied_module([])
    assert module.combiner.label == "pama_satisfied"
    scores = torch.tensor([[0.15, 0.9], [0.1, 0.2], [0.1499999, 0.15], [0.05, 3.0]])
    assert module.satisfied_samples(scores).tolist() == [
        [True, False], [False, False], [True, False], [False, False]
    ]  # fmt: skip
    assert module_for([]).satisfied_samples(scores) is None  # off by default


def normalized_capped_rewards() -> dict:
    """What the module gets with reward.normalize=running: every reward wrapped, scores no longer raw."""
    from pama_lit.rewards.normalize import Normalized

    return {k: Normalized(r) for k, r in capped_rewards().items()}


@pytest.mark.parametrize(
    "rewards_,match",
    [
        (rewards, r"no objective's reward has a ceiling \(objectives: const, vowels\)"),
        (normalized_capped_rewards, r"reward.normalize has none"),
    ],
)
def test_satisfied_at_ceiling_without_a_ceiling_is_refused(rewards_, match):
    with pytest.raises(ValueError, match=match):
        satisfied_module([], rewards_)


@pytest.mark.parametrize("algorithm", ["pama_batch", "morlhf", "mgda_ub"])
def test_satisfied_at_ceiling_is_refused_where_the_update_has_no_per_token_min(algorithm):
    with pytest.raises(
        ConfigError, match=rf"satisfied_at_ceiling=true: algorithm={algorithm} .*applies to pama"
    ):
        module_for([f"algorithm={algorithm}", "algorithm.satisfied_at_ceiling=true"])


def test_a_satisfied_sample_follows_the_other_objective(tmp_path, monkeypatch):
    """Trained end to end: the combine gets one mask per sample, and at a sample at the spaces cap the
    combined advantage is the other objective's, where without the option it is the min of both."""
    from pama_lit.training.combiners import Pama

    seen: list[tuple] = []
    original = Pama.combine

    def spy(self, advantages, mask, preference, ratio, clip_coef, active=None):
        combined, weights = original(self, advantages, mask, preference, ratio, clip_coef, active)
        seen.append((advantages, mask, active, combined))
        return combined, weights

    monkeypatch.setattr(Pama, "combine", spy)
    module = satisfied_module(["ppo.epochs=1", "ppo.num_minibatches=2", "rollout.min_new_tokens=1"])
    module.configure_model()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=0, num_sanity_val_steps=0,
        logger=CSVLogger(tmp_path), log_every_n_steps=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    torch.manual_seed(0)
    trainer.fit(
        module, train_dataloaders=DataLoader(PROMPTS * 2, batch_size=4, collate_fn=lambda b: {"prompt": b})
    )
    assert len(seen) == 4  # 2 iterations x 2 minibatches
    left_out = kept = 0
    for advantages, mask, active, combined in seen:
        assert active.shape == (2, 2) and active[:, 1].all()  # vowels never has a ceiling
        for row in range(2):
            real = mask[row].bool()
            if active[row, 0]:
                kept += 1
                expected = advantages[row, :, :].min(-1).values  # uniform preference: the plain min
            else:
                left_out += 1
                expected = advantages[row, :, 1]
            torch.testing.assert_close(combined[row][real], expected[real])
    assert left_out > 0 and kept > 0
    metrics = iteration_metrics(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")
    # The logged fraction is that of the samples the combine left the objective out of, per iteration.
    left_out_frac = [
        float(torch.cat([seen[2 * i][2][:, 0], seen[2 * i + 1][2][:, 0]]).logical_not().float().mean())
        for i in range(2)
    ]
    assert [m["train/pareto/satisfied/spaces"] for m in metrics.values()] == left_out_frac
    assert all(m["train/pareto/satisfied/vowels"] == 0 for m in metrics.values())


def test_combiners_without_per_sample_masks_refuse_satisfied_at_ceiling():
    from pama_lit.training.combiners import build_combiner

    assert build_combiner("pama", None, satisfied_at_ceiling=True).label == "pama_satisfied"
    assert build_combiner("pama", False, satisfied_at_ceiling=True).label == "pama_no_noon_satisfied"
    with pytest.raises(
        ValueError, match="algorithm=pama_batch cannot leave an objective out at some samples"
    ):
        build_combiner("pama_batch", None, satisfied_at_ceiling=True)
