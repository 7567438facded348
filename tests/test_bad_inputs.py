"""The bad-input catalogue: each mistake a user can type, and the key parts of the message they get.

Most are caught by ``validate_config`` or ``preflight`` before any model loads (the tests that run
``train()`` replace the tiny model's loader with one that fails if it is called). Two need the model
(its context window) and say so. Hydra itself answers unknown config-group options, and (through
the schema, ``pama_lit.run.schema``) misspelt keys and values of the wrong type; those tests pin
what the user sees. Messages are matched on their key parts (the key, the bad value, what is
allowed), so that their wording can improve.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import typing
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import CONF, ROOT, compose_config
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf, open_dict
from safetensors.torch import save_file
from tiny import TINY

from pama_lit.data.prompts import PromptFileError, prompt_file
from pama_lit.infra.cache import CacheError, cache_dir, cached_folder
from pama_lit.infra.checkpointing import CheckpointError
from pama_lit.infra.hub_access import HubModelUnavailable
from pama_lit.run.config import VALUE_RULES, ConfigError, validate_config
from pama_lit.run.schema import TrainConfig, schema_rules
from pama_lit.run.train import train
from pama_lit.training.combiners import COMBINERS


def assert_names(message: str, *parts: str) -> None:
    """Every key part (key, bad value, what is allowed...) appears in the message."""
    missing = [part for part in parts if part not in message]
    assert not missing, f"{missing} not in the message: {message}"


# (id, overrides, exception type, key parts of the message) for mistakes validate_config reports.
CONFIG_CASES = [
    (
        "preference_wrong_length",
        ["preference=[1,2,3]"],
        ConfigError,
        ["preference [1, 2, 3]", "3 entries", "2 objectives (sentiment, length)", "one positive weight"],
    ),
    (
        "preference_negative",
        ["preference=[-1,2]"],
        ConfigError,
        ["preference [-1, 2]", "negative entry -1", "'sentiment'", "one positive weight"],
    ),
    (
        "preference_all_zero",
        ["preference=[0,0]"],
        ConfigError,
        ["preference [0, 0]", "zero entry 0", "positive"],
    ),
    (
        "preference_scalar",
        ["preference=0.5"],
        ConfigError,
        ["preference 0.5", "not a list of weights", "(sentiment, length)"],
    ),
    (
        "preference_mapping_missing_an_objective",
        ["preference={sentiment:1}"],
        ConfigError,
        ["preference {'sentiment': 1}", "(sentiment, length)", "missing: ['length']"],
    ),
    (
        "preference_mapping_of_text",
        ["preference={sentiment:high,length:1}"],
        ConfigError,
        ["preference {'sentiment': 'high', 'length': 1}", "non-numeric entry 'high'", "'sentiment'"],
    ),
    (
        "preference_underflows_in_float32",
        ["preference=[1e-50,1]"],
        ConfigError,
        ["preference [1e-50, 1]", "'sentiment'", "float32", "1.18e-38"],
    ),
    (
        "preference_subnormal_in_float32",
        ["preference=[1,1e-40]"],
        ConfigError,
        ["preference [1, 1e-40]", "'length'", "float32"],
    ),
    (
        "preference_grid_out_of_range",
        ["preference_grid.steps=4", "preference_grid.index=3"],
        ConfigError,
        ["preference_grid.index=3", "index 0..2"],
    ),
    (
        "preference_grid_too_coarse",
        ["preference_grid.steps=1", "preference_grid.index=0"],
        ConfigError,
        ["preference_grid.steps=1", ">= 2"],
    ),
    ("unknown_algorithm_name", ["algorithm.name=nope"], ConfigError, ["'nope'", *COMBINERS]),
    (
        "single_objective_algorithm_with_two",
        ["algorithm=noon_ppo"],
        ValueError,
        ["algorithm=noon_ppo", "got 2", "objective=sentiment", "algorithm=pama"],
    ),
    (
        "batch_not_divisible",
        ["rollout.batch_size=6", "ppo.num_minibatches=4"],
        ConfigError,
        ["rollout.batch_size=6", "ppo.num_minibatches=4", "divisor"],
    ),
    (
        "zero_generation_length",
        ["rollout.max_new_tokens=0"],
        ConfigError,
        ["rollout.max_new_tokens=0", "integer >= 1"],
    ),
    (
        "negative_generation_length",
        ["rollout.max_new_tokens=-5"],
        ConfigError,
        ["rollout.max_new_tokens=-5", ">= 1"],
    ),
    (
        "min_above_max_tokens",
        ["rollout.min_new_tokens=9", "rollout.max_new_tokens=8"],
        ConfigError,
        ["rollout.min_new_tokens=9", "[0, 8]", "rollout.max_new_tokens"],
    ),
    ("zero_iterations", ["iterations=0"], ConfigError, ["iterations=0", "integer >= 1"]),
    ("zero_eval_batch_size", ["eval.batch_size=0"], ConfigError, ["eval.batch_size=0", ">= 1"]),
    ("zero_eval_interval", ["eval.every_n_iterations=0"], ConfigError, ["eval.every_n_iterations=0", ">= 1"]),
    (
        "zero_rollout_batch",
        ["rollout.batch_size=0"],
        ConfigError,
        ["rollout.batch_size=0", "integer >= 1"],
    ),
    ("zero_temperature", ["rollout.temperature=0"], ConfigError, ["rollout.temperature=0", "> 0"]),
    ("negative_clip", ["ppo.clip_coef=-0.2"], ConfigError, ["ppo.clip_coef=-0.2", "number > 0"]),
    ("discount_above_one", ["ppo.gamma=1.5"], ConfigError, ["ppo.gamma=1.5", "[0, 1]"]),
    ("nan_discount", ["ppo.gamma=nan"], ConfigError, ["ppo.gamma=nan", "[0, 1]"]),
    ("negative_gae_lambda", ["ppo.gae_lambda=-0.1"], ConfigError, ["ppo.gae_lambda=-0.1", "[0, 1]"]),
    ("negative_kl_coef", ["ppo.kl.init_coef=-1"], ConfigError, ["ppo.kl.init_coef=-1", ">= 0"]),
    ("zero_learning_rate", ["optimizer.lr=0"], ConfigError, ["optimizer.lr=0", "number > 0"]),
    ("negative_learning_rate", ["optimizer.lr=-1e-4"], ConfigError, ["optimizer.lr=-0.0001", "> 0"]),
    (
        "adam_beta_of_one",
        ["optimizer.betas=[0.9,1.0]"],
        ConfigError,
        ["optimizer.betas=[0.9, 1.0]", "2 numbers in [0, 1)"],
    ),
    ("negative_seed", ["seed=-1"], ConfigError, ["seed=-1", "[0, 4294967295]"]),
    ("seed_beyond_numpy", ["seed=4294967296"], ConfigError, ["seed=4294967296", "[0, 4294967295]"]),
    ("zero_lora_rank", ["model.lora.r=0"], ConfigError, ["model.lora.r=0", "integer >= 1"]),
    ("lora_dropout_of_one", ["model.lora.dropout=1"], ConfigError, ["model.lora.dropout=1", "[0, 1)"]),
    ("zero_lora_alpha", ["model.lora.alpha=0"], ConfigError, ["model.lora.alpha=0", "> 0"]),
    (
        "negative_validation_prompts",
        ["data.val_size=-1"],
        ConfigError,
        ["data.val_size=-1", "integer >= 0", "0 = no evaluation"],
    ),
    (
        "duplicate_objective_other_name",
        ["+reward@objective.rewards.sentiment2=sentiment"],
        ConfigError,
        ["'sentiment'", "'sentiment2'", "same reward", "remove one"],
    ),
    (
        "reward_without_target",
        ["+objective.rewards.polite.fn=my_rewards:polite"],
        ConfigError,
        ["objective.rewards.polite", "_target_", "reward@objective.rewards.polite=sentiment"],
    ),
    (
        "trainer_gradient_clipping",
        ["+trainer.gradient_clip_val=1.0"],
        ConfigError,
        ["trainer.gradient_clip_val=1.0", "not supported", "ppo.max_grad_norm"],
    ),
    (
        "trainer_gradient_accumulation",
        ["+trainer.accumulate_grad_batches=4"],
        ConfigError,
        ["trainer.accumulate_grad_batches=4", "not supported", "ppo.num_minibatches"],
    ),
    (
        "trainer_several_epochs",
        ["trainer.max_epochs=3"],
        ConfigError,
        ["trainer.max_epochs=3", "iterations="],
    ),
    (
        "lightning_distributed_sampler",
        ["trainer.use_distributed_sampler=true"],
        ConfigError,
        ["trainer.use_distributed_sampler", "false"],
    ),
    (
        "unknown_kl_controller",
        ["ppo.kl.controller=pid"],
        ConfigError,
        ["ppo.kl.controller", "'pid'", "fixed, adaptive"],
    ),
    (
        "unknown_rewards_on_error",
        ["rewards_on_error=ignore"],
        ConfigError,
        ["rewards_on_error='ignore'", "'raise' or 'skip'"],
    ),
]


@pytest.mark.parametrize(
    "overrides,error,parts", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_config_mistakes_are_named_before_anything_loads(overrides, error, parts):
    cfg = compose_config(["debug=tiny", *overrides])
    with pytest.raises(error) as err:
        validate_config(cfg)
    assert_names(str(err.value), *parts)


def composition_message(err: pytest.ExceptionInfo) -> str:
    """Hydra's message and OmegaConf's cause under it (the cause holds ``full_key: <key>``)."""
    return f"{err.value}\n{err.value.__cause__}"


# (id, override, key parts of the message) for mistakes the schema (pama_lit.run.schema) refuses
# while Hydra composes the config, before validate_config runs.
COMPOSITION_CASES = [
    ("typo_key", "ppo.clip_coeff=0.1", ["ppo.clip_coeff", "not in 'PPOConfig'"]),
    ("typo_section", "rolout.batch_size=4", ["rolout.batch_size"]),
    ("text_batch_size", "rollout.batch_size=abc", ["rollout.batch_size=abc", "'abc'", "Integer"]),
    (
        "fractional_generation_length",
        "rollout.max_new_tokens=3.7",
        ["rollout.max_new_tokens", "'3.7'", "Integer"],
    ),
    (
        "text_generation_length",
        "rollout.max_new_tokens=long",
        ["rollout.max_new_tokens", "'long'", "Integer"],
    ),
    ("fractional_iterations", "iterations=2.5", ["full_key: iterations", "'2.5'", "Integer"]),
    # A float that is a whole number is refused too: integer keys take ints only.
    ("float_iterations", "iterations=2.0", ["full_key: iterations", "'2.0'", "Integer"]),
    ("text_iterations", "iterations=many", ["full_key: iterations", "'many'", "Integer"]),
    ("bool_iterations", "iterations=true", ["full_key: iterations", "'True'", "Integer"]),
    ("fractional_lora_rank", "model.lora.r=4.5", ["full_key: model.lora.r", "'4.5'", "Integer"]),
    ("text_flag", "ppo.whiten_advantages=maybe", ["full_key: ppo.whiten_advantages", "'maybe'", "bool"]),
    ("text_number", "ppo.gamma=high", ["full_key: ppo.gamma", "'high'", "Float"]),
]


@pytest.mark.parametrize(
    "override,parts", [c[1:] for c in COMPOSITION_CASES], ids=[c[0] for c in COMPOSITION_CASES]
)
def test_a_misspelt_key_or_a_wrong_type_fails_at_composition(override, parts):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["debug=tiny", override])
    assert_names(composition_message(err), *parts)


def test_a_misspelt_key_in_a_config_file_fails_at_composition(tmp_path):
    """Not only the command line: a YAML file that sets an unknown key is refused by the schema too."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "typo.yaml").write_text("# @package _global_\nppo:\n  clip_coeff: 0.1\n")
    with pytest.raises(ConfigCompositionException) as err:
        compose_config([f"hydra.searchpath=[file://{tmp_path}]", "experiment=typo"])
    assert_names(composition_message(err), "ppo.clip_coeff", "experiment/typo")


