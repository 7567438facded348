"""Faults inside a run: rewards that raise or return NaN, inf or a wrong shape; non-finite losses and gradients."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from omegaconf import open_dict
from tiny import TINY

from pama_lit.rewards import CallableReward, Reward
from pama_lit.run.train import train
from pama_lit.training.module import PamaModule
from pama_lit.training.rollout import Rollout
from pama_lit.training.scoring import RewardError, mask_unscored, score_rollout


def _rollout(batch: int = 3, length: int = 4) -> Rollout:
    zeros = torch.zeros(batch, length)
    return Rollout(
        input_ids=torch.zeros(batch, length + 2, dtype=torch.long),
        attention_mask=torch.ones(batch, length + 2, dtype=torch.bool),
        responses=torch.zeros(batch, length, dtype=torch.long),
        response_mask=torch.ones(batch, length, dtype=torch.bool),
        logprobs=zeros,
        ref_logprobs=zeros,
        values=torch.zeros(batch, length, 1),
        prompts=[f"p{b}" for b in range(batch)],
        texts=[f"r{b}" for b in range(batch)],
    )


def _fn(values):
    return CallableReward(lambda responses: [values[int(r[1:])] for r in responses])


def test_reward_that_raises_names_objective_iteration_and_sample():
    def picky(responses):
        if "r1" in responses:
            raise ValueError("cannot score this text")
        return [0.5] * len(responses)

    rewards = {"ok": _fn([1.0, 2.0, 3.0]), "picky": CallableReward(picky)}
    with pytest.raises(RewardError) as err:
        score_rollout(rewards, _rollout(), iteration=7)
    assert str(err.value) == (
        "reward for objective 'picky' raised at iteration 7: ValueError('cannot score this text'); "
        "first failing sample: prompt='p1' response='r1'"
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_score_names_objective_iteration_and_sample(bad):
    with pytest.raises(RewardError) as err:
        score_rollout({"sentiment": _fn([0.1, 0.2, 0.3]), "length": _fn([1.0, bad, bad])}, _rollout(), 3)
    assert str(err.value) == (
        f"reward for objective 'length' returned {bad} for 2 sample(s) at iteration 3; "
        "first: prompt='p1' response='r1'"
    )


def test_wrong_shape_raises_even_when_skipping():
    class TwoColumns(Reward):
        def __call__(self, prompts, responses, response_lengths):
            return torch.zeros(len(responses), 2)

        def score(self, prompts, responses, response_lengths):
            raise NotImplementedError

    for on_error in ("raise", "skip"):
        with pytest.raises(RewardError) as err:
            score_rollout({"humor": TwoColumns()}, _rollout(), 2, on_error)
        assert str(err.value) == (
            "reward for objective 'humor' returned shape (3, 2) at iteration 2; expected (3,), one float per sample"
        )
    # Through the Reward base class a wrong count is caught per call and reported as a raising reward.
    with pytest.raises(
        RewardError, match=r"raised at iteration 2: ValueError\('CallableReward.score returned 2 scores"
    ):
        score_rollout({"short": CallableReward(lambda r: [0.0, 0.0])}, _rollout(), 2)


def test_skip_masks_bad_samples_out_of_the_update():
    def picky(responses):
        if "r0" in responses:
            raise ValueError("no")
        return [0.5] * len(responses)

    rollout = _rollout()
    scores = score_rollout({"a": _fn([1.0, math.inf, 3.0]), "b": CallableReward(picky)}, rollout, 1, "skip")
    # Sample 0: 'b' raised on it; sample 1: 'a' gave inf. Each bad score becomes NaN.
    assert (
        torch.isnan(scores[0, 1])
        and torch.isnan(scores[1, 0])
        and torch.equal(scores[2], torch.tensor([3.0, 0.5]))
    )
    masked, clean, skipped = mask_unscored(rollout, scores)
    assert skipped == 2 and torch.equal(clean, torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 0.5]]))
    assert masked.response_mask.sum(-1).tolist() == [0, 0, 4] and masked.lengths.tolist() == [0, 0, 4]


def _flaky_cfg(tmp_path, fn: str, on_error: str):
    cfg = compose_config([*TINY, "iterations=2", "logger=csv", f"rewards_on_error={on_error}"], tmp_path)
    with open_dict(cfg):
        cfg.objective.rewards.flaky = {
            "_target_": "pama_lit.rewards.CallableReward",
            "fn": f"faulty:{fn}",
        }
    return cfg


def test_rewards_on_error_skip_trains_on_and_counts(tmp_path):
    cfg = _flaky_cfg(tmp_path, "nan_for_first", "skip")
    result = train(cfg)
    with open(next(Path(tmp_path).glob("csv/version_*/metrics.csv"))) as f:
        rows = [r for r in csv.DictReader(f) if r["train/skipped_samples"]]
    # One skipped sample (the first) per iteration of 4, counted cumulatively.
    assert [float(r["train/skipped_samples"]) for r in rows] == [1.0, 2.0]
    assert all(float(r["train/reward/flaky"]) == 1.0 for r in rows)  # the mean covers scored samples only
    assert result["end"]["num_prompts"] == 1  # validation batch of 2: its first sample left out


def test_rewards_on_error_raise_stops_the_run(tmp_path):
    with pytest.raises(RewardError) as err:
        train(_flaky_cfg(tmp_path, "nan_for_first", "raise"))
    message = str(err.value)
    assert message.startswith(
        "reward for objective 'flaky' returned nan for 1 sample(s) at iteration 0; first: prompt="
    )
    assert " response=" in message


def test_a_reward_failing_on_every_sample_stops_even_when_skipping(tmp_path):
    with pytest.raises(RewardError, match="^every sample of iteration 0 was skipped"):
        cfg = _flaky_cfg(tmp_path, "raise_for_first", "skip")
        with open_dict(cfg):
            cfg.eval.every_n_iterations = 100
            cfg.data.val_size = 0  # no validation: the first training iteration meets the reward
        train(cfg)


def _train_capturing(cfg, monkeypatch) -> tuple[PamaModule, dict, list]:
    captured, steps = {}, []
    original_opt = PamaModule.configure_optimizers

    def configure(self):
        captured["before"] = {k: v.detach().clone() for k, v in self.policy.trainable_state_dict().items()}
        opt = original_opt(self)
        original_step = opt.step

        def step(*args, **kwargs):
            steps.append(1)
            return original_step(*args, **kwargs)

        opt.step = step
        return opt

    original_end = PamaModule.on_fit_end

    def keep(self):
        captured["module"] = self
        return original_end(self)

    monkeypatch.setattr(PamaModule, "configure_optimizers", configure)
    monkeypatch.setattr(PamaModule, "on_fit_end", keep)
    train(cfg)
    return captured["module"], captured["before"], steps


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_non_finite_loss_or_gradient_never_reaches_the_optimizer(tmp_path, monkeypatch, where):
    import pama_lit.training.module as module_file

    if where == "loss":
        original = module_file.policy_loss

        def nan_loss(*args, **kwargs):
            loss, stats = original(*args, **kwargs)
            return loss * math.nan, stats

        monkeypatch.setattr(module_file, "policy_loss", nan_loss)
    else:
        original_backward = PamaModule.manual_backward

        def nan_gradient(self, loss, *args, **kwargs):
            original_backward(self, loss, *args, **kwargs)
            next(p for p in self.policy.parameters() if p.requires_grad).grad.view(-1)[0] = math.inf

        monkeypatch.setattr(PamaModule, "manual_backward", nan_gradient)
    cfg = compose_config(TINY, tmp_path)
    module, before, steps = _train_capturing(cfg, monkeypatch)
    assert steps == []  # not one optimizer.step
    assert module.skipped_steps == cfg.ppo.epochs * cfg.ppo.num_minibatches
    after = module.policy.trainable_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("phase", ["validation", pytest.param("training", marks=pytest.mark.slow)])
def test_a_reward_failing_on_one_rank_stops_every_rank(tmp_path, phase):
    """DDP: the failing rank's error reaches all ranks, so none waits forever in a collective."""
    from train_runs import TINY as RUN
    from train_runs import run_train, train_env

    overrides = [
        *RUN,
        "iterations=2",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "+reward@objective.rewards.remote=length",
        "objective.rewards.remote._target_=pama_lit.rewards.CallableReward",
        "+objective.rewards.remote.fn=faulty:raise_on_rank_one",
        "~objective.rewards.remote.scale",
        "~objective.rewards.remote.low",
        "~objective.rewards.remote.high",
    ]
    if phase == "training":
        overrides += ["data.val_size=0", "eval.every_n_iterations=100"]
    env = train_env(PYTHONPATH=str(Path(__file__).parent) + ":" + str(Path(__file__).parents[1] / "src"))
    proc = run_train(overrides, tmp_path / "run", timeout=240, env=env)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    message = "reward for objective 'remote' raised at iteration 0: ValueError('reward service unreachable from rank 1')"
    assert message in output
    # Rank 0 stops with a RewardError too, not with a broken collective (with NCCL that would be a hang).
    assert "Connection closed by peer" not in output
    if phase == "validation":
        assert output.count(message) == 2  # each rank reports the gathered error
    else:
        assert "a reward failed on another rank at iteration 0; its log names the sample" in output
