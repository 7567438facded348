"""End-to-end: train() and `python train.py` on the tiny model, CPU, seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_config
from omegaconf import open_dict
from test_distributed import RULE_REWARDS
from tiny import TINY

from pama_lit.run.train import train
from pama_lit.training.module import PamaModule


def _snapshot(module: PamaModule) -> tuple[dict, dict]:
    trainable, frozen = {}, {}
    for name, p in module.policy.named_parameters():
        (trainable if p.requires_grad else frozen)[name] = p.detach().clone()
    return trainable, frozen


def test_train_changes_adapters_not_reference(tiny_cfg, monkeypatch):
    before = {}

    original = PamaModule.configure_optimizers

    def spy(self):
        before["trainable"], before["frozen"] = _snapshot(self)
        return original(self)

    monkeypatch.setattr(PamaModule, "configure_optimizers", spy)
    captured = {}
    original_fit_end = PamaModule.on_fit_end

    def keep(self):
        captured["module"] = self
        return original_fit_end(self)

    monkeypatch.setattr(PamaModule, "on_fit_end", keep)
    tiny_cfg.eval.num_samples = 2  # of the 4 held-out prompts (debug=tiny's data.val_size)
    result = train(tiny_cfg)

    after_trainable, after_frozen = _snapshot(captured["module"])
    assert before["trainable"] and set(after_trainable) == set(before["trainable"])
    lora_b = [n for n in after_trainable if "lora_B" in n]
    assert lora_b, "LoRA adapters expected"
    assert any(not torch.equal(after_trainable[n], before["trainable"][n]) for n in lora_b)
    assert all(torch.equal(after_frozen[n], before["frozen"][n]) for n in before["frozen"])

    out = tiny_cfg.paths.output_dir
    record = json.loads((__import__("pathlib").Path(out) / "eval.json").read_text())
    assert record["format"] == "pama_lit.eval/1"
    assert record["objectives"] == ["sentiment", "length"]
    assert set(record["rewards"]) == {"sentiment", "length"}
    assert result["end"]["rewards"]["length"]["n"] == tiny_cfg.data.val_size
    evaluations = [json.loads(line) for line in (Path(out) / "evaluations.jsonl").read_text().splitlines()]
    reference = json.loads((Path(out) / "reference" / "eval.json").read_text())
    for summary in (record, reference, *evaluations):
        assert len(summary["samples"]) == 2  # eval.num_samples
        assert set(summary["fluency"]) == {"ref_logprob", "distinct2", "repeat_frac"}
        assert summary["fluency"]["ref_logprob"] < 0
        assert 0 <= summary["fluency"]["repeat_frac"] <= 1
        low, high = summary["kl_ref_ci95"]
        assert low <= summary["kl_ref"] <= high
    assert (
        record["fluency"] == result["end"]["fluency"] and reference["fluency"] == result["start"]["fluency"]
    )
    header = (Path(out) / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/fluency/ref_logprob", "val/fluency/distinct2", "val/fluency/repeat_frac"} <= set(header)
    assert (__import__("pathlib").Path(out) / "final" / "adapter" / "adapter_config.json").is_file()


def test_checkpoint_holds_only_trainable_state(tiny_cfg, tmp_path):
    with open_dict(tiny_cfg):
        tiny_cfg.callbacks.checkpoint.every_n_iterations = 1
    train(tiny_cfg)
    ckpt = torch.load(f"{tiny_cfg.paths.output_dir}/checkpoints/last.ckpt", weights_only=False)
    keys = list(ckpt["state_dict"])
    assert keys and all("lora_" in k or "value_head" in k for k in keys), keys
    assert ckpt["pama"]["objectives"] == ["sentiment", "length"]
    assert "kl_controller" in ckpt["pama"] and "rng" in ckpt["pama"]
    assert ckpt["optimizer_states"]


def _first_update(tmp_path: Path, overrides: list[str], spy: tuple[type, str], monkeypatch) -> tuple:
    """One tiny iteration: what ``spy`` (a class and its method) returned first, and the trainable state."""
    cls, method = spy
    original = getattr(cls, method)
    seen: list = []

    def record(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        seen.append((args, out))
        return out

    monkeypatch.setattr(cls, method, record)
    kept = {}
    original_fit_end = PamaModule.on_fit_end

    def keep(self):
        kept["state"] = {k: v.detach().clone() for k, v in self.policy.trainable_state_dict().items()}
        return original_fit_end(self)

    monkeypatch.setattr(PamaModule, "on_fit_end", keep)
    train(compose_config([*TINY, *overrides], tmp_path))
    monkeypatch.undo()
    return seen[0], kept["state"]


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1].item()


@pytest.mark.parametrize("algorithm", ["pama", "pama_batch", "morlhf", "mgda_ub"])
def test_the_preference_changes_the_update(tmp_path, monkeypatch, algorithm):
    """Same seed, same first rollout: only the preference differs, and the trained adapters differ."""
    from pama_lit.training.rollout import Rollout

    states, rollouts = [], []
    for preference in ("[0.2,0.8]", "[0.8,0.2]"):
        (_, (rollout, _forward)), state = _first_update(
            tmp_path / preference, [*RULE_REWARDS, *BATCH, f"algorithm={algorithm}", f"preference={preference}"],
            (PamaModule, "sample_rollout"), monkeypatch,
        )  # fmt: skip
        assert isinstance(rollout, Rollout)
        states.append(state)
        rollouts.append(rollout.responses)
    assert torch.equal(rollouts[0], rollouts[1]), "the runs must start from the same samples"
    assert any(not torch.allclose(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize(("algorithm", "spy"), [("pama", "combine"), ("morlhf", "trained_scores")])
def test_the_heavier_objective_leads_the_combined_signal(tmp_path, monkeypatch, algorithm, spy):
    """Weight on an objective makes the signal the policy follows track it: the preference points the right way.

    Objectives vowels, spaces (rule rewards that vary on the random tiny model). PAMA: the per-token
    combined advantage follows the spaces advantage more closely under [0.1,0.9] than under [0.9,0.1].
    MORLHF: the scalarised score follows the spaces score more closely.
    """
    from pama_lit.training.combiners import build_combiner

    cls = type(build_combiner(algorithm))
    follows = []
    for preference in ("[0.1,0.9]", "[0.9,0.1]"):
        (args, out), _ = _first_update(
            tmp_path / preference,
            [*RULE_REWARDS, *BATCH, f"algorithm={algorithm}", f"preference={preference}"],
            (cls, spy),
            monkeypatch,
        )
        if spy == "combine":
            advantages, mask = args[0], args[1].bool()
            follows.append(_corr(out[0][mask], advantages[..., 1][mask]))
        else:
            scores = args[0]
            follows.append(_corr(out[:, 0], scores[:, 1]))
    assert follows[0] > follows[1] + 0.1, follows


# One objective that varies on the random tiny model: the vowel fraction of prompt and response.
VOWELS = [
    "objective=length",
    "objective.rewards.length._target_=pama_lit.rewards.CallableReward",
    "+objective.rewards.length.fn=rule_rewards:vowel_fraction",
    "+objective.rewards.length.reads=prompt+response",
    *(f"~objective.rewards.length.{key}" for key in ("scale", "low", "high")),
]
# PAMA with Noon trains only on tokens every objective favours: a batch of 16 has some.
BATCH = ["rollout.batch_size=16", "ppo.num_minibatches=1"]


def test_noon_ppo_never_pushes_a_sample_down(tmp_path, monkeypatch):
    """Noon PPO (one objective): the advantage it trains on is clamped at 0, never negative."""
    from pama_lit.training.combiners import NoonPPO

    (_, (combined, _)), _ = _first_update(
        tmp_path,
        ["algorithm=noon_ppo", *VOWELS],
        (NoonPPO, "combine"),
        monkeypatch,
    )
    assert combined.max() > 0 and combined.min() >= 0


def test_full_finetune_trains_the_base_weights(tmp_path, monkeypatch):
    """model.lora.enabled=false: no adapters, and the base model's own weights move."""
    before = {}
    original = PamaModule.configure_optimizers

    def spy(self):
        before["state"] = {k: v.detach().clone() for k, v in self.policy.trainable_state_dict().items()}
        return original(self)

    monkeypatch.setattr(PamaModule, "configure_optimizers", spy)
    _, after = _first_update(
        tmp_path, ["model.lora.enabled=false"], (PamaModule, "sample_rollout"), monkeypatch
    )
    assert not any("lora_" in k for k in after)
    moved = [k for k in after if "layers." in k and not torch.equal(after[k], before["state"][k])]
    assert any("self_attn" in k for k in moved) and any("mlp" in k for k in moved), moved


