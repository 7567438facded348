"""Checkpoint files that survive crashes and load without executing pickled code.

* :class:`AtomicCheckpointIO` writes a checkpoint to a temporary file in the same folder, fsyncs it
  and renames it into place, so a SIGKILL or a full disk never leaves a truncated ``last.ckpt``
  (Lightning's own writer stages the bytes in the system temp folder and copies them across file
  systems, which is not atomic). It loads with ``weights_only=True``.
* :func:`capture_rng` / :func:`restore_rng` keep every random generator in tensors, lists and
  plain numbers, so the checkpoint passes ``torch.load(weights_only=True)``.
* :class:`SigtermCheckpoint` writes ``last.ckpt`` when a scheduler sends SIGTERM or on Ctrl-C (SIGINT).
* :func:`read_run_state` reads a checkpoint's ``pama`` section before any model loads.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import signal
import struct
import threading
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pama_lit.infra.atomic import write_atomic

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, unsafe to load, or belongs to a different run set-up."""


def capture_rng() -> dict[str, Any]:
    """Every random generator's state in types ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


_RESUME_ELSEWHERE = "resume from another checkpoint in the same folder"


def torch_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole ``torch.save`` archive, or None; reads only the zip directory.

    ``torch.save`` writes a zip archive whose central directory is at the end of the file, so a
    truncated file, random bytes and an empty zip are all told apart from a complete one here.
    """
    size = path.stat().st_size
    if size == 0:
        return "the file is empty"
    if not zipfile.is_zipfile(path):
        return f"{size} bytes that are not a whole PyTorch zip archive: truncated or corrupt"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        return f"its zip directory cannot be read ({err})"
    if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return f"a zip archive without the data.pkl of a torch.save file ({len(names)} entries)"
    return None


