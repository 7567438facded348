"""Hydra discovers plugins in the ``hydra_plugins`` namespace package: pama_lit's objective synthesis."""

from pama_lit.run.objectives import ObjectiveConfigSource, ObjectiveSearchPathPlugin

__all__ = ["ObjectiveConfigSource", "ObjectiveSearchPathPlugin"]
