"""conditioning=svd_lora end to end on the tiny model: refusals, the preference reaching the adapters in
sampling and in the update, the trained policy depending on it, checkpoint/resume, export and evaluate.py."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf, open_dict
from tiny import TINY

from pama_lit.infra.checkpointing import CheckpointError
from pama_lit.models.svd_lora import SvdLora
from pama_lit.rewards import build_rewards
from pama_lit.run.config import ConfigError, validate_config
from pama_lit.run.evaluate import evaluate, load_final_weights, load_run_config
from pama_lit.run.reference import reference_key
from pama_lit.run.train import build_module, train
from pama_lit.training.module import PamaModule

SVD = "conditioning=svd_lora"
# Two iterations at a large learning rate: enough for the adapters to move the tiny policy.
RUN = [*TINY, SVD, "iterations=2", "optimizer.lr=0.05", "callbacks.checkpoint.every_n_iterations=1"]


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (
            ["model.lora.enabled=false"],
            "model.lora.enabled=false with conditioning=svd_lora: .* no full fine-tuning",
        ),
        (["algorithm=pama_batch"], "conditioning=svd_lora with algorithm=pama_batch"),
        (["algorithm=mgda_ub"], "conditioning=svd_lora with algorithm=mgda_ub"),
        (["objective=sentiment"], r"conditioning=svd_lora with one objective"),
        (
            ["conditioning.svd_lora.init=pissa"],
            "conditioning.svd_lora.init='pissa': must be one of lora, adalora",
        ),
        (["conditioning.svd_lora.rank=0"], "conditioning.svd_lora.rank=0: must be an integer >= 1"),
        (["conditioning.svd_lora.alpha=0"], r"conditioning.svd_lora.alpha=0.0: must be a number > 0"),
        (
            ["conditioning.svd_lora.target_modules=[]"],
            r"conditioning.svd_lora.target_modules=\[\]: must be a non-empty",
        ),
    ],
)
def test_start_up_refuses_what_svd_lora_cannot_train(overrides, fragment, tmp_path):
    cfg = compose_config([*TINY, SVD, *overrides], tmp_path)
    with pytest.raises(ConfigError, match=fragment):
        validate_config(cfg)


def _module(overrides: list[str], tmp_path: Path) -> PamaModule:
    cfg = compose_config([*TINY, SVD, *overrides], tmp_path)
    validate_config(cfg)
    module = build_module(cfg, build_rewards(cfg.objective.rewards))
    module.configure_model()
    return module


def test_the_adapters_replace_lora_and_refuse_layers_the_model_lacks(tmp_path):
    module = _module(["conditioning.svd_lora.rank=3"], tmp_path)
    policy = module.policy
    assert not policy.uses_lora and policy.ref_lm is None
    assert sorted(policy.svd_lora.layers) == [  # model.lora.target_modules (tiny: q_proj, v_proj)
        f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in ("q_proj", "v_proj")
    ]
    assert policy.svd_lora.layers["model.layers.0.self_attn.q_proj"].u.shape == (
        64,
        3 + 2,
    )  # rank + K columns
    assert module.conditioning_state()["svd_lora"]["target_modules"] == [
        "q_proj",
        "v_proj",
    ]  # recorded resolved
    trainable = {k.rsplit(".", 1)[-1] for k in policy.trainable_state_dict()}
    assert trainable == {"u", "v", "sigma", "pref_scale", "weight", "bias"}  # adapters + value heads only
    assert all(
        k.startswith("value_head.") for k in policy.trainable_state_dict() if k.endswith(("weight", "bias"))
    )
    with pytest.raises(
        ValueError, match=r"conditioning.svd_lora.target_modules=\['c_attn'\]: no linear layer"
    ):
        _module(["conditioning.svd_lora.target_modules=[c_attn]"], tmp_path)


def test_prompts_are_left_alone_and_generation_reads_the_preference(tmp_path):
    module = _module(["rollout.max_new_tokens=8"], tmp_path)
    prompts = ["I think that", "Today was"]
    assert module.condition_prompts(prompts, torch.tensor([0.7, 0.3])) == prompts
    # Large random weights, the adapters' included: the samples then depend on what the model reads.
    with torch.no_grad():
        for p in module.policy.lm.parameters():
            p.normal_(0, 1.0, generator=torch.Generator().manual_seed(p.numel()))

    def sample(preference):
        torch.manual_seed(0)
        return module.sample_rollout(prompts, preferences=preference)[0]

    a, b = sample(torch.tensor([0.9, 0.1])), sample(torch.tensor([0.1, 0.9]))
    assert torch.equal(sample(torch.tensor([0.9, 0.1])).responses, a.responses)
    assert not torch.equal(a.responses, b.responses)
    assert torch.equal(a.preferences, torch.tensor([[0.9, 0.1], [0.9, 0.1]]))
    # The reference is the base model: the adapters off (no preference needed), as with U = 0.
    reference = module.policy.reference_logits(a.input_ids, a.attention_mask, a.num_response)
    with torch.no_grad():
        for layer in module.policy.svd_lora.layers.values():
            layer.u.zero_()
        zeroed, _ = module.policy(a.input_ids, a.attention_mask, a.num_response, preferences=a.preferences)
    torch.testing.assert_close(zeroed, reference)


@contextlib.contextmanager
def _spied(seen: dict[str, list]):
    """Record each preference the adapters are run at, the draws and the minibatches' rows."""
    mp = pytest.MonkeyPatch()
    set_preference, draw, backward = (
        SvdLora.preference,
        PamaModule.draw_preferences,
        PamaModule.minibatch_backward,
    )
    tokenize = PamaModule.tokenize_prompts

    def spy_preference(self, preference):
        seen["adapters"].append(preference.detach().clone())
        return set_preference(self, preference)

    def spy_draw(self, n):
        seen["drawn"].append(draw(self, n))
        return seen["drawn"][-1]

    def spy_backward(self, rollout, advantages, returns, idx, *rest):
        seen["rows"].append(idx)
        return backward(self, rollout, advantages, returns, idx, *rest)

    def spy_tokenize(self, prompts):
        seen["read"].extend(prompts)
        return tokenize(self, prompts)

    mp.setattr(SvdLora, "preference", spy_preference)
    mp.setattr(PamaModule, "draw_preferences", spy_draw)
    mp.setattr(PamaModule, "minibatch_backward", spy_backward)
    mp.setattr(PamaModule, "tokenize_prompts", spy_tokenize)
    try:
        yield
    finally:
        mp.undo()


