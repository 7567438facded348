"""Benchmark (c), memory: the update's peak with the chunked log-prob path against log_softmax + gather.

The embedded SmolLM2-135M-Instruct with vs_trl's LoRA (r=8, alpha 16, q/v), the 8 prompts of
``common.PROMPTS`` followed by 32 random response tokens, fp32: one policy forward with grad, the
response log-probs and the entropy metric (with grad enabled, as the fused rollout computes it), and
the backward. Two paths, in turn, one process:

- chunked: ``core.ops.logprobs_from_logits`` and ``entropy_from_logits`` (the project's);
- unchunked: ``log_softmax(logits).gather(labels)`` and a differentiable entropy, the path before.

The peak is the rise of the process's RSS high-water mark over the step. glibc's mmap threshold is
fixed at 64 KiB first (``mallopt``), so a freed tensor leaves the RSS at once and the high-water
mark is the live-tensor peak rather than the allocator's heap. ``--checkpointing`` turns on
activation checkpointing. Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/logprob_memory.py``
(under a minute).
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    PROMPTS,
    machine_info,
    median,
    peak_rss_mib,
    print_table,
    quiet_logs,
    reset_peak_rss,
    rss_mib,
)  # noqa: E402

from pama_lit.core import ops  # noqa: E402
from pama_lit.models import PolicyWithValueHeads, load_embedded_smollm2  # noqa: E402

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
NEW_TOKENS = 32


def unchunked_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def unchunked_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The entropy before (commit 0b83f56): a row at a time, differentiable."""
    rows = []
    for row in logits:
        logp = row.log_softmax(-1).clamp(min=torch.finfo(row.dtype).min)
        rows.append(-(logp.exp() * logp).sum(-1))
    return torch.stack(rows)


PATHS = {
    "chunked": (ops.logprobs_from_logits, ops.entropy_from_logits),
    "unchunked": (unchunked_logprobs, unchunked_entropy),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing on")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds per path (one warm-up first)")
    args = parser.parse_args()
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 65536)
    quiet_logs()
    info = machine_info()
    loaded = load_embedded_smollm2("float32")
    lora = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    policy = PolicyWithValueHeads(loaded.model, 1, lora=lora, gradient_checkpointing=args.checkpointing)
    policy.train()
    tok = loaded.tokenizer
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    responses = torch.randint(0, policy.lm.config.vocab_size, (len(PROMPTS), NEW_TOKENS))
    ids = torch.cat([enc.input_ids, responses], 1)
    mask = torch.cat([enc.attention_mask.bool(), torch.ones_like(responses, dtype=torch.bool)], 1)

    def step(path: str) -> float:
        logprobs_fn, entropy_fn = PATHS[path]
        reset_peak_rss()
        start = rss_mib()
        logits, values = policy(ids, mask, NEW_TOKENS)
        logprobs = logprobs_fn(logits, responses)
        entropy = entropy_fn(logits)
        del logits
        (values.sum() - logprobs.sum()).backward()
        rise = peak_rss_mib() - start
        del entropy
        policy.zero_grad(set_to_none=True)
        return rise

    rises = {path: [] for path in PATHS}
    for round_ in range(args.rounds + 1):
        for path in PATHS:
            rise = step(path)
            if round_:
                rises[path].append(rise)
    rows = [[path, median(r), min(r), max(r)] for path, r in rises.items()]
    print_table(["path", "median rise MiB", "min", "max"], rows,
                title=f"Forward + log-probs + entropy + backward, 8 x {ids.shape[1]} tokens, "
                      f"checkpointing {'on' if args.checkpointing else 'off'}")  # fmt: skip
    print(f"load average {info['load_average_at_start']} -> {__import__('os').getloadavg()}")


if __name__ == "__main__":
    main()
