"""Does a static KV cache with ``torch.compile`` of the decoding step beat eager sampling here?

Issue 13 asks to measure it and keep it only if it wins at equal outputs. The embedded SmolLM2-135M,
fp32, the base weights (what merged-LoRA sampling runs on), batch 8 of the benchmark prompts, 32
new tokens. Three ways to decode, in one process, interleaved over rounds, medians:

- ``dynamic``: Hugging Face ``generate`` with its default dynamic cache (what pama_lit runs today);
- ``static``: ``generate`` with ``cache_implementation="static"``, eager;
- ``static+compile``: the same with the model's forward compiled by inductor (CPU: C++ kernels;
  on a GPU this is where CUDA graphs would come in). Its compile time is reported apart.

Equal outputs: greedy decoding must give the same tokens in all three (printed); sampled decoding
is then timed. Writes ``benchmarks/results/compiled_decoding.json``.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/compiled_decoding.py [--rounds 3] [--tokens 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROMPTS, ROOT, machine_info  # noqa: E402

from pama_lit.models import load_embedded_smollm2  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()

    loaded = load_embedded_smollm2("float32")
    model, tok = loaded.model.eval(), loaded.tokenizer
    tok.padding_side = "left"
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in PROMPTS[:8]]  # fmt: skip
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    common = dict(max_new_tokens=args.tokens, min_new_tokens=args.tokens, pad_token_id=tok.pad_token_id)

    def decode(mode: str, sample: bool) -> tuple[torch.Tensor, float]:
        kwargs = (
            dict(common, do_sample=sample, top_k=0, top_p=1.0) if sample else dict(common, do_sample=False)
        )
        if mode != "dynamic":
            kwargs["cache_implementation"] = "static"
        torch.manual_seed(0)
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**enc, **kwargs)
        return out[:, enc.input_ids.shape[1] :], time.perf_counter() - start

    eager_forward = model.forward
    compiled_forward = torch.compile(model.forward, dynamic=False)

    def use(mode: str) -> None:
        model.forward = compiled_forward if mode == "static+compile" else eager_forward

    greedy, compile_seconds = {}, None
    for mode in ("dynamic", "static", "static+compile"):
        use(mode)
        tokens, seconds = decode(mode, sample=False)
        if mode == "static+compile":
            compile_seconds = seconds  # the first call compiles (prefill and decode shapes)
            tokens, _ = decode(mode, sample=False)  # a second call: recompiles show up here too
        greedy[mode] = tokens
    equal = {mode: bool(torch.equal(greedy[mode], greedy["dynamic"])) for mode in greedy}
    print("greedy tokens equal to dynamic:", equal, flush=True)

    times: dict[str, list[float]] = {mode: [] for mode in greedy}
    for r in range(args.rounds):
        for mode in times:
            use(mode)
            _, seconds = decode(mode, sample=True)
            times[mode].append(seconds)
        print(f"round {r + 1}: " + ", ".join(f"{m} {t[-1]:.2f} s" for m, t in times.items()), flush=True)
    medians = {mode: statistics.median(t) for mode, t in times.items()}
    for mode, median in medians.items():
        print(
            f"{mode:>16}: {median:.2f} s for 8 x {args.tokens} tokens ({median / medians['dynamic']:.2f}x dynamic)"
        )
    print(f"compile (first static+compile call, greedy): {compile_seconds:.1f} s")
    out = {
        "machine": machine_info(),
        "threads": torch.get_num_threads(),
        "tokens": args.tokens,
        "rounds": args.rounds,
        "greedy_equal_to_dynamic": equal,
        "seconds": times,
        "median_seconds": medians,
        "ratio_to_dynamic": {m: v / medians["dynamic"] for m, v in medians.items()},
        "first_compiled_call_seconds": compile_seconds,
    }
    path = ROOT / "benchmarks" / "results" / "compiled_decoding.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
