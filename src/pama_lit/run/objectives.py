"""``objective=a+b+c``: objectives synthesised from ``conf/reward/`` names, in the order written.

Hydra finds config options as files; a file per ordered combination of rewards does not scale (the
README promises that any +-joined objectives compose). Two Hydra plugins, shipped in this package's
``hydra_plugins/pama_lit_objectives`` so that Hydra discovers them wherever ``pama_lit`` is installed:

- ``ObjectiveSearchPathPlugin`` appends, after the primary config directory, a
  ``pama-objective://<that directory>`` entry to the config search path (the same for ``train.py``,
  ``evaluate.py``, ``-m`` sweeps and the compose API);
- ``ObjectiveConfigSource`` answers ``objective/<a+b+c>`` (and ``objective/<a>``) for reward names
  ``a``, ``b``, ``c`` in ``<that directory>/reward/``: the defaults list
  ``/reward@rewards.<a>: <a>``, ... that the hand-written files held. Files in ``conf/objective/``
  (``paper_imdb``...) come first in the search path, so a named objective wins over a synthesised one.

This module imports nothing heavy: Hydra imports it on every start.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.errors import MissingConfigException
from hydra.plugins.config_source import ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

SCHEME = "pama-objective"
GROUP = "objective"
REWARD_GROUP = "reward"


def objective_defaults(name: str, rewards: Sequence[str], named: Sequence[str] = ()) -> list[dict[str, str]]:
    """The defaults list of ``objective=<name>``: one ``/reward@rewards.<id>: <id>`` per +-joined id.

    Args:
        name: the objective option, e.g. ``"length+sentiment+humor"``.
        rewards: the reward options (``conf/reward/*.yaml`` stems).
        named: the named objectives (``conf/objective/*.yaml`` stems), for the error message.

    Raises:
        MissingConfigException: a part is not a reward name, is empty or repeats, naming it and the
            allowed names.
    """
    parts = name.split("+")
    allowed = f"each +-joined name must be a reward in conf/reward/ ({', '.join(sorted(rewards))})" + (
        f"; or use a named objective ({', '.join(sorted(named))})" if named else ""
    )
    for part in parts:
        if part not in rewards:
            what = "an empty name" if not part else f"unknown reward '{part}'"
            raise MissingConfigException(
                f"objective={name}: {what}; {allowed}", missing_cfg_file=f"{REWARD_GROUP}/{part}"
            )
    repeated = sorted({p for p in parts if parts.count(p) > 1})
    if repeated:
        raise MissingConfigException(
            f"objective={name}: reward {', '.join(repeated)} appears twice; each objective once",
            missing_cfg_file=f"{GROUP}/{name}",
        )
    return [{f"/{REWARD_GROUP}@rewards.{part}": part} for part in parts]


def _stems(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        return []
    return sorted(f[: -len(".yaml")] for f in os.listdir(directory) if f.endswith(".yaml"))


class ObjectiveConfigSource(ConfigSource):
    """Synthesises ``objective/<a+b+...>`` from the reward options of one config directory."""

    def __init__(self, provider: str, path: str) -> None:
        super().__init__(provider=provider, path=path)
        self._rewards = _stems(os.path.join(self.path, REWARD_GROUP))
        self._named = _stems(os.path.join(self.path, GROUP))

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _name(self, config_path: str) -> str | None:
        group, _, name = config_path.partition("/")
        name = name[: -len(".yaml")] if name.endswith(".yaml") else name
        if group != GROUP or not name or "/" in name:
            return None
        return name

    def is_config(self, config_path: str) -> bool:
        name = self._name(config_path)
        # A single unknown name stays Hydra's "Could not find 'objective/<name>'" with the options listed.
        return name is not None and ("+" in name or name in self._rewards)

    def is_group(self, config_path: str) -> bool:
        return config_path in ("", GROUP)

    def available(self) -> bool:
        return bool(self._rewards)

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if config_path == "" and results_filter in (None, ObjectType.GROUP):
            return [GROUP]
        if config_path == GROUP and results_filter in (None, ObjectType.CONFIG):
            return list(self._rewards)  # every pair, triple... too: not listed
        return []

    def load_config(self, config_path: str) -> ConfigResult:
        name = self._name(config_path)
        assert name is not None, config_path
        defaults: Any = objective_defaults(name, self._rewards, self._named)
        return ConfigResult(
            config=OmegaConf.create({"defaults": defaults}),
            path=f"{SCHEME}://{self.path}",
            provider=self.provider,
            header={"package": None},
        )


class ObjectiveSearchPathPlugin(SearchPathPlugin):
    """Appends an ``ObjectiveConfigSource`` for the primary config directory (when it has rewards)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for element in search_path.get_path():
            if element.provider != "main" or element.path is None:
                continue
            path = element.path
            if "://" in path:
                if not path.startswith("file://"):
                    continue
                path = path[len("file://") :]
            if os.path.isdir(os.path.join(path, REWARD_GROUP)):
                search_path.append("pama-objective", f"{SCHEME}://{os.path.abspath(path)}")
            return
