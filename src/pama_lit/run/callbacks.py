"""Lightning callbacks: sample tables and evaluation result files."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import lightning as L

from pama_lit.run.results import append_jsonl, eval_record

log = logging.getLogger(__name__)


class SampleTable(L.Callback):
    """Every ``every_n_iterations``, log a table of sample responses with their scores.

    Always appends to ``<output_dir>/samples.jsonl``; with a W&B logger also logs a ``samples``
    table through ``WandbLogger.log_text``.
    """

    def __init__(self, every_n_iterations: int = 10, num_samples: int = 4) -> None:
        self.every = max(1, int(every_n_iterations))
        self.num_samples = num_samples

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """``outputs``: ``PamaModule.training_step``'s ``{"rollout": Rollout, "scores": (B,K)}``."""
        if batch_idx % self.every or not trainer.is_global_zero:
            return
        rollout, scores = outputs["rollout"], outputs["scores"]
        rows = []
        for b in range(min(self.num_samples, len(rollout.texts))):
            row = {"iteration": batch_idx, "prompt": rollout.prompts[b], "response": rollout.texts[b]}
            row.update({name: float(scores[b, i]) for i, name in enumerate(pl_module.objectives)})
            rows.append(row)
        for row in rows:
            append_jsonl(Path(trainer.default_root_dir) / "samples.jsonl", row)
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                columns = list(rows[0])
                logger.log_text(key="samples", columns=columns, data=[[r[c] for c in columns] for r in rows])


class EvaluationWriter(L.Callback):
    """After every validation, append the ``pama_lit.eval/1`` record to ``<output_dir>/evaluations.jsonl``."""

    def on_validation_end(self, trainer, pl_module) -> None:
        summary = pl_module.last_eval
        if summary is None or not trainer.is_global_zero or trainer.sanity_checking:
            return
        append_evaluation(trainer, pl_module, summary)


def append_evaluation(trainer, pl_module, summary: dict) -> None:
    """Append ``summary`` (``results.summarise``'s) to ``<output_dir>/evaluations.jsonl`` as this run's record."""
    record = eval_record(summary, **run_metadata(trainer, pl_module))
    append_jsonl(Path(trainer.default_root_dir) / "evaluations.jsonl", record)


class RankConsistency(L.Callback):
    """With several processes, check at the end of training that every rank holds the same weights.

    DDP keeps replicas identical only if every rank takes the same optimizer steps; a rank that
    skipped a step on its own, or a statistic left unreduced, makes them drift silently. Rank 0
    writes each rank's SHA-256 of the trainable weights to ``<output_dir>/rank_weights.json``; a
    mismatch raises. In one process it does nothing.
    """

    def on_train_end(self, trainer, pl_module) -> None:
        from pama_lit.infra import distributed
        from pama_lit.infra.atomic import write_json_atomic

        if distributed.world_size() == 1:
            return
        digest = hashlib.sha256()
        for key, tensor in sorted(pl_module.policy.trainable_state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        digests = distributed.gather_objects(digest.hexdigest())
        identical = len(set(digests)) == 1
        if trainer.is_global_zero:
            write_json_atomic(
                Path(trainer.default_root_dir) / "rank_weights.json",
                {"sha256": digests, "identical": identical},
            )
        if not identical:
            raise RuntimeError(f"ranks ended training with different weights (SHA-256 per rank: {digests})")


def run_metadata(trainer, pl_module, policy: str = "trained") -> dict:
    """The run's identity in result files: algorithm, objectives, preference, iteration; conditioned
    runs add ``conditioning`` and an algorithm label ending in its mode (``pama_prompt``)."""
    meta = {
        "run_dir": str(Path(trainer.default_root_dir).resolve()),
        "algorithm": pl_module.combiner.label,
        "objectives": list(pl_module.objectives),
        "preference": [round(float(w), 6) for w in pl_module.preference],
        "policy": policy,
        "iteration": pl_module.global_iteration,
        "seed": pl_module.eval_seed,
    }
    if pl_module.conditioning is not None:
        # A conditioned policy's points form a front of their own, apart from a per-preference sweep's.
        meta["algorithm"] += f"_{pl_module.conditioning.mode}"
        meta["conditioning"] = pl_module.conditioning_state()
    return meta