def test_an_appended_unknown_key_is_named_by_validate_config():
    """``+key=value`` adds a key past the schema's check; validate_config names it with the known ones."""
    cfg = compose_config(["debug=tiny", "+ppo.clip_coeff=0.1"])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert_names(str(err.value), "ppo.clip_coeff is not a config key", "clip_coef, vf_coef")


def test_objective_id_that_breaks_metric_keys():
    cfg = compose_config(["debug=tiny"])
    with open_dict(cfg):
        cfg.objective.rewards["2fast"] = {"_target_": "pama_lit.rewards.LengthReward"}
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert_names(str(err.value), "objective id '2fast'", "start with a letter", "train/reward/<id>")


def test_a_preference_mapping_by_objective_is_accepted():
    """A mapping from each objective id to its weight means the same as the list in objective order."""
    cfg = compose_config(["debug=tiny", "preference={length:3,sentiment:1}"])
    validate_config(cfg)
    from pama_lit.core.preference import resolve_preference

    weights = resolve_preference(OmegaConf.to_container(cfg.preference), ["sentiment", "length"])
    assert weights.tolist() == [0.25, 0.75]


WRONG_TYPES = [(key, "text") for key in VALUE_RULES] + [
    (key, "1.5") for key, rule in VALUE_RULES.items() if rule.kind != "number"
]
SCHEMA_RULES = schema_rules()


