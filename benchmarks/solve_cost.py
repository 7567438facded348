"""Benchmark (b): the weighting step alone, PAMA's closed form against the MGDA min-norm solve.

For n = 2..16 objectives it times, with medians over many repeats:

- closed form, token: ``combine_pama_token`` on (8, 128, n) advantages (PAMA's default step);
- closed form, batch: ``combine_pama_batch`` on the same tensors;
- MGDA on the token tensors: the n (8, 128) advantage maps taken as n gradient vectors: Gram
  matrix, min-norm weights (``pareto.min_norm_weights``), combination;
- MGDA on LoRA-sized gradients: n flat gradients of the default LoRA size (r=16 on all seven
  projections of SmolLM2-135M: 4.88M entries): Gram matrix, min-norm weights, combined gradient;
- the bare K x K solvers on that Gram matrix: ``pareto.min_norm_weights`` (exact for 2, Frank-Wolfe
  with away steps beyond) and torchjd's ``MGDAWeighting`` (plain Frank-Wolfe, Sener and Koltun).

Target: the closed form under 1 ms at n = 16. Run: ``.venv/bin/python benchmarks/solve_cost.py``
(about 2 minutes; ``--quick`` for a smoke run). Needs the ``bench`` extra (torchjd):
``pip install -e ".[bench]"``, which ``make bench-solve`` installs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, median, print_table, write_result  # noqa: E402

from pama_lit.core.mgda import combine_gradients, gram_matrix, solve_min_norm  # noqa: E402
from pama_lit.core.ops import noon  # noqa: E402
from pama_lit.core.pareto import combine_pama_batch, combine_pama_token, min_norm_weights  # noqa: E402

LORA_SIZE = 30 * 16 * (2 * (576 + 576) + 2 * (576 + 192) + 3 * (576 + 1536))  # layers x r x sum of (in + out)


def timed(fn, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few repeats, n in {2, 16}")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's, the core count)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ns = [2, 16] if args.quick else [2, 3, 4, 6, 8, 12, 16]
    token_repeats, lora_repeats = (20, 3) if args.quick else (200, 21)
    try:
        from torchjd.aggregation import MGDAWeighting
    except ImportError as e:
        raise SystemExit(
            f"solve_cost.py compares with torchjd's MGDA, which is not installed ({e}): "
            'install the bench extra, pip install -e ".[bench]" (make bench-solve does)'
        ) from e

    torchjd_mgda = MGDAWeighting()
    gen = torch.Generator().manual_seed(0)
    rows, results = [], []
    for n in ns:
        adv = noon(torch.randn(8, 128, n, generator=gen))
        mask = torch.ones(8, 128, dtype=torch.bool)
        mask[:, 100:] = False
        pref = torch.full((n,), 1 / n)
        ratio = 1 + 0.1 * torch.randn(8, 128, generator=gen)
        token_grads = adv.permute(2, 0, 1).contiguous()  # n gradient "vectors" of shape (8, 128)

        def mgda_tokens(g=token_grads, p=pref):
            sol = solve_min_norm(gram_matrix(g), p)
            return combine_gradients(g, sol.coefficients)

        lora = torch.randn(n, LORA_SIZE, generator=gen)
        lora_gram = gram_matrix(lora)
        lora_gram64 = lora_gram.double()

        def mgda_lora(g=lora, p=pref):
            sol = solve_min_norm(gram_matrix(g), p)
            return combine_gradients(g, sol.coefficients)

        record = {
            "n": n,
            "closed_form_token_ms": timed(lambda a=adv, p=pref: combine_pama_token(a, p), token_repeats),
            "closed_form_batch_ms": timed(
                lambda a=adv, m=mask, p=pref, r=ratio: combine_pama_batch(a, m, p, ratio=r), token_repeats
            ),
            "mgda_token_tensors_ms": timed(mgda_tokens, token_repeats),
            "mgda_lora_gradients_ms": timed(mgda_lora, lora_repeats, warmup=1),
            "min_norm_solver_ms": timed(lambda g=lora_gram: min_norm_weights(g), token_repeats),
            "torchjd_mgda_solver_ms": timed(lambda g=lora_gram64: torchjd_mgda(g), token_repeats),
        }
        del lora
        record["mgda_lora_over_closed_form"] = (
            record["mgda_lora_gradients_ms"] / record["closed_form_token_ms"]
        )
        results.append(record)
        rows.append([n, record["closed_form_token_ms"], record["closed_form_batch_ms"],
                     record["mgda_token_tensors_ms"], record["mgda_lora_gradients_ms"],
                     record["min_norm_solver_ms"], record["torchjd_mgda_solver_ms"]])  # fmt: skip
        print(f"n={n} done", flush=True)

    print_table(
        ["n", "closed token", "closed batch", "MGDA (8,128)", "MGDA LoRA", "solver KxK", "torchjd KxK"],
        rows,
        title=f"Weighting step, median ms (token tensors (8,128,n); LoRA gradients n x {LORA_SIZE:,})",
    )
    at16 = next((r for r in results if r["n"] == 16), None)
    target = None
    if at16 is not None:
        target = {"closed_form_token_ms_at_16": at16["closed_form_token_ms"], "target_ms": 1.0,
                  "met": at16["closed_form_token_ms"] < 1.0}  # fmt: skip
        print(f"\ntarget: closed form at n=16 under 1 ms: {at16['closed_form_token_ms']:.3f} ms "
              f"({'met' if target['met'] else 'MISSED'})")  # fmt: skip
    write_result(
        "solve_cost",
        {
            "machine": machine_info(),
            "torch_threads": torch.get_num_threads(),
            "lora_size": LORA_SIZE,
            "token_shape": [8, 128],
            "results": results,
            "target": target,
        },  # fmt: skip
    )


if __name__ == "__main__":
    main()
