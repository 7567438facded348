"""conditioning=prompt end to end on the tiny model: config checks, the prompts the policy reads,
training, checkpoint/resume, evaluate.py at chosen preferences and the fronts collector."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf, open_dict
from test_resume import _checkpoint_steps, _train_rows, _wait_for
from tiny import TINY
from train_runs import TINY as RUN_TINY
from train_runs import run_train, start_train

from pama_lit.fronts.collect import load_sweep
from pama_lit.fronts.metrics import hypervolume, spearman
from pama_lit.rewards import build_rewards
from pama_lit.run.config import ConfigError, validate_config
from pama_lit.run.evaluate import evaluate
from pama_lit.run.train import build_module, train
from pama_lit.training.module import PamaModule

PROMPT = "conditioning=prompt"


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (["algorithm=mgda_ub"], "conditioning=prompt with algorithm=mgda_ub"),
        (["algorithm=mgda"], "conditioning=prompt with algorithm=mgda"),
        (["algorithm=pama_batch"], "only pama, morlhf use"),
        (["algorithm=noon_ppo", "objective=sentiment"], "conditioning=prompt with algorithm=noon_ppo"),
        (["objective=sentiment"], "with one objective"),
        (["algorithm.veto_threshold=0.1"], "algorithm.veto_threshold=0.1 with conditioning=prompt"),
        (["conditioning.mode=svd"], "conditioning.mode='svd': must be one of none, prompt, svd_lora"),
        (["conditioning.corner_share=1.5"], r"conditioning.corner_share=1.5: must be a number in \[0, 1\]"),
        (["conditioning.eval_grid_steps=1"], r"conditioning.eval_grid_steps=1: must be an integer >= 2"),
    ],
)
def test_start_up_refuses_what_conditioning_cannot_honour(overrides, fragment, tmp_path):
    cfg = compose_config([*TINY, PROMPT, *overrides], tmp_path)
    with pytest.raises(ConfigError, match=fragment):
        validate_config(cfg)


def test_conditioning_defaults_to_none_and_morlhf_may_condition(tmp_path):
    assert compose_config(TINY, tmp_path).conditioning.mode == "none"
    validate_config(compose_config([*TINY, PROMPT, "algorithm=morlhf"], tmp_path))


def _module(overrides: list[str], tmp_path: Path) -> PamaModule:
    cfg = compose_config([*TINY, *overrides], tmp_path)
    validate_config(cfg)
    module = build_module(cfg, build_rewards(cfg.objective.rewards))
    module.configure_model()
    return module


def test_the_preference_changes_the_prompt_and_the_sampled_responses(tmp_path):
    module = _module([PROMPT, "rollout.max_new_tokens=8"], tmp_path)
    prompts = ["I think that", "Today was"]
    assert module.condition_prompts(prompts, torch.tensor([0.7, 0.3])) == [
        "[preference: sentiment 0.70, length 0.30]\nI think that",
        "[preference: sentiment 0.70, length 0.30]\nToday was",
    ]
    # Validation reads the run's preference (null = uniform).
    assert module.condition_prompts(prompts[:1], None) == [
        "[preference: sentiment 0.50, length 0.50]\nI think that"
    ]

    # An over-long prompt loses its own beginning, never the preference line (model.max_prompt_length=64).
    long = "one two three " * 40 + "the end"
    (conditioned,) = module.condition_prompts([long], torch.tensor([0.7, 0.3]))
    ids, mask = module.tokenize_prompts([conditioned])
    read = module.tokenizer.decode(ids[0][mask[0]])
    assert mask.sum() <= 64 and "[preference: sentiment 0.70, length 0.30]\n" in read and "the end" in read
    # The random tiny model's next-token distribution is nearly flat and context-blind (init std 0.02):
    # larger weights make its samples depend on what it reads, as a trained policy's do.
    with torch.no_grad():
        for p in module.policy.lm.parameters():
            p.normal_(0, 1.0, generator=torch.Generator().manual_seed(p.numel()))

    def sample(preference):
        torch.manual_seed(0)
        rollout, _ = module.sample_rollout(prompts, preferences=preference)
        return rollout

    a, b = sample(torch.tensor([0.9, 0.1])), sample(torch.tensor([0.1, 0.9]))
    assert torch.equal(sample(torch.tensor([0.9, 0.1])).responses, a.responses)  # fixed seed: same samples
    assert not torch.equal(a.responses, b.responses)  # another preference: other samples
    assert a.prompts == prompts  # the rewards read the prompts as given, without the preference line


@pytest.mark.parametrize("chat_template,max_len", [("true", 64), ("true", 80), ("false", 24), ("false", 40)])
def test_an_over_long_prompt_loses_its_beginning_not_the_preference_line(chat_template, max_len, tmp_path):
    overrides = [PROMPT, f"model.chat_template={chat_template}", f"model.max_prompt_length={max_len}"]
    module = _module(overrides, tmp_path)
    long = "one two three " * 40 + "the end"
    (conditioned,) = module.condition_prompts([long], torch.tensor([0.25, 0.75]))
    ids, mask = module.tokenize_prompts([conditioned])
    read = module.tokenizer.decode(ids[0][mask[0]])
    assert mask.sum() <= max_len
    assert "[preference: sentiment 0.25, length 0.75]\n" in read and "the end" in read
    assert "one two three " * 40 not in read  # the prompt's own beginning went instead


def test_draws_depend_on_the_iteration_and_stay_on_the_grid(tmp_path):
    module = _module([PROMPT, "conditioning.corner_share=0.5"], tmp_path)
    first = module.draw_preferences(64)
    assert torch.equal(module.draw_preferences(64), first)  # the same iteration: the same draws
    module.completed_iterations = 1
    assert not torch.equal(module.draw_preferences(64), first)
    units = first * 100
    assert torch.allclose(units, units.round(), atol=1e-4) and (units.round() >= 1).all()
    assert torch.allclose(first.sum(-1), torch.ones(64))


def test_unconditioned_run_refuses_a_preference_at_evaluation(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(compose_config(TINY, run)))
    with pytest.raises(ValueError, match="evaluate a conditioned run"):
        evaluate(run, preference=[0.5, 0.5])


def test_conditioned_run_trains_exports_and_evaluates_a_front(tiny_cfg, tmp_path, monkeypatch):
    read: list[str] = []
    original = PamaModule.tokenize_prompts

    def spy(self, prompts):
        read.extend(prompts)
        return original(self, prompts)

    monkeypatch.setattr(PamaModule, "tokenize_prompts", spy)
    with open_dict(tiny_cfg):
        tiny_cfg.conditioning = compose_config([*TINY, PROMPT], tmp_path).conditioning
        tiny_cfg.optimizer.lr = 0.05
    validate_config(tiny_cfg)
    result = train(tiny_cfg)
    run_dir = Path(tiny_cfg.paths.output_dir)
    assert all(p.startswith("[preference: sentiment ") for p in read)
    assert len({p.split("\n")[0] for p in read}) > 2  # drawn per prompt, beside validation's uniform one
    # Records keep the raw prompt; the policy read its end (cut to fit max_prompt_length=64 with the line).
    assert result["end"]["samples"][0]["prompt"].endswith(read[0].split("\n", 1)[1])
    saved = json.loads((run_dir / "final" / "conditioning.json").read_text())
    assert saved == {
        "mode": "prompt",
        "concentration": 1.0,
        "corner_share": 0.2,
        "decimals": 2,
        "eval_grid_steps": 4,
    }
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["pama"]["conditioning"] == saved
    final_eval = json.loads((run_dir / "eval.json").read_text())
    assert final_eval["algorithm"] == "pama_prompt" and final_eval["preference"] == [0.5, 0.5]

    # Every validation also covered conditioning.eval_grid_steps=4's grid: hypervolume and controllability.
    grid_eval = final_eval["preference_grid"]
    assert grid_eval["preferences"] == [[0.25, 0.75], [0.5, 0.5], [0.75, 0.25]]
    assert grid_eval["reference_point"] == [
        result["start"]["rewards"][n]["mean"] for n in ("sentiment", "length")
    ]
    points, ref = grid_eval["rewards"], grid_eval["reference_point"]
    assert grid_eval["hypervolume"] == pytest.approx(hypervolume(points, ref))
    for i, name in enumerate(("sentiment", "length")):
        rho = spearman([p[i] for p in grid_eval["preferences"]], [r[i] for r in points])
        assert grid_eval["spearman"][name] == pytest.approx(rho, nan_ok=True)
    header = (run_dir / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/conditioning/hypervolume", "val/conditioning/spearman/sentiment"} <= set(header)

    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(tiny_cfg))
    one = evaluate(run_dir, preference=[0.8, 0.2])
    assert one["preference"] == [0.8, 0.2]
    assert (run_dir / "preferences" / "0.8-0.2" / "eval.json").is_file()
    grid = evaluate(run_dir, grid_steps=3)  # 1/3 and 2/3, on the 0.01 grid
    assert [r["preference"] for r in grid] == [[0.33, 0.67], [0.67, 0.33]]
    # The policy read each preference (the tiny model samples the same tokens; their log-probs differ).
    assert grid[0]["fluency"]["ref_logprob"] != grid[1]["fluency"]["ref_logprob"]
    sweep = load_sweep([run_dir / "preferences"], progress=False)
    assert sorted(sweep.runs["preference"]) == ["[0.33, 0.67]", "[0.67, 0.33]", "[0.8, 0.2]"]
    assert set(sweep.runs["algorithm"]) == {"pama_prompt"}


@pytest.mark.slow
def test_conditioned_run_resumes_exactly_after_a_kill(tmp_path):
    """The draws are seeded by (seed, iteration, rank): a resumed run trains on what the killed one would have."""
    run = [*RUN_TINY, "iterations=3", PROMPT, "callbacks.checkpoint.every_n_iterations=1"]
    whole = run_train(run, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-4000:]
    run_dir = tmp_path / "killed"
    proc = start_train(run, run_dir, tmp_path / "killed.log")
    try:
        last = run_dir / "checkpoints" / "last.ckpt"
        _wait_for(
            lambda: last.is_file() and any(s >= 4 for s in _checkpoint_steps(run_dir)), proc
        )  # iteration 1's
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    changed = run_train([*run, "ckpt_path=last", "conditioning=none"], run_dir)
    assert changed.returncode != 0 and "resume with the same conditioning= setting" in changed.stderr
    resumed = run_train([*run, "ckpt_path=last"], run_dir)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    expected = dict(_train_rows(tmp_path / "whole"))
    rows = _train_rows(run_dir)
    assert sorted({step for step, _ in rows}) == [0, 1, 2]
    for step, metrics in rows:
        for key, value in metrics.items():
            assert value == pytest.approx(expected[step][key], rel=1e-6, abs=1e-9), (step, key)


@pytest.mark.parametrize("algorithm", ["pama", "morlhf"])
def test_the_update_uses_each_samples_own_preference(algorithm, tiny_cfg, tmp_path, monkeypatch):
    """PAMA combines each row with its own weights; MORLHF scalarises each row's scores by its own."""
    seen: dict[str, list] = {"drawn": [], "scalarised_by": [], "combined_with": []}
    draw, backward = PamaModule.draw_preferences, PamaModule.minibatch_backward

    def spy_draw(self, n):
        seen["drawn"].append(draw(self, n))
        original = self.combiner.trained_scores
        self.combiner.trained_scores = lambda s, p: seen["scalarised_by"].append(p) or original(s, p)
        return seen["drawn"][-1]

    def spy_backward(self, rollout, advantages, returns, idx, pref, *rest):
        seen["combined_with"].append((idx, pref))
        return backward(self, rollout, advantages, returns, idx, pref, *rest)

    monkeypatch.setattr(PamaModule, "draw_preferences", spy_draw)
    monkeypatch.setattr(PamaModule, "minibatch_backward", spy_backward)
    cfg = compose_config([*TINY, PROMPT, f"algorithm={algorithm}", "data.val_size=0"], tmp_path / "run")
    validate_config(cfg)
    train(cfg)
    drawn = seen["drawn"][0]
    assert drawn.shape == (cfg.rollout.batch_size, 2) and not torch.equal(drawn[0], drawn[1])
    assert torch.equal(seen["scalarised_by"][0], drawn)
    for idx, pref in seen["combined_with"][: cfg.ppo.epochs * cfg.ppo.num_minibatches]:
        expected = drawn[idx] if algorithm == "pama" else torch.ones(len(idx), 1)
        assert torch.equal(pref, expected)
