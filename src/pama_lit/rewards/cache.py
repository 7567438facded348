"""Where rewards keep what they build on first use (the trained humor classifier)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user cache folder of pama_lit, created on demand.

    ``$PAMA_LIT_CACHE`` if set, else ``$XDG_CACHE_HOME/pama_lit``, else ``~/.cache/pama_lit``.
    """
    root = os.environ.get("PAMA_LIT_CACHE")
    if root:
        path = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "pama_lit"
    path.mkdir(parents=True, exist_ok=True)
    return path
