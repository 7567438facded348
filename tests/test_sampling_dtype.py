"""``rollout.sampling_dtype``: sampling through a lower-precision copy of the weights.

Checked against an oracle (the adapted model, copied and cast whole to the dtype), for a small
LoRA update surviving the cast (which a half-precision merge would erase), for the weights'
restoration (same objects, same bits, also after an exception), the tie between the embeddings and
the output layer, the dtype the decoding really runs in, the config check, and a whole training run.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from conftest import compose_config
from peft import LoraConfig, get_peft_model
from test_merged_sampling import VOCAB, assert_unchanged, make_policy, queries, snapshot, tiny_llama
from tiny import TINY
from train_runs import run_train

from pama_lit.models.merging import (
    SAMPLING_DTYPES,
    _lora_layers,
    adapter_parameters,
    cast_parameters,
    merge_blocker,
    merged_adapters,
)
from pama_lit.rewards import build_rewards
from pama_lit.run.config import ConfigError, validate_config
from pama_lit.run.train import build_module


def tied_llama() -> torch.nn.Module:
    torch.manual_seed(0)
    from tiny import tiny_llama_config
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(
        tiny_llama_config(vocab_size=VOCAB, num_attention_heads=4, tie_word_embeddings=True)
    )
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    return model


def test_cast_parameters_casts_every_weight_keeps_ties_and_restores_the_originals():
    model = get_peft_model(tied_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    before = snapshot(model)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    adapters = adapter_parameters(model)
    assert len(adapters) == 2 * 2 * 2  # lora_A and lora_B on q_proj and v_proj of 2 layers
    with cast_parameters(model, torch.bfloat16, keep=adapters):
        inside = dict(model.named_parameters(remove_duplicate=False))
        assert {n for n, p in inside.items() if p.dtype == torch.float32} == {
            n for n in inside if ".lora_A." in n or ".lora_B." in n
        }
        assert all(p is before[n][0] for n, p in inside.items() if "lora_" in n), "adapters were replaced"
        assert {p.dtype for n, p in inside.items() if "lora_" not in n} == {torch.bfloat16}
        assert all(not p.requires_grad for n, p in inside.items() if "lora_" not in n)
        base = model.get_base_model()
        assert base.get_input_embeddings().weight is base.get_output_embeddings().weight, "the tie is lost"
        assert {b.dtype for b in model.buffers()} == {b.dtype for b in buffers.values()}, "buffers were cast"
        name = next(n for n in inside if n.endswith("q_proj.base_layer.weight"))
        assert torch.equal(inside[name], before[name][1].to(torch.bfloat16))
    assert_unchanged(model, before)
    base = model.get_base_model()
    assert base.get_input_embeddings().weight is base.get_output_embeddings().weight


def test_cast_parameters_restores_the_weights_after_an_exception():
    model = tiny_llama()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"), cast_parameters(model, torch.float16):
        assert next(model.parameters()).dtype == torch.float16
        raise RuntimeError("boom")
    assert_unchanged(model, before)


@pytest.mark.parametrize("merge", [True, False], ids=["merge-asked", "unmerged"])
def test_sampling_dtype_decodes_as_the_adapted_model_with_its_base_cast(merge):
    """Greedy tokens equal an oracle's: the adapted model with every weight but the adapters' cast to
    bfloat16. Asked to merge, it still samples unmerged: a bfloat16 merged weight would erase the update."""
    policy = make_policy(dtype=torch.float32)
    oracle = copy.deepcopy(policy.lm)
    for name, module in oracle.named_modules():  # every weight in bfloat16 but the adapters'
        if ".lora_" not in name:
            for key, param in module.named_parameters(recurse=False):
                setattr(module, key, torch.nn.Parameter(param.detach().bfloat16(), requires_grad=False))
    assert {p.dtype for n, p in oracle.named_parameters() if "lora_" in n} == {torch.float32}
    ids, mask = queries()
    before = snapshot(policy)
    dtypes: set[torch.dtype] = set()
    hook = policy.lm.get_output_embeddings().register_forward_hook(lambda m, a, out: dtypes.add(out.dtype))
    got = policy.generate(ids, mask, eos_token_ids=[VOCAB - 1], pad_token_id=0, max_new_tokens=8,
                          do_sample=False, merge_adapters=merge, sampling_dtype=torch.bfloat16)  # fmt: skip
    hook.remove()
    assert dtypes == {torch.bfloat16}
    assert_unchanged(policy, before)
    with torch.no_grad():
        expected = oracle.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                   eos_token_id=[VOCAB - 1], pad_token_id=0)[:, ids.shape[1]:]  # fmt: skip
    assert got.shape[1] > 1
    assert torch.equal(got, expected)


def test_a_bfloat16_sampler_sees_a_small_lora_update():
    """An update of 0.1% of the weights, the size PPO makes in a short run, reaches the bfloat16
    sampler's adapted layers, which keep the adapters unmerged even when asked to merge."""
    policy = make_policy(dtype=torch.float32)
    lm = policy.lm
    with torch.no_grad():
        for _, layer in _lora_layers(lm):  # each layer's update: a median 0.1% of its weight's
            ratio = (
                layer.get_delta_weight("default").abs().median()
                / layer.get_base_layer().weight.abs().median()
            )
            layer.lora_B["default"].weight.mul_(1e-3 / ratio)
    layer = lm.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(64, layer.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        update = (x @ layer.get_delta_weight("default").T).flatten()  # what the update adds, exactly

        def bf16_update(merge: bool) -> torch.Tensor:
            with policy.sampling_weights(merge, torch.bfloat16):
                sampled = layer(x.bfloat16()).float()
            with lm.disable_adapter(), cast_parameters(lm, torch.bfloat16):
                floor = layer(x.bfloat16()).float()
            return (sampled - floor).flatten()

        def corr(a: torch.Tensor) -> float:
            return torch.corrcoef(torch.stack([a, update]))[0, 1].item()

        seen = bf16_update(merge=True)
        assert torch.equal(seen, bf16_update(merge=False)), "asked to merge, it must still sample unmerged"
        # bfloat16 rounds every activation (to 0.4% of it), so the 0.1% update arrives with noise:
        # correlations of 0.68-0.75 over three draws of x. A bfloat16 merged weight of the trained
        # SmolLM2 policy kept 3% of its update (docs/configuration.md, rollout.sampling_dtype).
        assert corr(seen) > 0.6


def test_a_half_precision_merge_is_refused_by_name():
    model = get_peft_model(
        tiny_llama().to(torch.bfloat16), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"])
    )
    assert "held in torch.bfloat16" in merge_blocker(model)
    assert merge_blocker(get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"]))) is None
    assert "held in torch.float16" in merge_blocker(
        get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"])), torch.float16
    )
    with pytest.raises(ValueError, match="held in torch.bfloat16"), merged_adapters(model):
        pass


@pytest.mark.parametrize("value", ["int8", "bf16", "float64"])
def test_a_bad_sampling_dtype_is_refused_naming_it_and_the_allowed_ones(tmp_path, value):
    cfg = compose_config([*TINY, f"rollout.sampling_dtype={value}"], tmp_path)
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg)
    message = str(caught.value)
    assert f"rollout.sampling_dtype='{value}'" in message
    assert all(name in message for name in SAMPLING_DTYPES)


@pytest.mark.parametrize("dtype, calls", [("bfloat16", 1), ("null", 0)])
def test_rollout_sampling_dtype_reaches_generation(tmp_path, monkeypatch, dtype, calls):
    import pama_lit.models.policy as policy_module

    cfg = compose_config([*TINY, f"rollout.sampling_dtype={dtype}"], tmp_path)
    module = build_module(cfg, build_rewards(cfg.objective.rewards))
    module.configure_model()
    seen = []

    def spy(model, target, keep=()):
        seen.append(target)
        return cast_parameters(model, target, keep=keep)

    monkeypatch.setattr(policy_module, "cast_parameters", spy)
    module.sample_rollout(["a b c", "d e"])
    assert seen == [torch.bfloat16] * calls


@pytest.mark.parametrize("extra", [[], ["conditioning=svd_lora"]], ids=["lora", "svd-lora"])
def test_train_runs_with_bf16_sampling_and_bf16_mixed(tmp_path, extra):
    out = tmp_path / "run"
    result = run_train(
        [*TINY, "iterations=2", "rollout.sampling_dtype=bfloat16", "trainer.precision=bf16-mixed", *extra],
        out,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "eval.json").read_text())
    assert record["iteration"] == 2
    assert all(math.isfinite(v["mean"]) for v in record["rewards"].values())
