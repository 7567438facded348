"""``train(cfg)``: compose one run from a Hydra config and fit it. ``train.py`` at the root calls this."""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from pama_lit.infra.atomic import write_json_atomic
from pama_lit.infra.checkpointing import interrupt_status
from pama_lit.infra.redact import redact
from pama_lit.rewards import Normalized, build_rewards
from pama_lit.run import run_folder
from pama_lit.run.callbacks import append_evaluation, run_metadata
from pama_lit.run.config import ConfigError, validate_config
from pama_lit.run.preflight import preflight
from pama_lit.run.reference import load_shared_reference, reference_key
from pama_lit.run.results import SUMMARY_KEYS, eval_record, read_responses, write_result
from pama_lit.run.schema import (
    AlgorithmConfig,
    ConditioningConfig,
    DiagnosticsConfig,
    EvalConfig,
    ModelConfig,
    PPOConfig,
    RolloutConfig,
    typed,
)
from pama_lit.training.combiners import COMBINERS, GradientCombiner
from pama_lit.training.mgda_module import MgdaModule
from pama_lit.training.module import PamaModule

log = logging.getLogger(__name__)

# Third-party output checked harmless at the pinned versions, silenced by message, never by category.
HARMLESS_WARNINGS = [
    # transformers renamed the property; peft still reads the old name.
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning),
    # Lightning's own pytree helper builds torch's deprecated LeafSpec.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # A checkpoint here is meant to hold the weights after the iteration's optimizer steps, the state a
    # resumed run continues from; Lightning's note (with example code) suggests the state before them.
    (r"Using ModelCheckpoint with manual optimization and every_n_train_steps", UserWarning),
]
HARMLESS_LOG_LINES = {
    "lightning.pytorch.utilities.rank_zero": [
        r"💡 Tip: ",  # an advertisement for a logging service
        r"(TPU|HPU) available: ",  # the GPU line stays: it says where the run trains
        r"`Trainer\(val_check_interval=\d+\)` was configured",  # eval.every_n_iterations, set on purpose
        r"`Trainer.fit` stopped: `max_epochs=",  # the run ends after `iterations`, as configured
    ],
    "lightning.fabric.utilities.seed": [r"Seed set to "],  # the seed is in .hydra/config.yaml
}


class _DropLines(logging.Filter):
    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def silence_harmless_noise() -> None:
    """Keep the console to what a person needs: drop the third-party lines listed above, nothing else."""
    for message, category in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, patterns in HARMLESS_LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(patterns))


def train(cfg: DictConfig) -> dict[str, Any]:
    """Validate, build every component, evaluate the reference, fit, evaluate again, export.

    The run holds ``paths.output_dir`` while it lasts (``pama_lit.run.run_folder``). A resumed run
    (``ckpt_path``) appends to its folder's logs and takes its reference evaluation from
    ``reference/eval.json`` instead of evaluating it again; ``eval.reference`` names another run's,
    taken (and copied there) when it was evaluated under this run's settings (``run.reference``).

    Returns:
        ``{"start": summary, "end": summary, "output_dir": str}``, the evaluations before and after.

    Raises:
        RunFolderError: another process holds the folder, or it holds another run's results.
        SystemExit: 143 after SIGTERM, 130 after SIGINT, once ``last.ckpt`` is written.
    """
    silence_harmless_noise()
    validate_config(cfg)  # every check that needs no model runs before anything loads
    ckpt_path = resolve_ckpt_path(cfg)
    saved = preflight(cfg, ckpt_path)  # output folder, checkpoint, hub sources: still before any model
    shared = load_shared_reference(cfg)
    output_dir = Path(cfg.paths.output_dir)
    with run_folder.owned(output_dir, ckpt_path):  # one run per folder, refused before any model loads
        return _train(cfg, ckpt_path, output_dir, saved, shared)


