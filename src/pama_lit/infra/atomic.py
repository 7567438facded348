"""Atomic file writes: a reader or a crash sees the old file or the whole new one, never a part.

The one writer for checkpoints, result files and cached artifacts: write a temporary file in the
target's folder (a rename is atomic only within one file system), flush and fsync it, rename it into
place, and fsync the folder so that the rename itself survives a power loss.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomic(
    path: str | os.PathLike,
    content: str | bytes | Callable[[IO[bytes]], None],
    *,
    per_process: bool = False,
) -> Path:
    """Write ``content`` to ``path`` atomically, creating its folder.

    Args:
        path: the target file.
        content: text (UTF-8), bytes, or a function that writes to the open binary file (``torch.save``).
        per_process: name the temporary ``.<name>.<pid>.tmp`` so that several processes may write
            the same file at once (the last rename wins); by default it is ``.<name>.tmp``, so a
            killed write leaves at most one stale temporary, which the next write replaces.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp" if per_process else f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """``write_atomic`` of ``obj`` as JSON with a final newline."""
    return write_atomic(path, json.dumps(obj, indent=indent) + "\n")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)
