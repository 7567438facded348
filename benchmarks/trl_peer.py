"""The peer side of benchmark (c): TRL 0.11.4's classic ``PPOTrainer``, run in its own virtualenv.

Started by ``vs_trl.py`` with the peer venv's python; imports only torch, transformers, peft and
trl, never pama_lit. Prints one JSON line with per-iteration generation, scoring and update times and the
process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="folder with the SmolLM2 safetensors and tokenizer")
    parser.add_argument("--prompts", required=True, help="JSON list of prompt strings")
    parser.add_argument("--mode", choices=["lora", "full"], required=True)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import torch
    from transformers import AutoTokenizer
    from trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer

    torch.manual_seed(0)
    prompts = json.loads(args.prompts)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    peft_config = None
    if args.mode == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                 task_type="CAUSAL_LM")  # fmt: skip
    model = AutoModelForCausalLMWithValueHead.from_pretrained(args.model, peft_config=peft_config,
                                                              torch_dtype=torch.float32)  # fmt: skip
    config = PPOConfig(
        batch_size=len(prompts),
        mini_batch_size=len(prompts),
        ppo_epochs=1,
        learning_rate=args.lr,
        init_kl_coef=0.2,
        adap_kl_ctrl=False,
        max_grad_norm=1.0,
        seed=0,
    )
    trainer = PPOTrainer(config, model, ref_model=None, tokenizer=tokenizer)
    queries = [tokenizer(p, return_tensors="pt").input_ids[0] for p in prompts]
    gen_kwargs = dict(
        min_new_tokens=args.new_tokens,
        max_new_tokens=args.new_tokens,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        pad_token_id=tokenizer.eos_token_id,
    )
    records = []
    for i in range(args.warmup + args.iterations):
        start = time.perf_counter()
        responses = trainer.generate(queries, return_prompt=False, batch_size=len(prompts), **gen_kwargs)
        generated = time.perf_counter()
        scores = [torch.tensor(len(r) / args.new_tokens, dtype=torch.float32) for r in responses]
        stats = trainer.step(queries, responses, scores)
        end = time.perf_counter()
        # Scoring: the policy and reference forwards without grad, the rewards and the advantages, by
        # TRL's own timers; the update is the rest of the step (the forward+backward and the optimizer).
        score = sum(
            float(stats[f"time/ppo/{k}"]) for k in ("forward_pass", "compute_rewards", "compute_advantages")
        )
        if i >= args.warmup:
            records.append({"generate": generated - start, "score": score, "update": end - generated - score,
                            "iteration": end - start, "response_tokens": [len(r) for r in responses]})  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"records": records, "peak_rss_mib": peak, "torch_threads": torch.get_num_threads(),
                      "versions": _versions()}))  # fmt: skip


def _versions() -> dict:
    import peft
    import torch
    import transformers
    import trl

    return {"trl": trl.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}  # fmt: skip


if __name__ == "__main__":
    main()
