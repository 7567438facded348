"""Start-up checks that need I/O but no model: run them before anything heavy loads.

``validate_config`` checks the config's values; :func:`preflight` then checks the world they point
at: that the output folder takes files, that a checkpoint to resume from is readable, safe and was
written for the same objectives, value heads and LoRA adapters, and that hub models and data sets
can be had (a few seconds, never the minutes of retries ``from_pretrained`` spends offline).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from pama_lit.infra.checkpointing import load_checkpoint_file, run_state
from pama_lit.run import run_folder
from pama_lit.run.config import ConfigError
from pama_lit.training.combiners import COMBINERS

log = logging.getLogger(__name__)


def preflight(cfg: DictConfig, ckpt_path: str | None) -> dict[str, Any] | None:
    """Every I/O check of a run, in the order a user would fix them.

    Returns:
        the checkpoint's ``pama`` section (``ckpt_path``), read once here; None without one.

    Raises:
        ConfigError: unwritable output folder; a checkpoint for other objectives, value heads or
            LoRA adapters, or with no iterations left to train.
        RunFolderError: the folder holds a finished run, or another run's results.
        CheckpointError: a missing, damaged or unsafe checkpoint.
        HubModelUnavailable: a hub model or data set that cannot be had.
    """
    folder = Path(cfg.paths.output_dir)
    check_output_dir(folder)
    if run_folder.is_launching_process():
        run_folder.check_folder(folder, ckpt_path)  # what the folder holds first, as Hydra's callback does
    state = check_checkpoint(ckpt_path, cfg) if ckpt_path is not None else None
    check_hub_sources(cfg)
    return state


def check_output_dir(folder: Path) -> None:
    """Create ``folder`` and write (then remove) a probe file in it."""
    probe = folder / f".write_probe.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"paths.output_dir={str(folder)!r} is not writable ({err.strerror or err}); "
            "choose another folder with hydra.run.dir=..."
        ) from None


def check_checkpoint(path: str, cfg: DictConfig) -> dict[str, Any]:
    """The checkpoint loads with ``weights_only=True`` and was written for this run's objectives,
    value heads and LoRA adapters (or SVD-LoRA's: ``conditioning=svd_lora`` on both sides).

    Returns:
        its ``pama`` section.
    """
    checkpoint = load_checkpoint_file(path)
    state = run_state(checkpoint, path)
    completed = state.get("completed_iterations")
    if completed is not None and int(completed) >= cfg.iterations:
        raise ConfigError(
            f"checkpoint {path!r} has {int(completed)} completed iterations and this run has "
            f"iterations={cfg.iterations}: there is nothing left to train; to continue it, set iterations= "
            f"above {int(completed)}"
        )
    objectives = [str(k) for k in cfg.objective.rewards]
    if list(state["objectives"]) != objectives:
        raise ConfigError(
            f"checkpoint {path!r} was written for objectives {list(state['objectives'])}, this run has "
            f"{objectives}; resume with the same objective= setting, or start a new run without ckpt_path"
        )
    saved = state.get("algorithm")
    name = cfg.algorithm.name
    if saved != name:
        heads = len(COMBINERS[name]().trained_objectives(objectives))
        saved_heads = len(COMBINERS[saved]().trained_objectives(objectives)) if saved in COMBINERS else None
        if saved_heads != heads:
            raise ConfigError(
                f"checkpoint {path!r} was written by algorithm={saved} ({saved_heads} value heads); "
                f"algorithm={name} needs {heads}; resume with algorithm={saved}"
            )
        log.warning(
            "checkpoint %s was written by algorithm=%s; continuing it with algorithm=%s", path, saved, name
        )
    saved_mode = state.get("conditioning", {"mode": "none"})["mode"]
    mode = cfg.conditioning.mode
    if "svd_lora" in (saved_mode, mode):
        if saved_mode != mode:
            raise ConfigError(
                f"checkpoint {path!r} was written with conditioning={saved_mode}, this run has "
                f"conditioning={mode}; resume with the same conditioning= setting"
            )
        return state  # SVD-LoRA adapters, not model.lora's: the module compares their settings when it loads
    check_adapters(path, checkpoint.get("state_dict") or {}, cfg.model)
    return state


def check_adapters(path: str, state_dict: dict, model: DictConfig) -> None:
    """The checkpoint's trainable weights fit ``model.lora``: LoRA on or off, its rank, its target modules.

    Read from the tensors' shapes: a LoRA ``A`` matrix is (r, in_features), so a checkpoint of another
    rank is refused here rather than by ``load_state_dict`` after the model has loaded.
    """
    if not any(not k.startswith("policy.value_head.") for k in state_dict):
        return  # no policy weights to compare (only a pama_lit checkpoint's value heads, or nothing)
    lora = model.lora
    enabled = lora.enabled
    a_keys = sorted(k for k in state_dict if ".lora_A." in k)
    if enabled != bool(a_keys):
        held = "LoRA adapters" if a_keys else "full-model weights (no LoRA adapters)"
        raise ConfigError(
            f"checkpoint {path!r} holds {held}, this run has model.lora.enabled={str(enabled).lower()}; "
            f"resume with model.lora.enabled={str(not enabled).lower()}"
        )
    if not enabled:
        return
    key = a_keys[0]
    shape = tuple(state_dict[key].shape)
    if shape[0] != lora.r:
        configured = (lora.r, *shape[1:])
        raise ConfigError(
            f"checkpoint {path!r} holds LoRA adapters of rank {shape[0]} ({key}: shape {shape}), this run "
            f"has model.lora.r={lora.r} (shape {configured}); resume with model.lora.r={shape[0]}"
        )
    targets = lora.target_modules
    # Plain module names only: peft also takes dotted suffixes and regular expressions.
    if isinstance(targets, ListConfig) and all("." not in str(t) for t in targets):
        saved = sorted({k.split(".lora_A.")[0].rsplit(".", 1)[-1] for k in a_keys})
        if saved != sorted(targets):
            raise ConfigError(
                f"checkpoint {path!r} holds LoRA adapters on {saved}, this run has "
                f"model.lora.target_modules={sorted(targets)}; resume with model.lora.target_modules={saved}"
            )


def check_hub_sources(cfg: DictConfig) -> None:
    """Fail within seconds when the policy or the prompt data come from an unreachable hub."""
    from pama_lit.infra.hub_access import require_hub_dataset, require_hub_model

    loader = cfg.model.loader
    if str(loader.get("_target_", "")).endswith("load_hub_model"):
        require_hub_model(
            loader.name_or_path,
            what="policy model",
            alternative=loader.get("embedded_alternative", "model=smollm2"),
            revision=loader.get("revision"),
        )
    source = cfg.data.get("source") or {}
    if str(source.get("_target_", "")).endswith("hub_dataset"):
        require_hub_dataset(source.path, alternative="data=tweets or data=chitchat (embedded)")
