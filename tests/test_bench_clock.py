"""benchmarks/common.IterationClock: the phase timers every cost benchmark reports come through."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tiny import TINY

ROOT = Path(__file__).resolve().parents[1]


def load_common():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("bench_common", ROOT / "benchmarks" / "common.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_the_clock_reports_every_phase_of_a_real_iteration():
    """The module's phase timers reach the clock (they broke silently once when the module began
    sending its rows to the loggers itself, which vs_trl.py then failed on)."""
    from pama_lit.rewards import build_rewards

    common = load_common()
    cfg = common.compose([*TINY, "rollout.batch_size=2", "ppo.num_minibatches=1"])
    module = common.build_module(cfg, build_rewards(cfg.objective.rewards))
    (record,) = common.IterationClock().run(module, ["a b c", "d e f"], iterations=1)
    assert {"rollout", "score", "advantages", "update"} <= set(record["phases"])
    assert 0 < record["generate"] < record["iteration"]
    assert all(seconds >= 0 for seconds in record["phases"].values())
