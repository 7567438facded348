"""What a person sees in the console: the run's own lines, not third-party noise checked harmless."""

from __future__ import annotations

import pytest
from tiny import TINY
from train_runs import run_train, train_env

# Lines of third-party output that pama_lit.run.train and pama_lit.models.loading silence.
NOISE = [
    "💡 Tip",
    "TPU available",
    "Seed set to",
    "was configured so validation will run",
    "`Trainer.fit` stopped",
    "is_gradient_checkpointing",
    "LeafSpec",
    "Using ModelCheckpoint with manual optimization",
    "def training_step",
    "Converting and de-quantizing GGUF tensors",
    "Loading weights",
    "Writing model shards",
]


def console(tmp_path, env: dict | None = None) -> str:
    # Checkpoints every iteration: that is when Lightning's note on manual optimization comes.
    proc = run_train([*TINY, "callbacks.checkpoint.every_n_iterations=1"], tmp_path / "run", env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def check(out: str) -> None:
    noise = [line for line in out.splitlines() if any(n in line for n in NOISE)]
    assert not noise, "\n".join(noise)
    # What matters stays: where the results go, the objectives, the progress bar, the table, and the
    # project's own warnings (the tiny model's responses all have one length: a degenerate objective).
    assert "Output folder: " in out and "Rewards: sentiment" in out
    assert "Epoch 0: 100%" in out
    assert "reward/sentiment" in out and "Results in " in out
    assert "objective 'length': its scores have std 0" in out


def test_a_tiny_run_prints_no_known_noise(tmp_path):
    check(console(tmp_path))


@pytest.mark.slow
def test_the_first_conversion_of_the_embedded_model_prints_no_progress_bars(tmp_path):
    """An empty cache: the tokenizer's first use converts the packaged GGUF (about 40 s)."""
    out = console(tmp_path, env=train_env(PAMA_LIT_CACHE=str(tmp_path / "cache")))
    assert "Converting the embedded SmolLM2 GGUF" in out
    check(out)
