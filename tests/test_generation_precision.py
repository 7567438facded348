"""Sampling on the CPU runs in the weights' own dtype, also under bf16 autocast (which recast every
frozen weight at every decoding step and made bf16-mixed sampling slower than fp32)."""

from __future__ import annotations

import torch
from tiny import tiny_llama_config
from transformers import LlamaForCausalLM

from pama_lit.models.policy import PolicyWithValueHeads


def test_cpu_sampling_ignores_autocast():
    config = tiny_llama_config()
    torch.manual_seed(0)
    policy = PolicyWithValueHeads(LlamaForCausalLM(config), num_value_heads=1,
                                  lora={"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]})  # fmt: skip
    queries = torch.randint(0, 64, (3, 5))
    mask = torch.ones_like(queries, dtype=torch.bool)
    dtypes = set()
    policy.lm.get_output_embeddings().register_forward_hook(lambda mod, args, out: dtypes.add(out.dtype))

    with torch.autocast("cpu", dtype=torch.bfloat16):
        policy.generate(queries, mask, eos_token_ids=[63], pad_token_id=0, max_new_tokens=4)
        assert dtypes == {torch.float32}
        policy(torch.cat([queries, queries], 1), torch.cat([mask, mask], 1), num_response=5)
    assert dtypes == {torch.float32, torch.bfloat16}  # the forward passes keep autocast
