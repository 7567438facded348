"""Evaluation summaries and result files (``eval.json``, its ``eval.responses.jsonl``, ``evaluations.jsonl``).

The file format ``pama_lit.eval/1`` is what ``python -m pama_lit.fronts`` and the notebook read.
Beside each result file, ``responses_path`` names the file of every response it summarises, one JSON
line each in the held-out prompts' order, so that responses can be read, scored again by another
judge, or compared prompt by prompt with another policy's (``paired_difference``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pama_lit.core import fluency
from pama_lit.infra.atomic import write_atomic, write_json_atomic

EVAL_FORMAT = "pama_lit.eval/1"


def mean_ci(values: list[float], z: float = 1.96) -> dict[str, Any]:
    """Mean, sample std and the normal-approximation 95% confidence interval of the mean."""
    n = len(values)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = z * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": n}


# The keys ``summarise`` returns: an eval record's measurements, apart from its run metadata.
SUMMARY_KEYS = ("num_prompts", "rewards", "kl_ref", "kl_ref_ci95", "response_length", "fluency", "samples")


def summarise(records: list[dict[str, Any]], objectives: list[str], num_samples: int) -> dict[str, Any]:
    """Per-objective mean with 95% CI, KL to the reference, response length, fluency and a few samples.

    Args:
        records: one dict per evaluated sample with ``prompt``, ``response``, ``scores``
            (objective -> float), ``kl_ref`` (sequence KL to pi_ref), ``ref_logprob`` (summed
            log pi_ref of the response tokens) and ``length`` (tokens).
        objectives: objective ids in order.
        num_samples: how many samples the summary keeps.

    Returns:
        The summary: ``num_prompts``, ``rewards`` (objective -> ``mean_ci``), ``kl_ref`` with its
        ``kl_ref_ci95``, ``response_length``, ``fluency`` (``ref_logprob``: mean log pi_ref per
        response token over all tokens; ``distinct2``; ``repeat_frac``, see ``pama_lit.core.fluency``)
        and ``samples``.
    """
    kl = mean_ci([r["kl_ref"] for r in records])
    responses = [r["response"] for r in records]
    return {
        "num_prompts": len(records),
        "rewards": {o: mean_ci([r["scores"][o] for r in records]) for o in objectives},
        "kl_ref": kl["mean"],
        "kl_ref_ci95": kl["ci95"],
        "response_length": mean_ci([float(r["length"]) for r in records])["mean"],
        "fluency": {
            "ref_logprob": fluency.mean_token_logprob(
                [r["ref_logprob"] for r in records], [r["length"] for r in records]
            ),
            "distinct2": fluency.distinct_n(responses, 2),
            "repeat_frac": fluency.repeat_fraction(responses),
        },
        "samples": [
            {"prompt": r["prompt"], "response": r["response"], "scores": r["scores"]}
            for r in records[:num_samples]
        ],
    }


# What a line of a responses file keeps of an evaluated sample (``summarise``'s records).
RESPONSE_KEYS = ("prompt", "response", "scores", "length", "kl_ref", "ref_logprob")


def responses_path(result: str | os.PathLike) -> Path:
    """The responses file of a result file: ``eval.json`` -> ``eval.responses.jsonl`` (same folder)."""
    result = Path(result)
    stem = result.name[: -len(".json")] if result.name.endswith(".json") else result.name
    return result.with_name(f"{stem}.responses.jsonl")


def write_result(
    path: str | os.PathLike, record: dict[str, Any], responses: list[dict[str, Any]] | None
) -> Path:
    """Write a result file and, with ``responses`` (the evaluation's records), its responses file first.

    Both atomically; the result file last, since its presence means the evaluation is complete (a
    crash between the two leaves a responses file without a result, never the reverse).
    """
    if responses is not None:
        lines = "".join(json.dumps({k: r[k] for k in RESPONSE_KEYS if k in r}) + "\n" for r in responses)
        write_atomic(responses_path(path), lines)
    return write_json_atomic(path, record)


def read_responses(result: str | os.PathLike) -> list[dict[str, Any]] | None:
    """The responses beside a result file, or None when it has none (written before they were)."""
    path = responses_path(result)
    if not path.is_file():
        return None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def paired_difference(
    policy: list[dict[str, Any]], reference: list[dict[str, Any]], objective: str, z: float = 1.96
) -> dict[str, Any]:
    """Mean over prompts of ``policy``'s score minus ``reference``'s on the same prompt, with its 95% interval.

    Pairing by prompt takes the prompts' own difficulty out of the comparison, so the interval is that
    of the policies' difference on these prompts (both sampled once per prompt), not of either mean.

    Raises:
        ValueError: the two were not evaluated on the same prompts in the same order.
    """
    if [r["prompt"] for r in policy] != [r["prompt"] for r in reference]:
        raise ValueError(
            f"paired_difference: the policy's {len(policy)} and the reference's {len(reference)} responses "
            "are not to the same prompts in the same order"
        )
    return mean_ci(
        [
            float(a["scores"][objective]) - float(b["scores"][objective])
            for a, b in zip(policy, reference, strict=True)
        ],
        z,
    )


def eval_record(summary: dict[str, Any], **meta: Any) -> dict[str, Any]:
    """A result object in the ``pama_lit.eval/1`` format: run metadata followed by the summary."""
    return {"format": EVAL_FORMAT, **meta, **summary}


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON object as a line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(obj) + "\n")
