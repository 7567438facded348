"""The package's layers: the math in ``pama_lit.core`` never reaches for Lightning or Hydra."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pama_lit

PACKAGE = pathlib.Path(pama_lit.__file__).parent
FRAMEWORKS = ("lightning", "pytorch_lightning", "hydra", "omegaconf")


def imported_roots(path: pathlib.Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth of the file."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_sources_import_no_framework():
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(imported_roots(path) & set(FRAMEWORKS))
        for path in sorted((PACKAGE / "core").glob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_core_loads_no_framework():
    """Catches a framework pulled in indirectly, through another pama_lit module."""
    modules = [f"pama_lit.core.{p.stem}" for p in (PACKAGE / "core").glob("*.py") if p.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_core_imports_only_core():
    """The math layer depends on nothing else in the package."""
    for path in (PACKAGE / "core").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pama_lit"):
                assert node.module.startswith("pama_lit.core"), f"{path.name} imports {node.module}"


def test_every_module_lives_in_a_layer():
    """No module sits at the package's top level beside the layer folders."""
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert loose == []
