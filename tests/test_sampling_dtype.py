"""``rollout.sampling_dtype``: sampling through a lower-precision copy of the (merged) weights.

Checked against an oracle (the merged model, built apart and cast whole to the dtype), for the weights'
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

from pama_lit.models.merging import SAMPLING_DTYPES, cast_parameters
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
    with cast_parameters(model, torch.bfloat16):
        inside = dict(model.named_parameters(remove_duplicate=False))
        assert {p.dtype for p in inside.values()} == {torch.bfloat16}
        assert all(not p.requires_grad for p in inside.values())
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


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "unmerged"])
def test_sampling_dtype_decodes_as_the_merged_model_cast_whole(merge):
    """Greedy tokens equal those of an oracle: the merged model built apart, cast whole to bfloat16."""
    policy = make_policy(dtype=torch.float32)
    oracle = copy.deepcopy(policy.lm).merge_and_unload().to(torch.bfloat16)
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
    if merge:  # the same merged weights, rounded once: the same tokens
        assert torch.equal(got, expected)
    else:  # bf16 LoRA matmuls round differently from a bf16 merged weight: most tokens agree
        assert (got == expected).float().mean() >= 0.5


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

    def spy(model, target):
        seen.append(target)
        return cast_parameters(model, target)

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