def _train(
    cfg: DictConfig,
    ckpt_path: str | None,
    output_dir: Path,
    saved: dict[str, Any] | None,
    shared: dict[str, Any] | None = None,
) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    log.info("Output folder: %s", output_dir)
    log.info("Rewards: %s", ", ".join(f"{k} <{v._target_}>" for k, v in cfg.objective.rewards.items()))
    rewards = build_rewards(cfg.objective.rewards, normalize=cfg.get("reward", {}).get("normalize"))
    log.info("Data <%s>", cfg.data._target_)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")  # an empty or missing prompt source fails here, before the model loads
    log.info("Model <%s>", cfg.model.loader._target_)
    module = build_module(cfg, rewards)
    trainer = build_trainer(cfg, wandb_id=resumed_wandb_id(saved, ckpt_path, output_dir))
    if trainer.world_size > 1 and any(
        isinstance(r, Normalized) and r.kind == "running" for r in rewards.values()
    ):
        raise ConfigError(
            f"reward.normalize=running with {trainer.world_size} processes: each would normalise with the "
            "moments of its own samples; use none, or fixed with measured means and stds"
        )

    reference = output_dir / "reference" / "eval.json"
    if ckpt_path is not None and reference.is_file():
        start = json.loads(reference.read_text())  # the resumed run's own, recorded once when it started
    elif shared is not None:
        start = shared  # another run's, evaluated under this run's settings (its reference_key)
        log.info("Reference evaluation taken from eval.reference=%s", cfg.eval.reference)
        if trainer.is_global_zero:
            source = Path(cfg.eval.reference).resolve()
            write_result(reference, {**shared, "shared_from": str(source)}, read_responses(source))
            # evaluations.jsonl's iteration-0 entry, as the evaluation it replaces would have written it.
            append_evaluation(trainer, module, {k: shared[k] for k in SUMMARY_KEYS if k in shared})
    else:
        trainer.validate(module, datamodule=datamodule, verbose=False)
        start = module.last_eval
        if trainer.is_global_zero and start is not None:
            meta = run_metadata(trainer, module, "reference")
            record = eval_record(start, **meta, reference_key=reference_key(cfg))
            write_result(reference, record, module.last_eval_records)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        # SigtermCheckpoint has written last.ckpt; a non-zero status tells the scheduler the run is unfinished.
        raise SystemExit(interrupt_status(trainer)) from None
    if module.last_eval_iteration != module.global_iteration:  # no periodic evaluation at the last iteration
        trainer.validate(module, datamodule=datamodule, verbose=False)
    end = module.last_eval
    if trainer.is_global_zero:
        export(module, output_dir / "final")
        # Last: an eval.json means the run finished (run_folder refuses to start or resume over it).
        if end is not None:  # None: data.val_size=0, no held-out prompts
            record = eval_record(end, **run_metadata(trainer, module))
            write_result(output_dir / "eval.json", record, module.last_eval_records)
        print_summary(module.objectives, start, end, output_dir)
    return {"start": start, "end": end, "output_dir": str(output_dir)}


def build_module(cfg: DictConfig, rewards: dict) -> PamaModule:
    """The LightningModule of a composed config (or of one a run saved), its sections as typed
    dataclasses; the model itself loads later, in ``configure_model``.

    ``MgdaModule`` for the gradient-space algorithms (mgda_ub, mgda), ``PamaModule`` for the others.
    """
    combiner = COMBINERS.get(cfg.algorithm.name)  # an unknown name: PamaModule names the known ones
    module_class = MgdaModule if combiner and issubclass(combiner, GradientCombiner) else PamaModule
    return module_class(
        model_loader=instantiate(cfg.model.loader, _partial_=True),
        rewards=rewards,
        algorithm=typed(AlgorithmConfig, cfg.algorithm),
        ppo=typed(PPOConfig, cfg.ppo),
        rollout=typed(RolloutConfig, cfg.rollout),
        model=typed(ModelConfig, cfg.model),
        optimizer=instantiate(cfg.optimizer),
        evaluation=typed(EvalConfig, cfg.eval),
        rewards_on_error=cfg.rewards_on_error,
        diagnostics=typed(DiagnosticsConfig, cfg.diagnostics),
        preference=cfg.preference,
        conditioning=conditioning_config(cfg),
        seed=cfg.seed,
    )


