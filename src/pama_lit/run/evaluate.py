"""Evaluate a finished run (or its reference policy) on held-out prompts and write its result file.

``python evaluate.py run_dir=outputs/... [policy=reference] [num_prompts=128] [seed=7]``

A conditioned run (``conditioning=prompt`` or ``svd_lora``) is one policy for every preference:
``preference=[0.7,0.3]`` evaluates it at that preference (written into every prompt, or set on the
SVD-LoRA adapters) and
``preference_grid.steps=S`` at every point of the simplex grid, each into
``<run_dir>/preferences/<weights>/eval.json``, which ``pama_lit.fronts`` reads as one point each.

The run's own composed config (``<run_dir>/.hydra/config.yaml``) rebuilds the same model, rewards
and prompts; the exported adapter (or full model) and value heads in ``<run_dir>/final`` are loaded
on top. Sampling uses a fixed seed, so the same policy always gives the same responses.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from pama_lit.core.preference import quantize_preferences, resolve_preference, simplex_grid
from pama_lit.infra.checkpointing import (
    CheckpointError,
    check_safetensors_file,
    check_torch_file,
    load_checkpoint_file,
    load_safetensors_file,
)
from pama_lit.rewards import build_rewards
from pama_lit.run.callbacks import run_metadata
from pama_lit.run.reference import reference_key
from pama_lit.run.results import eval_record, write_result
from pama_lit.run.schema import ADDED_KEYS, fill_added_keys
from pama_lit.run.train import SVD_LORA_FILE, build_module
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
        if filled := fill_added_keys(cfg):  # a run saved before these keys existed trained as they say
            log.info(
                "%s predates %s: read as %s",
                path, ", ".join(filled), ", ".join(f"{k}={ADDED_KEYS[k]}" for k in filled),
            )  # fmt: skip
        if (
            cfg.data.get("_target_") == "pama_lit.data.prompts.PromptDataModule"
            and "split_seed" not in cfg.data
        ):
            # Runs from before data.split_seed split their prompts with data.seed: keep their held-out prompts.
            cfg.data.split_seed = cfg.data.get("seed", 0)
    return cfg


_UNFINISHED = "did the run finish? train.py writes final/ at its end"


def check_final(final_dir: Path, uses_lora: bool, svd_lora: bool = False) -> list[Path]:
    """The exported weight files of ``final_dir``, each checked whole from its header (no model needed).

    Returns:
        The adapter file (LoRA's or SVD-LoRA's), or the full model's safetensors files.

    Raises:
        CheckpointError: a file is missing or damaged (truncated, random bytes...); the message names it.
    """
    uses_lora = uses_lora or svd_lora
    if svd_lora:
        files = [final_dir / "svd_lora" / SVD_LORA_FILE]
    elif uses_lora:
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
    what = "exported adapter" if policy.uses_lora or policy.svd_lora is not None else "exported model"
    state = {}
    for f in check_final(final_dir, policy.uses_lora, policy.svd_lora is not None):
        state.update(load_safetensors_file(f, device, what, _UNFINISHED))
    if policy.svd_lora is not None:
        try:
            policy.svd_lora.load_state_dict(state)
        except ValueError as err:
            raise CheckpointError(f"{what} in {str(final_dir)!r}: {err}") from None
    elif policy.uses_lora:
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


def conditioning_of(run_dir: Path, cfg: DictConfig) -> dict[str, Any]:
    """The conditioning the run's policy was trained with: ``final/conditioning.json`` (written with the
    exported weights), else the saved config's section, else none (runs from before conditioning)."""
    path = run_dir / "final" / "conditioning.json"
    if path.is_file():
        return json.loads(path.read_text())
    section = cfg.get("conditioning")
    return OmegaConf.to_container(section, resolve=True) if section is not None else {"mode": "none"}


def preference_folder(run_dir: Path, weights: list[float]) -> Path:
    """``<run_dir>/preferences/<w_1>-<w_2>-...``: where one preference's result file goes."""
    return run_dir / "preferences" / "-".join(f"{w:.4g}" for w in weights)


