"""One run per output folder: a lock held for the run's lifetime, and no new run over old results.

A run's folder holds its config, logs, checkpoints and results, and ``ckpt_path=last`` resumes
whatever ``checkpoints/last.ckpt`` it finds there; two runs writing into one folder interleave
their records and the later one's checkpoints get resumed as the earlier one's. So:

* :func:`acquire` takes ``<folder>/.pama_lit.lock`` with ``flock`` on an open descriptor and
  writes the owner (pid, host, start time) into it. The kernel drops the lock when the
  process ends in any way, SIGKILL included, so a dead run never blocks its own resumption; the
  file stays and names the last owner.
* A run without ``ckpt_path`` refuses a folder that already holds a run's results, and a resume
  refuses a finished run (``eval.json`` is written last) and a checkpoint from another folder.
* :class:`ClaimRunFolder`, a Hydra callback, does both before Hydra writes ``.hydra/`` and
  ``train.log`` into the folder (``hydra.callbacks.run_folder`` in ``conf/train.yaml``); with
  ``-m`` it claims the sweep folder. ``train()`` claims ``paths.output_dir`` itself when called
  without it (tests, notebooks); a folder this process already holds passes.

Only the launching process claims: the extra processes of a multi-process run (``LOCAL_RANK``,
``RANK`` or ``NODE_RANK`` set and not 0) share rank 0's folder.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

LOCK_NAME = ".pama_lit.lock"
# What a run writes into its folder (Hydra's .hydra/ and train.log aside): any of them means a run
# has produced something there. eval.json comes last, once final/ is complete.
RESULTS = (
    "eval.json",
    "eval.responses.jsonl",
    "final",
    "reference",
    "evaluations.jsonl",
    "samples.jsonl",
    "checkpoints",
    "csv",
    "wandb",
    "rank_weights.json",
)
FINISHED = "eval.json"

_held: dict[Path, int] = {}  # folders this process has locked -> the lock file's descriptor


class RunFolderError(RuntimeError):
    """The output folder belongs to another run, running or done."""


def is_launching_process() -> bool:
    """False in the extra processes of a multi-process run, which write into rank 0's folder."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def results_in(folder: Path) -> list[str]:
    """The entries of :data:`RESULTS` that ``folder`` holds, in that order."""
    return [name for name in RESULTS if (folder / name).exists()]


def check_folder(folder: Path, ckpt_path: str | None) -> None:
    """A new run (``ckpt_path`` None) needs a folder without results; a resume, an unfinished run there.

    Raises:
        RunFolderError: naming the folder, what it holds, and the overrides that resume or move on.
    """
    found = results_in(folder)
    if not found:
        return
    held = ", ".join(f"{name}/" if (folder / name).is_dir() else name for name in found)
    elsewhere = "choose another folder with hydra.run.dir=<new folder>"
    if FINISHED in found:
        what = "resumes nothing" if ckpt_path is not None else "would overwrite it"
        further = ""
        if ckpt_path is not None:
            further = (
                f" (to train it further, continue its checkpoint in the new folder: "
                f"`ckpt_path={folder / 'checkpoints' / 'last.ckpt'} iterations=<more than it ran>`)"
            )
        raise RunFolderError(
            f"paths.output_dir={str(folder)!r} holds a finished run ({held}); a run there {what}: "
            f"{elsewhere}{further}"
        )
    if ckpt_path is None:
        raise RunFolderError(
            f"paths.output_dir={str(folder)!r} holds an unfinished run ({held}); resume it with "
            f"`ckpt_path=last hydra.run.dir={folder}`, or {elsewhere}"
        )
    if ckpt_path != "last" and not Path(ckpt_path).resolve().is_relative_to(folder.resolve()):
        raise RunFolderError(
            f"ckpt_path={ckpt_path!r} is not a checkpoint of paths.output_dir={str(folder)!r}, which holds "
            f"another run ({held}); continuing one run in another's folder mixes their records: "
            f"{elsewhere}, or resume the run there with `ckpt_path=last hydra.run.dir={folder}`"
        )