@pytest.fixture(scope="module", params=["pama", "morlhf"])
def trained(request, tmp_path_factory):
    """A two-iteration svd_lora run of each algorithm, what its adapters were run at, and its config."""
    run_dir = tmp_path_factory.mktemp(f"svd_{request.param}") / "run"
    cfg = compose_config([*RUN, f"algorithm={request.param}"], run_dir)
    validate_config(cfg)
    seen: dict[str, list] = {"adapters": [], "drawn": [], "rows": [], "read": []}
    with _spied(seen):
        result = train(cfg)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return {"run_dir": run_dir, "cfg": cfg, "seen": seen, "result": result, "algorithm": request.param}


def test_sampling_and_every_update_forward_run_at_each_samples_own_preference(trained):
    seen, cfg = trained["seen"], trained["cfg"]
    assert not any("[preference:" in p for p in seen["read"])  # the preference is in the weights only
    drawn = seen["drawn"][0]
    assert drawn.shape == (cfg.rollout.batch_size, 2) and not torch.equal(drawn[0], drawn[1])
    adapters = seen["adapters"]
    start = next(i for i, p in enumerate(adapters) if p.shape == drawn.shape and torch.equal(p, drawn))
    # Before: the reference validation, every row at the run's preference or at one grid point.
    assert start > 0 and all(bool((p == p[0]).all()) for p in adapters[:start])
    # Iteration 0: the draws sample and record pi_old; the diagnostics take the first minibatch's rows;
    # then every minibatch's forward takes its rows' own preferences.
    mb = cfg.rollout.batch_size // cfg.ppo.num_minibatches
    rows = seen["rows"][: cfg.ppo.epochs * cfg.ppo.num_minibatches]
    expected = [drawn, drawn, drawn[:mb], *(drawn[idx] for idx in rows)]
    got = adapters[start : start + len(expected)]
    assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_the_trained_policy_depends_on_the_preference_and_its_reference_does_not(trained):
    cfg = trained["cfg"]
    module = build_module(cfg, build_rewards(cfg.objective.rewards))
    module.configure_model()
    policy = module.policy
    ids = torch.tensor([[5, 90, 300, 7, 2000, 11]])
    mask = torch.ones_like(ids, dtype=torch.bool)

    def logits(preference):
        with torch.no_grad():
            return policy(ids, mask, 3, preferences=torch.tensor([preference]))[0]

    # Before loading the trained adapters the policy is the base model at every preference ...
    assert torch.equal(logits([0.9, 0.1]), logits([0.1, 0.9]))
    torch.testing.assert_close(logits([0.9, 0.1]), policy.reference_logits(ids, mask, 3))
    load_final_weights(module, trained["run_dir"] / "final")
    # ... the trained one is not, and its reference (adapters off) still is the base model.
    assert (logits([0.9, 0.1]) - logits([0.1, 0.9])).abs().max() > 1e-4
    fresh = build_module(cfg, build_rewards(cfg.objective.rewards))
    fresh.configure_model()
    torch.testing.assert_close(
        policy.reference_logits(ids, mask, 3), fresh.policy.reference_logits(ids, mask, 3)
    )


