"""Killed runs resume exactly: SIGKILL, SIGTERM and SIGINT mid-training, atomic and bounded checkpoint files.

The oracle is one uninterrupted 4-iteration run on CPU with a fixed seed. An interrupted run that
resumes from its last checkpoint appends to the same files, and every per-iteration row of its one
metrics.csv, before and after the resume, must be exactly the uninterrupted run's metrics (rewards,
KL, losses, entropy, the KL coefficient; timings excluded): the same weights, optimizer state, KL
controller, random generators and prompts.
"""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from train_runs import TINY, iteration_metrics, run_train, start_train, train_env

from pama_lit.infra.checkpointing import (
    AtomicCheckpointIO,
    CheckpointError,
    load_checkpoint_file,
    read_run_state,
)

STEPS_PER_ITERATION = 4  # ppo.epochs=2 x ppo.num_minibatches=2 optimizer steps
RUN = [*TINY, "iterations=4", "callbacks.samples.every_n_iterations=1"]


def _metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    return iteration_metrics(run_dir / "csv" / "version_0" / "metrics.csv")


def _train_rows(run_dir: Path) -> list[tuple[int, dict[str, float]]]:
    """Every per-iteration row of the run's one metrics.csv, in file order (a redone iteration twice)."""
    assert [p.name for p in (run_dir / "csv").iterdir()] == ["version_0"], "a resumed run continues version_0"
    text = (run_dir / "csv" / "version_0" / "metrics.csv").read_text()
    assert sum(line.startswith("epoch,") for line in text.splitlines()) == 1, "one header"
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        values = {
            k: float(v)
            for k, v in row.items()
            if k.startswith("train/") and v and v != "nan" and "/time/" not in k  # as iteration_metrics
        }
        if values:
            rows.append((int(row["step"]), values))
    return rows


def _wait_for(condition, proc, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.02)


def _iterations_done(run_dir: Path) -> int:
    samples = run_dir / "samples.jsonl"  # SampleTable appends after every iteration (every_n_iterations=1)
    return len(samples.read_text().splitlines()) // 4 if samples.is_file() else 0


def _checkpoint_steps(run_dir: Path) -> list[int]:
    folder = run_dir / "checkpoints"
    names = [p.name for p in folder.glob("*.ckpt") if p.name != "last.ckpt"] if folder.is_dir() else []
    return [int(re.findall(r"\d+", n)[-1]) for n in names]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[int, dict[str, float]]:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    proc = run_train([*RUN, "callbacks.checkpoint.every_n_iterations=1"], run_dir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # Bounded copies: the newest periodic checkpoint (save_top_k=1) and last.ckpt, no temporary files.
    files = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert len(files) == 2 and "last.ckpt" in files, files
    assert _checkpoint_steps(run_dir) == [4 * STEPS_PER_ITERATION]
    metrics = _metrics(run_dir)
    assert sorted(metrics) == [0, 1, 2, 3]
    return metrics


def _assert_continues(uninterrupted: dict, run_dir: Path) -> None:
    """The interrupted and the resumed run's rows, in one file, are the uninterrupted run's."""
    rows = _train_rows(run_dir)
    assert sorted({step for step, _ in rows}) == [0, 1, 2, 3]
    assert [step for step, _ in rows] == sorted(step for step, _ in rows), "rows appended in order"
    for step, metrics in rows:
        assert metrics.keys() == uninterrupted[step].keys()
        for key, value in metrics.items():
            assert value == pytest.approx(uninterrupted[step][key], rel=1e-6, abs=1e-9), (step, key)


def _evaluated_iterations(run_dir: Path) -> list[int]:
    lines = (run_dir / "evaluations.jsonl").read_text().splitlines()
    return [json.loads(line)["iteration"] for line in lines]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    proc = start_train([*RUN, "callbacks.checkpoint.every_n_iterations=1"], run_dir, tmp_path / "killed.log")
    try:
        # Kill once a periodic checkpoint after iteration 2 exists, while iterations 3-4 remain.
        _wait_for(lambda: any(s >= 2 * STEPS_PER_ITERATION for s in _checkpoint_steps(run_dir)), proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
    # A kill during a write leaves at most a stale .last.ckpt.tmp; last.ckpt itself is always whole.
    state = read_run_state(run_dir / "checkpoints" / "last.ckpt")  # weights_only load of the full file
    assert state["objectives"] == ["sentiment", "length"]

    resumed = run_train([*RUN, "callbacks.checkpoint.every_n_iterations=1", "ckpt_path=last"], run_dir)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "not resumable" not in resumed.stderr  # Lightning's warning for a replayed data loader
    _assert_continues(uninterrupted, run_dir)
    assert _evaluated_iterations(run_dir).count(0) == 1  # the reference is evaluated once, not per start
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))  # the next save replaced any stale temporary


