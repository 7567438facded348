"""``infra.atomic``: the one atomic writer (temp file, fsync, rename, folder fsync)."""

from __future__ import annotations

import os

import pytest

from pama_lit.infra import atomic
from pama_lit.infra.atomic import write_atomic, write_json_atomic


def test_writes_text_bytes_and_a_writer_function(tmp_path):
    assert write_atomic(tmp_path / "a" / "t.txt", "héllo").read_text(encoding="utf-8") == "héllo"
    assert write_atomic(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert write_atomic(tmp_path / "c.bin", lambda f: f.write(b"xyz")).read_bytes() == b"xyz"
    assert write_json_atomic(tmp_path / "d.json", {"k": 1}).read_text() == '{\n  "k": 1\n}\n'


def test_a_failed_write_keeps_the_old_file_whole_and_leaves_no_temporary(tmp_path):
    path = write_atomic(tmp_path / "r.json", "old")

    def half_then_fail(f):
        f.write(b"new, half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_file_and_folder_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    write_atomic(tmp_path / "x.txt", "data")
    assert events == ["fsync", "replace", "fsync"]


def test_a_stale_temporary_is_replaced_and_per_process_names_its_own(tmp_path):
    (tmp_path / ".x.txt.tmp").write_text("stale, from a killed write")
    write_atomic(tmp_path / "x.txt", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]
    seen = []
    write_atomic(tmp_path / "y.txt", lambda f: seen.append(os.path.basename(f.name)), per_process=True)
    assert seen == [f".y.txt.{os.getpid()}.tmp"]
