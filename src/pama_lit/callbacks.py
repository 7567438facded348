"""Lightning callbacks: sample tables and evaluation result files."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from pama_lit.evaluation import append_jsonl, eval_record

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
        if batch_idx % self.every or not trainer.is_global_zero:
            return
        rollout = getattr(pl_module, "last_rollout", None)
        if rollout is None:
            return
        scores = getattr(pl_module, "last_scores", None)
        rows = []
        for b in range(min(self.num_samples, len(rollout.texts))):
            row = {"iteration": batch_idx, "prompt": rollout.prompts[b], "response": rollout.texts[b]}
            if scores is not None:
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
        summary = getattr(pl_module, "last_eval", None)
        if summary is None or not trainer.is_global_zero or trainer.sanity_checking:
            return
        record = eval_record(summary, **run_metadata(trainer, pl_module))
        append_jsonl(Path(trainer.default_root_dir) / "evaluations.jsonl", record)


def run_metadata(trainer, pl_module, policy: str = "trained") -> dict:
    """The run's identity in result files: algorithm, objectives, preference, iteration."""
    return {
        "run_dir": str(Path(trainer.default_root_dir).resolve()),
        "algorithm": pl_module.combiner.name,
        "objectives": list(pl_module.objectives),
        "preference": [round(float(w), 6) for w in pl_module.preference],
        "policy": policy,
        "iteration": pl_module.global_iteration,
        "seed": pl_module.eval_seed,
    }