def test_train_py_debug_fdr_subprocess(tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", "debug=fdr", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    for row in ("reward/sentiment", "reward/length", "kl_ref", "response_tokens", "fluency/ref_logprob"):
        assert rows.count(row) == 1, proc.stdout[-3000:]
    assert (tmp_path / "eval.json").is_file()


def test_evaluate_reloads_the_trained_policy(tiny_cfg, tmp_path):
    from pama_lit.run.evaluate import evaluate

    with open_dict(tiny_cfg):
        tiny_cfg.optimizer.lr = 0.05  # move the tiny policy far enough to change its samples
    result = train(tiny_cfg)
    run_dir = __import__("pathlib").Path(tiny_cfg.paths.output_dir)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(__import__("omegaconf").OmegaConf.to_yaml(tiny_cfg))
    trained = evaluate(run_dir, "trained", output=tmp_path / "trained.json")
    reference = evaluate(run_dir, "reference", output=tmp_path / "reference.json")
    assert trained["policy"] == "trained" and reference["policy"] == "reference"
    # Same prompts, same seed: the re-evaluated policies reproduce the in-training evaluations.
    for name in ("sentiment", "length"):
        assert trained["rewards"][name]["mean"] == pytest.approx(
            result["end"]["rewards"][name]["mean"], abs=1e-6
        )
        assert reference["rewards"][name]["mean"] == pytest.approx(
            result["start"]["rewards"][name]["mean"], abs=1e-6
        )
    assert [s["response"] for s in trained["samples"]] == [s["response"] for s in result["end"]["samples"]]
    for name, value in result["end"]["fluency"].items():
        assert trained["fluency"][name] == pytest.approx(value, abs=1e-5, nan_ok=True)
    for name, value in result["start"]["fluency"].items():
        assert reference["fluency"][name] == pytest.approx(value, abs=1e-5, nan_ok=True)
    # Every response beside each result file, in the prompts' order, the summary's means computed from them.
    from pama_lit.run.results import read_responses

    for path, summary in (
        (run_dir / "eval.json", result["end"]),
        (run_dir / "reference" / "eval.json", result["start"]),
    ):
        responses = read_responses(path)
        assert len(responses) == summary["num_prompts"] == tiny_cfg.data.val_size
        for name in ("sentiment", "length"):
            mean = sum(r["scores"][name] for r in responses) / len(responses)
            assert mean == pytest.approx(summary["rewards"][name]["mean"], abs=1e-9)
        assert [r["response"] for r in responses[: len(summary["samples"])]] == [
            s["response"] for s in summary["samples"]
        ]
    assert read_responses(tmp_path / "trained.json") == read_responses(run_dir / "eval.json")
    assert read_responses(tmp_path / "reference.json") == read_responses(run_dir / "reference" / "eval.json")
    # The reference it writes carries the key train.py records, so runs can take it (eval.reference) ...
    from pama_lit.run.reference import load_shared_reference, reference_key

    in_training = json.loads((run_dir / "reference" / "eval.json").read_text())
    assert reference["reference_key"] == in_training["reference_key"] == reference_key(tiny_cfg)
    taking = tiny_cfg.copy()
    with open_dict(taking):
        taking.eval.reference = str(tmp_path / "reference.json")
    assert load_shared_reference(taking) == reference
    # ... and names what it evaluated: other prompts, another key (a run with that val_size's).
    fewer = evaluate(run_dir, "reference", num_prompts=1, output=tmp_path / "fewer.json")
    with open_dict(taking):
        taking.data.val_size = 1
        taking.eval.reference = None
    assert fewer["reference_key"] == reference_key(taking) != reference["reference_key"]


@pytest.mark.parametrize(
    "experiment", ["embedded_sentiment_length", "embedded_humor_length", "embedded_harmless_length"]
)
def test_embedded_experiments_train_the_tiny_model(tmp_path, experiment):
    cfg = compose_config(
        [f"experiment={experiment}", "debug=tiny", "iterations=2", "rollout.max_new_tokens=4", "logger=csv"],
        tmp_path,
    )
    assert cfg.model.loader._target_.endswith("build_tiny_llama")
    result = train(cfg)
    objectives = list(cfg.objective.rewards)
    assert set(result["end"]["rewards"]) == set(objectives)
    header = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    for name in objectives:
        assert f"train/reward/{name}" in header


@pytest.mark.parametrize(("iterations", "every", "expected"), [(4, 2, [0, 2, 4]), (3, 2, [0, 2, 3])])
def test_evaluations_are_labelled_with_the_iteration_just_completed(tmp_path, iterations, every, expected):
    """Periodic evaluations name the iterations done (not one fewer), and the last is never run twice."""
    cfg = compose_config(
        ["debug=tiny", f"iterations={iterations}", "rollout.max_new_tokens=4", "data.val_size=2",
         f"eval.every_n_iterations={every}", "logger=none"],
        output_dir=tmp_path / "run",
    )  # fmt: skip
    train(cfg)
    lines = (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == expected
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["iteration"] == iterations


@pytest.mark.parametrize(
    ("algorithm", "name", "clamped"),
    [
        ("morlhf_noon", "morlhf", True),
        ("morlhf", "morlhf", False),
        ("pama_no_noon", "pama", False),
        ("pama", "pama", True),
    ],
)
def test_the_noon_ablations_clamp_the_combined_advantage_or_not(
    tmp_path, monkeypatch, algorithm, name, clamped
):
    """The two-by-two that separates Noon from PAMA's combine rule: with Noon the combined advantage is
    never negative; without it (``morlhf``, ``pama_no_noon``) it is negative at some tokens."""
    from pama_lit.training.combiners import COMBINERS

    seen: list[torch.Tensor] = []
    cls = COMBINERS[name]
    original = cls.combine

    def spy(self, advantages, mask, *args, **kwargs):
        combined, weights = original(self, advantages, mask, *args, **kwargs)
        seen.append(combined[mask.bool()])
        return combined, weights

    monkeypatch.setattr(cls, "combine", spy)
    cfg = compose_config(["debug=tiny", "iterations=2", "logger=none", f"algorithm={algorithm}"], tmp_path)
    assert cfg.algorithm.name == name
    train(cfg)
    combined = torch.cat(seen)
    assert combined.numel() and combined.max() > 0
    assert (combined.min() >= 0) == clamped
    # Result files name the ablation, so that fronts keep it apart from plain morlhf.
    assert json.loads((tmp_path / "eval.json").read_text())["algorithm"] == algorithm


@pytest.mark.parametrize(
    ("name", "noon", "label"),
    [
        ("morlhf", None, "morlhf"),
        ("morlhf", True, "morlhf_noon"),
        ("pama", True, "pama"),
        ("pama", False, "pama_no_noon"),
    ],
)
def test_result_files_name_a_noon_override(name, noon, label):
    from pama_lit.training.combiners import build_combiner

    assert build_combiner(name, noon).label == label


def test_sample_table_writes_the_rollout_that_training_step_returns(tmp_path):
    """The callback reads ``training_step``'s outputs, not state left on the module."""
    from types import SimpleNamespace

    from pama_lit.run.callbacks import SampleTable
    from pama_lit.training.rollout import Rollout

    mask = torch.ones(2, 3, dtype=torch.bool)
    zeros = torch.zeros(2, 3)
    rollout = Rollout(
        input_ids=zeros.long(), attention_mask=mask, responses=zeros.long(), response_mask=mask,
        logprobs=zeros, ref_logprobs=zeros, values=zeros[..., None], prompts=["p0", "p1"], texts=["r0", "r1"],
    )  # fmt: skip
    trainer = SimpleNamespace(is_global_zero=True, default_root_dir=str(tmp_path), loggers=[])
    module = SimpleNamespace(objectives=["a", "b"])
    outputs = {"rollout": rollout, "scores": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}
    SampleTable(every_n_iterations=1, num_samples=2).on_train_batch_end(trainer, module, outputs, {}, 5)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert rows == [
        {"iteration": 5, "prompt": "p0", "response": "r0", "a": 1.0, "b": 2.0},
        {"iteration": 5, "prompt": "p1", "response": "r1", "a": 3.0, "b": 4.0},
    ]
