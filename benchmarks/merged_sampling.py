"""Benchmark (d): rollout sampling through unmerged LoRA adapters against merged weights.

The embedded SmolLM2-135M-Instruct with the default LoRA (``conf/model/smollm2.yaml``: r=16,
alpha=32, all seven projections; lora_B randomised, as after training: zeros would cost the same),
batch 8 (``common.PROMPTS``, left-padded, no chat template), exactly 32 new tokens (``--new-tokens``),
sampled, fp32.
In one process and in turn, over several rounds (the order alternating each round):

- unmerged: ``policy.generate(..., merge_adapters=False)``: the adapters' matmuls at every step;
- merged: ``policy.generate(..., merge_adapters=True)``: the merged copies built before and
  dropped after each call, which this time includes;
- base: the model with adapters disabled (the reference policy), the floor merged sampling aims at.

It also times the merge and restore alone (entering and leaving ``merged_adapters``), reports
process CPU time beside wall time (with one thread the steadier of the two on a shared machine),
the peak memory each call adds (in a pass of its own) and whether merged and unmerged sampling gave
the same tokens for the same seed. Run: ``.venv/bin/python benchmarks/merged_sampling.py`` or ``make bench-merge`` (about 1-2
minutes with 1 thread).
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
    peak_rss_mib,
    print_table,
    quiet_logs,
    reset_peak_rss,
    rss_mib,
    smollm2_lora_policy,
    write_result,
)

from pama_lit.models import merged_adapters  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (one warm-up round before)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens sampled per response (exactly)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet_logs()
    info = machine_info()

    policy, lora, tokenizer = smollm2_lora_policy()
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()

    def generate(merge: bool) -> torch.Tensor:
        torch.manual_seed(1)
        return policy.generate(ids, mask, eos_token_ids=[tokenizer.eos_token_id],
                               pad_token_id=tokenizer.pad_token_id, max_new_tokens=args.new_tokens,
                               min_new_tokens=args.new_tokens, merge_adapters=merge)  # fmt: skip

    def base() -> torch.Tensor:
        with policy.lm.disable_adapter():
            return generate(merge=False)

    def merge_restore() -> None:
        with merged_adapters(policy.lm):
            pass

    variants = {"unmerged": lambda: generate(False), "merged": lambda: generate(True), "base": base,
                "merge+restore only": merge_restore}  # fmt: skip
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    tokens = {}
    for round_ in range(args.rounds + 1):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            out = variants[name]()
            elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            if round_ == 0:  # warm-up
                tokens[name] = out
                continue
            wall[name].append(elapsed)
            cpu[name].append(elapsed_cpu)
        print(f"round {round_}{' (warm-up)' if round_ == 0 else ''} done", flush=True)
    # Memory in a pass of its own: reset_peak_rss trims the heap, which would put page faults into the timings.
    rise = {}
    for name, fn in variants.items():
        reset_peak_rss()
        before = rss_mib()
        fn()
        rise[name] = peak_rss_mib() - before

    unmerged, unmerged_cpu = median(wall["unmerged"]), median(cpu["unmerged"])
    rows = [[name, median(wall[name]) * 1e3, median(wall[name]) / unmerged, median(cpu[name]) * 1e3,
             median(cpu[name]) / unmerged_cpu, rise[name]] for name in variants]  # fmt: skip
    same = torch.equal(tokens["merged"], tokens["unmerged"])
    title = (f"SmolLM2 + LoRA r={lora['r']} on {len(lora['target_modules'])} projections, batch {len(PROMPTS)}, "
             f"{args.new_tokens} new tokens, {args.threads} thread(s), medians of {args.rounds} rounds")  # fmt: skip
    headers = ["variant", "wall ms", "x unmerged", "cpu ms", "x unmerged", "peak rise MiB"]
    print_table(headers, rows, title)
    ratio, ratio_cpu = median(wall["merged"]) / unmerged, median(cpu["merged"]) / unmerged_cpu
    print(f"\nmerged / unmerged (merge and restore included): wall {ratio:.3f}, cpu {ratio_cpu:.3f}")
    print(f"same tokens merged vs unmerged (same seed): {same}")
    info["load_average_at_end"] = os.getloadavg()
    info["env"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "THP_MEM_ALLOC_ENABLE")}
    name = "merged_sampling" + ("" if args.new_tokens == 32 else f"_{args.new_tokens}_tokens")
    name += "_thp" if os.environ.get("THP_MEM_ALLOC_ENABLE") == "1" else ""
    write_result(name, {"machine": info, "threads": args.threads, "rounds": args.rounds,
                                     "lora": lora, "batch": len(PROMPTS),
                                     "new_tokens": args.new_tokens,
                                     "wall_seconds": wall, "cpu_seconds": cpu, "peak_rise_mib": rise,
                                     "merged_over_unmerged_wall": ratio, "merged_over_unmerged_cpu": ratio_cpu,
                                     "same_tokens": same})  # fmt: skip


if __name__ == "__main__":
    main()
