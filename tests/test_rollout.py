"""Rollout correctness: EOS masks, and batched left-padded log-probs against one unpadded forward per sample."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config
from tiny import TINY

from pama_lit.rewards import build_rewards
from pama_lit.run.train import build_module
from pama_lit.training.rollout import response_mask_from_eos


def naive_mask(responses: list[list[int]], eos: set[int]) -> list[list[bool]]:
    out = []
    for row in responses:
        seen, mask = False, []
        for tok in row:
            mask.append(not seen)
            seen = seen or tok in eos
        out.append(mask)
    return out


def test_response_mask_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    responses = torch.randint(0, 6, (64, 12), generator=g)
    eos = torch.tensor([2, 5])
    got = response_mask_from_eos(responses, eos)
    assert got.tolist() == naive_mask(responses.tolist(), {2, 5})
    # The sampled EOS itself is part of the response (pad == eos must not hide it).
    row = torch.tensor([[7, 2, 2, 2]])
    assert response_mask_from_eos(row, torch.tensor([2])).tolist() == [[True, True, False, False]]


def build_tiny_module(tmp_path, overrides=()):
    cfg = compose_config([*TINY, "rollout.max_new_tokens=7", *overrides], tmp_path)
    module = build_module(cfg, build_rewards(cfg.objective.rewards))
    module.configure_model()
    # Give the adapters and value heads non-zero weights so policy, reference and values differ.
    with torch.no_grad():
        for _name, p in module.policy.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    return module


def test_batched_logprobs_match_unpadded_forward(tmp_path):
    module = build_tiny_module(tmp_path)
    prompts = ["Hi", "Reply to this tweet in one short sentence: the weather is lovely today", "ok then"]
    torch.manual_seed(0)
    ro, _ = module.sample_rollout(prompts)
    queries, qmask = module.tokenize_prompts(prompts)
    assert ro.response_mask.any(-1).all()
    lm = module.policy.lm
    for b in range(len(prompts)):
        q = queries[b][qmask[b]]
        r = ro.responses[b][ro.response_mask[b]]
        ids = torch.cat([q, r]).unsqueeze(0)
        with torch.no_grad():
            logits = lm(input_ids=ids).logits[0, len(q) - 1 : -1]
            with lm.disable_adapter():
                ref = lm(input_ids=ids).logits[0, len(q) - 1 : -1]
        want = torch.log_softmax(logits.float(), -1).gather(-1, r[:, None])[:, 0]
        want_ref = torch.log_softmax(ref.float(), -1).gather(-1, r[:, None])[:, 0]
        n = len(r)
        torch.testing.assert_close(ro.logprobs[b, :n], want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ro.ref_logprobs[b, :n], want_ref, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(want, want_ref)
        assert (ro.logprobs[b, n:] == 0).all() and (ro.values[b, n:] == 0).all()
    assert ro.values.shape == (*ro.responses.shape, 2)


def test_validation_sampling_is_reproducible(tmp_path):
    """validation_step seeds its own sampling: the same policy gives the same responses and scores,
    whatever the global RNG state (training draws from it between two evaluations)."""
    module = build_tiny_module(tmp_path)
    prompts = ["a b c", "d e f g", "Tell me a joke.", "Why is the sky blue?"]
    runs = []
    for global_seed in (0, 99):
        torch.manual_seed(global_seed)
        module.on_validation_epoch_start()
        module.validation_step({"prompt": prompts}, 0)
        runs.append([dict(r) for r in module._val_records])
    assert [r["response"] for r in runs[0]] == [r["response"] for r in runs[1]]
    assert runs[0] == runs[1]
    # The seed is the policy's only common cause: another batch index samples other responses.
    module.on_validation_epoch_start()
    module.validation_step({"prompt": prompts}, 1)
    assert [r["response"] for r in module._val_records] != [r["response"] for r in runs[0]]


def test_validation_records_the_reference_logprob_of_each_response(tmp_path):
    """The fluency log-prob is log pi_ref (adapters off) summed over exactly the response tokens."""
    from pama_lit.run.results import summarise

    module = build_tiny_module(tmp_path)
    prompts = ["Hi", "Reply to this tweet in one short sentence: the weather is lovely today", "ok then"]
    module.on_validation_epoch_start()
    module.validation_step({"prompt": prompts}, 0)
    records = module._val_records
    with torch.random.fork_rng():
        torch.manual_seed(module.eval_seed)  # validation_step's seed for batch 0: the same responses
        ro, _ = module.sample_rollout(prompts)
    queries, qmask = module.tokenize_prompts(prompts)
    lm = module.policy.lm
    total, tokens = 0.0, 0
    for b in range(len(prompts)):
        q = queries[b][qmask[b]]
        r = ro.responses[b][ro.response_mask[b]]
        with torch.no_grad(), lm.disable_adapter():
            logits = lm(input_ids=torch.cat([q, r]).unsqueeze(0)).logits[0, len(q) - 1 : -1]
        want = torch.log_softmax(logits.float(), -1).gather(-1, r[:, None]).sum().item()
        assert records[b]["response"] == ro.texts[b] and records[b]["length"] == len(r)
        assert records[b]["ref_logprob"] == pytest.approx(want, abs=1e-3)
        total, tokens = total + want, tokens + len(r)
    summary = summarise(records, module.objectives, module.eval_samples)
    assert summary["fluency"]["ref_logprob"] == pytest.approx(total / tokens, abs=1e-4)
