"""Start-up checks of a composed config: every mistake that needs no model is reported before one loads.

``validate_config`` first runs the declarative table :data:`VALUE_RULES` (every scalar key's type and
range, one message format ``<key>=<value>: must be <what is allowed>``), then the checks that relate
several keys (a minibatch count that divides the batch, a veto threshold below the largest weight...).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from pama_lit.core.kl_control import KL_CONTROLLERS
from pama_lit.core.ops import KL_ESTIMATORS
from pama_lit.core.preference import resolve_preference, simplex_grid
from pama_lit.training.combiners import COMBINERS


class ConfigError(ValueError):
    """A config value is invalid; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Rule:
    """What one config key accepts: a type, an optional range, and whether null is allowed.

    Integers must be ints as YAML and the command line write them: ``2.0`` is refused (write ``2``),
    and so is a bool, although Python counts ``True`` as the int 1. Numbers take ints and finite floats.
    """

    kind: str  # "int", "number" or "bool"
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the bound itself is excluded
    high_open: bool = False
    nullable: bool = False
    note: str = ""  # what special values mean, e.g. "0 = off"
    length: int | None = None  # a list of exactly this many values, each checked

    def accepts(self, value: object) -> bool:
        if value is None:
            return self.nullable
        if self.length is not None:
            return (
                isinstance(value, list)
                and len(value) == self.length
                and all(self._accepts_one(v) for v in value)
            )
        return self._accepts_one(value)

    def _accepts_one(self, value: object) -> bool:
        if self.kind == "bool":
            return isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, int if self.kind == "int" else (int, float)):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        """What the key accepts, e.g. ``an integer >= 1`` or ``a number in (0, 1], or null``."""
        if self.kind == "bool":
            text = "true or false"
        elif self.length is not None:
            text = f"a list of {self.length} numbers{self._range()}"
        else:
            text = ("an integer" if self.kind == "int" else "a number") + self._range()
        if self.note:
            text += f" ({self.note})"
        return text + (", or null" if self.nullable else "")

    def _range(self) -> str:
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f" in {left}{lo}, {hi}{right}"
        if lo is not None:
            return f" {'>' if self.low_open else '>='} {lo}"
        if hi is not None:
            return f" {'<' if self.high_open else '<='} {hi}"
        return ""


def _int(low: int | None = None, high: int | None = None, **kwargs) -> Rule:
    return Rule("int", low, high, **kwargs)


def _num(low: float | None = None, high: float | None = None, **kwargs) -> Rule:
    return Rule("number", low, high, **kwargs)


_BOOL = Rule("bool")
_SEED = _int(0, 2**32 - 1)  # numpy's seed range, which Lightning's seed_everything enforces
_UNIT = _num(0, 1)

# Every scalar key of conf/ a user may set, checked in this order before anything else; a key absent
# from the composed config (another data source, a model without LoRA settings) is skipped.
VALUE_RULES: dict[str, Rule] = {
    "seed": _SEED,
    "iterations": _int(1),
    "preference_grid.steps": _int(1, nullable=True),
    "preference_grid.index": _int(0, nullable=True),
    "rollout.batch_size": _int(1),
    "rollout.max_new_tokens": _int(1),
    "rollout.min_new_tokens": _int(0),
    "rollout.temperature": _num(0, low_open=True),
    "rollout.top_k": _int(0, note="0 = off"),
    "rollout.top_p": _num(0, 1, low_open=True),
    "rollout.merge_adapters": _BOOL,
    "ppo.epochs": _int(1),
    "ppo.num_minibatches": _int(1),
    "ppo.clip_coef": _num(0, low_open=True),
    "ppo.vf_coef": _num(0),
    "ppo.vf_clip": _num(0, low_open=True),
    "ppo.gamma": _UNIT,
    "ppo.gae_lambda": _UNIT,
    "ppo.whiten_advantages": _BOOL,
    "ppo.max_grad_norm": _num(0, nullable=True, note="0 or null = no clipping"),
    "ppo.kl.init_coef": _num(0),
    "ppo.kl.target": _num(0, low_open=True, nullable=True),
    "ppo.kl.horizon": _num(0, low_open=True),
    "optimizer.lr": _num(0, low_open=True),
    "optimizer.weight_decay": _num(0),
    "optimizer.betas": _num(0, 1, high_open=True, length=2),
    "eval.seed": _SEED,
    "eval.every_n_iterations": _int(1),
    "diagnostics.every_n_iterations": _int(0, note="0 = off"),
    "eval.batch_size": _int(1),
    "eval.num_samples": _int(0),
    "data.val_size": _int(0, note="0 = no evaluation, no eval.json"),
    "data.max_prompts": _int(1, nullable=True, note="null = all"),
    "data.split_seed": _SEED,
    "data.batch_size": _int(1),
    "data.val_batch_size": _int(1, nullable=True),
    "data.num_train_batches": _int(1),
    "data.seed": _SEED,
    "data.source.min_words": _int(1),
    "data.source.max_words": _int(1, nullable=True),
    "data.source.limit": _int(1, nullable=True),
    "model.max_prompt_length": _int(1),
    "model.chat_template": _BOOL,
    "model.disable_dropout": _BOOL,
    "model.gradient_checkpointing": _BOOL,
    "model.lora.enabled": _BOOL,
    "model.lora.r": _int(1),
    "model.lora.alpha": _num(0, low_open=True),
    "model.lora.dropout": _num(0, 1, high_open=True),
    "algorithm.min_score_std": _num(0, note="0 = off"),
    "algorithm.veto_threshold": _num(0, note="0 = off"),
    "callbacks.checkpoint.every_n_iterations": _int(1),
    "callbacks.samples.every_n_iterations": _int(1),
    "callbacks.samples.num_samples": _int(0),
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
    _check_objectives(cfg)
    _check_kl(cfg)
    _check_trainer(cfg)
    if cfg.get("rewards_on_error", "raise") not in ("raise", "skip"):
        raise ConfigError(f"rewards_on_error={_shown(cfg.rewards_on_error)}: must be 'raise' or 'skip'")


def _check_exclusion(algorithm: DictConfig, preference) -> None:
    """PAMA's veto threshold keeps at least the heaviest objective (at or below the largest weight)."""
    threshold = algorithm.get("veto_threshold", 0.0)
    top = float(preference.max())
    if threshold > top:
        raise ConfigError(
            f"algorithm.veto_threshold={threshold}: must be a number in [0, {top:.4g}] (0 = off; at most the "
            "largest preference weight, or every objective would be left out of the combine)"
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
