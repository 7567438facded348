"""With rollout.temperature != 1, pi_old, pi_ref and pi_theta are the tempered (sampling) distributions."""

from __future__ import annotations

import torch
from conftest import compose_config

from pama_lit.rewards import LengthReward
from pama_lit.run.train import build_module

PROMPTS = ["Tell me a joke.", "What is the capital of France?"]


def test_rollout_and_update_logprobs_use_logits_over_the_temperature():
    cfg = compose_config(["model=tiny", "rollout.temperature=0.7", "rollout.max_new_tokens=6"])
    module = build_module(cfg, {"short": LengthReward(4.0, 0.0, 1.5), "long": LengthReward(2.0, 0.0, 1.0)})
    module.configure_model()
    torch.manual_seed(0)
    rollout, _ = module.sample_rollout(PROMPTS)
    m = rollout.response_mask
    with torch.no_grad():
        logits, _ = module.policy(rollout.input_ids, rollout.attention_mask, rollout.num_response)
        ref_logits = module.policy.reference_logits(
            rollout.input_ids, rollout.attention_mask, rollout.num_response
        )

    def tempered(x):
        return (x / 0.7).log_softmax(-1).gather(-1, rollout.responses.unsqueeze(-1)).squeeze(-1) * m

    torch.testing.assert_close(rollout.logprobs, tempered(logits))
    torch.testing.assert_close(rollout.ref_logprobs, tempered(ref_logits))
    update_logprobs = module.policy_forward(rollout, torch.arange(len(PROMPTS))).logprobs
    torch.testing.assert_close(update_logprobs * m, tempered(logits))