def evaluate(
    run_dir: str | Path,
    policy: str = "trained",
    num_prompts: int | None = None,
    seed: int | None = None,
    output: str | Path | None = None,
    preference: Any = None,
    grid_steps: int | None = None,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Sample on the run's held-out prompts, score every objective, write and return the result.

    Args:
        run_dir: the output folder of a finished ``train.py`` run.
        policy: ``trained`` (the exported policy) or ``reference`` (adapters off: the baseline point).
        num_prompts: how many validation prompts (default: the run's ``data.val_size``). They are
            the first prompts of the split's shuffle: fewer are a subset of the run's held-out
            prompts, more add prompts the run trained on (a warning says so).
        seed: sampling seed (default: the run's ``eval.seed``).
        output: result file (default ``<run_dir>/eval.json`` or ``<run_dir>/reference/eval.json``;
            with ``preference``, ``<run_dir>/preferences/<weights>/eval.json``).
        preference: a conditioned run only: the preference to evaluate at (a list in
            objective order, or a mapping by objective id), instead of the run's own.
        grid_steps: a conditioned run only: evaluate every point of ``simplex_grid(K, grid_steps)``,
            one result file each in ``<run_dir>/preferences/<weights>/eval.json``.

    Returns:
        the result record, or with ``grid_steps`` the list of records, one per grid point.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r} is not one of {', '.join(POLICIES)}")
    run_dir = Path(run_dir).resolve()
    cfg = load_run_config(run_dir)
    conditioning = conditioning_of(run_dir, cfg)
    objectives = list(cfg.objective.rewards)
    points = None
    if preference is not None or grid_steps is not None:
        if conditioning["mode"] == "none":
            raise ValueError(
                f"preference= and preference_grid.steps= evaluate a conditioned run (conditioning=prompt or "
                f"svd_lora); the run "
                f"in {run_dir} trained one policy for preference {list(cfg.preference or [])} (null = uniform): "
                "evaluate it without them"
            )
        if preference is not None and grid_steps is not None:
            raise ValueError("give either preference= or preference_grid.steps=, not both")
        if grid_steps is not None and output is not None:
            raise ValueError(
                "output= names one file; with preference_grid.steps each preference's result goes to "
                f"{run_dir}/preferences/<weights>/eval.json"
            )
        if grid_steps is not None:
            if grid_steps < len(objectives):
                raise ValueError(
                    f"preference_grid.steps={grid_steps}: must be an integer >= {len(objectives)} (the number of "
                    "objectives), so that every weight is a positive multiple of 1/steps"
                )
            points = simplex_grid(len(objectives), grid_steps)
        else:
            if isinstance(preference, DictConfig | ListConfig):
                preference = OmegaConf.to_container(preference, resolve=True)
            points = [resolve_preference(preference, objectives).tolist()]
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
    # The run's own sections with this evaluation's prompts and seed, as train.py keyed its reference
    # (evaluation_key), before the conditioning section gives way to the exported one.
    saved = cfg.copy()
    with open_dict(cfg):
        cfg.conditioning = conditioning
    if cfg.data.val_size < 1:
        raise ValueError(
            f"the run in {run_dir} has data.val_size={cfg.data.val_size} (no held-out prompts); give "
            "num_prompts=N to score it on N of its prompts (they were training prompts)"
        )
    if policy == "trained":  # before the model loads
        check_final(run_dir / "final", cfg.model.lora.enabled, conditioning["mode"] == "svd_lora")
    if points is not None:
        with open_dict(cfg):
            cfg.preference = points[0]
    module = build_module(cfg, build_rewards(cfg.objective.rewards))
    module.eval_grid = None  # the training-time grid: here each preference gets a result file of its own
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
    datamodule = instantiate(cfg.data)
    default = run_dir / ("eval.json" if policy == "trained" else "reference/eval.json")
    if points is None:
        key = evaluation_key(saved, None)
        return _evaluate_one(trainer, module, datamodule, cfg, run_dir, policy, Path(output or default), key)
    records = []
    for point in points:
        # The module samples every validation prompt at its preference (in the prompt or the adapters),
        # on its decimals grid.
        module.preference = quantize_preferences(
            resolve_preference(point, objectives), 10**module.conditioning.decimals
        )
        folder = preference_folder(run_dir, module.preference.tolist())
        default = folder / ("eval.json" if policy == "trained" else "reference/eval.json")
        path = Path(output) if output else default
        key = evaluation_key(saved, point)
        records.append(_evaluate_one(trainer, module, datamodule, cfg, run_dir, policy, path, key))
    return records if grid_steps is not None else records[0]


def evaluation_key(saved: DictConfig, preference: list[float] | None) -> str:
    """The ``reference_key`` of a reference evaluation made here, so that runs can take it (``eval.reference``).

    That of a run trained under the saved config with this evaluation's prompts and seed (``saved``
    carries them), on the one device this script samples with (a run on N processes sampled its
    reference in N shares: other responses, another key) and, for a conditioned run, at
    ``preference`` (the reference's prompts carry it).
    """
    cfg = saved.copy()
    with open_dict(cfg):
        cfg.trainer.devices = 1
        if preference is not None:  # as a run would name it: float32 weights read 0.8000000119 unrounded
            cfg.preference = [round(float(w), 6) for w in preference]
    return reference_key(cfg)


def _evaluate_one(
    trainer, module, datamodule, cfg, run_dir: Path, policy: str, path: Path, key: str
) -> dict[str, Any]:
    """Validate ``module`` at its preference and write the result file ``path`` (a reference's with
    ``reference_key`` ``key``)."""
    # A freshly built policy is the reference: LoRA's B matrices start at zero (SVD-LoRA's U, or its
    # singular values: models/svd_lora.py INITS), and without LoRA
    # the weights are the base model's until the exported ones are loaded.
    trainer.validate(module, datamodule=datamodule, verbose=False)
    meta = run_metadata(trainer, module, policy)
    meta["run_dir"] = str(run_dir)
    meta["iteration"] = cfg.iterations if policy == "trained" else 0
    if policy == "reference":
        meta["reference_key"] = key
    record = eval_record(module.last_eval, **meta)
    write_result(path, record, module.last_eval_records)
    log.info("Wrote %s", path)
    return record
