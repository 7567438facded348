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


@pytest.mark.parametrize(
    "overrides",
    [
        ["algorithm=morlhf"],
        ["algorithm=pama_batch"],
        ["algorithm=noon_ppo", "objective=sentiment"],
        ["preference=[0.2,0.8]"],
        ["model.lora.enabled=false"],
    ],
    ids=["morlhf", "pama_batch", "noon_ppo", "preference", "full_finetune"],
)
def test_algorithms_train(tmp_path, overrides):
    cfg = compose_config(
        ["debug=tiny", "iterations=1", "rollout.max_new_tokens=4", "logger=none", *overrides], tmp_path
    )
    result = train(cfg)
    assert result["end"] is not None


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


@pytest.mark.parametrize(("algorithm", "clamped"), [("morlhf_noon", True), ("morlhf", False)])
def test_morlhf_noon_clamps_the_scalarised_advantage(tmp_path, monkeypatch, algorithm, clamped):
    """The ablation that separates Noon from PAMA's combine rule: one scalarised stream, never negative."""
    from pama_lit.training.combiners import Morlhf

    seen: list[torch.Tensor] = []
    original = Morlhf.combine

    def spy(self, advantages, mask, *args):
        combined, weights = original(self, advantages, mask, *args)
        seen.append(combined[mask.bool()])
        return combined, weights

    monkeypatch.setattr(Morlhf, "combine", spy)
    cfg = compose_config(["debug=tiny", "iterations=2", "logger=none", f"algorithm={algorithm}"], tmp_path)
    assert cfg.algorithm.name == "morlhf"
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
