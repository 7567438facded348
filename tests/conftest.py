"""Shared fixtures: compose the real Hydra config and shrink it for CPU tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from tiny import TINY

import pama_lit.run.schema  # noqa: F401  registers train_schema, which conf/train.yaml extends

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def compose_config(overrides: list[str] | None = None, output_dir: Path | str | None = None) -> DictConfig:
    """Compose ``conf/train.yaml`` with overrides; ``paths.output_dir`` set (no Hydra runtime in tests)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides or []), return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir or "/tmp/pama_lit_test_output")
    return cfg


@pytest.fixture
def tiny_cfg(tmp_path) -> DictConfig:
    """The tiny model, 2 iterations of 4 prompts, 6 new tokens: a full train() in a few seconds."""
    return compose_config(
        [*TINY, "iterations=2", "rollout.max_new_tokens=6", "data.val_size=4", "logger=csv"],
        output_dir=tmp_path / "run",
    )