def load_checkpoint_file(
    path: str | os.PathLike,
    map_location: Any = "cpu",
    what: str = "checkpoint",
    remedy: str = _RESUME_ELSEWHERE,
) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with errors that say what went wrong.

    Args:
        path: a file written by ``torch.save``.
        map_location: where tensors load.
        what: the file's role, for messages ("checkpoint", "value heads").
        remedy: what to do about a damaged file, for messages.

    Raises:
        CheckpointError: the file is missing, damaged (empty, truncated, random bytes, an empty
            zip), or holds pickled objects other than tensors and plain containers (then it was not
            written by pama_lit, or was altered).
    """
    path = check_torch_file(path, what, remedy)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):
            problem = _first_line(err)
        else:
            raise CheckpointError(
                f"{what} {str(path)!r} holds pickled objects that are not tensors or plain containers, so "
                f"it is not loaded (weights_only=True): {_unsupported(err)}. pama_lit never saves such "
                "objects; this file was written by other code or altered"
            ) from None
    except Exception as err:  # a damaged archive fails in zip, pickle, storage or unicode decoding
        problem = _first_line(err)
    raise CheckpointError(f"{what} {str(path)!r} is damaged ({problem}); {remedy}")


def check_torch_file(
    path: str | os.PathLike, what: str = "checkpoint", remedy: str = _RESUME_ELSEWHERE
) -> Path:
    """``path`` as a Path when it exists and is a whole ``torch.save`` archive (see :func:`torch_file_problem`).

    Raises:
        CheckpointError: missing or damaged, naming ``what`` and the path.
    """
    return _check_file(path, torch_file_problem, what, remedy)


def _check_file(path: str | os.PathLike, problem_of, what: str, remedy: str) -> Path:
    """``path`` as a Path when it exists and ``problem_of(path)`` finds nothing wrong, else CheckpointError."""
    path = Path(path)
    tail = f"; {remedy}" if remedy else ""
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist{tail}")
    problem = problem_of(path)
    if problem is not None:
        raise CheckpointError(f"{what} {str(path)!r} is damaged ({problem}){tail}")
    return path


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _unsupported(err: pickle.UnpicklingError) -> str:
    """``Unsupported global: GLOBAL x.y``, the class torch's weights-only loader refused."""
    found = re.search(r"Unsupported global: GLOBAL \S+", str(err))
    return found.group(0) if found else _first_line(err)


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file, or None; reads only its header.

    The format is an 8-byte header length, a JSON header with each tensor's byte range, then the
    data: a file whose size differs from the header's last byte is truncated or padded.
    """
    size = path.stat().st_size
    if size < 8:
        return f"{size} bytes, shorter than a safetensors header"
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > size - 8:
            return f"{size} bytes, but the header alone claims {length}: truncated or not safetensors"
        try:
            header = json.loads(f.read(length))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError) as err:
            return f"its header is not safetensors JSON ({type(err).__name__})"
    if 8 + length + end != size:
        return f"{size} bytes, its header describes {8 + length + end}: truncated or corrupt"
    return None


def check_safetensors_file(path: str | os.PathLike, what: str = "weights", remedy: str = "") -> Path:
    """``path`` as a Path when it exists and is a whole safetensors file (see :func:`safetensors_problem`).

    Raises:
        CheckpointError: missing or damaged, naming ``what`` and the path.
    """
    return _check_file(path, safetensors_problem, what, remedy)


def load_safetensors_file(
    path: str | os.PathLike, device: str = "cpu", what: str = "weights", remedy: str = ""
) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with errors that name the file and say it is damaged.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt.
    """
    from safetensors.torch import load_file

    path = check_safetensors_file(path, what, remedy)
    try:
        return load_file(path, device=device)
    except Exception as err:  # SafetensorError, OSError, or a bad dtype in a forged header
        tail = f"; {remedy}" if remedy else ""
        raise CheckpointError(f"{what} {str(path)!r} is damaged ({_first_line(err)}){tail}") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: atomic local writes (temp file + fsync + rename), safe loads.

    The temporary file is ``.<name>.tmp`` next to the target, so a crash leaves at most one stale
    temporary per checkpoint name, which the next save overwrites.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        write_atomic(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(
        self, path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if weights_only is False:
            log.warning("Loading %s with weights_only=False: only do this for a checkpoint you trust", path)
            return torch.load(path, map_location=map_location or "cpu", weights_only=False)
        return load_checkpoint_file(path, map_location=map_location or "cpu")


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where ``last.ckpt`` lives: the ModelCheckpoint's folder, else ``<root>/checkpoints``."""
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            return Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
    return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class SigtermCheckpoint(L.Callback):
    """On SIGTERM or SIGINT (Ctrl-C), write ``last.ckpt`` before the process exits, so ``ckpt_path=last`` resumes.

    Lightning's SIGTERM handler only sets ``trainer.received_sigterm``; the loops then raise
    ``SIGTERMException`` once the current iteration has finished. During ``fit`` this callback gives
    SIGINT the same handler (Lightning would otherwise turn it into a ``KeyboardInterrupt`` at an
    arbitrary point mid-iteration and exit without a checkpoint); a second Ctrl-C stops at once,
    without one. It saves at the end of the interrupted iteration, in ``on_train_batch_end``: the
    state a periodic checkpoint has, so the resumed run continues with the same iteration numbers.
    Every rank takes part (a signal seen by any rank counts, and stops them all), since saving is
    collective. If the signal lands elsewhere (during a validation), the checkpoint is written from
    ``on_exception`` instead. :func:`interrupt_status` gives the exit status, 128 + the signal.
    """

    def __init__(self) -> None:
        self._saved_step: int | None = None
        self.signal: signal.Signals | None = None
        self._trainer: Any = None
        self._previous_sigint: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed after Lightning's own handlers, whose teardown then puts the previous one back.
        if threading.current_thread() is threading.main_thread():
            self._trainer = trainer
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_sigint()

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None
        self._trainer = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        trainer = self._trainer
        self._restore_sigint()  # a second Ctrl-C interrupts at once
        self.signal = signal.SIGINT
        log.warning(
            "SIGINT: stopping after the current iteration to write last.ckpt (Ctrl-C again: stop now)"
        )
        trainer._signal_connector.received_sigterm = True  # what Lightning's SIGTERM handler sets

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        from pama_lit.infra import distributed

        if distributed.sum_int(int(trainer.received_sigterm), pl_module.device) > 0:
            # A rank that saw no signal stops too, or it would wait for the others in the next collective.
            trainer._signal_connector.received_sigterm = True
            self._save(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_sigint()
        fitting = trainer.state.fn == TrainerFn.FITTING
        if isinstance(exception, SIGTERMException) and fitting and self._saved_step != trainer.global_step:
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        self._saved_step = trainer.global_step
        if trainer.is_global_zero:
            name = (self.signal or signal.SIGTERM).name
            log.warning(
                "%s: checkpoint written to %s; resume with ckpt_path=last (or ckpt_path=%s)", name, path, path
            )


def interrupt_status(trainer: L.Trainer) -> int:
    """The exit status of a run stopped by a signal: 130 after SIGINT, 143 after SIGTERM (128 + signal)."""
    for callback in trainer.callbacks:
        if isinstance(callback, SigtermCheckpoint) and callback.signal is not None:
            return 128 + callback.signal
    return 128 + signal.SIGTERM


def read_run_state(path: str | os.PathLike) -> dict[str, Any]:
    """The ``pama`` section of a checkpoint (objectives, algorithm, ...), read before any model loads.

    Raises:
        CheckpointError: unreadable, unsafe, or not written by pama_lit.
    """
    return run_state(load_checkpoint_file(path), path)


def run_state(checkpoint: Any, path: str | os.PathLike) -> dict[str, Any]:
    """The ``pama`` section of a loaded checkpoint.

    Raises:
        CheckpointError: the checkpoint has none (it was not written by pama_lit).
    """
    state = checkpoint.get("pama") if isinstance(checkpoint, dict) else None
    if state is None:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was not written by pama_lit (it has no 'pama' section)"
        )
    return state