@pytest.mark.parametrize("key,bad", [c for c in WRONG_TYPES if c[0] in SCHEMA_RULES])
def test_every_schema_key_refuses_a_wrong_type_at_composition(key, bad):
    """A key of the schema given text (an integer or a flag, also a fraction) fails as Hydra composes."""
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["debug=tiny", f"++{key}={bad}"])
    assert_names(composition_message(err), f"full_key: {key}", f"'{bad}'")


@pytest.mark.parametrize("key,bad", [c for c in WRONG_TYPES if c[0] not in SCHEMA_RULES])
def test_every_checked_key_refuses_a_wrong_type_by_name(key, bad):
    """The keys without a schema (data, optimizer, callbacks): validate_config names them with the value."""
    rule = VALUE_RULES[key]
    cfg = compose_config(["debug=tiny", f"++{key}={bad}"])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    shown = repr(bad) if bad == "text" else bad
    assert_names(str(err.value), f"{key}={shown}" if rule.length is None else f"{key}=", rule.describe())


def _numeric_leaves(node, prefix: str = ""):
    """Dotted keys of the int, float and bool values of a plain config, '_target_'-style keys skipped."""
    for key, value in node.items():
        if str(key).startswith("_"):
            continue
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _numeric_leaves(value, dotted + ".")
        elif isinstance(value, (bool, int, float)) or (
            isinstance(value, list) and value and isinstance(value[0], float)
        ):
            yield dotted


