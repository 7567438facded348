"""Benchmark (a): the cost of one PPO iteration by algorithm and number of objectives.

``noon_ppo`` (one objective) against ``pama``, ``pama_batch``, ``morlhf``, ``mgda_ub`` and ``mgda`` at
n = 2, 4 and 8 objectives, all in one process on the embedded SmolLM2-135M with the project's default
LoRA (r=16 on all seven projections), batch 8 of the same 8 prompts, exactly 32 new sampled tokens,
one PPO epoch of 2 minibatches of 4 (the combine step, and MGDA's n backward passes, run twice per
iteration), fp32, CPU. The objectives are rule rewards, so reward models do not dominate:
LengthReward at several scales alternating with character-class fractions (vowels, spaces, ...),
which disagree with each other often enough for the MGDA solves to do real work.

Every variant shares one frozen base model (``common.SharedBaseLoader``) and owns its adapters and
value heads. One round runs one iteration of every variant in turn, so the variants are interleaved
in time; the first round is a warm-up. Reported per variant: medians over the measured rounds of the
iteration time, its update phase, the weighting step (``train/time/pareto_solve``) and the MGDA
per-objective backward passes (``train/time/objective_grads``); ratios to noon_ppo's medians from
the same run; the peak RSS during the iteration and its rise over the RSS at the iteration's start.

Targets: pama at most 1.05x noon_ppo at n=2 and at most 1.10x at n=8.
Run: ``.venv/bin/python benchmarks/iteration_cost.py`` (about 8 minutes on a quiet 2-core machine, 15 with ``--threads 1`` beside other work).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PROMPTS,
    IterationClock,
    SharedBaseLoader,
    build_module,
    compose,
    machine_info,
    median,
    print_table,
    quiet_logs,
    write_result,
)

from pama_lit.rewards import LengthReward, Reward  # noqa: E402

ALGORITHMS = ["pama", "pama_batch", "morlhf", "mgda_ub", "mgda"]
SETTINGS = [
    "rollout.batch_size=8",
    "rollout.max_new_tokens=32",
    "rollout.min_new_tokens=32",
    "ppo.epochs=1",
    "ppo.num_minibatches=2",
    "trainer.precision=32-true",
    "diagnostics.every_n_iterations=0",  # the algorithms' own cost, without the stationarity measurement
]
CHAR_CLASSES = {
    "vowels": set("aeiouAEIOU"),
    "spaces": set(" "),
    "punct": set(".,;:!?'\"-"),
    "upper": set("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
}


class CharFraction(Reward):
    """Fraction of the response's characters in a class: a cheap rule reward that conflicts with length."""

    def __init__(self, chars: set[str]) -> None:
        self.chars = chars

    def score(self, prompts, responses, response_lengths):
        return [sum(c in self.chars for c in r) / max(len(r), 1) for r in responses]


def rule_rewards(n: int) -> dict[str, Reward]:
    """n rule rewards: length at scales 16, 32, ... alternating with character-class fractions."""
    rewards: dict[str, Reward] = {}
    classes = list(CHAR_CLASSES.items())
    for i in range(n):
        if i % 2 == 0:
            scale = 16.0 * (i // 2 + 1)
            rewards[f"length{int(scale)}"] = LengthReward(scale=scale, low=0.0, high=1.5)
        else:
            name, chars = classes[(i // 2) % len(classes)]
            rewards[name] = CharFraction(chars)
    return rewards


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (after one warm-up round)")
    parser.add_argument("--ns", type=int, nargs="+", default=[2, 4, 8], help="numbers of objectives")
    parser.add_argument("--algorithms", nargs="+", default=ALGORITHMS, choices=ALGORITHMS)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's, the core count)"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    quiet_logs()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    machine = machine_info()
    loader = SharedBaseLoader()
    variants: dict[str, object] = {}
    meta: dict[str, dict] = {}
    for name, n, algorithm in [("noon_ppo/1", 1, "noon_ppo")] + [
        (f"{a}/{n}", n, a) for n in args.ns for a in args.algorithms
    ]:
        cfg = compose(SETTINGS + [f"algorithm={algorithm}"])
        variants[name] = build_module(cfg, rule_rewards(n), model_loader=loader)
        meta[name] = {"algorithm": algorithm, "n": n}
    print(f"{len(variants)} variants, 1 warm-up + {args.rounds} measured rounds", flush=True)

    records: dict[str, list[dict]] = {name: [] for name in variants}
    clock = IterationClock("32-true")
    for round_ in range(args.rounds + 1):
        for name, module in variants.items():
            (record,) = clock.run(module, PROMPTS, iterations=1, measure_memory=True)
            if round_ > 0:
                records[name].append(record)
            print(f"round {round_} {name:14s} {record['iteration']:6.2f} s", flush=True)

    summary = {}
    for name, recs in records.items():
        phases = [r["phases"] for r in recs]
        summary[name] = {
            **meta[name],
            "iteration_s": median(r["iteration"] for r in recs),
            "update_s": median(r["update"] for r in recs),
            "pareto_solve_ms": 1e3 * median(p.get("pareto_solve", 0.0) for p in phases),
            "objective_grads_s": median(p.get("objective_grads", 0.0) for p in phases),
            "peak_rss_mib": median(r["peak_rss_mib"] for r in recs),
            "peak_over_start_mib": median(r["peak_over_start_mib"] for r in recs),
        }
    base = summary["noon_ppo/1"]
    for s in summary.values():
        s["iteration_ratio"] = s["iteration_s"] / base["iteration_s"]
        s["update_ratio"] = s["update_s"] / base["update_s"]
    rows = [
        [name, s["iteration_s"], s["iteration_ratio"], s["update_s"], s["update_ratio"], s["pareto_solve_ms"],
         s["objective_grads_s"], s["peak_rss_mib"], s["peak_over_start_mib"]]
        for name, s in summary.items()
    ]  # fmt: skip
    print_table(
        [
            "variant",
            "iter s",
            "x noon",
            "update s",
            "x noon",
            "solve ms",
            "obj grads s",
            "peak MiB",
            "rise MiB",
        ],
        rows,
        title="Medians per iteration (SmolLM2 + LoRA r=16, batch 8, 32 new tokens, 1 epoch x 2 minibatches)",
    )
    targets = {}
    for n, limit in [(2, 1.05), (8, 1.10)]:
        if f"pama/{n}" in summary:
            ratio = summary[f"pama/{n}"]["iteration_ratio"]
            targets[f"pama/{n}"] = {"ratio": ratio, "limit": limit, "met": ratio <= limit}
            print(
                f"target pama/{n} <= {limit}x noon_ppo: {ratio:.3f} ({'met' if ratio <= limit else 'MISSED'})"
            )
    machine["load_average_at_end"] = os.getloadavg()
    write_result(
        "iteration_cost",
        {
            "machine": machine,
            "torch_threads": torch.get_num_threads(),
            "settings": SETTINGS,
            "rounds": args.rounds,
            "summary": summary,
            "targets": targets,
            "records": records,
        },  # fmt: skip
    )


if __name__ == "__main__":
    main()
