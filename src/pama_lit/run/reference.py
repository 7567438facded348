"""One reference evaluation shared by runs that would evaluate the reference policy alike (``eval.reference``).

Every run evaluates the reference policy on its held-out prompts before training. The untrained
policy is the reference (LoRA's B starts at zero, dropout is off), so that evaluation depends only on
what decides the prompts, the sampling and the scoring, not on the algorithm, the seed or the
optimiser: the runs of a benchmark task or of a preference sweep repeat the same evaluation, minutes
each on a CPU. ``reference_key`` names it: a hash of the resolved config sections it depends on,
recorded in every ``reference/eval.json``. A run given ``eval.reference=<an eval.json>`` takes that
file instead of evaluating, after checking that its key is the run's own.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from pama_lit.run.config import ConfigError
from pama_lit.run.results import EVAL_FORMAT

# Keys of sections below that only training reads: leaving them out lets runs that differ in them share.
TRAINING_ONLY = {
    "data": ("seed", "batch_size", "num_train_batches"),
    "rollout": ("batch_size",),
    "eval": ("every_n_iterations", "reference"),
    "trainer": ("default_root_dir",),  # the run's folder
}
# Sections the reference evaluation depends on; anything in them not listed above counts (when in
# doubt a key counts: a key too many only stops two runs sharing).
SECTIONS = (
    "model",
    "objective",
    "reward",
    "rewards_on_error",
    "data",
    "rollout",
    "eval",
    "conditioning",
    "trainer",
)


def reference_key(cfg: DictConfig) -> str:
    """The identity of a run's reference evaluation: a SHA-256 of the resolved settings it depends on.

    The model, objectives and reward settings, the data and its split, the sampling, the evaluation
    seed and batch size, the Trainer (precision, devices: each process samples its own share of the
    prompts) and the conditioning; with conditioning also the preference, which then reaches the
    reference's prompts. Not the algorithm, seed, PPO, optimiser or iterations.
    """

    def plain(value: Any) -> Any:
        return (
            OmegaConf.to_container(value, resolve=True)
            if isinstance(value, DictConfig | ListConfig)
            else value
        )

    # Key by key, resolved in place: only what the key reads is resolved (the run's folder, say, is
    # Hydra's runtime folder, which resolves only inside a Hydra run).
    parts: dict[str, Any] = {}
    for section in SECTIONS:
        node = cfg.get(section)
        if isinstance(node, DictConfig):
            parts[section] = {k: plain(node[k]) for k in node if k not in TRAINING_ONLY.get(section, ())}
        else:
            parts[section] = plain(node)
    conditioning = cfg.get("conditioning")
    if conditioning is not None and conditioning.get("mode", "none") != "none":
        parts["preference"] = plain(cfg.get("preference"))
        parts["preference_grid"] = plain(cfg.get("preference_grid"))
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load_shared_reference(cfg: DictConfig) -> dict[str, Any] | None:
    """The reference evaluation ``eval.reference`` names, checked against this run; None when unset.

    Raises:
        ConfigError: the file is missing or unreadable, is not a reference-policy ``eval.json``, or
            was evaluated under other settings than this run's (its ``reference_key`` differs or, written
            before keys were recorded, is absent).
    """
    path = cfg.eval.get("reference")
    if not path:
        return None
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"eval.reference={path}: cannot read it as JSON ({err})") from None
    if (
        not isinstance(record, dict)
        or record.get("format") != EVAL_FORMAT
        or record.get("policy") != "reference"
    ):
        raise ConfigError(
            f"eval.reference={path} is not a reference-policy evaluation (a reference/eval.json in the "
            f"{EVAL_FORMAT} format with policy 'reference')"
        )
    if "reference_key" not in record:
        why = "records no reference_key (it was written before they were recorded), so it cannot be matched"
    elif record["reference_key"] != reference_key(cfg):
        why = (
            "was evaluated under another model, objectives, data, sampling, evaluation seed, precision "
            "or conditioning than this run's"
        )
    else:
        return record
    raise ConfigError(
        f"eval.reference={path} {why}: its scores would not be this run's reference. Leave "
        "eval.reference unset to evaluate the reference here"
    )
