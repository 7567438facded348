"""Hydra discovers plugins in the ``hydra_plugins`` namespace package: pama_lit's objective synthesis.

Importing ``pama_lit.run.schema`` here also registers ``train_schema`` in Hydra's ConfigStore, so
any Hydra entry point over conf/ (an app of one's own, the compose API, a notebook) finds the typed
schema that conf/train.yaml names, not only train.py and evaluate.py.
"""

import pama_lit.run.schema  # noqa: F401  (registers train_schema)
from pama_lit.run.objectives import ObjectiveConfigSource, ObjectiveSearchPathPlugin

__all__ = ["ObjectiveConfigSource", "ObjectiveSearchPathPlugin"]
