"""Start-up checks of a composed config: every mistake that needs no model is reported before one loads."""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf, open_dict

from pama_lit.algorithms import COMBINERS
from pama_lit.kl_control import KL_CONTROLLERS
from pama_lit.ops import KL_ESTIMATORS
from pama_lit.preference import resolve_preference, simplex_grid


class ConfigError(ValueError):
    """A config value is invalid; the message names the key, the value and what is allowed."""


def validate_config(cfg: DictConfig) -> None:
    """Check the composed config and resolve ``preference_grid`` into ``preference``.

    Raises:
        ConfigError: naming the bad key and value.
    """
    objectives = list((cfg.objective or {}).get("rewards") or {})
    if not objectives:
        raise ConfigError("objective.rewards is empty: choose objectives, e.g. objective=sentiment+length")
    name = cfg.algorithm.name
    if name not in COMBINERS:
        raise ConfigError(f"unknown algorithm {name!r}; known: {', '.join(COMBINERS)}")
    COMBINERS[name]().num_streams(len(objectives))
    space = COMBINERS[name].gradient_space
    if space is not None and str(cfg.trainer.get("precision")) == "16-mixed":
        raise ConfigError(
            f"algorithm={name} writes unscaled gradients, which 16-mixed's gradient scaler would unscale again; "
            "use trainer.precision=bf16-mixed or 32-true"
        )
    if space == "parameters" and _multi_process(cfg.trainer):
        raise ConfigError(
            f"algorithm={name} writes .grad directly, past the data-parallel gradient reduction, so it runs in "
            f"one process only (got trainer.devices={cfg.trainer.get('devices')}, trainer.strategy="
            f"{_strategy_name(cfg.trainer)}); use algorithm=mgda_ub, which all-reduces its Gram matrix, or trainer=cpu"
        )
    if cfg.iterations < 1:
        raise ConfigError(f"iterations must be >= 1, got {cfg.iterations}")
    eval_batch = (cfg.get("eval") or {}).get("batch_size", 1)
    if eval_batch < 1:
        raise ConfigError(f"eval.batch_size must be >= 1 (prompts per validation batch), got {eval_batch}")
    r = cfg.rollout
    if r.max_new_tokens < 1:
        raise ConfigError(f"rollout.max_new_tokens must be >= 1, got {r.max_new_tokens}")
    if not 0 <= r.min_new_tokens <= r.max_new_tokens:
        raise ConfigError(
            f"rollout.min_new_tokens must be in [0, {r.max_new_tokens}], got {r.min_new_tokens}"
        )
    p = cfg.ppo
    if p.num_minibatches < 1 or r.batch_size % p.num_minibatches:
        raise ConfigError(
            f"rollout.batch_size={r.batch_size} does not split into ppo.num_minibatches={p.num_minibatches} "
            "equal minibatches; choose a divisor"
        )
    if p.epochs < 1:
        raise ConfigError(f"ppo.epochs must be >= 1, got {p.epochs}")
    grid = cfg.get("preference_grid") or {}
    if grid.get("steps") is not None or grid.get("index") is not None:
        if cfg.preference is not None:
            raise ConfigError("set either preference or preference_grid, not both")
        if grid.get("steps") is None or grid.get("index") is None:
            raise ConfigError("preference_grid needs both steps and index")
        points = simplex_grid(len(objectives), int(grid.steps))
        if not 0 <= grid.index < len(points):
            raise ConfigError(
                f"preference_grid.index={grid.index} is out of range: steps={grid.steps} gives "
                f"{len(points)} vectors for {len(objectives)} objectives (index 0..{len(points) - 1})"
            )
        with open_dict(cfg):
            cfg.preference = points[grid.index]
    try:
        preference = resolve_preference(None if cfg.preference is None else list(cfg.preference), objectives)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    _check_exclusion(cfg.algorithm, preference)
    _check_objectives(cfg)
    _check_rollout_and_kl(cfg)
    _check_trainer(cfg)
    every = (cfg.get("diagnostics") or {}).get("every_n_iterations", 0)
    if not isinstance(every, int) or isinstance(every, bool) or every < 0:
        raise ConfigError(f"diagnostics.every_n_iterations must be an integer >= 0 (0 = off), got {every!r}")
    if cfg.get("rewards_on_error", "raise") not in ("raise", "skip"):
        raise ConfigError(f"rewards_on_error must be 'raise' or 'skip', got {cfg.rewards_on_error!r}")


def _check_exclusion(algorithm: DictConfig, preference) -> None:
    """PAMA's exclusion settings: a nonnegative score-spread floor, and a veto threshold that keeps at
    least the heaviest objective (at or below the largest preference weight)."""
    min_std = algorithm.get("min_score_std", 1e-6)
    if not min_std >= 0:
        raise ConfigError(f"algorithm.min_score_std must be >= 0 (0 = off), got {min_std}")
    threshold = algorithm.get("veto_threshold", 0.0)
    top = float(preference.max())
    if not 0 <= threshold <= top:
        raise ConfigError(
            f"algorithm.veto_threshold must be in [0, {top:.4g}] (0 = off, at most the largest preference "
            f"weight, or every objective would be left out of the combine), got {threshold}"
        )


