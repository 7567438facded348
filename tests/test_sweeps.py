"""Every W&B sweep file parses, expands to its grid, and each member composes and validates.

A W&B server is not reachable here, so the sweeps are not run; Hydra multirun runs the same grids.
"""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, compose_config
from tiny import TINY
from train_runs import train_env

from pama_lit.core.preference import resolve_preference
from pama_lit.run.config import validate_config

SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))


def expand(sweep: dict) -> list[list[str]]:
    """Hydra overrides (``key=value``) of every grid member, as ``${args_no_hyphens}`` passes them."""
    keys, choices = [], []
    for key, spec in sweep["parameters"].items():
        keys.append(key)
        choices.append(spec["values"] if "values" in spec else [spec["value"]])
    return [[f"{k}={v}" for k, v in zip(keys, combo, strict=True)] for combo in itertools.product(*choices)]


def test_preference_sweeps_compare_algorithms_on_one_grid():
    """PAMA's and MORLHF's fronts are comparable: the same preferences and runs, only the algorithm differs."""
    sweeps = {p.stem: yaml.safe_load(p.read_text()) for p in SWEEPS if p.stem.endswith("_preferences")}
    assert {"pama_preferences", "morlhf_preferences"} <= set(sweeps)
    grids = {}
    for name, sweep in sweeps.items():
        members = expand(sweep)
        (algorithm,) = {o for m in members for o in m if o.startswith("algorithm=")}
        assert algorithm == f"algorithm={name.removesuffix('_preferences')}", name
        grids[name] = sorted(tuple(o for o in m if not o.startswith("algorithm=")) for m in members)
    first = next(iter(grids.values()))
    assert all(grid == first for grid in grids.values()), grids


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_members_compose(path, tmp_path):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["program"] == "train.py"
    assert sweep["method"] == "grid"
    assert "${args_no_hyphens}" in sweep["command"]
    members = expand(sweep)
    assert len(members) >= 5
    preferences = set()
    for overrides in members:
        cfg = compose_config(overrides, tmp_path)
        validate_config(cfg)
        pref = resolve_preference(
            None if cfg.preference is None else list(cfg.preference), list(cfg.objective.rewards)
        )
        preferences.add(tuple(round(float(w), 6) for w in pref))
    if "preference" in path.stem:
        assert len(preferences) == len(members), "each member must get its own preference vector"


def test_hyperparameter_sweep_gives_every_algorithm_the_same_grid():
    """A fair comparison: each algorithm at its best setting of one grid, not at PAMA's."""
    members = expand(yaml.safe_load((ROOT / "sweeps" / "ppo_hparams.yaml").read_text()))
    grids: dict[str, set[tuple[str, ...]]] = {}
    for overrides in members:
        (algorithm,) = [o.split("=", 1)[1] for o in overrides if o.startswith("algorithm=")]
        grids.setdefault(algorithm, set()).add(tuple(o for o in overrides if not o.startswith("algorithm=")))
    assert set(grids) >= {"pama", "pama_batch", "morlhf", "mgda_ub"}
    first = next(iter(grids.values()))
    assert len(first) >= 2 and all(grid == first for grid in grids.values())


def test_a_hydra_multirun_sweep_and_its_front(tmp_path):
    """The README's sweep, shrunk: `train.py -m` over two preferences, then the fronts command on that
    one sweep folder."""
    sweep, out = tmp_path / "sweep", tmp_path / "fronts"
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", *TINY, "preference_grid.steps=6", "preference_grid.index=0,4",
         f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=train_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    recorded = [json.loads((sweep / job / "eval.json").read_text())["preference"] for job in ("0", "1")]
    assert recorded[0] == pytest.approx([1 / 6, 5 / 6], abs=1e-5)
    assert recorded[1] == pytest.approx([5 / 6, 1 / 6], abs=1e-5)

    proc = subprocess.run(
        [sys.executable, "-m", "pama_lit.fronts", str(sweep), "--out", str(out), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=train_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "runs: 2 of 1 algorithms (pama)" in proc.stdout
    with open(out / "runs_all.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(json.loads(r["preference"])[0] for r in rows) == pytest.approx([1 / 6, 5 / 6], abs=1e-5)
    assert (out / "front.png").stat().st_size > 0
