"""The bad-input catalogue: each mistake a user can type, and the exact message they get.

Most are caught by ``validate_config`` or ``preflight`` before any model loads (the tests that run
``train()`` replace the tiny model's loader with one that fails if it is called). Two need the model
(its context window) and say so. Hydra itself answers unknown config-group options; those tests
pin what the user sees.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONF, ROOT, compose_config
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import open_dict

from pama_lit.algorithms import COMBINERS
from pama_lit.checkpointing import CheckpointError
from pama_lit.config import ConfigError, validate_config
from pama_lit.rewards.hub_access import HubModelUnavailable
from pama_lit.train import train

TINY = ["debug=tiny", "iterations=1", "rollout.max_new_tokens=4", "data.val_size=2", "logger=none"]

# (id, overrides, exception type, exact message) for mistakes validate_config reports.
CONFIG_CASES = [
    (
        "preference_wrong_length",
        ["preference=[1,2,3]"],
        ConfigError,
        "preference [1, 2, 3] has 3 entries but there are 2 objectives (sentiment, length); "
        "give one positive weight per objective in that order",
    ),
    (
        "preference_negative",
        ["preference=[-1,2]"],
        ConfigError,
        "preference [-1, 2] has a negative entry -1 for objective 'sentiment'; PAMA divides by each weight, "
        "so give one positive weight per objective in that order (sentiment, length)",
    ),
    (
        "preference_all_zero",
        ["preference=[0,0]"],
        ConfigError,
        "preference [0, 0] has a zero entry 0 for objective 'sentiment'; PAMA divides by each weight, "
        "so give one positive weight per objective in that order (sentiment, length)",
    ),
    (
        "preference_grid_out_of_range",
        ["preference_grid.steps=4", "preference_grid.index=3"],
        ConfigError,
        "preference_grid.index=3 is out of range: steps=4 gives 3 vectors for 2 objectives (index 0..2)",
    ),
    (
        "unknown_algorithm_name",
        ["algorithm.name=nope"],
        ConfigError,
        f"unknown algorithm 'nope'; known: {', '.join(COMBINERS)}",
    ),
    (
        "single_objective_algorithm_with_two",
        ["algorithm=noon_ppo"],
        ValueError,
        "algorithm=noon_ppo optimises one objective, got 2; pick one (e.g. objective=sentiment) or use "
        "algorithm=pama for several",
    ),
    (
        "batch_not_divisible",
        ["rollout.batch_size=6", "ppo.num_minibatches=4"],
        ConfigError,
        "rollout.batch_size=6 does not split into ppo.num_minibatches=4 equal minibatches; choose a divisor",
    ),
    (
        "zero_generation_length",
        ["rollout.max_new_tokens=0"],
        ConfigError,
        "rollout.max_new_tokens must be >= 1, got 0",
    ),
    (
        "negative_generation_length",
        ["rollout.max_new_tokens=-5"],
        ConfigError,
        "rollout.max_new_tokens must be >= 1, got -5",
    ),
    (
        "min_above_max_tokens",
        ["rollout.min_new_tokens=9", "rollout.max_new_tokens=8"],
        ConfigError,
        "rollout.min_new_tokens must be in [0, 8], got 9",
    ),
    ("zero_iterations", ["iterations=0"], ConfigError, "iterations must be >= 1, got 0"),
    (
        "zero_eval_batch_size",
        ["eval.batch_size=0"],
        ConfigError,
        "eval.batch_size must be >= 1 (prompts per validation batch), got 0",
    ),
    ("zero_temperature", ["rollout.temperature=0"], ConfigError, "rollout.temperature must be > 0, got 0"),
    (
        "duplicate_objective_other_name",
        ["+reward@objective.rewards.sentiment2=sentiment"],
        ConfigError,
        "objectives 'sentiment' and 'sentiment2' are the same reward with the same settings: an objective "
        "listed twice counts twice in every combination; remove one",
    ),
    (
        "reward_without_target",
        ["+objective.rewards.polite.fn=my_rewards:polite"],
        ConfigError,
        "objective.rewards.polite has no _target_: pick a reward config, e.g. "
        "'reward@objective.rewards.polite=sentiment', or give a _target_ class",
    ),
    (
        "trainer_gradient_clipping",
        ["+trainer.gradient_clip_val=1.0"],
        ConfigError,
        "trainer.gradient_clip_val=1.0 is not supported: PamaModule uses manual optimization, where Lightning "
        "cannot clip for it; set ppo.max_grad_norm instead",
    ),
    (
        "trainer_gradient_accumulation",
        ["+trainer.accumulate_grad_batches=4"],
        ConfigError,
        "trainer.accumulate_grad_batches=4 is not supported: PamaModule uses manual optimization and steps once "
        "per minibatch; use fewer ppo.num_minibatches for larger steps",
    ),
    (
        "trainer_several_epochs",
        ["trainer.max_epochs=3"],
        ConfigError,
        "trainer.max_epochs=3: a run is one epoch of `iterations` PPO iterations; set iterations= instead",
    ),
    (
        "lightning_distributed_sampler",
        ["trainer.use_distributed_sampler=true"],
        ConfigError,
        "trainer.use_distributed_sampler must be false: PromptDataModule shards the prompts across processes "
        "itself, so that every iteration's batch survives a resume",
    ),
    (
        "unknown_kl_controller",
        ["ppo.kl.controller=pid"],
        ConfigError,
        "unknown ppo.kl.controller 'pid'; known: fixed, adaptive",
    ),
    (
        "unknown_rewards_on_error",
        ["rewards_on_error=ignore"],
        ConfigError,
        "rewards_on_error must be 'raise' or 'skip', got 'ignore'",
    ),
]


@pytest.mark.parametrize(
    "overrides,error,message", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_config_mistakes_are_named_before_anything_loads(overrides, error, message):
    cfg = compose_config(["debug=tiny", *overrides])
    with pytest.raises(error) as err:
        validate_config(cfg)
    assert str(err.value) == message


def test_objective_id_that_breaks_metric_keys():
    cfg = compose_config(["debug=tiny"])
    with open_dict(cfg):
        cfg.objective.rewards["2fast"] = {"_target_": "pama_lit.rewards.LengthReward"}
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert str(err.value) == (
        "objective id '2fast' must start with a letter and hold only letters, digits, '_' or '-' "
        "(it becomes a metric-key suffix such as train/reward/<id>)"
    )


def _hydra_search_path() -> str:
    return (
        "Config search path:\n\tprovider=hydra, path=pkg://hydra.conf\n"
        f"\tprovider=main, path=file://{CONF}\n\tprovider=schema, path=structured://"
    )


def _options(group: str) -> str:
    return "".join(f"\t{name}\n" for name in sorted(p.stem for p in (CONF / group).glob("*.yaml")))


def test_unknown_objective_on_the_command_line_lists_the_known_ones(tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", "objective=nope", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    expected = (
        "In 'train': Could not find 'objective/nope'\n\nAvailable options in 'objective':\n"
        f"{_options('objective')}{_hydra_search_path()}\n\n"
        "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n"
    )
    assert proc.stderr == expected
    assert not (tmp_path / "eval.json").exists()


@pytest.mark.parametrize(
    "overrides,error,message",
    [
        (
            ["objective=sentiment", "reward@objective.rewards.sentiment=nope"],
            MissingConfigException,
            "In 'objective/sentiment': Could not find 'reward/nope'\n\nAvailable options in 'reward':\n"
            f"{_options('reward')}{_hydra_search_path()}",
        ),
        (
            ["algorithm=nope"],
            MissingConfigException,
            "In 'train': Could not find 'algorithm/nope'\n\nAvailable options in 'algorithm':\n"
            f"{_options('algorithm')}{_hydra_search_path()}",
        ),
        (
            ["objective=[sentiment,sentiment]"],
            ConfigCompositionException,
            "reward@objective.rewards.sentiment appears more than once in the final defaults list",
        ),
    ],
    ids=["unknown_reward", "unknown_algorithm_group", "duplicate_objective"],
)
def test_hydra_answers_unknown_group_options(overrides, error, message):
    with pytest.raises(error) as err:
        compose_config(overrides)
    assert str(err.value) == message


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the policy loader runs: these mistakes must be reported before that."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the mistake was reported")

    monkeypatch.setattr("pama_lit.models.build_tiny_llama", refuse)


def test_empty_prompt_source(tmp_path, no_model):
    cfg = compose_config([*TINY, "data.source._target_=faulty.no_prompts"], tmp_path)
    with pytest.raises(ValueError) as err:
        train(cfg)
    assert str(err.value) == (
        "the prompt source gave 0 prompts, but val_size=2 leaves none for training; give more prompts or "
        "lower data.val_size"
    )


def test_missing_prompt_file(tmp_path, no_model):
    missing = tmp_path / "prompts.txt"
    cfg = compose_config([*TINY, "data=file", f"data.source.path={missing}"], tmp_path / "run")
    with pytest.raises(FileNotFoundError) as err:
        train(cfg)
    assert str(err.value) == (
        f"prompt file {str(missing)!r} does not exist; set data.source.path to a file with one prompt per line "
        "(or .jsonl records with a 'prompt' field), or use an embedded data set (data=tweets, data=chitchat)"
    )


def test_hub_model_unavailable_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    cfg = compose_config([*TINY, "model=gpt2"], tmp_path)
    with pytest.raises(HubModelUnavailable) as err:
        train(cfg)
    assert str(err.value) == (
        "policy model 'gpt2' is not available offline: it is not a local folder, not in the Hugging Face cache, "
        "and offline mode is on (HF_HUB_OFFLINE is set). Instead use model=smollm2; or run where the hub is "
        "reachable (a repo fetched there with `hf download gpt2` is then found in the cache)."
    )


def test_hub_dataset_unavailable_offline(tmp_path, monkeypatch, no_model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    cfg = compose_config([*TINY, "data=imdb"], tmp_path)
    with pytest.raises(HubModelUnavailable) as err:
        train(cfg)
    assert str(err.value) == (
        "data set 'stanfordnlp/imdb' is not available offline: it is not a local folder, not in the Hugging "
        "Face cache, and offline mode is on (HF_HUB_OFFLINE is set). Instead use data=tweets or data=chitchat "
        "(embedded); or run where the hub is reachable (a repo fetched there with `hf download --repo-type "
        "dataset stanfordnlp/imdb` is then found in the cache)."
    )


def test_unwritable_output_folder(tmp_path, no_model):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = compose_config(TINY, blocker / "run")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert str(err.value) == (
        f"paths.output_dir={str(blocker / 'run')!r} is not writable (Not a directory); "
        "choose another folder with hydra.run.dir=..."
    )


def _checkpoint(path: Path, objectives: list[str], algorithm: str = "pama") -> Path:
    torch.save({"state_dict": {}, "pama": {"objectives": objectives, "algorithm": algorithm}}, path)
    return path


def test_checkpoint_from_another_objective_set(tmp_path, no_model):
    ckpt = _checkpoint(tmp_path / "humor.ckpt", ["humor", "harmless"])
    cfg = compose_config([*TINY, f"ckpt_path={ckpt}"], tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert str(err.value) == (
        f"checkpoint {str(ckpt)!r} was written for objectives ['humor', 'harmless'], this run has "
        "['sentiment', 'length']; resume with the same objective= setting, or start a new run without ckpt_path"
    )


def test_checkpoint_from_an_algorithm_with_other_value_heads(tmp_path, no_model):
    ckpt = _checkpoint(tmp_path / "morlhf.ckpt", ["sentiment", "length"], "morlhf")
    cfg = compose_config([*TINY, f"ckpt_path={ckpt}"], tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert str(err.value) == (
        f"checkpoint {str(ckpt)!r} was written by algorithm=morlhf (1 value heads); algorithm=pama needs 2; "
        "resume with algorithm=morlhf"
    )


@pytest.mark.parametrize("which", ["file", "last"])
def test_missing_checkpoint(tmp_path, no_model, which):
    path = str(tmp_path / "gone.ckpt") if which == "file" else "last"
    cfg = compose_config([*TINY, f"ckpt_path={path}"], tmp_path / "run")
    with pytest.raises(FileNotFoundError) as err:
        train(cfg)
    if which == "file":
        assert str(err.value) == f"ckpt_path={path!r} does not exist"
    else:
        assert str(err.value) == (
            f"ckpt_path=last: there is no {tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}; resume in the "
            "interrupted run's folder (hydra.run.dir=<that folder>) or give the checkpoint file"
        )


def test_checkpoint_that_is_not_from_pama_lit(tmp_path, no_model):
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, ckpt)
    cfg = compose_config([*TINY, f"ckpt_path={ckpt}"], tmp_path / "run")
    with pytest.raises(CheckpointError) as err:
        train(cfg)
    assert (
        str(err.value) == f"checkpoint {str(ckpt)!r} was not written by pama_lit (it has no 'pama' section)"
    )


def test_prompt_and_response_budget_beyond_the_context_window(tmp_path):
    """Needs the model's config, so it is reported when the model loads, before any training."""
    cfg = compose_config([*TINY, "model.max_prompt_length=510"], tmp_path)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert str(err.value) == (
        "model.max_prompt_length=510 + rollout.max_new_tokens=4 = 514 tokens exceed the model's context window "
        "of 512; lower one of them"
    )
    assert not (tmp_path / "reference").exists()