def test_checkpoints_and_final_keep_the_conditioning_and_the_adapters(trained):
    run_dir = trained["run_dir"]
    saved = json.loads((run_dir / "final" / "conditioning.json").read_text())
    assert saved == {
        "mode": "svd_lora",
        "concentration": 1.0,
        "corner_share": 0.2,
        "decimals": 2,
        "eval_grid_steps": 4,
        "svd_lora": {"rank": 8, "alpha": 16.0, "target_modules": ["q_proj", "v_proj"], "init": "lora"},
    }
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["pama"]["conditioning"] == saved
    from safetensors.torch import load_file

    exported = load_file(run_dir / "final" / "svd_lora" / "adapter_model.safetensors")
    assert len(exported) == 4 * 4  # 2 layers x (q_proj, v_proj) x (u, v, sigma, pref_scale)
    for key, value in exported.items():  # last.ckpt is the final iteration's: the same adapters
        assert torch.equal(ckpt["state_dict"][f"policy.lm.{key}"], value)
    final_eval = json.loads((run_dir / "eval.json").read_text())
    assert final_eval["algorithm"] == f"{trained['algorithm']}_svd_lora"
    assert final_eval["conditioning"] == saved


def test_evaluate_runs_the_exported_policy_at_a_chosen_preference(trained):
    if trained["algorithm"] != "pama":
        pytest.skip("one algorithm is enough for evaluate.py")
    run_dir = trained["run_dir"]
    a = evaluate(run_dir, preference=[0.8, 0.2])
    b = evaluate(run_dir, preference=[0.2, 0.8])
    assert a["preference"] == [0.8, 0.2] and (run_dir / "preferences" / "0.8-0.2" / "eval.json").is_file()
    assert b["preference"] == [0.2, 0.8]
    # The same prompts, another preference: the policy's log-probabilities (its KL to the reference) differ.
    assert a["kl_ref"] != b["kl_ref"]
    reference = evaluate(run_dir, policy="reference", preference=[0.8, 0.2])
    assert reference["kl_ref"] == 0.0  # the adapters start at the base model
    # Keyed as a run trained at that preference keys its reference, so such a run can take it.
    run_cfg = load_run_config(run_dir)
    with open_dict(run_cfg):
        run_cfg.preference = [0.8, 0.2]
    assert reference["reference_key"] == reference_key(run_cfg)
    adapter = run_dir / "final" / "svd_lora" / "adapter_model.safetensors"
    adapter.rename(adapter.with_suffix(".bak"))
    try:
        with pytest.raises(CheckpointError, match="svd_lora/adapter_model.safetensors"):
            evaluate(run_dir, preference=[0.8, 0.2])
    finally:
        adapter.with_suffix(".bak").rename(adapter)


class _Killed(Exception):
    pass


def test_a_resumed_run_continues_the_adapters_and_refuses_another_conditioning(tmp_path, monkeypatch):
    """A run stopped after iteration 2 of 3 and resumed from last.ckpt ends with the adapters of the
    uninterrupted run, to the bit; a resume with another conditioning is refused."""
    run = [*RUN, "iterations=3", "data.val_size=0"]
    train(compose_config(run, tmp_path / "whole"))
    step = PamaModule.training_step

    def dies_at_the_third(self, batch, batch_idx):
        if self.completed_iterations == 2:
            raise _Killed
        return step(self, batch, batch_idx)

    run_dir = tmp_path / "resumed"
    monkeypatch.setattr(PamaModule, "training_step", dies_at_the_third)
    with pytest.raises(_Killed):
        train(compose_config(run, run_dir))
    monkeypatch.setattr(PamaModule, "training_step", step)
    for other, error in (
        (["conditioning=prompt"], "written with conditioning=svd_lora, this run has conditioning=prompt"),
        (["conditioning.svd_lora.rank=4"], "resume with the same conditioning= setting"),
    ):
        with pytest.raises(ValueError, match=error):
            train(compose_config([*run, "ckpt_path=last", *other], run_dir))
    train(compose_config([*run, "ckpt_path=last"], run_dir))
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["pama"]["completed_iterations"] == 3
    adapters = [k for k in whole["state_dict"] if k.endswith((".u", ".v", ".sigma", ".pref_scale"))]
    assert len(adapters) == 16 and whole["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key


def test_gradient_checkpointing_trains_the_same_adapters(trained, tmp_path):
    """Its recomputations (one per objective in the diagnostics, one per minibatch) run at each forward's
    preferences: the run ends where the run without it does."""
    if trained["algorithm"] != "pama":
        pytest.skip("one algorithm is enough")
    from safetensors.torch import load_file

    cfg = compose_config([*RUN, "algorithm=pama", "model.gradient_checkpointing=true"], tmp_path / "run")
    train(cfg)
    expected = load_file(trained["run_dir"] / "final" / "svd_lora" / "adapter_model.safetensors")
    got = load_file(tmp_path / "run" / "final" / "svd_lora" / "adapter_model.safetensors")
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-6)
