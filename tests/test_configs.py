"""Every config file under conf/ composes, and the composed config passes the start-up checks."""

from __future__ import annotations

import pytest
from conftest import CONF, compose_config
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict

from pama_lit.run.config import validate_config

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]


def test_every_default_exists_and_every_group_is_reachable():
    """train.yaml's defaults name real options, and no folder under conf/ is an orphan nothing selects."""
    defaults = OmegaConf.load(CONF / "train.yaml").defaults
    chosen = {}
    for entry in defaults:
        if isinstance(entry, str):
            continue  # _self_
        ((group, option),) = entry.items()
        chosen[group] = option
        assert (CONF / group).is_dir(), group
        if option is not None and group == "objective":  # a +-joined objective is synthesised, not a file
            assert list(compose_config([]).objective.rewards) == option.split("+")
        elif option is not None:
            assert (CONF / group / f"{option}.yaml").is_file(), f"{group}={option}"
    # Groups not in the defaults list are pulled in by other config files (reward@objective.rewards.*).
    others = "\n".join(p.read_text() for p in CONF.rglob("*.yaml"))
    orphans = [g for g in GROUPS if g not in chosen and f"/{g}" not in others and f"{g}@" not in others]
    assert not orphans, orphans


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes(group, option, tmp_path):
    if group == "reward":
        cfg = compose_config([f"+reward@objective.rewards.probe={option}"], tmp_path)
        assert cfg.objective.rewards.probe._target_
        get_class(cfg.objective.rewards.probe._target_)
        return
    if group == "paths":
        cfg = compose_config([], tmp_path)
    else:
        cfg = compose_config([f"{group}={option}"], tmp_path)
    OmegaConf.resolve(cfg)
    if group == "objective" or group == "experiment" or group == "debug":
        objectives = list(cfg.objective.rewards)
        assert objectives and all(cfg.objective.rewards[o]._target_ for o in objectives)
        for o in objectives:
            get_class(cfg.objective.rewards[o]._target_)
    if option == "noon_ppo":
        return  # needs one objective: covered below
    validate_config(cfg)


def test_noon_ppo_with_one_objective(tmp_path):
    validate_config(compose_config(["algorithm=noon_ppo", "objective=sentiment"], tmp_path))


def test_objective_order_follows_file(tmp_path):
    cfg = compose_config(["objective=humor+harmless"], tmp_path)
    assert list(cfg.objective.rewards) == ["humor", "harmless"]


def test_defaults_are_the_embedded_experiment(tmp_path):
    cfg = compose_config([], tmp_path)
    ref = compose_config(["experiment=embedded_sentiment_length"], tmp_path)
    for key in ("model", "objective", "data", "algorithm", "rollout", "ppo"):
        assert OmegaConf.to_container(cfg[key]) == OmegaConf.to_container(ref[key]), key
    assert cfg.model.loader._target_.endswith("load_embedded_smollm2")
    assert cfg.algorithm.name == "pama"


def test_a_saved_config_from_before_added_keys_reads_as_it_trained(tmp_path):
    """A run folder's .hydra/config.yaml saved before a key existed (no schema default) still loads:
    evaluate.py fills each ADDED_KEYS key with the value the run trained under, and says which."""
    from pama_lit.run.evaluate import load_run_config
    from pama_lit.run.schema import ADDED_KEYS, PPOConfig, fill_added_keys, typed

    today = compose_config([])
    for dotted, value in ADDED_KEYS.items():  # today's defaults are the values the registry restores
        assert OmegaConf.select(today, dotted) == value, dotted
    old = OmegaConf.create(OmegaConf.to_yaml(today))  # plain, as Hydra saves it
    with open_dict(old):
        del old.ppo.value_head_lr, old.ppo.kl.placement, old.rollout.sampling_dtype, old.eval.reference
        del old.algorithm.satisfied_at_ceiling
    with pytest.raises(Exception, match="value_head_lr"):
        typed(PPOConfig, old.ppo)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(old))
    loaded = load_run_config(tmp_path)
    assert all(OmegaConf.select(loaded, k) == v for k, v in ADDED_KEYS.items())
    assert typed(PPOConfig, loaded.ppo).value_head_lr is None
    assert fill_added_keys(loaded) == []  # nothing left to fill; a config that has the keys is untouched
    with open_dict(loaded):
        loaded.ppo.kl.placement = "loss"
    assert fill_added_keys(loaded) == [] and loaded.ppo.kl.placement == "loss"
