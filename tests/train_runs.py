"""Helpers for tests that run ``python train.py`` as a subprocess and read what it wrote."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import tiny

ROOT = Path(__file__).resolve().parents[1]

# The tests' tiny run (tests/tiny.py) for 3 iterations of 6 new tokens, with the CSV log the child
# runs are read back from.
TINY = [*tiny.TINY, "iterations=3", "rollout.max_new_tokens=6", "logger=csv"]


def train_env(**extra: str) -> dict[str, str]:
    """The environment of a child run: one thread per process (DDP ranks share 2 cores here)."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def command(overrides: list[str], run_dir: Path) -> list[str]:
    return [sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}"]


def run_train(
    overrides: list[str], run_dir: Path, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``train.py`` to completion; stdout and stderr are captured."""
    return subprocess.run(
        command(overrides, run_dir),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or train_env(),
    )


def start_train(overrides: list[str], run_dir: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``train.py`` in the background, its output going to ``log``."""
    handle = open(log, "w")  # noqa: SIM115 - closed by the child's exit
    return subprocess.Popen(
        command(overrides, run_dir),
        cwd=ROOT,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env or train_env(),
    )


def iteration_metrics(csv_path: Path) -> dict[int, dict[str, float]]:
    """Per-iteration ``train/`` metrics of a CSVLogger file, keyed by step; timings and NaN left out.

    NaN marks a value not measured at that iteration (``train/diag/*`` between two measurements) or
    undefined (``train/value/explained_var/*`` of constant returns).
    """
    rows: dict[int, dict[str, float]] = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            values = {
                k: float(v)
                for k, v in row.items()
                if k.startswith("train/") and v and v != "nan" and "/time/" not in k
            }
            if values:
                rows[int(row["step"])] = values
    return rows
