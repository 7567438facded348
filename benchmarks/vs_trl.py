"""Benchmark (c): one PPO iteration of pama_lit against TRL 0.11.4's classic ``PPOTrainer``.

Equal settings on both sides: SmolLM2-135M-Instruct from the same safetensors (the project's cached
conversion of the embedded GGUF), the same 8 raw prompts of about 16 tokens, 32 new sampled tokens
(min_new_tokens=32, top_k=0, top_p=1, temperature 1), one PPO epoch of one minibatch of 8, a fixed
KL coefficient of 0.2, a length reward, fp32, Adam(W) at lr 1e-5, gradient norm clip 1.0, value
coefficient 0.1, clip ranges 0.2; full fine-tuning and LoRA r=8 (alpha 16) on q_proj and v_proj.
pama_lit runs plain PPO on one objective (``algorithm=morlhf objective=length``), as TRL does.
Two further pama_lit rows, not at equal settings and reported apart: the LoRA setting in bf16
autocast (``trainer.precision=bf16-mixed``), and with activation checkpointing
(``model.gradient_checkpointing=true``), which trades update time for peak memory.

The floor (``floor_lora``, ``floor_full``; ``run_floor``) is the bare work of the same iteration on
the same model, batch and adapters: a plain KV-cache decoding loop with ``torch.multinomial``, one
forward without grad (the reference) and one forward+backward with a cross-entropy loss. The report
sets pama_lit, TRL and the floor side by side phase by phase (sampling, scoring, update), all from
the same run. ``--floors-only`` runs the floors alone (quick; ``--device cuda`` on a GPU).

The peer runs in its own virtualenv (built on first use under the pama_lit cache: torch==2.13.0
first, then trl==0.11.4, peft, rich and transformers 5), so the project's environment is untouched.
Each variant runs in a fresh process (one warm-up iteration, then measured ones); the variants are
interleaved over several rounds and medians are reported. Peak RSS is each process's high-water mark.

Run: ``.venv/bin/python benchmarks/vs_trl.py`` (about 8 minutes; the first run adds the venv build).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROMPTS, ROOT, machine_info, median, print_table, write_result  # noqa: E402

NEW_TOKENS = 32
PEER_PACKAGES = ["trl==0.11.4", "peft", "rich", "transformers>=5,<6"]

# pama_lit overrides equal to the peer's settings; "lora" / "full" add the adapter choice.
EQUAL_SETTINGS = [
    "algorithm=morlhf",
    "objective=length",
    "model.chat_template=false",
    "rollout.batch_size=8",
    f"rollout.max_new_tokens={NEW_TOKENS}",
    f"rollout.min_new_tokens={NEW_TOKENS}",
    "rollout.top_k=0",
    "rollout.top_p=1.0",
    "rollout.temperature=1.0",
    "ppo.epochs=1",
    "ppo.num_minibatches=1",
    "ppo.kl.controller=fixed",
    "ppo.kl.init_coef=0.2",
    "ppo.kl.estimator=k1",
    "ppo.max_grad_norm=1.0",
    "ppo.vf_coef=0.1",
    "ppo.clip_coef=0.2",
    "ppo.vf_clip=0.2",
    "optimizer.lr=1e-5",
    f"objective.rewards.length.scale={NEW_TOKENS}",
    "diagnostics.every_n_iterations=0",  # TRL has no stationarity measurement
]
LORA = [
    "model.lora.r=8",
    "model.lora.alpha=16",
    "model.lora.dropout=0.0",
    "model.lora.target_modules=[q_proj,v_proj]",
]
FULL = ["model.lora.enabled=false"]

VARIANTS = {
    # name: (side, adapter, extra pama_lit overrides)
    "trl_lora": ("trl", "lora", []),
    "pama_lora": ("pama", "lora", []),
    "trl_full": ("trl", "full", []),
    "pama_full": ("pama", "full", []),
    # Not equal settings, reported apart: our bf16 default, and activation checkpointing for memory.
    "pama_lora_bf16": ("pama", "lora", ["trainer.precision=bf16-mixed"]),
    "pama_lora_ckpt": ("pama", "lora", ["model.gradient_checkpointing=true"]),
    # The floor: the bare work of an iteration on the same model and batch (``run_floor``).
    "floor_lora": ("floor", "lora", []),
    "floor_full": ("floor", "full", []),
}
FLOORS = ["floor_lora", "floor_full"]


# ----------------------------------------------------------------------------------- peer venv
def peer_python(venv: Path) -> Path:
    """The peer venv's python, building the venv first if needed (about 2 minutes, once)."""
    python = venv / "bin" / "python"
    stamp = venv / ".pama_lit_peer_ready"
    if stamp.is_file():
        return python
    print(f"building the TRL peer venv in {venv} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    # The CPU torch pin first: a bare torch requirement would pull a multi-GB CUDA build.
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, *PEER_PACKAGES], check=True)
    check = "import trl, torch, transformers, peft, rich; print(trl.__version__, transformers.__version__)"
    print(
        "peer:", subprocess.run([str(python), "-c", check], capture_output=True, text=True, check=True).stdout
    )
    stamp.write_text("ok\n")
    return python


