"""Benchmark (i): sampling in bfloat16 (``rollout.sampling_dtype``): its speed and how far it samples
from the policy PPO trains.

The embedded SmolLM2-135M-Instruct with the default LoRA (``conf/model/smollm2.yaml``, lora_B
randomised as after training), fp32 weights, 16 prompts (``common.PROMPTS`` twice), exactly 48 new
sampled tokens (the benchmark budget's), merged adapters, one process, variants in turn over several
rounds (the order alternating):

- speed: ``policy.generate`` with the weights' own dtype (fp32) against ``sampling_dtype=bfloat16``
  (the cast copy built and dropped inside each call, which the time includes);
- mismatch: the adapters' update scaled to a trained policy's size (``UPDATE_SIZE``); on the bfloat16 samples, each response token's log-probability under the sampler (a
  forward of the bfloat16 copy over the whole sequence) against the log-probability PPO takes for
  pi_old (the training forward: fp32 under ``trainer.precision=32-true``, bf16 autocast under
  ``bf16-mixed``). Reported per token: the mean log-ratio log p_sampler - log p_train (a k1 estimate
  of KL(sampler || trainer)), k3, the mean |ratio - 1| and the fraction of tokens whose ratio lies
  outside PPO's clip range [0.8, 1.2]; beside them the same between the two training precisions
  (how much bf16-mixed alone moves pi_old) and between an fp32 sampler and an fp32 trainer (the
  floor: 0 up to the KV cache's summation order); and, for scale, a bfloat16 sampler through merged
  weights (which ``merge_blocker`` refuses: the rounding erases the update) and the reference policy
  (adapters off), each against the fp32 trainer.

With ``--adapter <run>/final/adapter`` it also measures, on that trained policy, how much of each
LoRA layer's update a bfloat16 weight keeps, merged (``bf16(W + delta) - bf16(W)``) or apart.

Run: ``.venv/bin/python benchmarks/sampling_dtype.py [--adapter ...]`` (about 2 minutes with 1
thread, quiet machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PROMPTS,
    machine_info,
    median,
    print_table,
    quiet_logs,
    smollm2_lora_policy,
    write_result,
)

from pama_lit.core import ops  # noqa: E402
from pama_lit.models import load_embedded_smollm2, merged_adapters  # noqa: E402
from pama_lit.models.merging import _lora_layers, cast_parameters  # noqa: E402

CLIP = 0.2  # ppo.clip_coef's default
UPDATE_SIZE = 1.3e-3  # median |B @ A * scaling| / median |W| per layer; a trained policy's: 0.18% (--adapter)


def mismatch(sampler: torch.Tensor, trainer: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Per-token statistics of log p_sampler - log p_trainer over the response tokens in ``mask``."""
    log_ratio = (sampler - trainer)[mask].double()
    inverse = (-log_ratio).exp()  # p_trainer / p_sampler: what an importance weight would be
    return {
        "k1": log_ratio.mean().item(),
        "k3": (inverse - 1 + log_ratio).mean().item(),
        "mean_abs_ratio_minus_1": (inverse - 1).abs().mean().item(),
        "outside_clip": ((inverse - 1).abs() > CLIP).double().mean().item(),
        "max_abs_log_ratio": log_ratio.abs().max().item(),
        "tokens": int(mask.sum()),
    }


def loaded_model_with(adapter: Path) -> torch.nn.Module:
    from peft import PeftModel

    return PeftModel.from_pretrained(load_embedded_smollm2("float32").model, str(adapter))


