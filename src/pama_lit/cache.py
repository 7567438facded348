"""The user cache folder: converted embedded models, trained reward artifacts."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$PAMA_LIT_CACHE`` if set, else ``$XDG_CACHE_HOME/pama_lit`` (``~/.cache/pama_lit``), joined with parts.

    The folder is created on first use.
    """
    root = os.environ.get("PAMA_LIT_CACHE")
    if root:
        base = Path(root).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "pama_lit"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
