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


def _tiny_module(overrides: list[str], rewards: dict):
    from conftest import compose_config

    from pama_lit.run.train import build_module

    cfg = compose_config(["model=tiny", "rollout.batch_size=4", "rollout.max_new_tokens=6", *overrides])
    module = build_module(cfg, rewards)
    module.configure_model()
    return module


def _fit_one_iteration(module, log_dir):
    """One PPO iteration of ``module`` on four prompts; returns the iteration's rollout and train/ metrics."""
    import lightning as L
    import torch
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader
    from train_runs import iteration_metrics

    rollouts = []

    class KeepRollout(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            rollouts.append(outputs["rollout"])

    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0, logger=CSVLogger(log_dir),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[KeepRollout()],
    )  # fmt: skip
    prompts = ["Tell me a joke.", "What is the capital of France?", "Write a haiku.", "Why is the sky blue?"]
    torch.manual_seed(0)
    trainer.fit(
        module, train_dataloaders=DataLoader(prompts, batch_size=4, collate_fn=lambda b: {"prompt": b})
    )
    (metrics,) = iteration_metrics(log_dir / "lightning_logs" / "version_0" / "metrics.csv").values()
    return rollouts[0], metrics


SEED = 0


@pytest.mark.parametrize(
    ("algorithm", "coef", "pulled"),
    [("pama", 0.5, True), ("pama", 0.0, False), ("mgda_ub", 0.5, True), ("mgda", 0.5, True)],
)
def test_kl_as_a_loss_term_alone_pulls_the_policy_towards_the_reference(algorithm, coef, pulled, tmp_path):
    """ppo.kl.placement=loss: with constant scores the advantages are 0 (no KL in the rewards), so the
    only force on the policy is beta * KL: the sampled tokens' KL to the reference falls; at beta = 0
    nothing moves the policy (the advantages did not carry the KL)."""
    import torch

    from pama_lit.core.ops import kl_penalty, logprobs_from_logits
    from pama_lit.rewards import LengthReward

    constant = {"a": LengthReward(1.0, 1.0, 1.0), "b": LengthReward(1.0, 1.0, 1.0)}
    torch.manual_seed(SEED)  # the adapters' initialisation
    module = _tiny_module(
        [f"algorithm={algorithm}", "ppo.kl.placement=loss", "ppo.kl.estimator=k3", "ppo.kl.controller=fixed",
         f"ppo.kl.init_coef={coef}", "ppo.vf_coef=0", "optimizer.lr=3e-2"],
        constant,
    )  # fmt: skip
    with torch.no_grad():  # nonzero adapters: the policy starts away from the reference, KL > 0
        for name, p in module.policy.lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0, generator=torch.Generator().manual_seed(1))
    r, metrics = _fit_one_iteration(module, tmp_path)
    with torch.no_grad():
        logits, _ = module.policy(r.input_ids, r.attention_mask, r.num_response)
        after = logprobs_from_logits(logits, r.responses, module.temperature)
    mask = r.response_mask

    def mean_k3(logprobs):
        return float((kl_penalty(logprobs, r.ref_logprobs, "k3") * mask).sum() / mask.sum())

    before = mean_k3(r.logprobs)
    assert before > 0.01, "the policy starts at the reference: the test would prove nothing"
    assert metrics["train/kl/coef"] == coef
    if pulled:
        assert mean_k3(after) < 0.9 * before, (mean_k3(after), before)
        assert metrics["train/loss/kl"] > 0  # beta * the minibatches' mean k3, logged
    else:
        torch.testing.assert_close(after * mask, r.logprobs * mask)


def test_kl_placement_is_checked_before_any_model_loads():
    from conftest import compose_config

    from pama_lit.run.config import validate_config

    with pytest.raises(ValueError, match="unknown ppo.kl.placement 'advantage'; known: reward, loss"):
        validate_config(compose_config(["ppo.kl.placement=advantage"]))
    with pytest.raises(ValueError, match="placement=loss needs ppo.kl.estimator in k3, mse, got 'k1'"):
        validate_config(compose_config(["ppo.kl.placement=loss"]))
    validate_config(compose_config(["ppo.kl.placement=loss", "ppo.kl.estimator=k3"]))


@pytest.mark.parametrize("placement", ["reward", "loss"])
def test_train_py_runs_with_either_kl_placement_and_only_reward_puts_kl_in_the_returns(tmp_path, placement):
    """The whole run (config checks, training, diagnostics, evaluation) under each ppo.kl.placement."""
    from conftest import compose_config
    from tiny import TINY
    from train_runs import iteration_metrics

    from pama_lit.run.train import train

    cfg = compose_config(
        [*TINY, "iterations=2", "logger=csv", "diagnostics.every_n_iterations=1",
         f"ppo.kl.placement={placement}", "ppo.kl.estimator=k3"],
        tmp_path,
    )  # fmt: skip
    result = train(cfg)
    assert set(result["end"]["rewards"]) == set(cfg.objective.rewards)
    metrics = iteration_metrics(tmp_path / "csv" / "version_0" / "metrics.csv")
    assert metrics[1]["train/kl/ref"] != 0  # iteration 1: the policy has left the reference
    shares = [metrics[1]["train/diag/kl_share/" + name] for name in cfg.objective.rewards]
    if placement == "loss":
        assert [m["train/loss/kl"] >= 0 for m in metrics.values()] == [True, True]
        assert metrics[1]["train/loss/kl"] > 0
        assert shares == [0] * len(shares)  # the returns carry no KL
    else:
        assert not any("train/loss/kl" in m for m in metrics.values())
        assert all(share > 0 for share in shares)