@torch.no_grad()
def update_kept_in_bf16(model: torch.nn.Module) -> dict[str, float]:
    """How much of each LoRA layer's update ``delta`` survives in a bfloat16 weight, over all layers.

    merged: ``bf16(W + delta) - bf16(W)``, the update a merged bfloat16 weight carries; unmerged:
    ``bf16(delta)`` (an upper bound on the error of the float32 adapters' product, which sampling
    uses). Each as ||carried - delta|| / ||delta||; and the update's size, median |delta| / median |W|.
    """
    sq = merged = unmerged = 0.0
    sizes = []
    for _, layer in _lora_layers(model):
        weight = layer.get_base_layer().weight.float()
        delta = layer.get_delta_weight("default").float()
        carried = (weight + delta).bfloat16().float() - weight.bfloat16().float()
        sq += delta.pow(2).sum().item()
        merged += (carried - delta).pow(2).sum().item()
        unmerged += (delta.bfloat16().float() - delta).pow(2).sum().item()
        sizes.append((delta.abs().median() / weight.abs().median()).item())
    return {"merged_error": (merged / sq) ** 0.5, "unmerged_error": (unmerged / sq) ** 0.5,
            "update_size": median(sizes)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier)")
    parser.add_argument("--rounds", type=int, default=4, help="measured rounds (one warm-up round before)")
    parser.add_argument("--new-tokens", type=int, default=48, help="tokens sampled per response (exactly)")
    parser.add_argument(
        "--adapter",
        type=Path,
        help="a trained run's final/adapter: also measure how much of its update a bfloat16 merged weight keeps",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet_logs()
    info = machine_info()

    policy, lora, tokenizer = smollm2_lora_policy()
    # lora_B then scaled so that each layer's update has about a trained one's size (UPDATE_SIZE).
    with torch.no_grad():
        for _, layer in _lora_layers(policy.lm):
            ratio = (
                layer.get_delta_weight("default").abs().median()
                / layer.get_base_layer().weight.abs().median()
            )
            layer.lora_B["default"].weight.mul_(UPDATE_SIZE / ratio)
    batch = tokenizer(PROMPTS * 2, return_tensors="pt", padding=True)
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    eos = [tokenizer.eos_token_id]

    def generate(dtype: torch.dtype | None, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return policy.generate(ids, mask, eos_token_ids=eos, pad_token_id=tokenizer.pad_token_id,
                               max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                               sampling_dtype=dtype)  # fmt: skip

    variants = {"fp32 sampling": None, "bfloat16 sampling": torch.bfloat16}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    samples: dict[str, list[torch.Tensor]] = {name: [] for name in variants}
    for round_ in range(args.rounds + 1):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            start = time.perf_counter()
            out = generate(variants[name], seed=round_)
            elapsed = time.perf_counter() - start
            if round_:
                wall[name].append(elapsed)
                samples[name].append(out)
        print(f"round {round_}{' (warm-up)' if round_ == 0 else ''} done", flush=True)

    @torch.no_grad()
    def logprobs(responses: torch.Tensor, how: str) -> torch.Tensor:
        full = torch.cat([ids, responses], 1)
        full_mask = torch.cat([mask, torch.ones_like(responses, dtype=torch.bool)], 1)
        n = responses.shape[1]
        if how == "sampler bf16":  # what generate(sampling_dtype=bfloat16) decodes with: adapters unmerged
            with policy.sampling_weights(True, torch.bfloat16):
                logits = policy(full, full_mask, n)[0]
        elif how == "sampler bf16, merged":  # the merged bfloat16 weights the rule refuses
            with merged_adapters(policy.lm), cast_parameters(policy.lm, torch.bfloat16):
                logits = policy(full, full_mask, n)[0]
        elif how == "sampler fp32":
            with merged_adapters(policy.lm):
                logits = policy(full, full_mask, n)[0]
        elif how == "reference":  # the update's own size, for scale
            with policy.lm.disable_adapter():
                logits = policy(full, full_mask, n)[0]
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=how == "trainer bf16-mixed"):
                logits = policy(full, full_mask, n)[0]
        return ops.logprobs_from_logits(logits.float(), responses, 1.0)

    pairs = {
        "bf16 sampler vs fp32 trainer (32-true)": ("bfloat16 sampling", "sampler bf16", "trainer fp32"),
        "bf16 sampler vs bf16-mixed trainer": ("bfloat16 sampling", "sampler bf16", "trainer bf16-mixed"),
        "bf16-mixed trainer vs fp32 trainer": ("bfloat16 sampling", "trainer bf16-mixed", "trainer fp32"),
        "fp32 sampler vs fp32 trainer (floor)": ("fp32 sampling", "sampler fp32", "trainer fp32"),
        "bf16 merged sampler (refused) vs fp32 trainer": (
            "bfloat16 sampling",
            "sampler bf16, merged",
            "trainer fp32",
        ),
        "reference (adapters off) vs fp32 trainer": ("bfloat16 sampling", "reference", "trainer fp32"),
    }
    stats = {}
    for label, (source, a, b) in pairs.items():
        responses = torch.cat(samples[source])
        reps = len(samples[source])
        first = torch.cat([logprobs(r, a) for r in samples[source]])
        second = torch.cat([logprobs(r, b) for r in samples[source]])
        stats[label] = mismatch(first, second, torch.ones_like(responses, dtype=torch.bool))
        stats[label]["responses"] = reps * len(ids)

    erasure = update_kept_in_bf16(loaded_model_with(args.adapter)) if args.adapter else None
    fp32 = median(wall["fp32 sampling"])
    title = (f"SmolLM2 + LoRA r={lora['r']} (merged), batch {len(ids)}, {args.new_tokens} new tokens, "
             f"{args.threads} thread(s), medians of {args.rounds} rounds")  # fmt: skip
    print_table(
        ["variant", "wall s", "x fp32"], [[n, median(w), median(w) / fp32] for n, w in wall.items()], title
    )
    keys = ["k1", "k3", "mean_abs_ratio_minus_1", "outside_clip", "max_abs_log_ratio"]
    rows = [[label, *(f"{s[k]:.4g}" for k in keys), s["tokens"]] for label, s in stats.items()]
    print_table(["pair (on the first one's samples)", "k1 / token", "k3 / token", "mean |r - 1|",
                 f"|r - 1| > {CLIP}", "max |log r|", "tokens"], rows,
                "log-probability mismatch per response token")  # fmt: skip
    if erasure is not None:
        print(f"\n{args.adapter}: median |delta| / median |W| = {erasure['update_size']:.3g}; relative error of "
              f"the update a bfloat16 weight carries: merged {erasure['merged_error']:.3f}, "
              f"unmerged {erasure['unmerged_error']:.4f}")  # fmt: skip
    info["load_average_at_end"] = os.getloadavg()
    write_result("sampling_dtype", {"machine": info, "threads": args.threads, "rounds": args.rounds,
                                    "lora": lora, "batch": len(ids), "new_tokens": args.new_tokens,
                                    "wall_seconds": wall,
                                    "bf16_over_fp32_wall": median(wall["bfloat16 sampling"]) / fp32,
                                    "mismatch": stats, "adapter": str(args.adapter) if args.adapter else None,
                                    "update_kept_in_bf16": erasure})  # fmt: skip


if __name__ == "__main__":
    main()
