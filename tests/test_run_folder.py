"""A run owns its folder: one run at a time, no new run over another's results, logs a resume appends to."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import open_dict
from train_runs import ROOT, TINY, run_train, start_train

from pama_lit.run.loggers import AppendingCSVLogger
from pama_lit.run.run_folder import LOCK_NAME, RunFolderError, acquire, check_folder, release
from pama_lit.run.train import train


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _old_run(folder: Path, finished: bool) -> Path:
    """What an earlier run leaves in its folder (file contents do not matter, only that they survive)."""
    files = {
        ".hydra/config.yaml": "seed: 7\n",
        ".hydra/overrides.yaml": "- seed=7\n",
        "train.log": "the earlier run's log\n",
        "evaluations.jsonl": '{"iteration": 0}\n',
        "csv/version_0/metrics.csv": "epoch,step,train/x\n0,0,1.0\n",
        "checkpoints/last.ckpt": "not read by a refused run",
    }
    if finished:
        files.update({"final/value_heads.pt": "weights", "eval.json": '{"iteration": 4}\n'})
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_which_folders_a_run_may_use(tmp_path):
    fresh = tmp_path / "fresh"
    (fresh / ".hydra").mkdir(parents=True)  # Hydra's own files and a lock file are not results
    (fresh / "train.log").write_text("")
    (fresh / LOCK_NAME).write_text("")
    check_folder(fresh, None)
    check_folder(tmp_path / "missing", None)

    unfinished = _old_run(tmp_path / "unfinished", finished=False)
    with pytest.raises(RunFolderError) as err:
        check_folder(unfinished, None)
    assert str(err.value) == (
        f"paths.output_dir={str(unfinished)!r} holds an unfinished run (evaluations.jsonl, checkpoints/, csv/); "
        f"resume it with `ckpt_path=last hydra.run.dir={unfinished}`, or choose another folder with "
        "hydra.run.dir=<new folder>"
    )
    check_folder(unfinished, "last")
    check_folder(unfinished, str(unfinished / "checkpoints" / "last.ckpt"))
    foreign = str(tmp_path / "other" / "checkpoints" / "last.ckpt")
    with pytest.raises(
        RunFolderError, match=r"is not a checkpoint of paths.output_dir=.*mixes their records"
    ):
        check_folder(unfinished, foreign)

    finished = _old_run(tmp_path / "finished", finished=True)
    last = finished / "checkpoints" / "last.ckpt"
    further = (
        f" (to train it further, continue its checkpoint in the new folder: `ckpt_path={last} iterations="
    )
    for ckpt_path, what, tail in (
        (None, "would overwrite it", ""),
        ("last", "resumes nothing", further + "<more than it ran>`)"),
    ):
        with pytest.raises(RunFolderError) as err:
            check_folder(finished, ckpt_path)
        assert str(err.value).startswith(
            f"paths.output_dir={str(finished)!r} holds a finished run (eval.json, final/"
        )
        assert str(err.value).endswith(
            f"a run there {what}: choose another folder with hydra.run.dir=<new folder>{tail}"
        )


def _hold(folder: Path) -> subprocess.Popen:
    """Another process that acquires ``folder`` and keeps it until killed."""
    code = (
        "import sys, time; from pathlib import Path; from pama_lit.run.run_folder import acquire; "
        "acquire(Path(sys.argv[1]), None); print('held', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_the_lock_names_its_owner_and_dies_with_it(tmp_path):
    folder = tmp_path / "run"
    owner = _hold(folder)
    try:
        with pytest.raises(RunFolderError) as err:
            acquire(folder, None)
        assert f"is in use by another run (pid {owner.pid} on host " in str(err.value)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)
    finally:
        owner.kill()
    acquire(folder, None)  # the kernel dropped the killed owner's lock: nothing stale blocks a resume
    try:
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] != owner.pid
    finally:
        release(folder)
    acquire(folder, None)  # released: the same process can take it again
    release(folder)


def test_a_run_in_a_folder_held_by_another_process_is_refused(tmp_path):
    folder = tmp_path / "run"
    owner = _hold(folder)
    try:
        proc = run_train(TINY, folder)
    finally:
        owner.kill()
    assert proc.returncode != 0
    assert f"is in use by another run (pid {owner.pid} on host " in proc.stderr
    assert "Model <" not in proc.stdout + proc.stderr  # refused before anything loads
    assert not (folder / ".hydra").exists()  # before Hydra writes into the folder


def test_a_new_run_in_a_used_folder_is_refused_and_changes_nothing(tmp_path):
    folder = _old_run(tmp_path / "run", finished=False)
    before = _hashes(folder)
    proc = run_train([*TINY, "seed=3"], folder)
    assert proc.returncode != 0
    assert f"paths.output_dir={str(folder)!r} holds an unfinished run" in proc.stderr
    assert f"resume it with `ckpt_path=last hydra.run.dir={folder}`" in proc.stderr
    assert _hashes(folder) == before  # not even Hydra's .hydra/config.yaml or train.log


def test_train_refuses_to_overwrite_or_resume_a_finished_run(tiny_cfg):
    folder = Path(tiny_cfg.paths.output_dir)
    with open_dict(tiny_cfg):
        tiny_cfg.callbacks.checkpoint.every_n_iterations = 1
    train(tiny_cfg)
    before = _hashes(folder)
    with pytest.raises(RunFolderError, match="holds a finished run .* would overwrite it"):
        train(tiny_cfg)
    with open_dict(tiny_cfg):
        tiny_cfg.ckpt_path = "last"
    with pytest.raises(RunFolderError, match="holds a finished run .* resumes nothing"):
        train(tiny_cfg)
    assert _hashes(folder) == before


def test_a_multirun_in_a_used_sweep_folder_is_refused_and_changes_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    _old_run(sweep / "0", finished=True)
    (sweep / "multirun.yaml").write_text("the earlier sweep\n")
    before = _hashes(sweep)
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", *TINY, "seed=1,2", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert f"hydra.sweep.dir={str(sweep)!r} holds runs with results (in 0)" in proc.stderr
    assert _hashes(sweep) == before


def test_a_fresh_multirun_trains_each_job_in_its_own_folder(tmp_path):
    """Hydra writes .hydra/ into each job's folder before train() claims it: not a reason to refuse."""
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", *TINY, "iterations=1", "seed=1", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (sweep / "0" / "eval.json").is_file() and (sweep / "0" / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow
def test_two_runs_started_in_one_folder(tmp_path):
    """The second is refused, naming the first's pid, while the first trains on (about 20 s)."""
    folder = tmp_path / "run"
    first = start_train([*TINY, "iterations=50"], folder, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 120
        while not (folder / LOCK_NAME).is_file() or not (folder / LOCK_NAME).read_text():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = run_train(TINY, folder)
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    assert second.returncode != 0
    assert f"is in use by another run (pid {first.pid} on host " in second.stderr
    assert first.returncode == 143  # the first was stopped by the test, with a checkpoint, not by the second


def test_the_csv_logger_appends_when_a_run_resumes(tmp_path):
    first = AppendingCSVLogger(tmp_path, name="csv")
    first.log_metrics({"train/x": 1.0, "val/y": 2.0}, step=0)
    first.log_metrics({"train/x": 1.5}, step=1)
    first.save()
    resumed = AppendingCSVLogger(tmp_path, name="csv")
    resumed.log_metrics({"train/x": 3.0}, step=2)
    resumed.save()
    resumed.log_metrics({"train/x": 4.0, "train/z": 5.0}, step=3)  # a new column widens the header
    resumed.save()
    assert [p.name for p in (tmp_path / "csv").iterdir()] == ["version_0"]
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines() == [
        "step,train/x,train/z,val/y",
        "0,1.0,,2.0",
        "1,1.5,,",
        "2,3.0,,",
        "3,4.0,5.0,",
    ]