# ------------------------------------------------------------------------------ pama_lit side
def run_pama(adapter: str, extra: list[str], iterations: int, warmup: int) -> dict:
    """In this process: build the module from the project's config and time its iterations."""
    from common import IterationClock, build_module, compose, quiet_logs

    quiet_logs()
    from pama_lit.rewards import build_rewards

    overrides = EQUAL_SETTINGS + (LORA if adapter == "lora" else FULL) + extra
    cfg = compose(overrides)
    module = build_module(cfg, build_rewards(cfg.objective.rewards))
    records = IterationClock(str(cfg.trainer.precision)).run(module, PROMPTS, iterations=warmup + iterations)[
        warmup:
    ]
    for r in records:
        r["response_tokens"] = NEW_TOKENS
    import torch

    for r in records:
        # Scoring: the reference and policy forwards after sampling (the rollout phase less generate),
        # the rewards and the advantages; the update is the rest (backward, optimizer, logging).
        r["score"] = r["phases"]["rollout"] - r["generate"] + r["phases"]["score"] + r["phases"]["advantages"]
        r["update"] = r["iteration"] - r["generate"] - r["score"]
    return {
        "records": records,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
        "overrides": overrides,
        "fused_forward": module.fused_forward,
    }


# ------------------------------------------------------------------------------------ the floor
def run_floor(adapter: str, iterations: int, warmup: int, device: str) -> dict:
    """In this process: the bare work of one iteration on the same model, batch and LoRA, timed by phase.

    ``generate``: a plain decoding loop (forward with the KV cache, ``torch.multinomial`` on the
    softmax, exactly ``NEW_TOKENS`` steps, no ``generate()`` machinery, no logits processors) through
    the base weights, which is what merged-LoRA sampling costs; ``score``: one forward without grad
    (the reference log-probs); ``update``: one forward and backward of the same sequences (LoRA
    r=8 on q/v, or every weight) with a cross-entropy loss on the response tokens. No optimizer
    step, no value head, no rewards: what no PPO implementation can skip.
    """
    import torch
    import torch.nn.functional as F
    from common import quiet_logs

    quiet_logs()
    from pama_lit.models.loading import load_embedded_smollm2

    loaded = load_embedded_smollm2("float32")
    model, tok = loaded.model.to(device), loaded.tokenizer
    tok.padding_side = "left"
    if adapter == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))  # fmt: skip
        base = model.disable_adapter  # sampling and the reference through the base weights
    else:
        base = contextlib.nullcontext
    model.train()  # as both trainers' updates run (no dropout in SmolLM2)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    ids, mask = enc.input_ids.to(device), enc.attention_mask.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    @torch.no_grad()
    def decode() -> torch.Tensor:
        from transformers import DynamicCache

        cache, step_ids, step_mask, out = DynamicCache(), ids, mask, []
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        for _ in range(NEW_TOKENS):
            logits = model(input_ids=step_ids, attention_mask=step_mask, position_ids=positions,
                           past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]  # fmt: skip
            step_ids = torch.multinomial(logits.float().softmax(-1), 1)
            out.append(step_ids)
            step_mask = torch.cat([step_mask, torch.ones_like(step_ids)], dim=1)
            positions = positions[:, -1:] + 1
        return torch.cat(out, dim=1)

    def inputs(responses: torch.Tensor) -> dict:
        full_mask = torch.cat([mask, torch.ones_like(responses)], dim=1)
        return dict(input_ids=torch.cat([ids, responses], dim=1), attention_mask=full_mask,
                    position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0), logits_to_keep=NEW_TOKENS + 1,
                    use_cache=False)  # fmt: skip

    torch.manual_seed(0)
    records = []
    for i in range(warmup + iterations):
        sync()
        t0 = time.perf_counter()
        with base():
            responses = decode()
        sync()
        t1 = time.perf_counter()
        with base(), torch.no_grad():
            model(**inputs(responses))
        sync()
        t2 = time.perf_counter()
        logits = model(**inputs(responses)).logits[:, :-1]
        F.cross_entropy(logits.flatten(0, 1), responses.flatten()).backward()
        del logits
        model.zero_grad(set_to_none=True)
        sync()
        t3 = time.perf_counter()
        if i >= warmup:
            records.append({"generate": t1 - t0, "score": t2 - t1, "update": t3 - t2, "iteration": t3 - t0,
                            "response_tokens": NEW_TOKENS})  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "records": records,
        "peak_rss_mib": peak,
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda"):
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


