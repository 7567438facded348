"""Sampling through merged LoRA weights: the same tokens as the adapted model, and the policy (base
weights, adapters, reference) bit-identical afterwards, also when generation raises."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import compose_config
from peft import LoraConfig, get_peft_model
from tiny import TINY, tiny_llama_config
from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

import pama_lit.models.policy as policy_module
from pama_lit.models.merging import merge_blocker, merged_adapters
from pama_lit.models.policy import PolicyWithValueHeads
from pama_lit.rewards import build_rewards
from pama_lit.run.train import build_module

LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]
VOCAB = 64


def tiny_llama() -> LlamaForCausalLM:
    return LlamaForCausalLM(tiny_llama_config(vocab_size=VOCAB, num_attention_heads=4))


def tiny_gpt2() -> GPT2LMHeadModel:
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64))


def make_policy(build=tiny_llama, targets=LLAMA_TARGETS, dtype=torch.float64) -> PolicyWithValueHeads:
    """A policy whose adapters change its outputs: lora_B randomised, scaling alpha / r = 2."""
    torch.manual_seed(0)
    policy = PolicyWithValueHeads(
        build().to(dtype), num_value_heads=1, lora={"r": 4, "alpha": 8, "target_modules": targets}
    )
    with torch.no_grad():
        for name, p in policy.lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return policy


def queries() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, VOCAB - 1, (3, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, :2] = False  # one left-padded prompt
    return ids.masked_fill(~mask, 0), mask


def sample(policy, merge: bool, do_sample: bool = True) -> torch.Tensor:
    ids, mask = queries()
    torch.manual_seed(3)
    return policy.generate(ids, mask, eos_token_ids=[VOCAB - 1], pad_token_id=0, max_new_tokens=10,
                           do_sample=do_sample, merge_adapters=merge)  # fmt: skip


def snapshot(model: torch.nn.Module) -> dict[str, tuple[torch.nn.Parameter, torch.Tensor, bool]]:
    return {n: (p, p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}


def assert_unchanged(model: torch.nn.Module, before: dict) -> None:
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    for name, (param, value, requires_grad) in before.items():
        assert after[name] is param, f"{name} is another Parameter object"
        assert torch.equal(param, value), f"{name} changed"
        assert param.requires_grad == requires_grad, f"{name}.requires_grad changed"


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize(
    "build, targets",
    [(tiny_llama, LLAMA_TARGETS), (tiny_gpt2, ["c_attn", "c_fc"])],
    ids=["llama-linear", "gpt2-conv1d-fan-in-fan-out"],
)
def test_merged_forward_is_the_adapted_forward(build, targets):
    policy = make_policy(build, targets)
    lm = policy.lm
    if build is tiny_gpt2:
        assert lm.base_model.model.transformer.h[0].attn.c_attn.fan_in_fan_out
    ids, _ = queries()
    adapted = logits(lm, ids)
    with lm.disable_adapter():
        base = logits(lm, ids)
    assert (adapted - base).abs().max() > 1e-2, "the adapters barely matter: the test would prove nothing"
    with merged_adapters(lm):
        merged = logits(lm, ids)
    torch.testing.assert_close(merged, adapted, rtol=0, atol=1e-12)


@pytest.mark.parametrize("do_sample", [True, False], ids=["sampled", "greedy"])
@pytest.mark.parametrize(
    "build, targets", [(tiny_llama, LLAMA_TARGETS), (tiny_gpt2, ["c_attn"])], ids=["llama", "gpt2"]
)
def test_merged_sampling_gives_the_unmerged_tokens(build, targets, do_sample):
    policy = make_policy(build, targets)
    unmerged = sample(policy, merge=False, do_sample=do_sample)
    merged = sample(policy, merge=True, do_sample=do_sample)
    assert unmerged.shape[1] > 1
    assert torch.equal(merged, unmerged)


def test_policy_reference_and_parameters_are_bit_identical_after_merged_sampling():
    policy = make_policy(dtype=torch.float32)  # float32: where add-then-subtract would not round-trip
    ids, mask = queries()
    full = torch.cat([ids, ids], 1)
    full_mask = torch.cat([mask, mask], 1)
    before = snapshot(policy)
    ref_before = policy.reference_logits(full, full_mask, num_response=6)
    with torch.no_grad():
        policy_before = policy(full, full_mask, num_response=6)[0]
    for _ in range(3):
        sample(policy, merge=True)
    assert_unchanged(policy, before)
    assert torch.equal(policy.reference_logits(full, full_mask, num_response=6), ref_before)
    with torch.no_grad():
        assert torch.equal(policy(full, full_mask, num_response=6)[0], policy_before)


def test_an_exception_during_generation_restores_the_weights():
    policy = make_policy()
    layer = policy.lm.base_model.model.model.layers[0].self_attn.q_proj
    original = layer.base_layer.weight
    before = snapshot(policy)
    ids, _ = queries()
    adapted = logits(policy.lm, ids)
    seen = []

    def fail(module, args):
        seen.append(module.weight is original)
        raise RuntimeError("boom")

    handle = layer.base_layer.register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="boom"):
        sample(policy, merge=True)
    handle.remove()
    assert seen == [False], "generation did not run on a merged weight"
    assert_unchanged(policy, before)
    assert not policy.lm.base_model.model.model.layers[0].self_attn.q_proj.disable_adapters
    assert torch.equal(logits(policy.lm, ids), adapted)


def peft_llama(**lora) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_peft_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], **lora))


@pytest.mark.parametrize(
    "lora, reason",
    [
        (dict(lora_dropout=0.1), "active LoRA dropout"),
        (dict(use_dora=True), "LoRA variant"),
        (dict(lora_bias=True), "lora_bias"),
        (dict(modules_to_save=["lm_head"]), "modules_to_save"),
    ],
    ids=["dropout", "dora", "lora-bias", "modules-to-save"],
)
def test_what_cannot_be_merged_exactly_is_refused_by_name(lora, reason):
    model = peft_llama(**lora).train()
    assert reason in merge_blocker(model)
    before = snapshot(model)
    match = f"cannot sample through merged LoRA weights: .*{reason}"
    with pytest.raises(ValueError, match=match), merged_adapters(model):
        pass
    assert_unchanged(model, before)


def test_an_already_merged_model_is_refused():
    model = peft_llama()
    assert merge_blocker(model) is None
    model.merge_adapter()
    assert "already has adapters ['default'] merged" in merge_blocker(model)


def test_unmergeable_policy_samples_unmerged_and_says_so_once(caplog):
    # no_dropout=False: by default the policy zeroes every dropout, the adapters' too.
    policy = PolicyWithValueHeads(tiny_llama(), num_value_heads=1, no_dropout=False,
                                  lora={"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj"]})  # fmt: skip
    policy.lm.train()
    layer = policy.lm.base_model.model.model.layers[0].self_attn.q_proj
    original = layer.base_layer.weight
    seen = []
    layer.base_layer.register_forward_pre_hook(lambda m, a: seen.append(m.weight is original))
    with caplog.at_level(logging.WARNING, logger="pama_lit.models.policy"):
        sample(policy, merge=True)
        sample(policy, merge=True)
    assert seen and all(seen), "sampled through a merged weight despite active LoRA dropout"
    warnings = [r.getMessage() for r in caplog.records if "merge_adapters" in r.getMessage()]
    assert len(warnings) == 1 and "active LoRA dropout" in warnings[0]


@pytest.mark.parametrize("flag, merges", [(True, 1), (False, 0)])
def test_rollout_merge_adapters_reaches_generation(tmp_path, monkeypatch, flag, merges):
    cfg = compose_config([*TINY, f"rollout.merge_adapters={flag}"], tmp_path)
    module = build_module(cfg, build_rewards(cfg.objective.rewards))
    module.configure_model()
    calls = []

    def spy(model):
        calls.append(model)
        return merged_adapters(model)

    monkeypatch.setattr(policy_module, "merged_adapters", spy)
    module.sample_rollout(["a b c", "d e"])
    assert len(calls) == merges


def test_merge_adapters_must_be_a_boolean(tmp_path):
    """The typed schema refuses it at composition, naming the key and the value."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as caught:
        compose_config(["debug=tiny", "rollout.merge_adapters=sometimes"], tmp_path)
    message = f"{caught.value} {caught.value.__cause__}"
    assert "rollout.merge_adapters" in message and "sometimes" in message and "bool" in message