def test_sigterm_writes_a_checkpoint_and_resumes_exactly(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    # No periodic checkpoint before iteration 10: only the SIGTERM handler can write one.
    proc = start_train(RUN, run_dir, tmp_path / "terminated.log")
    try:
        _wait_for(lambda: _iterations_done(run_dir) >= 1, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        proc.kill()
    log = (tmp_path / "terminated.log").read_text()
    assert "SIGTERM: checkpoint written to" in log
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.ckpt"]

    resumed = run_train([*RUN, "ckpt_path=last"], run_dir)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    _assert_continues(uninterrupted, run_dir)
    assert _evaluated_iterations(run_dir) == [0, 2, 4]


def test_sigint_writes_a_checkpoint_that_resumes_exactly_in_a_moved_folder(tmp_path, uninterrupted):
    """Ctrl-C: the iteration finishes, last.ckpt is written, status 130; the resumed run appends.

    The folder is moved before the resume (a scheduler's scratch path changes between jobs):
    ModelCheckpoint then no longer recognises last.ckpt as its own and, with its version counter
    on, wrote last-v1.ckpt beside it, so the next ckpt_path=last resumed the older state.
    """
    run_dir = tmp_path / "run"
    every = "callbacks.checkpoint.every_n_iterations=1"
    proc = start_train([*RUN, every], run_dir, tmp_path / "interrupted.log")
    try:
        _wait_for(lambda: _iterations_done(run_dir) >= 1, proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
    log = (tmp_path / "interrupted.log").read_text()
    assert "SIGINT: checkpoint written to" in log
    interrupted_at = read_run_state(run_dir / "checkpoints" / "last.ckpt")["completed_iterations"]
    assert 1 <= interrupted_at < 4

    moved = tmp_path / "moved"
    run_dir.rename(moved)
    resumed = run_train([*RUN, every, "ckpt_path=last"], moved)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    _assert_continues(uninterrupted, moved)
    assert _evaluated_iterations(moved) == [0, 2, 4]
    assert not [p.name for p in (moved / "checkpoints").glob("*-v*.ckpt")]
    assert read_run_state(moved / "checkpoints" / "last.ckpt")["completed_iterations"] == 4


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves the previous checkpoint whole; a truncated file is refused clearly."""
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "step": 1}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "step": 2}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["step"] == 1

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_file(truncated)
    assert str(err.value).startswith(f"checkpoint {str(truncated)!r} is damaged (")
    assert "truncated" in str(err.value) and "resume from another checkpoint" in str(err.value)


@pytest.mark.slow
def test_ddp_sigkill_then_resume_matches_uninterrupted(tmp_path):
    """Two gloo ranks: each rank's random generator is checkpointed and restored (about 40 s)."""
    ddp = [*RUN, "callbacks.checkpoint.every_n_iterations=1", "trainer=ddp", "trainer.accelerator=cpu"]
    reference = run_train(ddp, tmp_path / "uninterrupted", timeout=420)
    assert reference.returncode == 0, reference.stderr[-4000:]
    run_dir = tmp_path / "run"
    proc = start_train(ddp, run_dir, tmp_path / "killed.log")
    try:
        _wait_for(lambda: any(s >= 2 * STEPS_PER_ITERATION for s in _checkpoint_steps(run_dir)), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    resumed = run_train([*ddp, "ckpt_path=last"], run_dir, timeout=420)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    _assert_continues(_metrics(tmp_path / "uninterrupted"), run_dir)
    digests = [(d / "rank_weights.json").read_text() for d in (tmp_path / "uninterrupted", run_dir)]
    assert digests[0] == digests[1]


def test_a_finished_run_continues_in_a_new_folder_with_more_iterations(tmp_path):
    """A checkpoint written at its run's last iteration continues when `iterations` is raised (Lightning
    had marked its epoch as on its last batch, so the continued run used to end at once, training
    nothing), and one whose iterations are all done is refused before any model loads."""
    first, second = tmp_path / "first", tmp_path / "second"
    base = [*TINY, "callbacks.checkpoint.every_n_iterations=1"]  # TINY: 3 iterations
    proc = run_train(base, first)
    assert proc.returncode == 0, proc.stderr[-4000:]
    last = first / "checkpoints" / "last.ckpt"
    assert read_run_state(last)["completed_iterations"] == 3

    proc = run_train([*base, "iterations=5", f"ckpt_path={last}"], second)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sorted(_metrics(second)) == [3, 4], "the two added iterations trained"
    assert json.loads((second / "eval.json").read_text())["iteration"] == 5

    proc = run_train([*base, "iterations=3", f"ckpt_path={last}"], tmp_path / "third")
    assert proc.returncode != 0
    assert (
        f"checkpoint {str(last)!r} has 3 completed iterations and this run has iterations=3: there is "
        "nothing left to train; to continue it, set iterations= above 3"
    ) in proc.stderr
    assert not (tmp_path / "third" / "csv").exists()


def test_a_run_resumed_in_its_folder_continues_its_wandb_run(tmp_path):
    """W&B offline: the killed run and its resumption log to one W&B run id; a new folder starts a new one."""
    from pama_lit.run.train import resumed_wandb_id

    run_dir = tmp_path / "run"
    env = train_env(WANDB_MODE="offline", WANDB_API_KEY="", NETRC=str(tmp_path / "no_netrc"))
    # An earlier in-process W&B test leaves this suite's W&B service in WANDB_SERVICE. A child that
    # inherits it shares that service, which still holds the killed child's run id ("run ID is in use").
    # Runs started from a shell each start their own service.
    env.pop("WANDB_SERVICE", None)
    overrides = [*TINY, "iterations=3", "logger=[csv,wandb]", "callbacks.checkpoint.every_n_iterations=1"]
    proc = start_train(overrides, run_dir, tmp_path / "killed.log", env=env)
    try:
        last = run_dir / "checkpoints" / "last.ckpt"
        _wait_for(
            lambda: last.is_file() and any(s >= STEPS_PER_ITERATION for s in _checkpoint_steps(run_dir)), proc
        )
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
    last = str(run_dir / "checkpoints" / "last.ckpt")
    state = read_run_state(last)
    saved = state["wandb_id"]
    assert saved and resumed_wandb_id(state, last, run_dir) == saved
    # The id comes from the state preflight read: the checkpoint file is not opened a second time.
    assert resumed_wandb_id(state, str(run_dir / "checkpoints" / "absent.ckpt"), run_dir) == saved

    resumed = run_train([*overrides, "ckpt_path=last"], run_dir, env=env)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"the checkpoint's W&B run {saved} continues" in resumed.stdout + resumed.stderr
    folders = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and {name.rsplit("-", 1)[-1] for name in folders} == {saved}, folders
    # Another folder started from this run's checkpoint is a run of its own.
    assert resumed_wandb_id(state, last, tmp_path / "elsewhere") is None
    assert resumed_wandb_id(None, None, run_dir) is None