def check_sweep(folder: Path, ckpt_path: str | None) -> None:
    """A new multirun (``ckpt_path`` None) needs a sweep folder none of whose runs holds results.

    Raises:
        RunFolderError: naming the sweep folder, its used run folders and the overrides to use.
    """
    check_folder(folder, ckpt_path)
    used = sorted(p.name for p in folder.iterdir() if p.is_dir() and results_in(p)) if folder.is_dir() else []
    if used and ckpt_path is None:
        raise RunFolderError(
            f"hydra.sweep.dir={str(folder)!r} holds runs with results (in {', '.join(used)}); resume them "
            f"with `-m ... ckpt_path=last hydra.sweep.dir={folder}`, or choose another hydra.sweep.dir"
        )


def acquire(folder: Path, ckpt_path: str | None, sweep: bool = False) -> None:
    """Lock ``folder`` for this process, then check it and sign the lock file.

    Args:
        folder: a run's output folder, or with ``sweep`` a multirun's sweep folder.
        ckpt_path: the run's ``ckpt_path`` (None for a new run).
        sweep: check with :func:`check_sweep` instead of :func:`check_folder`.

    Raises:
        RunFolderError: another process holds the folder (its pid, host and start are named), or
            the check refuses it.
    """
    check = check_sweep if sweep else check_folder
    key = folder.resolve()
    path = folder / LOCK_NAME
    if not path.is_file():
        check(folder, ckpt_path)  # refuse an older run's folder without leaving a lock file in it
        folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderError(
                f"paths.output_dir={str(folder)!r} is in use by another run ({owner_text(path)}); wait for "
                f"it to end, stop it, or choose another folder with hydra.run.dir=<new folder>"
            ) from None
        except OSError as err:  # a file system without locks (some network mounts)
            log.warning("cannot lock %s (%s): a second run in this folder would not be detected", path, err)
        check(folder, ckpt_path)  # again, now that no other run can start here
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    _held[key] = fd


def release(folder: Path) -> None:
    """Unlock a folder this process acquired (the lock file stays; it names the last owner)."""
    fd = _held.pop(folder.resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor of the open file drops the flock


def owner_text(lock_file: Path) -> str:
    """``pid 123 on host h, started ...`` from a lock file; the owner may not have signed it yet."""
    try:
        owner = json.loads(lock_file.read_text())
        return f"pid {owner['pid']} on host {owner['host']}, started {owner['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is starting up"


@contextlib.contextmanager
def owned(folder: Path, ckpt_path: str | None) -> Iterator[None]:
    """Hold ``folder`` for the block: acquire it unless this process holds it already (Hydra's callback)."""
    if not is_launching_process() or folder.resolve() in _held:
        yield
        return
    acquire(folder, ckpt_path)
    try:
        yield
    finally:
        release(folder)


class ClaimRunFolder(Callback):
    """Hydra callback: claim the run folder (or, with ``-m``, the sweep folder) before Hydra writes to it.

    With ``-m`` a sweep folder whose runs hold results is refused as a whole unless ``ckpt_path`` is
    set (then each run resumes in its own ``<sweep>/<n>``); each run's folder is claimed by ``train()``.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_launching_process():
            with _exit_on_refusal():
                acquire(Path(config.hydra.run.dir).absolute(), config.get("ckpt_path"))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(Path(config.hydra.run.dir).absolute())

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_launching_process():
            return
        with _exit_on_refusal():
            acquire(Path(config.hydra.sweep.dir).absolute(), config.get("ckpt_path"), sweep=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(Path(config.hydra.sweep.dir).absolute())


@contextlib.contextmanager
def _exit_on_refusal() -> Iterator[None]:
    # Hydra turns an exception in a callback into a warning and runs the job anyway: exit instead.
    try:
        yield
    except RunFolderError as err:
        raise SystemExit(f"RunFolderError: {err}") from None
