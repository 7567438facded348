"""Security: no secret in anything a run prints or writes, safe checkpoint loading, no remote code by default."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
from conftest import CONF, ROOT, compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_runs import TINY, run_train, train_env

from pama_lit.infra.checkpointing import AtomicCheckpointIO, CheckpointError, load_checkpoint_file
from pama_lit.infra.redact import redact

FAKE_WANDB_KEY = "fakewandbkey0123456789abcdef0123456789abcd"
FAKE_HF_TOKEN = "hf_FakeTokenForLeakTest9876543210zyxwv"


def test_no_key_or_token_is_printed_or_written(tmp_path):
    """A full run with fake keys in the environment, W&B (offline) and CSV logging, a checkpoint, and a
    config value that pulls the token in through an interpolation: neither key may appear anywhere."""
    run_dir = tmp_path / "run"
    env = train_env(
        WANDB_API_KEY=FAKE_WANDB_KEY,
        HF_TOKEN=FAKE_HF_TOKEN,
        WANDB_MODE="offline",
        WANDB_DIR=str(tmp_path),
        WANDB_CONFIG_DIR=str(tmp_path / "wandb_config"),
        WANDB_CACHE_DIR=str(tmp_path / "wandb_cache"),
    )
    proc = run_train(
        [
            *TINY,
            "iterations=1",
            "logger=[csv,wandb]",
            "callbacks.checkpoint.every_n_iterations=1",
            "+objective.hub_token=${oc.env:HF_TOKEN}",
            "+objective.note=key ${oc.env:WANDB_API_KEY} in a string",
        ],
        run_dir,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in written) and any(p.name == "hparams.yaml" for p in written)
    assert any("offline-run" in str(p) for p in written), "W&B wrote no offline run"
    for secret in (FAKE_WANDB_KEY, FAKE_HF_TOKEN):
        assert secret not in proc.stdout and secret not in proc.stderr
        leaks = [str(p) for p in written if secret.encode() in p.read_bytes()]
        assert not leaks, f"secret written to {leaks}"
    hparams = OmegaConf.load(next(run_dir.rglob("hparams.yaml")))
    assert hparams.objective.hub_token == "***" and hparams.objective.note == "key *** in a string"


def test_redact_masks_keys_and_known_values_only():
    env = {
        "WANDB_API_KEY": "k" * 40,
        "MY_SERVICE_TOKEN": "t" * 12,
        "TOKENIZERS_PARALLELISM": "false",
        "PATH": "/bin",
    }
    cfg = {
        "logger": {"api_key": "literal-secret", "project": "pama"},
        "note": f"uses {'t' * 12}",
        "model": {"tokenizer": "gpt2", "max_new_tokens": 48},
        "list": ["k" * 40, "false"],
    }
    assert redact(cfg, env) == {
        "logger": {"api_key": "***", "project": "pama"},
        "note": "uses ***",
        "model": {"tokenizer": "gpt2", "max_new_tokens": 48},
        "list": ["***", "false"],
    }


class _RunsCode:
    """Unpickling this would run code: exactly what weights_only=True prevents."""

    marker: Path

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_checkpoints_load_with_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    evil = _RunsCode()
    evil.marker = marker
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "pama": {"objectives": ["sentiment"]}, "payload": evil}, path)
    with pytest.raises(CheckpointError) as err:
        AtomicCheckpointIO().load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"checkpoint {str(path)!r} holds pickled objects that are not tensors")
    assert "Unsupported global: GLOBAL" in message and "written by other code" in message
    assert not marker.exists()
    assert not marker.exists()

    # Our own checkpoint content (RNG states included) passes weights_only=True.
    from pama_lit.infra.checkpointing import capture_rng, restore_rng

    safe = tmp_path / "safe.ckpt"
    AtomicCheckpointIO().save_checkpoint({"pama": {"rng": [capture_rng()]}}, safe)
    expected = torch.rand(3)
    restore_rng(load_checkpoint_file(safe)["pama"]["rng"][0])
    torch.testing.assert_close(torch.rand(3), expected)


def test_no_unsafe_deserialisation_in_the_package():
    """Nothing in src/ unpickles: torch.load only with weights_only=True; no pickle, joblib or allow_pickle."""
    unsafe = re.compile(r"pickle\.loads?\(|joblib\.load|allow_pickle\s*=\s*True|weights_only\s*=\s*False")
    for path in (ROOT / "src").rglob("*.py"):
        text = path.read_text()
        for match in unsafe.finditer(text):
            line = text[: match.start()].count("\n") + 1
            # The one opt-in: AtomicCheckpointIO honours an explicit weights_only=False (with a warning).
            assert path.name == "checkpointing.py", f"{path}:{line}: {match.group()}"
        for call in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text):
            assert "weights_only=True" in call.group() or "weights_only=False" in call.group(), (
                f"{path}: {call.group()}"
            )


def test_trust_remote_code_is_off_unless_a_config_turns_it_on():
    from pama_lit.models.loading import load_hub_model
    from pama_lit.rewards.hub import SequenceClassifierReward

    for fn in (load_hub_model, SequenceClassifierReward.__init__):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False
    for group in ("model", "reward"):
        for path in sorted((CONF / group).glob("*.yaml")):
            text = path.read_text()
            assert not re.search(r"trust_remote_code:\s*true", text, re.IGNORECASE), path
    cfg = compose_config(["model=gpt2"])
    loader = instantiate(cfg.model.loader, _partial_=True)
    assert loader.keywords.get("trust_remote_code", False) is False