def test_long_prompts_are_cut_from_the_left_with_a_warning(caplog):
    """Documented behaviour: a prompt beyond model.max_prompt_length loses its beginning, keeps the template end."""
    from conftest import compose_config as compose

    from pama_lit.rewards import build_rewards
    from pama_lit.train import build_module

    cfg = compose([*TINY, "model.max_prompt_length=24"])
    module = build_module(cfg, build_rewards(cfg.objective.rewards))
    module.configure_model()
    long_prompt = "BEGINNING " + "word " * 200 + "the end"
    with caplog.at_level("WARNING", logger="pama_lit.module"):
        ids, mask = module.tokenize_prompts([long_prompt, "short"])
    assert ids.shape[1] == 24 and mask[0].all()
    assert "Prompts longer than model.max_prompt_length=24 tokens are cut from the left" in caplog.text
    text = module.tokenizer.decode(ids[0])
    assert "BEGINNING" not in text and "the end" in text and text.endswith("<|im_start|>assistant\n")


def test_wandb_without_api_key_falls_back_to_offline(tmp_path, monkeypatch, caplog):
    from pama_lit.train import build_loggers

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose_config([*TINY, "logger=wandb"], tmp_path)
    with caplog.at_level("WARNING", logger="pama_lit.train"):
        (logger,) = build_loggers(cfg)
    assert (
        "No W&B API key found (WANDB_API_KEY or ~/.netrc): logging to W&B offline; `wandb sync` later"
        in caplog.text
    )
    assert logger._offline is True
    logger.experiment.finish()
    assert list(Path(tmp_path).glob("wandb/offline-run-*"))
