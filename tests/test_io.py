"""The atomic writers of semassoc.io: whole or nothing, no temporary left behind, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from semassoc.io import (
    WriteFailed,
    atomic_output,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    recover_directory,
    replace_directory,
)


def test_writers_replace_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2, "é": "ü"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"x": 2, "é": "ü"}
    atomic_write_text(tmp_path / "t.txt", "hello\n")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "t.txt").read_text() == "hello\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "b.bin", "sub", "t.txt"]


def test_failure_inside_the_block_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_unwritable_target_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WriteFailed, match=r"cannot write") as info:
        atomic_write_text(blocker / "inside.txt", "x")  # the parent is a file
    assert "\n" not in str(info.value)
    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(WriteFailed, match="Permission denied"):
                atomic_write_text(locked / "a.txt", "x")
        finally:
            locked.chmod(0o700)


def test_replace_directory_interrupted_between_renames_is_recovered(tmp_path: Path) -> None:
    directory = tmp_path / "stats"
    replace_directory(directory, lambda tmp: (tmp / "a").write_text("1"))
    # What a kill between `rename(NAME, .NAME.old-*)` and `rename(tmp, NAME)` leaves behind:
    os.replace(directory, tmp_path / ".stats.old-deadbeef")
    (tmp_path / ".stats.tmp-123").mkdir()
    recover_directory(directory)
    assert (directory / "a").read_text() == "1"
    replace_directory(directory, lambda tmp: (tmp / "a").write_text("2"))
    assert (directory / "a").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats"]