def conditioning_config(cfg: DictConfig) -> ConditioningConfig | None:
    """The run's conditioning, or None for ``mode: none`` (also a run saved before conditioning existed,
    or a ``final/conditioning.json`` of an unconditioned run, which records the mode alone)."""
    section = cfg.get("conditioning")
    if section is None or section.get("mode") == "none":
        return None
    return typed(ConditioningConfig, section)


def build_trainer(cfg: DictConfig, wandb_id: str | None = None) -> L.Trainer:
    """The Lightning Trainer with the configured callbacks and loggers (``build_loggers``)."""
    callbacks = []
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        cb_cfg = cb_cfg.copy()
        if "every_n_iterations" in cb_cfg and cb_cfg._target_.endswith("ModelCheckpoint"):
            # Under manual optimization global_step counts optimizer steps, not iterations.
            steps = cfg.ppo.epochs * cfg.ppo.num_minibatches
            with open_dict(cb_cfg):
                cb_cfg.every_n_train_steps = cb_cfg.pop("every_n_iterations") * steps
        log.info("Callback %s <%s>", name, cb_cfg._target_)
        callbacks.append(instantiate(cb_cfg))
    loggers = build_loggers(cfg, wandb_id)
    val_every = max(1, min(cfg.eval.every_n_iterations, cfg.iterations))
    log.info("Trainer <%s>", cfg.trainer._target_)
    return instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, val_check_interval=val_every
    )


def build_loggers(cfg: DictConfig, wandb_id: str | None = None) -> list:
    """Instantiate ``cfg.logger``; a W&B logger without an API key falls back to offline mode.

    Args:
        wandb_id: the W&B run to continue (a run resumed in its own folder), unless ``logger.wandb.id``
            names one; None starts a new W&B run.
    """
    loggers = []
    for name, lg_cfg in (cfg.get("logger") or {}).items():
        lg_cfg = lg_cfg.copy()
        if lg_cfg._target_.endswith("WandbLogger"):
            if wandb_id and not lg_cfg.get("id"):
                log.info("Logger %s: the checkpoint's W&B run %s continues", name, wandb_id)
                with open_dict(lg_cfg):
                    lg_cfg.id = wandb_id
            if not lg_cfg.get("offline") and not wandb_has_key():
                log.warning(
                    "No W&B API key found (WANDB_API_KEY or ~/.netrc): logging to W&B offline; `wandb sync` later"
                )
                with open_dict(lg_cfg):
                    lg_cfg.offline = True
        log.info("Logger %s <%s>", name, lg_cfg._target_)
        loggers.append(instantiate(lg_cfg))
    for logger in loggers:
        logger.log_hyperparams(redact(OmegaConf.to_container(cfg, resolve=True)))  # no keys or tokens
    return loggers


def resumed_wandb_id(saved: dict[str, Any] | None, ckpt_path: str | None, output_dir: Path) -> str | None:
    """The W&B run id a checkpoint of this run's own folder recorded, else None.

    A run resumed in its folder continues its W&B run, as it continues its CSV file; one started
    in a new folder from another run's checkpoint is a new run in both.

    Args:
        saved: the checkpoint's ``pama`` section, as ``preflight`` read it (None: no checkpoint).
    """
    if saved is None or Path(output_dir).resolve() not in Path(ckpt_path).resolve().parents:
        return None
    return saved.get("wandb_id")


