"""Evaluate a finished run (or its reference policy) on held-out prompts and write its result file.

``python evaluate.py run_dir=outputs/... [policy=reference] [num_prompts=128] [seed=7]``

The run's own composed config (``<run_dir>/.hydra/config.yaml``) rebuilds the same model, rewards
and prompts; the exported adapter (or full model) and value heads in ``<run_dir>/final`` are loaded
on top. Sampling uses a fixed seed, so the same policy always gives the same responses.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from pama_lit.infra.atomic import write_json_atomic
from pama_lit.infra.checkpointing import (
    CheckpointError,
    check_safetensors_file,
    check_torch_file,
    load_checkpoint_file,
    load_safetensors_file,
)
from pama_lit.rewards import build_rewards
from pama_lit.run.callbacks import run_metadata
from pama_lit.run.results import eval_record
from pama_lit.run.train import build_module
from pama_lit.training.module import PamaModule

log = logging.getLogger(__name__)

POLICIES = ("trained", "reference")


def load_run_config(run_dir: Path) -> DictConfig:
    """The composed config a run saved (Hydra writes it to ``<run_dir>/.hydra/config.yaml``)."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run_dir must be the output folder of a `python train.py` run"
        )
    cfg = OmegaConf.load(path)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        if (
            cfg.data.get("_target_") == "pama_lit.data.prompts.PromptDataModule"
            and "split_seed" not in cfg.data
        ):
            # Runs from before data.split_seed split their prompts with data.seed: keep their held-out prompts.
            cfg.data.split_seed = cfg.data.get("seed", 0)
    return cfg


_UNFINISHED = "did the run finish? train.py writes final/ at its end"


def check_final(final_dir: Path, uses_lora: bool) -> list[Path]:
    """The exported weight files of ``final_dir``, each checked whole from its header (no model needed).

    Returns:
        The adapter file, or the full model's safetensors files.

    Raises:
        CheckpointError: a file is missing or damaged (truncated, random bytes...); the message names it.
    """
    if uses_lora:
        files = [final_dir / "adapter" / "adapter_model.safetensors"]
    else:
        files = sorted((final_dir / "model").glob("*.safetensors"))
        if not files:
            raise CheckpointError(
                f"exported model {str(final_dir / 'model')!r} holds no *.safetensors; {_UNFINISHED}"
            )
    for f in files:
        check_safetensors_file(f, "exported adapter" if uses_lora else "exported model", _UNFINISHED)
    check_torch_file(final_dir / "value_heads.pt", "value heads", _UNFINISHED)
    return files


def load_final_weights(module: PamaModule, final_dir: Path) -> None:
    """Load the exported adapter (or full model) and value heads into a freshly built module.

    Raises:
        CheckpointError: a file of ``final_dir`` is missing or damaged (the message names it).
    """
    policy, device = module.policy, str(module.device)
    what = "exported adapter" if policy.uses_lora else "exported model"
    state = {}
    for f in check_final(final_dir, policy.uses_lora):
        state.update(load_safetensors_file(f, device, what, _UNFINISHED))
    if policy.uses_lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(policy.lm, state)
    else:
        policy.lm.load_state_dict(state, strict=False)
    path = final_dir / "value_heads.pt"
    heads = load_checkpoint_file(path, module.device, "value heads", _UNFINISHED)
    if not isinstance(heads, dict) or not isinstance(heads.get("state_dict"), dict):
        raise CheckpointError(f"value heads {str(path)!r} hold no state_dict; {_UNFINISHED}")
    policy.value_head.load_state_dict(heads["state_dict"])


def log_dir(_root_: DictConfig) -> str:
    """Hydra's run folder for ``evaluate.py`` (the ``pama_evaluate_dir`` resolver of conf/evaluate.yaml).

    ``<run_dir>/.evaluate`` when ``run_dir`` is a ``train.py`` output folder; otherwise a folder in
    the system's temporary folder, so that a mistyped or missing ``run_dir`` creates nothing there
    (Hydra makes its run folder before :func:`evaluate` can report the mistake).
    """
    run_dir = OmegaConf.select(_root_, "run_dir", throw_on_missing=False)
    if run_dir is not None and (Path(str(run_dir)) / ".hydra" / "config.yaml").is_file():
        return str(Path(str(run_dir)) / ".evaluate")
    return str(Path(tempfile.gettempdir()) / "pama_lit-evaluate")


def evaluate(
    run_dir: str | Path,
    policy: str = "trained",
    num_prompts: int | None = None,
    seed: int | None = None,
    output: str | Path | None = None,
) -> dict[str, Any]:
    """Sample on the run's held-out prompts, score every objective, write and return the result.

    Args:
        run_dir: the output folder of a finished ``train.py`` run.
        policy: ``trained`` (the exported policy) or ``reference`` (adapters off: the baseline point).
        num_prompts: how many validation prompts (default: the run's ``data.val_size``). They are
            the first prompts of the split's shuffle: fewer are a subset of the run's held-out
            prompts, more add prompts the run trained on (a warning says so).
        seed: sampling seed (default: the run's ``eval.seed``).
        output: result file (default ``<run_dir>/eval.json`` or ``<run_dir>/reference/eval.json``).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r} is not one of {', '.join(POLICIES)}")
    run_dir = Path(run_dir).resolve()
    cfg = load_run_config(run_dir)
    with open_dict(cfg):
        if num_prompts is not None:
            if int(num_prompts) > cfg.data.val_size:
                log.warning(
                    "num_prompts=%d exceeds the run's data.val_size=%d: the extra %d prompts were training prompts",
                    num_prompts, cfg.data.val_size, int(num_prompts) - cfg.data.val_size,
                )  # fmt: skip
            cfg.data.val_size = int(num_prompts)
        if seed is not None:
            cfg.eval.seed = int(seed)
    if cfg.data.val_size < 1:
        raise ValueError(
            f"the run in {run_dir} has data.val_size={cfg.data.val_size} (no held-out prompts); give "
            "num_prompts=N to score it on N of its prompts (they were training prompts)"
        )
    if policy == "trained":  # before the model loads
        check_final(run_dir / "final", cfg.model.lora.enabled)
    module = build_module(cfg, build_rewards(cfg.objective.rewards))
    module.configure_model()
    if policy == "trained":
        load_final_weights(module, run_dir / "final")
    trainer = L.Trainer(
        accelerator=cfg.trainer.get("accelerator", "auto"),
        devices=1,
        precision=cfg.trainer.get("precision", "32-true"),
        logger=False,
        enable_checkpointing=False,
        default_root_dir=str(run_dir),
    )
    # A freshly built policy is the reference: LoRA's B matrices start at zero, and without LoRA
    # the weights are the base model's until the exported ones are loaded.
    trainer.validate(module, datamodule=instantiate(cfg.data), verbose=False)
    meta = run_metadata(trainer, module, policy)
    meta["run_dir"] = str(run_dir)
    meta["iteration"] = cfg.iterations if policy == "trained" else 0
    record = eval_record(module.last_eval, **meta)
    default = run_dir / ("eval.json" if policy == "trained" else "reference/eval.json")
    path = Path(output) if output else default
    write_json_atomic(path, record)
    log.info("Wrote %s", path)
    return record
