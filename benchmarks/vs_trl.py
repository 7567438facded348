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

The peer runs in its own virtualenv (built on first use under the pama_lit cache: torch==2.13.0
first, then trl==0.11.4, peft, rich and transformers 5), so the project's environment is untouched.
Each variant runs in a fresh process (one warm-up iteration, then measured ones); the variants are
interleaved over several rounds and medians are reported. Peak RSS is each process's high-water mark.

Run: ``.venv/bin/python benchmarks/vs_trl.py`` (about 8 minutes; the first run adds the venv build).
"""

from __future__ import annotations

import argparse
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
}


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

    return {
        "records": records,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
        "overrides": overrides,
        "fused_forward": module.fused_forward,
    }


# ----------------------------------------------------------------------------------- driver
def run_variant(
    name: str, peer: Path | None, model_dir: Path, iterations: int, warmup: int, threads: int | None
) -> dict:
    side, adapter, extra = VARIANTS[name]
    if side == "trl":
        cmd = [str(peer), str(ROOT / "benchmarks" / "trl_peer.py"), "--model", str(model_dir),
               "--prompts", json.dumps(PROMPTS), "--mode", adapter, "--iterations", str(iterations),
               "--warmup", str(warmup), "--new-tokens", str(NEW_TOKENS)]  # fmt: skip
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
        "update_s": median(r["update"] for r in records),
        "iteration_s": median(r["iteration"] for r in records),
        "peak_rss_mib": median(run["peak_rss_mib"] for run in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--side", choices=["pama"], help=argparse.SUPPRESS)
    parser.add_argument("--adapter", choices=["lora", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--extra", default="[]", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the variants")
    parser.add_argument("--iterations", type=int, default=2, help="measured iterations per process")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up iterations per process")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
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

    from pama_lit.infra.cache import cache_dir
    from pama_lit.models.loading import embedded_smollm2_dir

    model_dir = embedded_smollm2_dir()
    peer = None
    if any(VARIANTS[v][0] == "trl" for v in args.variants):
        peer = peer_python(args.peer_venv or cache_dir("benchmarks") / "trl-0.11.4-venv")
    machine = machine_info()
    runs: dict[str, list[dict]] = {v: [] for v in args.variants}
    for round_ in range(args.rounds):
        for name in args.variants:
            result = run_variant(name, peer, model_dir, args.iterations, args.warmup, args.threads)
            runs[name].append(result)
            its = ", ".join(f"{r['iteration']:.2f}" for r in result["records"])
            print(
                f"round {round_ + 1} {name}: iterations {its} s, peak {result['peak_rss_mib']:.0f} MiB",
                flush=True,
            )

    summary = {name: summarise(rs) for name, rs in runs.items()}
    rows = [
        [n, s["generate_s"], s["update_s"], s["iteration_s"], s["peak_rss_mib"]] for n, s in summary.items()
    ]
    print_table(["variant", "generate s", "update s", "iteration s", "peak RSS MiB"], rows,
                title="Medians per iteration (batch 8, 32 new tokens, CPU)")  # fmt: skip
    ratios, ratio_rows = {}, []
    for ours, peer_name in [
        ("pama_lora", "trl_lora"),
        ("pama_full", "trl_full"),
        ("pama_lora_bf16", "trl_lora"),
        ("pama_lora_ckpt", "trl_lora"),
    ]:
        if ours in summary and peer_name in summary:
            a, b = summary[ours], summary[peer_name]
            r = {k: a[k] / b[k] for k in ("generate_s", "update_s", "iteration_s", "peak_rss_mib")}
            if not VARIANTS[ours][2]:  # the targets hold at equal settings
                r["iteration_target_met"] = r["iteration_s"] <= 0.67
                r["memory_target_met"] = r["peak_rss_mib"] <= 0.8
            ratios[f"{ours}/{peer_name}"] = r
            ratio_rows.append(
                [f"{ours}/{peer_name}", r["generate_s"], r["update_s"], r["iteration_s"], r["peak_rss_mib"]]
            )
    print_table(["ratio", "generate", "update", "iteration", "peak RSS"], ratio_rows,
                title="pama_lit / TRL (targets at equal fp32 settings: iteration <= 0.67, peak RSS <= 0.8)")  # fmt: skip
    machine["load_average_at_end"] = os.getloadavg()
    machine["torch_threads"] = args.threads or "default"
    write_result("vs_trl", {"machine": machine, "settings": {"equal": EQUAL_SETTINGS, "lora": LORA, "full": FULL,
                 "new_tokens": NEW_TOKENS, "prompts": PROMPTS}, "summary": summary, "ratios": ratios,
                 "runs": runs})  # fmt: skip


if __name__ == "__main__":
    main()
