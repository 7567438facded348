"""disable_dropout: in train mode the policy must be deterministic, or PPO's first ratio is not 1."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_llama_config
from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

from pama_lit.core.ops import logprobs_from_logits
from pama_lit.models.policy import PolicyWithValueHeads, disable_dropout


def tiny_llama(attention_dropout: float = 0.5) -> LlamaForCausalLM:
    return LlamaForCausalLM(tiny_llama_config(num_attention_heads=4, attention_dropout=attention_dropout))


def tiny_gpt2() -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5
    )
    return GPT2LMHeadModel(config)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2], ids=["llama-attention-float", "gpt2-modules"])
def test_train_mode_forwards_agree_once_dropout_is_disabled(build):
    torch.manual_seed(0)
    model = build().train()
    ids = torch.randint(0, 64, (2, 12))

    def two_forwards():
        return model(ids).logits, model(ids).logits

    a, b = two_forwards()
    assert not torch.equal(a, b), "the model has no active dropout: the test would prove nothing"
    disable_dropout(model)
    a, b = two_forwards()
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def lora_policy(no_dropout: bool) -> PolicyWithValueHeads:
    """The tiny Llama with LoRA dropout 0.05 (the paper configs' value), in train mode, B != 0."""
    torch.manual_seed(0)
    lora = {"r": 4, "alpha": 8, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
    # No attention dropout: any randomness left comes from the adapters.
    policy = PolicyWithValueHeads(
        tiny_llama(0.0), num_value_heads=2, lora=lora, no_dropout=no_dropout
    ).train()
    with torch.no_grad():
        # peft starts B at 0, where the adapters' output (and so their dropout) is invisible.
        for name, p in policy.lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return policy


def test_lora_dropout_is_disabled_so_the_first_ppo_ratio_is_exactly_one():
    ids = torch.randint(0, 64, (2, 12))
    mask = torch.ones_like(ids, dtype=torch.bool)
    responses = ids[:, -6:]

    def ratio(policy):
        old = logprobs_from_logits(policy(ids, mask, 6)[0], responses)  # pi_old at rollout time
        new = logprobs_from_logits(policy(ids, mask, 6)[0], responses)  # pi_theta in the first epoch
        return torch.exp(new - old)

    with_dropout = ratio(lora_policy(no_dropout=False))
    assert not torch.equal(with_dropout, torch.ones_like(with_dropout)), "LoRA dropout is not active"
    torch.testing.assert_close(ratio(lora_policy(no_dropout=True)), torch.ones(2, 6), rtol=0, atol=0)