_OBJECTIVE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def _check_objectives(cfg: DictConfig) -> None:
    """Objective ids are metric-key safe, every reward has a target, and no reward is listed twice."""
    seen: dict[str, str] = {}
    for name, reward in cfg.objective.rewards.items():
        if not _OBJECTIVE_ID.match(str(name)):
            raise ConfigError(
                f"objective id {name!r} must start with a letter and hold only letters, digits, '_' or '-' "
                "(it becomes a metric-key suffix such as train/reward/<id>)"
            )
        if not isinstance(reward, DictConfig) or "_target_" not in reward:
            raise ConfigError(
                f"objective.rewards.{name} has no _target_: pick a reward config, e.g. "
                f"'reward@objective.rewards.{name}=sentiment', or give a _target_ class"
            )
        key = repr(sorted(OmegaConf.to_container(reward, resolve=True).items()))
        if key in seen:
            raise ConfigError(
                f"objectives {seen[key]!r} and {name!r} are the same reward with the same settings: an objective "
                "listed twice counts twice in every combination; remove one"
            )
        seen[key] = str(name)


def _check_rollout_and_kl(cfg: DictConfig) -> None:
    r, kl = cfg.rollout, cfg.ppo.kl
    if r.temperature <= 0:
        raise ConfigError(f"rollout.temperature must be > 0, got {r.temperature}")
    if not 0 < r.top_p <= 1:
        raise ConfigError(f"rollout.top_p must be in (0, 1], got {r.top_p}")
    if r.top_k < 0:
        raise ConfigError(f"rollout.top_k must be >= 0 (0 = off), got {r.top_k}")
    if not isinstance(r.get("merge_adapters", True), bool):
        raise ConfigError(f"rollout.merge_adapters must be true or false, got {r.merge_adapters!r}")
    if cfg.model.get("max_prompt_length", 1) < 1:
        raise ConfigError(f"model.max_prompt_length must be >= 1, got {cfg.model.max_prompt_length}")
    if kl.controller not in KL_CONTROLLERS:
        raise ConfigError(f"unknown ppo.kl.controller {kl.controller!r}; known: {', '.join(KL_CONTROLLERS)}")
    if kl.estimator not in KL_ESTIMATORS:
        raise ConfigError(f"unknown ppo.kl.estimator {kl.estimator!r}; known: {', '.join(KL_ESTIMATORS)}")
    if kl.controller == "adaptive" and not (kl.get("target") or 0) > 0:
        raise ConfigError(f"ppo.kl.controller=adaptive needs ppo.kl.target > 0, got {kl.get('target')}")


def _check_trainer(cfg: DictConfig) -> None:
    """Trainer options that break manual optimization or the run's one-epoch, self-sharded data."""
    t = cfg.trainer
    if t.get("gradient_clip_val") not in (None, 0, 0.0):
        raise ConfigError(
            f"trainer.gradient_clip_val={t.gradient_clip_val} is not supported: PamaModule uses manual "
            "optimization, where Lightning cannot clip for it; set ppo.max_grad_norm instead"
        )
    if t.get("accumulate_grad_batches", 1) != 1:
        raise ConfigError(
            f"trainer.accumulate_grad_batches={t.accumulate_grad_batches} is not supported: PamaModule uses "
            "manual optimization and steps once per minibatch; use fewer ppo.num_minibatches for larger steps"
        )
    if t.get("max_epochs", 1) != 1:
        raise ConfigError(
            f"trainer.max_epochs={t.max_epochs}: a run is one epoch of `iterations` PPO iterations; "
            "set iterations= instead"
        )
    if t.get("use_distributed_sampler", False):
        raise ConfigError(
            "trainer.use_distributed_sampler must be false: PromptDataModule shards the prompts across "
            "processes itself, so that every iteration's batch survives a resume"
        )


def check_context_window(lm_config, model_cfg: dict, rollout_cfg: dict) -> None:
    """Refuse a prompt + response budget longer than the model's context window (at model load).

    Prompts longer than ``model.max_prompt_length`` tokens are cut from the left with a warning; this
    check makes sure that a full-length prompt plus ``rollout.max_new_tokens`` still fits.
    """
    text_config = lm_config.get_text_config() if hasattr(lm_config, "get_text_config") else lm_config
    window = getattr(text_config, "max_position_embeddings", None)
    prompt, new = int(model_cfg.get("max_prompt_length", 256)), int(rollout_cfg["max_new_tokens"])
    if window and prompt + new > window:
        raise ConfigError(
            f"model.max_prompt_length={prompt} + rollout.max_new_tokens={new} = {prompt + new} tokens exceed the "
            f"model's context window of {window}; lower one of them"
        )


def _strategy_name(trainer: DictConfig) -> str:
    strategy = trainer.get("strategy")
    if isinstance(strategy, DictConfig):
        return str(strategy.get("_target_", strategy)).rsplit(".", 1)[-1]
    return str(strategy)


def _multi_process(trainer: DictConfig) -> bool:
    """Whether the trainer config surely runs more than one process: a strategy object or a ddp/fsdp/
    deepspeed name, several devices named, or several nodes. ``devices=auto`` or ``-1`` depend on the
    machine: ``gradient_step`` checks the world size again at the first update."""
    if isinstance(trainer.get("strategy"), DictConfig):
        return True
    if str(trainer.get("strategy") or "auto").lower().startswith(("ddp", "fsdp", "deepspeed")):
        return True
    devices = trainer.get("devices", 1)
    if isinstance(devices, str):
        text = devices.strip()
        devices = int(text) if text.lstrip("-").isdigit() else (text.count(",") + 1 if "," in text else 1)
    count = devices if isinstance(devices, int) else len(devices)
    return count > 1 or int(trainer.get("num_nodes") or 1) > 1
