"""The user cache folder: converted embedded models, trained reward artifacts.

Every cached artifact is a folder that :func:`cached_folder` builds in a temporary folder next to
its place, then renames into place. Its ``manifest.json`` (each file's size and sha256) is written
last, so a folder without a manifest that matches its files was interrupted, damaged or written by
an older pama_lit: it is built again, with a warning naming the damaged file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "PAMA_LIT_CACHE"
MANIFEST = "manifest.json"
_MANIFEST_FORMAT = "pama_lit.cache_manifest"

# Files whose sha256 matched in this process, keyed by (path, size, mtime_ns, sha256): a model
# loaded many times (tests, evaluations) is hashed once.
_hashed: set[tuple[str, int, int, str]] = set()


class CacheError(RuntimeError):
    """The cache folder cannot be used, or a damaged artifact in it cannot be built again."""


def _where() -> str:
    """How the user chose the cache folder, for messages."""
    root = os.environ.get(ENV)
    return f"{ENV}={root}" if root else f"the default cache folder (set {ENV} to use another)"


def cache_root() -> Path:
    """``$PAMA_LIT_CACHE`` if set, else ``$XDG_CACHE_HOME/pama_lit`` (``~/.cache/pama_lit``); not created."""
    root = os.environ.get(ENV)
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "pama_lit"


def cache_dir(*parts: str) -> Path:
    """The cache root joined with ``parts``, created on first use.

    Raises:
        CacheError: ``$PAMA_LIT_CACHE`` names a folder whose parent does not exist, or something that
            is not a folder, or a folder where the subfolder cannot be created.
    """
    root = cache_root()
    if os.environ.get(ENV):
        if not root.parent.is_dir():
            raise CacheError(
                f"{ENV}={os.environ[ENV]}: its parent folder {root.parent} does not exist; create it, or point "
                f"{ENV} at a folder in an existing one"
            )
        if root.exists() and not root.is_dir():
            raise CacheError(f"{ENV}={os.environ[ENV]}: {root} is not a folder; point {ENV} at a folder")
    path = root.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheError(
            f"cannot create the cache folder {path} ({err.strerror or err}); {_where()}: "
            "choose a writable folder"
        ) from None
    return path


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(folder: Path) -> dict[str, dict]:
    """Record every file of ``folder`` (size and sha256) in ``folder/manifest.json``; call it last.

    Returns:
        The manifest's entries: ``{relative path: {"size": bytes, "sha256": hex digest}}``.
    """
    files = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    (folder / MANIFEST).write_text(json.dumps({"format": _MANIFEST_FORMAT, "files": files}, indent=1))
    return files


def manifest_problem(folder: Path, hash_file: Callable[[str], bool] = lambda name: True) -> str | None:
    """Why ``folder`` does not match its manifest, or None when it does.

    Every file's size is checked; the sha256 of the files for which ``hash_file(name)`` is true, once
    per process and file version (a 540 MB model hashes in about 0.6 s).

    Returns:
        A short reason naming the first bad file (``model.safetensors: 1024 bytes, the manifest says
        538090408``), or None.
    """
    manifest = folder / MANIFEST
    if not folder.is_dir():
        return f"{folder} does not exist"
    try:
        record = json.loads(manifest.read_text())
        files = record["files"] if record.get("format") == _MANIFEST_FORMAT else None
    except (OSError, ValueError, AttributeError, KeyError):
        files = None
    if not isinstance(files, dict) or not files:
        return f"{manifest} is missing or unreadable (it is written last, when the folder is complete)"
    for name, entry in files.items():
        path = folder / name
        try:
            stat = path.stat()
        except OSError:
            return f"{path} is missing"
        if stat.st_size != entry["size"]:
            return f"{path} has {stat.st_size} bytes, its manifest says {entry['size']}"
        key = (str(path), stat.st_size, stat.st_mtime_ns, entry["sha256"])
        if hash_file(name) and key not in _hashed:
            if _sha256(path) != entry["sha256"]:
                return f"{path}'s sha256 differs from its manifest's (the bytes changed)"
            _hashed.add(key)
    return None


def cached_folder(
    folder: Path,
    build: Callable[[Path], None],
    what: str,
    hash_file: Callable[[str], bool] = lambda name: True,
    rebuild: bool = False,
) -> Path:
    """``folder``, verified against its manifest; built first when it is missing, damaged or ``rebuild``.

    Args:
        folder: the artifact's place in the cache.
        build: writes the artifact's files into the empty folder it is given.
        what: the artifact, for messages ("the converted SmolLM2 model").
        hash_file: which files to hash (see :func:`manifest_problem`); sizes are always checked.
        rebuild: build even when the folder is sound.

    Raises:
        CacheError: the folder cannot be written, or a damaged artifact could not be built again
            (the message names the damaged file).
    """
    problem = None if rebuild else manifest_problem(folder, hash_file)
    if not rebuild and problem is None:
        return folder
    damaged = folder.exists() and not rebuild
    if damaged:
        log.warning("%s is incomplete or damaged (%s): building it again in %s", what, problem, folder)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    except OSError as err:
        raise CacheError(
            f"cannot write to the cache folder {folder.parent} ({err.strerror or err}) to build {what}"
            + (f" again ({problem})" if damaged else "")
            + f"; {_where()}: choose a writable folder"
        ) from None
    try:
        try:
            build(tmp)
        except Exception as err:
            if not damaged:
                raise
            raise CacheError(
                f"{what} is damaged ({problem}), and building it again failed ({type(err).__name__}: {err}); "
                f"delete {folder} and run again"
            ) from err
        files = write_manifest(tmp)
        if _move_into_place(tmp, folder, keep_sound=not rebuild):
            for name, entry in files.items():  # hashed just now: not again in this process
                stat = (folder / name).stat()
                _hashed.add((str(folder / name), stat.st_size, stat.st_mtime_ns, entry["sha256"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _move_into_place(tmp: Path, folder: Path, keep_sound: bool) -> bool:
    """Rename the built ``tmp`` to ``folder``; an existing ``folder`` is moved aside first.

    Concurrent builders (a multirun, DDP ranks) each build their own ``tmp``; with ``keep_sound``, a
    folder that another process put in place meanwhile and that matches its manifest is kept.

    Returns:
        Whether ``tmp`` is now ``folder`` (False: another process's sound folder was kept).
    """
    for _ in range(3):
        try:
            os.replace(tmp, folder)
            return True
        except OSError:
            if keep_sound and manifest_problem(folder) is None:
                return False
        aside = folder.with_name(f".{folder.name}.damaged-{os.getpid()}")
        try:
            os.replace(folder, aside)
        except FileNotFoundError:
            continue
        if aside.is_dir():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)
    os.replace(tmp, folder)
    return True
