"""Start-up checks of a composed config: every mistake that needs no model is reported before one loads.

Types and key names are checked earlier, at composition, against ``pama_lit.run.schema``.
``validate_config`` first runs :data:`VALUE_RULES` (every scalar key's range, and the type of the keys
without a schema; one message format ``<key>=<value>: must be <what is allowed>``), then the checks
that relate several keys (a minibatch count that divides the batch, a veto threshold below the largest weight...).
"""

from __future__ import annotations

import math
import re

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from pama_lit.core.kl_control import KL_CONTROLLERS, KL_PLACEMENTS
from pama_lit.core.losses import KL_LOSS_ESTIMATORS
from pama_lit.core.ops import KL_ESTIMATORS
from pama_lit.core.preference import resolve_preference, simplex_grid
from pama_lit.models.merging import SAMPLING_DTYPES
from pama_lit.run.schema import (
    SEED,
    AlgorithmConfig,
    ModelConfig,
    RolloutConfig,
    Rule,
    int_rule,
    num_rule,
    schema_rules,
    unknown_keys,
)
from pama_lit.training.combiners import COMBINERS, build_combiner


class ConfigError(ValueError):
    """A config value is invalid; the message names the key, the value and what is allowed."""


# Every scalar key of conf/ a user may set, checked in this order before anything else: the schema's
# fields carry their own rules (pama_lit.run.schema); these are the keys of the groups without a
# schema (`_target_` nodes). A key absent from the composed config (another data source) is skipped.
VALUE_RULES: dict[str, Rule] = {
    **schema_rules(),
    "optimizer.lr": num_rule(0, low_open=True),
    "optimizer.weight_decay": num_rule(0),
    "optimizer.betas": num_rule(0, 1, high_open=True, length=2),
    "data.val_size": int_rule(0, note="0 = no evaluation, no eval.json"),
    "data.max_prompts": int_rule(1, nullable=True, note="null = all"),
    "data.split_seed": SEED,
    "data.batch_size": int_rule(1),
    "data.val_batch_size": int_rule(1, nullable=True),
    "data.num_train_batches": int_rule(1),
    "data.seed": SEED,
    "data.source.min_words": int_rule(1),
    "data.source.max_words": int_rule(1, nullable=True),
    "data.source.limit": int_rule(1, nullable=True),
    "callbacks.checkpoint.every_n_iterations": int_rule(1),
    "callbacks.samples.every_n_iterations": int_rule(1),
    "callbacks.samples.num_samples": int_rule(0),
}

_ABSENT = object()