def test_every_number_of_train_yaml_and_every_lora_setting_has_a_rule():
    """A new numeric key in conf/train.yaml or a model's lora section must come with its check."""
    train = OmegaConf.to_container(OmegaConf.load(CONF / "train.yaml"))
    keys = set(_numeric_leaves(train)) | {"preference_grid.steps", "preference_grid.index"}
    for model in (CONF / "model").glob("*.yaml"):
        lora = OmegaConf.to_container(OmegaConf.load(model)).get("lora") or {}
        keys |= {f"model.{key}" for key in _numeric_leaves({"lora": lora})}
    assert keys - set(VALUE_RULES) == set()
    assert {"model.lora.r", "model.lora.alpha", "model.lora.dropout", "ppo.gamma", "optimizer.lr"} <= keys


def _numeric_fields(schema: type, prefix: str = ""):
    """Dotted keys of the schema's int, float and bool fields (optional or in a list too)."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from _numeric_fields(kind, f"{prefix}{f.name}.")
        elif {int, float, bool} & {kind, *typing.get_args(kind)}:
            yield f"{prefix}{f.name}"


def test_every_number_of_the_schema_has_its_rule_beside_it():
    """A new numeric field in pama_lit.run.schema must carry its range rule in its metadata."""
    keys = set(_numeric_fields(TrainConfig))
    assert keys - set(SCHEMA_RULES) == set()
    assert {"rollout.batch_size", "ppo.kl.target", "model.lora.alpha", "algorithm.veto_threshold"} <= keys
    assert set(SCHEMA_RULES) <= set(VALUE_RULES)


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the policy loader runs: these mistakes must be reported before that."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the mistake was reported")

    monkeypatch.setattr("pama_lit.models.build_tiny_llama", refuse)


@pytest.mark.parametrize(
    "override,parts",
    [
        ("model.lora.r=0", ["model.lora.r=0", "integer >= 1"]),
        ("optimizer.lr=0", ["optimizer.lr=0", "> 0"]),
        ("rollout.batch_size=0", ["rollout.batch_size=0", ">= 1"]),
        ("data.val_size=-2", ["data.val_size=-2", ">= 0"]),
        ("seed=-3", ["seed=-3", "[0, 4294967295]"]),
    ],
)
def test_train_names_the_key_before_the_model_loads(tmp_path, no_model, override, parts):
    """These were refused late (peft after the model was built, the optimizer after the reference
    evaluation) or under a derived key (data.batch_size); train() now stops at validate_config."""
    cfg = compose_config([*TINY, override], tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert_names(str(err.value), *parts)
    assert "data.batch_size" not in str(err.value)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_unknown_objective_on_the_command_line_lists_the_known_ones(tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", "objective=nope", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert_names(proc.stderr, "Could not find 'objective/nope'", *_options("objective"))
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "eval.json").exists()


@pytest.mark.parametrize(
    "overrides,error,parts",
    [
        (
            ["objective=sentiment", "reward@objective.rewards.sentiment=nope"],
            MissingConfigException,
            ["Could not find 'reward/nope'", *_options("reward")],
        ),
        (
            ["algorithm=nope"],
            MissingConfigException,
            ["Could not find 'algorithm/nope'", *_options("algorithm")],
        ),
        (
            ["objective=[sentiment,sentiment]"],
            ConfigCompositionException,
            ["reward@objective.rewards.sentiment", "more than once"],
        ),
    ],
    ids=["unknown_reward", "unknown_algorithm_group", "duplicate_objective"],
)
def test_hydra_answers_unknown_group_options(overrides, error, parts):
    with pytest.raises(error) as err:
        compose_config(overrides)
    assert_names(str(err.value), *parts)


def test_a_run_without_validation_prompts_exports_and_says_it_was_not_evaluated(tmp_path, capsys):
    """data.val_size=0 trains (the fault tests use it to reach training first) and no longer crashes
    on the missing evaluation after the last iteration, before final/ was written."""
    run = tmp_path / "run"
    cfg = compose_config([*TINY, "iterations=2", "data.val_size=0", "eval.every_n_iterations=1"], run)
    result = train(cfg)
    assert result["start"] is None and result["end"] is None
    assert (run / "final" / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "final" / "value_heads.pt").is_file()
    assert not (run / "eval.json").exists() and not (run / "reference" / "eval.json").exists()
    assert_names(
        capsys.readouterr().out, "data.val_size=0", "no reference/eval.json or eval.json", str(run / "final")
    )


def test_empty_prompt_source(tmp_path, no_model):
    cfg = compose_config([*TINY, "data.source._target_=faulty.no_prompts"], tmp_path)
    with pytest.raises(ValueError) as err:
        train(cfg)
    assert_names(str(err.value), "0 prompts", "val_size=2", "data.val_size")


def test_missing_prompt_file(tmp_path, no_model):
    missing = tmp_path / "prompts.txt"
    cfg = compose_config([*TINY, "data=file", f"data.source.path={missing}"], tmp_path / "run")
    with pytest.raises(FileNotFoundError) as err:
        train(cfg)
    assert_names(str(err.value), repr(str(missing)), "does not exist", "data.source.path", "data=tweets")


# (id, file name, bytes, data.source.field, key parts): a prompt file that cannot be read as prompts.
PROMPT_FILE_CASES = [
    (
        "text_not_utf8",
        "p.txt",
        b"first prompt\nsecond\nthird \xff\xfe prompt\n",
        "prompt",
        ["line 3", "0xff", "UTF-8"],
    ),
    (
        "jsonl_not_utf8",
        "p.jsonl",
        b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n',
        "prompt",
        ["line 2", "0xe9", "UTF-8", "data.source.field='prompt'"],
    ),
    (
        "jsonl_without_the_field",
        "p.jsonl",
        b'{"prompt": "a"}\n\n{"text": "b", "id": 3}\n',
        "prompt",
        ["line 3", "no field 'prompt'", "data.source.field='prompt'", "'text'", "'id'"],
    ),
    (
        "jsonl_field_setting_not_in_records",
        "p.jsonl",
        b'{"prompt": "a"}\n',
        "question",
        ["line 1", "no field 'question'", "data.source.field='question'", "'prompt'"],
    ),
    (
        "jsonl_malformed_line",
        "p.jsonl",
        b'{"prompt": "a"}\n{"prompt": "b"\n',
        "prompt",
        ["line 2", "not valid JSON", "data.source.field='prompt'"],
    ),
    (
        "jsonl_record_not_an_object",
        "p.jsonl",
        b'["a", "b"]\n',
        "prompt",
        ["line 1", "no field 'prompt'", "data.source.field='prompt'", "list"],
    ),
    (
        "jsonl_prompt_not_text",
        "p.jsonl",
        b'{"prompt": "a"}\n{"prompt": null}\n',
        "prompt",
        ["line 2", "'prompt'", "data.source.field", "None", "not a string"],
    ),
]


@pytest.mark.parametrize(
    "name,content,field,parts", [c[1:] for c in PROMPT_FILE_CASES], ids=[c[0] for c in PROMPT_FILE_CASES]
)
def test_prompt_file_mistakes_name_the_file_line_and_field(tmp_path, name, content, field, parts):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PromptFileError) as err:
        prompt_file(str(path), field=field)
    assert_names(str(err.value), repr(str(path)), *parts)


def test_a_damaged_prompt_file_stops_train_before_the_model(tmp_path, no_model):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "a"}\n{"question": "b"}\n')
    cfg = compose_config([*TINY, "data=file", f"data.source.path={path}"], tmp_path / "run")
    with pytest.raises(PromptFileError) as err:
        train(cfg)
    assert_names(str(err.value), str(path), "line 2", "data.source.field='prompt'")


def test_prompt_file_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes("\ufefffirst\nsecond\n".encode())
    assert prompt_file(str(path)) == ["first", "second"]


def test_hub_model_unavailable_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    cfg = compose_config([*TINY, "model=gpt2"], tmp_path)
    with pytest.raises(HubModelUnavailable) as err:
        train(cfg)
    assert_names(
        str(err.value), "policy model 'gpt2'", "not available offline", "HF_HUB_OFFLINE", "model=smollm2"
    )


def test_hub_dataset_unavailable_offline(tmp_path, monkeypatch, no_model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    cfg = compose_config([*TINY, "data=imdb"], tmp_path)
    with pytest.raises(HubModelUnavailable) as err:
        train(cfg)
    assert_names(str(err.value), "data set 'stanfordnlp/imdb'", "not available offline", "data=tweets")


def test_unwritable_output_folder(tmp_path, no_model):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = compose_config(TINY, blocker / "run")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert_names(
        str(err.value), f"paths.output_dir={str(blocker / 'run')!r}", "not writable", "hydra.run.dir"
    )


TINY_LORA_KEY = "policy.lm.base_model.model.model.layers.{}.self_attn.{}.lora_{}.default.weight"


def _checkpoint(
    path: Path, objectives: list[str], algorithm: str = "pama", state_dict: dict | None = None
) -> Path:
    torch.save(
        {"state_dict": state_dict or {}, "pama": {"objectives": objectives, "algorithm": algorithm}}, path
    )
    return path


def _lora_state(r: int, modules=("q_proj", "v_proj"), hidden: int = 64) -> dict:
    """The trainable weights a tiny-model checkpoint holds: LoRA A (r, in) and B (out, r), value heads."""
    state = {"policy.value_head.weight": torch.zeros(2, hidden), "policy.value_head.bias": torch.zeros(2)}
    for layer in range(2):
        for module in modules:
            state[TINY_LORA_KEY.format(layer, module, "A")] = torch.zeros(r, hidden)
            state[TINY_LORA_KEY.format(layer, module, "B")] = torch.zeros(hidden, r)
    return state


def test_checkpoint_from_another_objective_set(tmp_path, no_model):
    ckpt = _checkpoint(tmp_path / "humor.ckpt", ["humor", "harmless"])
    cfg = compose_config([*TINY, f"ckpt_path={ckpt}"], tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert_names(
        str(err.value), repr(str(ckpt)), "['humor', 'harmless']", "['sentiment', 'length']", "objective="
    )


def test_checkpoint_from_an_algorithm_with_other_value_heads(tmp_path, no_model):
    ckpt = _checkpoint(tmp_path / "morlhf.ckpt", ["sentiment", "length"], "morlhf")
    cfg = compose_config([*TINY, f"ckpt_path={ckpt}"], tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert_names(str(err.value), repr(str(ckpt)), "algorithm=morlhf", "1 value heads", "needs 2")


@pytest.mark.parametrize(
    "state,overrides,parts",
    [
        (_lora_state(8), [], ["rank 8", "(8, 64)", "model.lora.r=4", "(4, 64)", "model.lora.r=8"]),
        (_lora_state(4), ["model.lora.r=8"], ["rank 4", "(4, 64)", "model.lora.r=8", "(8, 64)"]),
        (
            _lora_state(4, modules=("q_proj", "k_proj")),
            [],
            ["['k_proj', 'q_proj']", "model.lora.target_modules=['q_proj', 'v_proj']"],
        ),
        (_lora_state(4), ["model.lora.enabled=false"], ["LoRA adapters", "model.lora.enabled=false"]),
        (
            {"policy.lm.model.layers.0.mlp.up_proj.weight": torch.zeros(128, 64)},
            [],
            ["full-model weights", "model.lora.enabled=true"],
        ),
    ],
    ids=["rank_8_into_4", "rank_4_into_8", "other_modules", "lora_into_full", "full_into_lora"],
)
def test_checkpoint_with_other_adapters_is_refused_before_the_model(
    tmp_path, no_model, state, overrides, parts
):
    ckpt = _checkpoint(tmp_path / "other.ckpt", ["sentiment", "length"], state_dict=state)
    cfg = compose_config([*TINY, *overrides, f"ckpt_path={ckpt}"], tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert_names(str(err.value), repr(str(ckpt)), *parts)


def test_checkpoint_with_the_configured_adapters_passes_preflight(tmp_path):
    from pama_lit.run.preflight import check_checkpoint

    ckpt = _checkpoint(tmp_path / "same.ckpt", ["sentiment", "length"], state_dict=_lora_state(4))
    check_checkpoint(str(ckpt), compose_config(TINY))


def _damage(path: Path, how: str) -> None:
    """Damage a file as disks, copies and crashes do."""
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "random_bytes":
        path.write_bytes(os.urandom(path.stat().st_size))
    elif how == "empty_zip":
        zipfile.ZipFile(path, "w").close()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "missing":
        path.unlink()


@pytest.mark.parametrize("how", ["truncated", "random_bytes", "empty_zip", "empty"])
def test_damaged_checkpoint_is_named_as_damaged(tmp_path, no_model, how):
    ckpt = _checkpoint(tmp_path / "last.ckpt", ["sentiment", "length"], state_dict=_lora_state(4))
    _damage(ckpt, how)
    cfg = compose_config([*TINY, f"ckpt_path={ckpt}"], tmp_path / "run")
    with pytest.raises(CheckpointError) as err:
        train(cfg)
    assert_names(str(err.value), repr(str(ckpt)), "is damaged", "resume from another checkpoint")
    assert "pickled objects" not in str(err.value)


@pytest.mark.parametrize("which", ["file", "last"])
def test_missing_checkpoint(tmp_path, no_model, which):
    path = str(tmp_path / "gone.ckpt") if which == "file" else "last"
    cfg = compose_config([*TINY, f"ckpt_path={path}"], tmp_path / "run")
    with pytest.raises(FileNotFoundError) as err:
        train(cfg)
    if which == "file":
        assert_names(str(err.value), f"ckpt_path={path!r}", "does not exist")
    else:
        last = tmp_path / "run" / "checkpoints" / "last.ckpt"
        assert_names(str(err.value), "ckpt_path=last", str(last), "hydra.run.dir=")


def test_checkpoint_that_is_not_from_pama_lit(tmp_path, no_model):
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, ckpt)
    cfg = compose_config([*TINY, f"ckpt_path={ckpt}"], tmp_path / "run")
    with pytest.raises(CheckpointError) as err:
        train(cfg)
    assert_names(str(err.value), repr(str(ckpt)), "not written by pama_lit", "'pama'")


# Finished runs: evaluate.py --------------------------------------------------------------------


def _finished_run(root: Path, overrides: tuple = ()) -> Path:
    """A run folder as train.py leaves it (config, exported adapter and value heads), no model needed."""
    run = root / "run"
    cfg = compose_config([*TINY, *overrides], run)
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    (run / "final" / "adapter").mkdir(parents=True)
    save_file(_lora_state(4), run / "final" / "adapter" / "adapter_model.safetensors")
    torch.save(
        {"state_dict": {"weight": torch.zeros(2, 64)}, "objectives": ["sentiment", "length"]},
        run / "final" / "value_heads.pt",
    )
    return run


@pytest.mark.parametrize("how", ["missing", "truncated", "random_bytes", "empty"])
@pytest.mark.parametrize("name", ["adapter/adapter_model.safetensors", "value_heads.pt"])
def test_evaluate_names_a_damaged_final_file_before_the_model(tmp_path, no_model, name, how):
    from pama_lit.run.evaluate import evaluate

    run = _finished_run(tmp_path)
    _damage(run / "final" / name, how)
    with pytest.raises(CheckpointError) as err:
        evaluate(run)
    assert_names(
        str(err.value),
        repr(str(run / "final" / name)),
        "does not exist" if how == "missing" else "is damaged",
    )


def test_evaluate_of_a_run_without_validation_prompts_asks_for_num_prompts(tmp_path, no_model):
    from pama_lit.run.evaluate import evaluate

    run = _finished_run(tmp_path, ("data.val_size=0",))
    with pytest.raises(ValueError) as err:
        evaluate(run)
    assert_names(str(err.value), str(run), "data.val_size=0", "num_prompts=N")


def test_evaluate_with_a_missing_run_dir_creates_no_folder(tmp_path):
    missing = tmp_path / "no_such_run"
    proc = subprocess.run(
        [sys.executable, "evaluate.py", f"run_dir={missing}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.returncode == 1
    assert_names(proc.stderr, str(missing / ".hydra" / "config.yaml"), "not found", "train.py")
    assert not missing.exists()


# Sweep fronts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_fronts_out_that_is_not_a_folder_is_one_line(tmp_path, capsys, where):
    from test_fronts import write_fake_sweep

    from pama_lit.fronts.__main__ import main

    sweep = write_fake_sweep(tmp_path / "results")
    blocker = tmp_path / "report.csv"
    blocker.write_text("a file")
    out = blocker if where == "file" else blocker / "fronts"
    assert main([str(sweep), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fronts: error: ") and len(err.splitlines()) == 1
    assert_names(err, "--out", str(blocker), "is a file")


def test_fronts_command_line_out_on_a_file_has_no_traceback(tmp_path):
    blocker = tmp_path / "report.csv"
    blocker.write_text("a file")
    proc = subprocess.run(
        [sys.executable, "-m", "pama_lit.fronts", str(tmp_path), "--out", str(blocker)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert_names(proc.stderr, "fronts: error:", str(blocker), "is a file")


# The cache: converted models, trained reward artifacts --------------------------------------------


def _build_three_files(calls: list):
    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "config.json").write_text('{"a": 1}')
        (folder / "model.safetensors").write_bytes(b"w" * 4096)
        (folder / "sub").mkdir()
        (folder / "sub" / "tokenizer.json").write_text("{}")

    return build


@pytest.mark.parametrize(
    "how", ["truncated", "same_size_changed", "missing_file", "no_manifest", "empty_manifest"]
)
def test_a_damaged_cache_artifact_is_built_again_with_a_warning(tmp_path, monkeypatch, caplog, how):
    monkeypatch.setenv("PAMA_LIT_CACHE", str(tmp_path / "cache"))
    calls: list = []
    folder = cache_dir("models") / "artifact"
    assert cached_folder(folder, _build_three_files(calls), "the test artifact") == folder
    assert len(calls) == 1 and (folder / "manifest.json").is_file()
    weights = folder / "model.safetensors"
    if how == "truncated":
        weights.write_bytes(b"w" * 100)
    elif how == "same_size_changed":
        weights.write_bytes(b"x" * 4096)
    elif how == "missing_file":
        (folder / "sub" / "tokenizer.json").unlink()
    elif how == "no_manifest":
        (folder / "manifest.json").unlink()
    else:
        (folder / "manifest.json").write_text("")
    from pama_lit.infra import cache

    cache._hashed.clear()  # a new process
    with caplog.at_level(logging.WARNING, logger="pama_lit.infra.cache"):
        cached_folder(folder, _build_three_files(calls), "the test artifact")
    assert len(calls) == 2
    assert weights.read_bytes() == b"w" * 4096
    name = (
        "manifest.json"
        if how in ("no_manifest", "empty_manifest")
        else "tokenizer.json"
        if how == "missing_file"
        else "model.safetensors"
    )
    assert_names(caplog.text, "the test artifact", "damaged", name)
    assert [p.name for p in folder.parent.iterdir()] == ["artifact"]  # no temporary or damaged copy left


def test_a_sound_cache_artifact_is_not_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv("PAMA_LIT_CACHE", str(tmp_path / "cache"))
    calls: list = []
    folder = cache_dir() / "artifact"
    cached_folder(folder, _build_three_files(calls), "the test artifact")
    from pama_lit.infra import cache

    cache._hashed.clear()
    cached_folder(folder, _build_three_files(calls), "the test artifact")
    assert len(calls) == 1


def test_a_damaged_artifact_that_cannot_be_built_again_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PAMA_LIT_CACHE", str(tmp_path / "cache"))
    folder = cache_dir() / "artifact"
    cached_folder(folder, _build_three_files([]), "the test artifact")
    (folder / "model.safetensors").write_bytes(b"")

    def broken(folder: Path) -> None:
        raise RuntimeError("the source package is gone")

    with pytest.raises(CacheError) as err:
        cached_folder(folder, broken, "the test artifact")
    assert_names(
        str(err.value),
        str(folder / "model.safetensors"),
        "damaged",
        "the source package is gone",
        str(folder),
    )


def test_embedded_model_cache_is_converted_again_when_truncated(tmp_path, monkeypatch, caplog):
    """The converted SmolLM2 copy: a truncated weights file was never repaired (every run failed in safetensors)."""
    from pama_lit.models import loading

    monkeypatch.setenv("PAMA_LIT_CACHE", str(tmp_path / "cache"))
    calls: list = []
    monkeypatch.setattr(loading, "_convert_smollm2", _build_three_files(calls))
    folder = loading.embedded_smollm2_dir()
    (folder / "model.safetensors").write_bytes(b"w" * 10)
    with caplog.at_level(logging.WARNING, logger="pama_lit.infra.cache"):
        assert loading.embedded_smollm2_dir(weights=False) == folder
    assert len(calls) == 2 and (folder / "model.safetensors").stat().st_size == 4096
    assert_names(caplog.text, "SmolLM2", str(folder / "model.safetensors"), "10 bytes", "4096")


def test_humor_cache_artifact_is_trained_again_when_damaged(tmp_path, monkeypatch, caplog):
    from pama_lit.rewards import humor_train

    monkeypatch.setenv("PAMA_LIT_CACHE", str(tmp_path / "cache"))
    trained: list = []

    def fake_train(out, config=None, embedder=None, progress=True):
        trained.append(out)
        Path(out).write_text('{"format": "pama_lit.humor_classifier"}')

    monkeypatch.setattr(humor_train, "train_humor_classifier", fake_train)
    path = humor_train.cached_artifact()
    path.write_text('{"format": "pama_lit.hum')
    with caplog.at_level(logging.WARNING, logger="pama_lit.infra.cache"):
        assert humor_train.cached_artifact() == path
    assert len(trained) == 2 and path.read_text() == '{"format": "pama_lit.humor_classifier"}'
    assert_names(caplog.text, "humor classifier", str(path), "damaged")


@pytest.mark.parametrize("setting", ["missing_parent", "a_file"])
def test_a_bad_cache_setting_is_named_with_the_variable(tmp_path, monkeypatch, setting):
    target = tmp_path / "no_such_parent" / "cache" if setting == "missing_parent" else tmp_path / "cache_file"
    if setting == "a_file":
        target.write_text("")
    monkeypatch.setenv("PAMA_LIT_CACHE", str(target))
    with pytest.raises(CacheError) as err:
        cache_dir("models")
    parts = ["does not exist", str(target.parent)] if setting == "missing_parent" else ["not a folder"]
    assert_names(str(err.value), f"PAMA_LIT_CACHE={target}", *parts)
    assert not target.parent.exists() or setting == "a_file"


def test_an_unwritable_cache_is_named_with_the_variable(tmp_path, monkeypatch):
    """Root ignores file modes, so the refusal to create the temporary folder is simulated."""
    import tempfile

    monkeypatch.setenv("PAMA_LIT_CACHE", str(tmp_path / "cache"))
    folder = cache_dir("models") / "artifact"

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(CacheError) as err:
        cached_folder(folder, _build_three_files([]), "the test artifact")
    assert_names(
        str(err.value), str(folder.parent), "Permission denied", f"PAMA_LIT_CACHE={tmp_path / 'cache'}"
    )


def test_prompt_and_response_budget_beyond_the_context_window(tmp_path):
    """Needs the model's config, so it is reported when the model loads, before any training."""
    cfg = compose_config([*TINY, "model.max_prompt_length=510"], tmp_path)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert_names(
        str(err.value), "model.max_prompt_length=510", "rollout.max_new_tokens=4", "context window of 512"
    )
    assert not (tmp_path / "reference").exists()


