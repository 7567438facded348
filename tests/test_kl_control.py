"""KL controllers: TRL's update rule, state round trips, and the factory's errors."""

from __future__ import annotations

import pytest

from pama_lit.core.kl_control import AdaptiveKLController, FixedKLController, build_kl_controller


def test_fixed_controller_never_moves():
    controller = FixedKLController(0.2)
    controller.update(current_kl=100.0, n_steps=128)
    assert controller.value == 0.2


@pytest.mark.parametrize(
    "current_kl,expected_error",
    [(6.0, 0.2), (3.3, 0.1), (3.0, 0.0), (2.7, -0.1), (0.0, -0.2)],
)
def test_adaptive_controller_follows_trl(current_kl, expected_error):
    controller = AdaptiveKLController(init_coef=0.2, target=3.0, horizon=10000)
    controller.update(current_kl, n_steps=128)
    assert controller.value == pytest.approx(0.2 * (1 + expected_error * 128 / 10000))


def test_adaptive_controller_compounds_over_updates():
    controller = AdaptiveKLController(init_coef=0.1, target=1.0, horizon=100)
    for _ in range(3):
        controller.update(10.0, n_steps=50)
    assert controller.value == pytest.approx(0.1 * 1.1**3)


def test_state_dict_round_trip_uses_plain_floats():
    controller = AdaptiveKLController(init_coef=0.1, target=1.0, horizon=100)
    controller.update(10.0, n_steps=50)
    state = controller.state_dict()
    assert state == {"value": pytest.approx(0.11)} and type(state["value"]) is float
    restored = build_kl_controller("adaptive", 0.5, target=1.0, horizon=100)
    restored.load_state_dict(state)
    assert restored.value == controller.value


def test_factory_builds_both_kinds():
    assert isinstance(build_kl_controller("fixed", 0.05), FixedKLController)
    adaptive = build_kl_controller("adaptive", 0.2, target=6.0, horizon=500)
    assert isinstance(adaptive, AdaptiveKLController)
    assert (adaptive.value, adaptive.target, adaptive.horizon) == (0.2, 6.0, 500.0)


def test_factory_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match=r"'adaptative'.*fixed, adaptive"):
        build_kl_controller("adaptative", 0.2, target=1.0)


@pytest.mark.parametrize("target", [None, 0.0, -1.0, float("nan"), "high"])
def test_adaptive_needs_a_positive_target(target):
    with pytest.raises(ValueError, match="positive finite target"):
        build_kl_controller("adaptive", 0.2, target=target)


@pytest.mark.parametrize("coef", [-0.1, float("inf"), None])
def test_coefficient_must_be_nonnegative_and_finite(coef):
    with pytest.raises(ValueError, match="KL coefficient"):
        build_kl_controller("fixed", coef)


def test_horizon_must_be_positive():
    with pytest.raises(ValueError, match="horizon"):
        build_kl_controller("adaptive", 0.2, target=1.0, horizon=0)


def test_module_feeds_the_controller_the_k1_sequence_kl_whatever_the_shaping_estimator(monkeypatch):
    import lightning as L
    import torch
    from conftest import compose_config
    from torch.utils.data import DataLoader

    from pama_lit.core.kl_control import AdaptiveKLController
    from pama_lit.core.ops import kl_penalty
    from pama_lit.rewards import LengthReward
    from pama_lit.run.train import build_module

    cfg = compose_config(
        [
            "model=tiny",
            "ppo.kl.estimator=k3",
            "rollout.batch_size=4",
            "rollout.max_new_tokens=6",
            "ppo.epochs=1",
        ]
    )
    module = build_module(cfg, {"short": LengthReward(4.0, 0.0, 1.5), "long": LengthReward(2.0, 0.0, 1.0)})
    module.configure_model()
    with torch.no_grad():  # nonzero adapters: the policy starts away from the reference, KL > 0
        for name, p in module.policy.lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    seen = []
    monkeypatch.setattr(AdaptiveKLController, "update", lambda self, kl, n_steps: seen.append(kl))
    prompts = ["Tell me a joke.", "What is the capital of France?", "Write a haiku.", "Why is the sky blue?"]
    rollouts = []

    class KeepRollout(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            rollouts.append(outputs["rollout"])

    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[KeepRollout()],
    )  # fmt: skip
    torch.manual_seed(0)
    trainer.fit(
        module, train_dataloaders=DataLoader(prompts, batch_size=4, collate_fn=lambda b: {"prompt": b})
    )
    (r,) = rollouts
    k1 = float((kl_penalty(r.logprobs, r.ref_logprobs, "k1") * r.response_mask).sum(-1).mean())
    k3 = float((kl_penalty(r.logprobs, r.ref_logprobs, "k3") * r.response_mask).sum(-1).mean())
    assert k1 != pytest.approx(k3), "k1 and k3 agree on this batch: the test would prove nothing"
    assert seen == [pytest.approx(k1)]