# ----------------------------------------------------------------------------------- driver
def run_variant(
    name: str,
    peer: Path | None,
    model_dir: Path,
    iterations: int,
    warmup: int,
    threads: int | None,
    device: str = "cpu",
) -> dict:
    side, adapter, extra = VARIANTS[name]
    if side == "trl":
        cmd = [str(peer), str(ROOT / "benchmarks" / "trl_peer.py"), "--model", str(model_dir),
               "--prompts", json.dumps(PROMPTS), "--mode", adapter, "--iterations", str(iterations),
               "--warmup", str(warmup), "--new-tokens", str(NEW_TOKENS)]  # fmt: skip
    elif side == "floor":
        cmd = [sys.executable, __file__, "--side", "floor", "--adapter", adapter, "--iterations", str(iterations),
               "--warmup", str(warmup), "--device", device]  # fmt: skip
    else:
        cmd = [sys.executable, __file__, "--side", "pama", "--adapter", adapter, "--extra", json.dumps(extra),
               "--iterations", str(iterations), "--warmup", str(warmup)]  # fmt: skip
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-4000:]}")
    line = next(x for x in reversed(out.stdout.splitlines()) if x.startswith("{"))
    result = json.loads(line)
    result["process_seconds"] = time.perf_counter() - start
    return result


def summarise(runs: list[dict]) -> dict:
    records = [r for run in runs for r in run["records"]]
    return {
        "iterations_measured": len(records),
        "generate_s": median(r["generate"] for r in records),
        "score_s": median(r["score"] for r in records),
        "update_s": median(r["update"] for r in records),
        "iteration_s": median(r["iteration"] for r in records),
        "peak_rss_mib": median(run["peak_rss_mib"] for run in runs),
    }


# pama_lit's fused forward runs the policy's forward with grad in scoring, so its update is the backward
# alone: only scoring + update compares like with like across the three sides.
PHASES = [
    ("sampling", ("generate_s",)),
    ("scoring", ("score_s",)),
    ("update", ("update_s",)),
    ("scoring + update", ("score_s", "update_s")),
    ("iteration", ("iteration_s",)),
]