def test_long_prompts_are_cut_from_the_left_with_a_warning(caplog):
    """Documented behaviour: a prompt beyond model.max_prompt_length loses its beginning, keeps the template end."""
    from conftest import compose_config as compose

    from pama_lit.rewards import build_rewards
    from pama_lit.run.train import build_module

    cfg = compose([*TINY, "model.max_prompt_length=24"])
    module = build_module(cfg, build_rewards(cfg.objective.rewards))
    module.configure_model()
    long_prompt = "BEGINNING " + "word " * 200 + "the end"
    with caplog.at_level("WARNING", logger="pama_lit.training.module"):
        ids, mask = module.tokenize_prompts([long_prompt, "short"])
    assert ids.shape[1] == 24 and mask[0].all()
    assert_names(caplog.text, "model.max_prompt_length=24", "left")
    text = module.tokenizer.decode(ids[0])
    assert "BEGINNING" not in text and "the end" in text and text.endswith("<|im_start|>assistant\n")


def test_wandb_without_api_key_falls_back_to_offline(tmp_path, monkeypatch, caplog):
    from pama_lit.run.train import build_loggers

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose_config([*TINY, "logger=wandb"], tmp_path)
    with caplog.at_level("WARNING", logger="pama_lit.run.train"):
        (logger,) = build_loggers(cfg)
    assert (
        "No W&B API key found (WANDB_API_KEY or ~/.netrc): logging to W&B offline; `wandb sync` later"
        in caplog.text
    )
    assert logger._offline is True
    logger.experiment.finish()
    assert list(Path(tmp_path).glob("wandb/offline-run-*"))
