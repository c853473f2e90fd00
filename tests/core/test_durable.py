"""`core.durable`: the one durable write (temporary file, fsync, rename, fsync of the folder)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from core.durable import TMP_PREFIX, write_atomic, write_json_atomic, write_lines_atomic


def test_bytes_replace_the_file_and_leave_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.bin"  # the folder is created
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_a_writer_function_gets_the_open_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, lambda f: f.write(b"abc" * 1000), mode=0o600)
    assert target.read_bytes() == b"abc" * 1000
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_failing_writer_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"old")

    def half_then_fail(f) -> None:
        f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_json_and_json_lines(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "a.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1, 2]}
    rows = [{"epoch": 0, "loss": 1.5}, {"epoch": 1, "loss": 0.5}]
    write_lines_atomic(tmp_path / "m.jsonl", rows)
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows


def test_every_writer_of_the_project_uses_it() -> None:
    """No module writes a file by its own temporary-file-and-rename (the old copies)."""
    repo = Path(__file__).parents[2]
    offenders = []
    for package in ("core", "training", "service", "alexnet"):
        for path in (repo / package).rglob("*.py"):
            text = path.read_text()
            if path.name != "durable.py" and ("mkstemp(" in text or "os.fsync(" in text):
                offenders.append(str(path.relative_to(repo)))
    assert not offenders, offenders
