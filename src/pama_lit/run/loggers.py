"""A CSV logger that a resumed run continues: one ``metrics.csv`` per run, whatever its interruptions.

Lightning's ``CSVLogger`` gives each start a new ``version_<n>`` folder, and one given an existing
version deletes its ``metrics.csv`` (Lightning 2.6: "Previous log files in this directory will
be deleted"). A run owns its folder (``pama_lit.run.run_folder``), so its logs stay in ``version_0``
and a resumed run appends to them.
"""

from __future__ import annotations

import csv
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to an existing ``metrics.csv`` under one header (the union of columns)."""

    def __init__(self, *args: Any, version: int | str = 0, **kwargs: Any) -> None:
        super().__init__(*args, version=version, **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class _AppendingWriter(ExperimentWriter):
    """Starts from the existing file's columns, so a resumed run's rows are appended, not a new file.

    ``save`` then rewrites the file only when a new column appears (Lightning's own rule), keeping
    every row under the widened header.
    """

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])