def _shown(value: object) -> str:
    """A value as the user would type it back: strings quoted, containers as plain lists and dicts."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    return repr(value) if isinstance(value, str) else str(value)


def check_values(cfg: DictConfig, rules: dict[str, Rule] = VALUE_RULES) -> None:
    """Check every key of ``rules`` present in ``cfg``.

    Raises:
        ConfigError: ``<key>=<value>: must be <what is allowed>`` for the first key that fails.
    """
    for key, rule in rules.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:
            continue
        plain = OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
        if not rule.accepts(plain):
            raise ConfigError(f"{key}={_shown(value)}: must be {rule.describe()}")


def validate_config(cfg: DictConfig) -> None:
    """Check the composed config and resolve ``preference_grid`` into ``preference``.

    Raises:
        ConfigError: naming the bad key and value.
    """
    unknown = unknown_keys(cfg)
    if unknown:
        key, declared = unknown[0]
        raise ConfigError(f"{key} is not a config key (added with '+'?); known here: {', '.join(declared)}")
    check_values(cfg)
    objectives = list((cfg.objective or {}).get("rewards") or {})
    if not objectives:
        raise ConfigError("objective.rewards is empty: choose objectives, e.g. objective=sentiment+length")
    name = cfg.algorithm.name
    if name not in COMBINERS:
        raise ConfigError(f"unknown algorithm {name!r}; known: {', '.join(COMBINERS)}")
    COMBINERS[name]().trained_objectives(objectives)  # noon_ppo refuses K != 1
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
    r = cfg.rollout
    if r.min_new_tokens > r.max_new_tokens:
        raise ConfigError(
            f"rollout.min_new_tokens={r.min_new_tokens}: must be in [0, {r.max_new_tokens}] "
            f"(at most rollout.max_new_tokens={r.max_new_tokens})"
        )
    if r.get("sampling_dtype") is not None and r.sampling_dtype not in SAMPLING_DTYPES:
        raise ConfigError(
            f"rollout.sampling_dtype={r.sampling_dtype!r}: must be null (the weights' own dtype) or one of "
            f"{', '.join(SAMPLING_DTYPES)}"
        )
    p = cfg.ppo
    if r.batch_size % p.num_minibatches:
        raise ConfigError(
            f"rollout.batch_size={r.batch_size} does not split into ppo.num_minibatches={p.num_minibatches} "
            "equal minibatches; choose a divisor"
        )
    grid = cfg.get("preference_grid") or {}
    if grid.get("steps") is not None or grid.get("index") is not None:
        if cfg.preference is not None:
            raise ConfigError("set either preference or preference_grid, not both")
        if grid.get("steps") is None or grid.get("index") is None:
            raise ConfigError("preference_grid needs both steps and index")
        if grid.steps < len(objectives):
            raise ConfigError(
                f"preference_grid.steps={grid.steps}: must be an integer >= {len(objectives)} (the number of "
                "objectives), so that every weight is a positive multiple of 1/steps"
            )
        points = simplex_grid(len(objectives), grid.steps)
        if not 0 <= grid.index < len(points):
            raise ConfigError(
                f"preference_grid.index={grid.index} is out of range: steps={grid.steps} gives "
                f"{len(points)} vectors for {len(objectives)} objectives (index 0..{len(points) - 1})"
            )
        with open_dict(cfg):
            cfg.preference = points[grid.index]
    raw = cfg.preference
    if isinstance(raw, (DictConfig, ListConfig)):
        raw = OmegaConf.to_container(raw, resolve=True)
    try:
        preference = resolve_preference(raw, objectives)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    _check_exclusion(cfg.algorithm, preference)
    _check_conditioning(cfg, objectives)
    _check_objectives(cfg)
    _check_kl(cfg)
    _check_trainer(cfg)
    if cfg.rewards_on_error not in ("raise", "skip"):
        raise ConfigError(f"rewards_on_error={_shown(cfg.rewards_on_error)}: must be 'raise' or 'skip'")


def _check_exclusion(algorithm: DictConfig, preference) -> None:
    """PAMA's veto threshold keeps at least the heaviest objective (at or below the largest weight);
    neither exclusion key is set for an algorithm without a min, which would ignore it."""
    threshold = algorithm.veto_threshold
    combiner = COMBINERS.get(algorithm.name)
    if algorithm.satisfied_at_ceiling and combiner is not None:
        try:  # build_combiner refuses combiners without per-sample masks
            build_combiner(algorithm.name, satisfied_at_ceiling=True)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if combiner is not None and not combiner.excludes_objectives:
        excluding = ", ".join(sorted(n for n, c in COMBINERS.items() if c.excludes_objectives))
        if threshold > 0:
            raise ConfigError(
                f"algorithm.veto_threshold={threshold}: algorithm={algorithm.name} has no min to leave "
                f"objectives out of; the threshold applies to {excluding} (use 0 here)"
            )
        default = AlgorithmConfig.min_score_std
        if algorithm.min_score_std != default:
            raise ConfigError(
                f"algorithm.min_score_std={algorithm.min_score_std}: algorithm={algorithm.name} has no min "
                f"to leave objectives out of, so it would ignore this; it applies to {excluding} (leave "
                f"it at its default {default:g} here)"
            )
    top = float(preference.max())
    if threshold > top:
        raise ConfigError(
            f"algorithm.veto_threshold={threshold}: must be a number in [0, {top:.4g}] (0 = off; at most the "
            "largest preference weight, or every objective would be left out of the combine)"
        )


CONDITIONING_MODES = ("none", "prompt", "svd_lora")
# The algorithms whose update can use each sample's own preference: PAMA's per-token closed form
# (A_i / (K w_i) per row) and MORLHF's per-sample scalarisation sum_i w_i R_i.
CONDITIONED_ALGORITHMS = ("pama", "morlhf")


def _check_conditioning(cfg: DictConfig, objectives: list[str]) -> None:
    """``conditioning``: a known mode; a conditioned run trains an algorithm that honours per-sample preferences."""
    c = cfg.conditioning
    if c.mode not in CONDITIONING_MODES:
        raise ConfigError(
            f"conditioning.mode={_shown(c.mode)}: must be one of {', '.join(CONDITIONING_MODES)}"
        )
    if c.mode == "none":
        return
    name = cfg.algorithm.name
    if name not in CONDITIONED_ALGORITHMS:
        raise ConfigError(
            f"conditioning={c.mode} with algorithm={name}: a conditioned run gives each sample its own "
            f"preference, which only {', '.join(CONDITIONED_ALGORITHMS)} use in their update (pama_batch shares "
            "one set of weights per minibatch, mgda_ub and mgda one min-norm solve, noon_ppo has one objective); "
            "use conditioning=none with this algorithm"
        )
    if len(objectives) < 2:
        raise ConfigError(
            f"conditioning={c.mode} with one objective ({objectives[0]}): there is no trade-off to condition on; "
            "use conditioning=none"
        )
    if 10**c.decimals < len(objectives):
        raise ConfigError(
            f"conditioning.decimals={c.decimals}: must be at least {math.ceil(math.log10(len(objectives)))} for "
            f"{len(objectives)} objectives, so that every weight can be a positive multiple of 10^-decimals"
        )
    if c.eval_grid_steps is not None and c.eval_grid_steps < len(objectives):
        raise ConfigError(
            f"conditioning.eval_grid_steps={c.eval_grid_steps}: must be an integer >= {len(objectives)} (the number "
            "of objectives), so that every weight is a positive multiple of 1/steps, or null (off)"
        )
    if cfg.algorithm.veto_threshold > 0:
        raise ConfigError(
            f"algorithm.veto_threshold={cfg.algorithm.veto_threshold} with conditioning={c.mode}: the threshold "
            "leaves objectives out by the run's one preference, and each sample has its own here; use 0"
        )
    if c.mode == "svd_lora":
        _check_svd_lora(cfg)


def _check_svd_lora(cfg: DictConfig) -> None:
    """``conditioning=svd_lora`` trains its adapters on the frozen base model, in LoRA's place."""
    from pama_lit.models.svd_lora import INITS

    svd = cfg.conditioning.svd_lora
    if svd.init not in INITS:
        raise ConfigError(f"conditioning.svd_lora.init={_shown(svd.init)}: must be one of {', '.join(INITS)}")
    if not cfg.model.lora.enabled:
        raise ConfigError(
            "model.lora.enabled=false with conditioning=svd_lora: svd_lora trains preference-conditioned adapters "
            "on the frozen base model in place of LoRA's (the reference is the base with the adapters off), so it "
            "has no full fine-tuning form; use model.lora.enabled=true (conditioning.svd_lora sets the adapters; "
            "model.lora only lends its target_modules) or conditioning=prompt to fine-tune every weight"
        )
    targets = svd.target_modules
    if targets is not None and (not isinstance(targets, ListConfig) or not targets):
        raise ConfigError(
            f"conditioning.svd_lora.target_modules={_shown(targets)}: must be a non-empty list of linear layer "
            "names (e.g. [q_proj, v_proj]), or null for model.lora.target_modules"
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


def _check_kl(cfg: DictConfig) -> None:
    kl = cfg.ppo.kl
    if kl.controller not in KL_CONTROLLERS:
        raise ConfigError(f"unknown ppo.kl.controller {kl.controller!r}; known: {', '.join(KL_CONTROLLERS)}")
    if kl.estimator not in KL_ESTIMATORS:
        raise ConfigError(f"unknown ppo.kl.estimator {kl.estimator!r}; known: {', '.join(KL_ESTIMATORS)}")
    if kl.controller == "adaptive" and not (kl.target or 0) > 0:
        raise ConfigError(f"ppo.kl.controller=adaptive needs ppo.kl.target > 0, got {kl.target}")
    if kl.placement not in KL_PLACEMENTS:
        raise ConfigError(f"unknown ppo.kl.placement {kl.placement!r}; known: {', '.join(KL_PLACEMENTS)}")
    if kl.placement == "loss" and kl.estimator not in KL_LOSS_ESTIMATORS:
        raise ConfigError(
            f"ppo.kl.placement=loss needs ppo.kl.estimator in {', '.join(KL_LOSS_ESTIMATORS)}, got "
            f"{kl.estimator!r}: k1's gradient is zero in expectation on-policy (set ppo.kl.estimator=k3, as GRPO does)"
        )


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


def check_context_window(lm_config, model_cfg: ModelConfig, rollout_cfg: RolloutConfig) -> None:
    """Refuse a prompt + response budget longer than the model's context window (at model load).

    Prompts longer than ``model.max_prompt_length`` tokens are cut from the left with a warning; this
    check makes sure that a full-length prompt plus ``rollout.max_new_tokens`` still fits.
    """
    text_config = lm_config.get_text_config() if hasattr(lm_config, "get_text_config") else lm_config
    window = getattr(text_config, "max_position_embeddings", None)
    prompt, new = model_cfg.max_prompt_length, rollout_cfg.max_new_tokens
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
    machine: ``mgda_step.mgda_backward`` checks the world size again at the first update."""
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