def wandb_has_key() -> bool:
    """True when W&B could authenticate: an API key in the environment or a netrc entry."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "offline":
        return bool(os.environ.get("WANDB_API_KEY"))
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path``: a file, or ``last`` for ``<output_dir>/checkpoints/last.ckpt``."""
    path = cfg.get("ckpt_path")
    if path is None:
        return None
    if path == "last":
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise FileNotFoundError(
                f"ckpt_path=last: there is no {last}; resume in the interrupted run's folder "
                "(hydra.run.dir=<that folder>) or give the checkpoint file"
            )
        return str(last)
    if not Path(path).is_file():
        raise FileNotFoundError(f"ckpt_path={path!r} does not exist")
    return path


SVD_LORA_FILE = "adapter_model.safetensors"


def export(module: PamaModule, folder: Path) -> None:
    """Save the final policy: the adapter (``save_pretrained``; SVD-LoRA's tensors in
    ``svd_lora/adapter_model.safetensors``, its settings in ``conditioning.json``), value heads and tokenizer."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    policy = module.policy
    if policy.svd_lora is not None:
        from safetensors.torch import save_file

        target = folder / "svd_lora"
        target.mkdir(exist_ok=True)
        tensors = {k: v.contiguous().cpu() for k, v in policy.svd_lora.state_dict().items()}
        save_file(tensors, target / SVD_LORA_FILE)
    else:
        target = folder / ("adapter" if policy.uses_lora else "model")
        policy.lm.save_pretrained(target)
    module.tokenizer.save_pretrained(target)
    torch.save(
        {"state_dict": module.policy.value_head.state_dict(), "objectives": module.trained_objectives},
        folder / "value_heads.pt",
    )
    # What rebuilds the conditioned policy: its prompts or adapters (evaluate.py reads it; {"mode": "none"} otherwise).
    write_json_atomic(folder / "conditioning.json", module.conditioning_state())


def print_summary(objectives: list[str], start: dict | None, end: dict | None, output_dir: Path) -> None:
    """Print the evaluations before and after training side by side, one uniquely named row per metric.

    Rows: ``reward/{objective}`` and ``kl_ref`` with their 95% confidence intervals, ``response_tokens``
    (mean response length) and ``fluency/{ref_logprob,distinct2,repeat_frac}`` (see ``pama_lit.core.fluency``).
    A run without evaluations (``data.val_size=0``) says so instead.
    """
    if start is None or end is None:
        print(
            f"\nNo evaluation (data.val_size=0): no reference/eval.json or eval.json. The policy is in "
            f"{output_dir / 'final'}; `python evaluate.py run_dir={output_dir} num_prompts=N` scores it on "
            "N of the prompts it trained on",
            flush=True,
        )
        return
    rows: list[tuple[str, float, list | None, float, list | None]] = []
    for name in objectives:
        a, b = start["rewards"][name], end["rewards"][name]
        rows.append((f"reward/{name}", a["mean"], a["ci95"], b["mean"], b["ci95"]))
    rows.append(("kl_ref", start["kl_ref"], start["kl_ref_ci95"], end["kl_ref"], end["kl_ref_ci95"]))
    rows.append(("response_tokens", start["response_length"], None, end["response_length"], None))
    for key in ("ref_logprob", "distinct2", "repeat_frac"):
        rows.append((f"fluency/{key}", start["fluency"][key], None, end["fluency"][key], None))
    width = max(len(row[0]) for row in rows) + 2

    def cell(mean: float, ci: list | None) -> str:
        return f"{mean:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci is not None else "")

    lines = [
        "",
        f"Evaluation on {end['num_prompts']} held-out prompts; brackets: 95% confidence interval of the mean",
        f"{'metric':<{width}}{'start':>32}{'end':>32}{'change':>10}",
    ]
    for label, a, a_ci, b, b_ci in rows:
        lines.append(f"{label:<{width}}{cell(a, a_ci):>32}{cell(b, b_ci):>32}{b - a:>+10.4f}")
    lines.append(f"Results in {output_dir} (eval.json, reference/eval.json, evaluations.jsonl, final/)")
    print("\n".join(lines), flush=True)