def phase_table(summary: dict) -> dict:
    """Per adapter and phase: pama_lit's, TRL's and the floor's seconds and their ratios, one run's medians."""
    table = {}
    for adapter in ("lora", "full"):
        sides = {side: summary.get(f"{side}_{adapter}") for side in ("pama", "trl", "floor")}
        if sum(v is not None for v in sides.values()) < 2:
            continue
        rows = []
        for phase, keys in PHASES:
            t = {side: (sum(v[k] for k in keys) if v else float("nan")) for side, v in sides.items()}
            rows.append({"phase": phase, **{f"{s}_s": x for s, x in t.items()}, "pama/trl": t["pama"] / t["trl"],
                         "pama/floor": t["pama"] / t["floor"], "trl/floor": t["trl"] / t["floor"]})  # fmt: skip
        table[adapter] = rows
        print_table(["phase", "pama_lit s", "TRL s", "floor s", "pama/TRL", "pama/floor", "TRL/floor"],
                    [[r["phase"], r["pama_s"], r["trl_s"], r["floor_s"], r["pama/trl"], r["pama/floor"],
                      r["trl/floor"]] for r in rows],
                    title=f"By phase, {adapter} (floor: bare decode loop / one no-grad forward / one forward+backward)")  # fmt: skip
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--side", choices=["pama", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--adapter", choices=["lora", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--extra", default="[]", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the variants")
    parser.add_argument("--iterations", type=int, default=2, help="measured iterations per process")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up iterations per process")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--floors-only", action="store_true", help="run only the floor variants (quick, or on a GPU)"
    )
    parser.add_argument(
        "--device", default="cpu", help="the floors' device, e.g. cuda (the trainers run on the CPU)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads on both sides (default: cores)"
    )
    parser.add_argument("--peer-venv", type=Path, default=None, help="where the TRL venv lives or is built")
    args = parser.parse_args()

    if args.side == "pama":
        print(
            json.dumps(
                run_pama(args.adapter, json.loads(args.extra), args.iterations, args.warmup), default=float
            )
        )
        return
    if args.side == "floor":
        print(json.dumps(run_floor(args.adapter, args.iterations, args.warmup, args.device), default=float))
        return
    variants = FLOORS if args.floors_only else args.variants

    from pama_lit.infra.cache import cache_dir
    from pama_lit.models.loading import embedded_smollm2_dir

    model_dir = embedded_smollm2_dir()
    peer = None
    if any(VARIANTS[v][0] == "trl" for v in variants):
        peer = peer_python(args.peer_venv or cache_dir("benchmarks") / "trl-0.11.4-venv")
    machine = machine_info()
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for round_ in range(args.rounds):
        for name in variants:
            result = run_variant(
                name, peer, model_dir, args.iterations, args.warmup, args.threads, args.device
            )
            runs[name].append(result)
            its = ", ".join(f"{r['iteration']:.2f}" for r in result["records"])
            print(
                f"round {round_ + 1} {name}: iterations {its} s, peak {result['peak_rss_mib']:.0f} MiB",
                flush=True,
            )

    summary = {name: summarise(rs) for name, rs in runs.items()}
    rows = [
        [n, s["generate_s"], s["score_s"], s["update_s"], s["iteration_s"], s["peak_rss_mib"]]
        for n, s in summary.items()
    ]
    print_table(["variant", "generate s", "scoring s", "update s", "iteration s", "peak RSS MiB"], rows,
                title="Medians per iteration (batch 8, 32 new tokens)")  # fmt: skip
    ratios, ratio_rows = {}, []
    for ours, peer_name in [
        ("pama_lora", "trl_lora"),
        ("pama_full", "trl_full"),
        ("pama_lora_bf16", "trl_lora"),
        ("pama_lora_ckpt", "trl_lora"),
    ]:
        if ours in summary and peer_name in summary:
            a, b = summary[ours], summary[peer_name]
            r = {k: a[k] / b[k] for k in ("generate_s", "score_s", "update_s", "iteration_s", "peak_rss_mib")}
            if not VARIANTS[ours][2]:  # the targets hold at equal settings
                r["iteration_target_met"] = r["iteration_s"] <= 0.67
                r["memory_target_met"] = r["peak_rss_mib"] <= 0.8
            ratios[f"{ours}/{peer_name}"] = r
            ratio_rows.append([f"{ours}/{peer_name}", r["generate_s"], r["score_s"], r["update_s"],
                               r["iteration_s"], r["peak_rss_mib"]])  # fmt: skip
    if ratio_rows:
        print_table(["ratio", "generate", "scoring", "update", "iteration", "peak RSS"], ratio_rows,
                    title="pama_lit / TRL (targets at equal fp32 settings: iteration <= 0.67, peak RSS <= 0.8)")  # fmt: skip
    phases = phase_table(summary)
    machine["load_average_at_end"] = os.getloadavg()
    machine["torch_threads"] = args.threads or "default"
    write_result("vs_trl_floors" if args.floors_only else "vs_trl",
                 {"machine": machine, "settings": {"equal": EQUAL_SETTINGS, "lora": LORA, "full": FULL,
                  "new_tokens": NEW_TOKENS, "prompts": PROMPTS, "floor_device": args.device},
                  "summary": summary, "ratios": ratios, "phases": phases, "runs": runs})  # fmt: skip


if __name__ == "__main__":
    main()
