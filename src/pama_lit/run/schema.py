"""Typed schema of ``conf/train.yaml``: one dataclass per section, registered in Hydra's ConfigStore.

``conf/train.yaml`` lists ``train_schema`` first in its defaults, so every value composed on top of it
is checked by OmegaConf against these types: a misspelt key (``ppo.clip_coeff=0.1``, also in a YAML
file) or a value of the wrong type (``rollout.batch_size=abc``, ``iterations=2.0``) fails at
composition with OmegaConf's message, which names the key.

Where the values live: a field without a default (``MISSING``) takes its value from the YAML files,
which are its only home (conf/train.yaml for the run's sections, each option of the ``model`` and
``algorithm`` groups for theirs); a field with a default here is one that no YAML file sets. Code
reads the typed objects (``OmegaConf.to_object``) and never supplies a default of its own.

A numeric field carries its range :class:`Rule` in its metadata; ``pama_lit.run.config.VALUE_RULES``
collects them (``<key>=<value>: must be <what is allowed>`` at start-up).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


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


def int_rule(low: int | None = None, high: int | None = None, **kwargs) -> Rule:
    return Rule("int", low, high, **kwargs)


def num_rule(low: float | None = None, high: float | None = None, **kwargs) -> Rule:
    return Rule("number", low, high, **kwargs)


BOOL = Rule("bool")
SEED = int_rule(0, 2**32 - 1)  # numpy's seed range, which Lightning's seed_everything enforces
UNIT = num_rule(0, 1)


def key(rule: Rule | None = None, default: Any = MISSING) -> Any:
    """A schema field: its range rule (numbers and flags) and, only if no YAML file sets it, a default."""
    return field(default=default, metadata={"rule": rule} if rule is not None else {})


@dataclass
class RolloutConfig:
    """``rollout``: generation of the responses PPO learns from (values: conf/train.yaml)."""

    batch_size: int = key(int_rule(1))  # prompts per iteration
    max_new_tokens: int = key(int_rule(1))  # generation length cap
    min_new_tokens: int = key(int_rule(0))  # EOS is suppressed before this many tokens
    temperature: float = key(num_rule(0, low_open=True))  # every log-prob uses logits / temperature
    top_k: int = key(int_rule(0, note="0 = off"))  # sample among the k likeliest tokens
    top_p: float = key(num_rule(0, 1, low_open=True))  # nucleus sampling mass; 1 = off
    merge_adapters: bool = key(BOOL)  # LoRA: sample through merged weights
    sampling_dtype: str | None = (
        key()
    )  # null (the weights' own) | float32 | bfloat16 | float16: sample in this dtype


@dataclass
class KLConfig:
    """``ppo.kl``: the KL penalty to the reference policy and its controller."""

    controller: str = key()  # adaptive | fixed (checked against core.kl_control.KL_CONTROLLERS)
    init_coef: float = key(num_rule(0))  # beta at the start
    target: float | None = key(num_rule(0, low_open=True, nullable=True))  # adaptive: target sequence KL
    horizon: float = key(num_rule(0, low_open=True))  # adaptive: horizon in samples
    estimator: str = key()  # per-token KL estimator: k1 | k3 | abs | mse (placement=loss: k3 | mse)
    placement: str = key()  # reward: -beta * KL_t in every objective's reward; loss: beta * KL as a loss term


@dataclass
class PPOConfig:
    """``ppo``: the PPO update of each iteration (values: conf/train.yaml)."""

    epochs: int = key(int_rule(1))  # PPO epochs over each rollout batch
    num_minibatches: int = key(int_rule(1))  # minibatches per epoch; must divide rollout.batch_size
    clip_coef: float = key(num_rule(0, low_open=True))  # policy ratio clip
    vf_coef: float = key(num_rule(0))  # value loss weight
    vf_clip: float = key(num_rule(0, low_open=True))  # value clip around the old values
    value_head_lr: float | None = key(num_rule(0, low_open=True, nullable=True))  # null = optimizer.lr
    gamma: float = key(UNIT)  # discount
    gae_lambda: float = key(UNIT)  # GAE lambda
    whiten_advantages: bool = key(BOOL)  # per objective, over the batch's response tokens
    max_grad_norm: float | None = key(num_rule(0, nullable=True, note="0 or null = no clipping"))
    kl: KLConfig = field(default_factory=KLConfig)


@dataclass
class DiagnosticsConfig:
    """``diagnostics``: the Pareto-stationarity measurement (``train/diag/*``)."""

    every_n_iterations: int = key(int_rule(0, note="0 = off"))  # on iterations 0, n, 2n, ...


@dataclass
class RewardConfig:
    """``reward``: how scores are shaped before training sees them (checked in ``rewards.normalize``)."""

    normalize: Any = key()  # none | running | per objective {<id>: running | none | {kind: fixed, mean, std}}


@dataclass
class EvalConfig:
    """``eval``: the held-out evaluations (start, periodic, end) and their result files."""

    seed: int = key(SEED)  # sampling seed of every evaluation
    every_n_iterations: int = key(int_rule(1))  # periodic validation during training
    batch_size: int = key(int_rule(1))  # prompts per validation generate call
    num_samples: int = key(int_rule(0))  # sample responses kept in each result file (eval.json...)
    # another run's reference/eval.json to take instead of evaluating the reference
    reference: str | None = key()


@dataclass
class PreferenceGridConfig:
    """``preference_grid``: a preference taken from a simplex grid instead of ``preference``."""

    steps: int | None = key(int_rule(1, nullable=True))  # weights are multiples of 1/steps
    index: int | None = key(int_rule(0, nullable=True))  # which grid point


@dataclass
class SvdLoraConfig:
    """``conditioning.svd_lora``: the preference-conditioned adapters of ``conditioning=svd_lora``.

    Only conf/conditioning/svd_lora.yaml sets these; the defaults let the other modes (and runs saved
    before svd_lora existed) leave the section out.
    """

    rank: int = key(int_rule(1), default=8)  # learned singular values per layer (plus one per objective)
    alpha: float = key(
        num_rule(0, low_open=True), default=16.0
    )  # the adapter's output is scaled by alpha / rank
    # Linear layers that get adapters, by name; null = model.lora.target_modules.
    target_modules: list[str] | None = key(default=None)
    init: str = key(default="lora")  # lora | adalora (checked in run.config)


@dataclass
class ConditioningConfig:
    """``conditioning``: one policy for every preference (docs/conditioning.md; values: each conf/conditioning option)."""

    mode: str = key()  # none | prompt | svd_lora (checked in run.config)
    concentration: float = key(num_rule(0, low_open=True))  # Dirichlet alpha of the per-prompt draws
    corner_share: float = key(UNIT)  # share of draws at the simplex's vertices and edge midpoints
    decimals: int = key(int_rule(1, 3))  # weights are multiples of 10^-decimals, written with this many
    # Every validation also covers the simplex grid of positive multiples of 1/steps (null = off).
    eval_grid_steps: int | None = key(int_rule(1, nullable=True, note="null = off"))
    svd_lora: SvdLoraConfig = field(default_factory=SvdLoraConfig)  # mode svd_lora only


@dataclass
class LoraConfig:
    """``model.lora``: LoRA adapters (values: each conf/model option)."""

    enabled: bool = key(BOOL)  # false = full fine-tuning with a frozen reference copy
    r: int = key(int_rule(1))  # adapter rank
    alpha: float = key(num_rule(0, low_open=True))  # scale alpha / r
    dropout: float = key(num_rule(0, 1, high_open=True))  # adapter dropout (0 in effect with disable_dropout)
    target_modules: list[str] = key()  # module names that get adapters


@dataclass
class ModelConfig:
    """``model``: the policy and how it is trained (values: each conf/model option)."""

    loader: Any = key()  # a _target_ callable returning a LoadedModel
    name: str = key()  # a label for logs and result files
    chat_template: bool = key(BOOL)  # wrap each prompt in the tokenizer's chat template
    max_prompt_length: int = key(int_rule(1))  # longer prompts are cut from the left
    disable_dropout: bool = key(BOOL)  # zero every dropout (PPO's first ratio is then exactly 1)
    gradient_checkpointing: bool = key(BOOL)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class AlgorithmConfig:
    """``algorithm``: how the objectives combine (``name`` and ``noon``: each conf/algorithm option).

    ``min_score_std`` and ``veto_threshold`` steer which objectives take part in PAMA's min
    (``pama``, ``pama_batch``), ``satisfied_at_ceiling`` which take part at each sample's tokens
    (``pama``); other algorithms refuse them. Most options leave them unset, so their defaults
    live here.
    """

    name: str = key()  # pama | pama_batch | morlhf | noon_ppo | mgda_ub | mgda
    noon: bool = key(BOOL)  # clamp each whitened advantage at 0
    # Leave out of the min, this iteration, an objective whose scores' batch std is below this.
    min_score_std: float = key(num_rule(0, note="0 = off"), default=1.0e-6)
    # Leave out of the min objectives whose preference weight is below this (0 = the paper's rule).
    veto_threshold: float = key(num_rule(0, note="0 = off"), default=0.0)
    # pama: leave an objective out of the min at the tokens of samples scoring its reward's ceiling.
    satisfied_at_ceiling: bool = key(BOOL, default=False)


@dataclass
class TrainConfig:
    """The root of ``conf/train.yaml``. Groups without a schema (their keys vary by option, or they
    are ``_target_`` nodes checked by ``run.config``) are typed ``Any``."""

    seed: int = key(SEED)
    iterations: int = key(int_rule(1))  # PPO iterations
    preference: Any = key()  # K positive weights (a list, or a mapping by objective id); null = uniform
    preference_grid: PreferenceGridConfig = field(default_factory=PreferenceGridConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    ckpt_path: str | None = key()  # resume from a checkpoint; "last" = <output_dir>/checkpoints/last.ckpt
    rewards_on_error: str = key()  # raise | skip (checked in run.config)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    optimizer: Any = key()  # a _partial_ torch optimizer; its numbers are checked by run.config
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    paths: Any = key()
    objective: Any = key()
    data: Any = key()
    trainer: Any = key()
    logger: Any = key()
    callbacks: Any = key()


SCHEMA_NAME = "train_schema"
ConfigStore.instance().store(name=SCHEMA_NAME, node=TrainConfig)


def schema_rules(schema: type = TrainConfig, prefix: str = "") -> dict[str, Rule]:
    """Dotted key -> rule of every field of ``schema`` (nested sections included) that carries one."""
    rules: dict[str, Rule] = {}
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if dataclasses.is_dataclass(hints[f.name]):
            rules.update(schema_rules(hints[f.name], f"{prefix}{f.name}."))
        elif "rule" in f.metadata:
            rules[f"{prefix}{f.name}"] = f.metadata["rule"]
    return rules


# Keys added to conf/ after runs were saved, each with the value that a run saved without it trained
# under: a run folder's .hydra/config.yaml that lacks one reads as having this value (evaluate.py;
# benchmarks/quality.py's reuse check). Add a key here when a new YAML key has no schema default.
ADDED_KEYS: dict[str, Any] = {
    "algorithm.satisfied_at_ceiling": False,  # every objective in the min at every sample (the paper's rule)
    "eval.reference": None,  # the run evaluated its reference itself
    "ppo.kl.placement": "reward",  # the KL penalty in every objective's reward
    "ppo.value_head_lr": None,  # the value heads at optimizer.lr
    "rollout.sampling_dtype": None,  # sampling in the weights' own dtype
}
_ABSENT = object()


def fill_added_keys(cfg: Any) -> list[str]:
    """Give a saved config (a DictConfig) each ``ADDED_KEYS`` key it lacks; returns the keys filled."""
    filled = []
    for dotted, value in ADDED_KEYS.items():
        if OmegaConf.select(cfg, dotted, default=_ABSENT) is _ABSENT:
            OmegaConf.update(cfg, dotted, value, force_add=True)
            filled.append(dotted)
    return filled


def typed(schema: type, node: Any) -> Any:
    """A config section as its dataclass: ``node`` (a DictConfig or a dict) checked against ``schema``.

    A section composed from conf/ is typed already; one read back from a run folder's saved
    ``.hydra/config.yaml`` is plain, and is checked here as it would have been at composition.
    """
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))


def unknown_keys(node: Any, schema: type = TrainConfig, prefix: str = "") -> list[tuple[str, list[str]]]:
    """Keys of ``node`` that ``schema`` does not declare, those that a ``+key=value`` override or an
    ``open_dict`` added past composition's check: (dotted key, the keys its section declares)."""
    hints = typing.get_type_hints(schema)
    declared = [f.name for f in dataclasses.fields(schema)]
    found = [(f"{prefix}{name}", declared) for name in node if name not in declared and name != "hydra"]
    for f in dataclasses.fields(schema):
        child = node.get(f.name) if f.name in node else None
        if dataclasses.is_dataclass(hints[f.name]) and child is not None:
            found += unknown_keys(child, hints[f.name], f"{prefix}{f.name}.")
    return found
