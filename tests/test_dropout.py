"""disable_dropout: in train mode the policy must be deterministic, or PPO's first ratio is not 1."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from pama_lit.models.policy import disable_dropout


def tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attention_dropout=0.5,
    )
    return LlamaForCausalLM(config)


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
