"""`alexnet gallery copy SRC DST` as a user runs it: a real process, its output, its exit code.

Over the pairs of backends of `tests.galleries.BACKEND_PAIRS` (the PostgreSQL pairs skip until
`service.gallery.pg_gallery` is merged).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.gallery import stored_model
from tests.galleries import (
    BACKEND_PAIRS,
    MODEL_B,
    assert_same_records,
    fill,
    location,
    records,
)

REPO = Path(__file__).resolve().parents[2]


def _copy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alexnet", "gallery", "copy", *args],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip


def _checksums(stdout: str) -> tuple[str, str]:
    """(SRC's, DST's) sha256 as printed."""
    src = re.search(r"^SRC .*sha256 ([0-9a-f]{64})$", stdout, re.M)
    dst = re.search(r"^DST .*sha256.* ([0-9a-f]{64})$", stdout, re.M)
    assert src and dst, stdout
    return src.group(1), dst.group(1)


@pytest.fixture(params=BACKEND_PAIRS)
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    src_kind, dst_kind = request.param
    return (
        location(src_kind, "src", request, tmp_path),
        location(dst_kind, "dst", request, tmp_path),
    )


def test_copy_prints_equal_checksums_and_resumes(pair: tuple[str, str]) -> None:
    src, dst = pair
    fill(src, 20, remove_every=3)  # 13 items
    expected = records(src)

    proc = _copy(src, dst, "--chunk-size", "4", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "copied 13 items" in proc.stdout and "(0 already there)" in proc.stdout
    src_sum, dst_sum = _checksums(proc.stdout)
    assert src_sum == dst_sum
    assert "SRC " in proc.stdout and ": 13 items" in proc.stdout and "verified" in proc.stdout
    assert_same_records(records(dst), expected)

    again = _copy(src, dst, "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "copied 0 items" in again.stdout and "(13 already there)" in again.stdout
    assert _checksums(again.stdout) == (src_sum, src_sum)


def test_extra_items_fail_unless_allowed(pair: tuple[str, str]) -> None:
    src, dst = pair
    fill(src, 6)
    fill(dst, 2, seed=1)

    proc = _copy(src, dst, "--no-progress")
    assert proc.returncode == 1
    assert "2 not in SRC" in proc.stdout
    assert "verification failed" in proc.stderr and "--allow-extra" in proc.stderr
    assert "Traceback" not in proc.stderr

    allowed = _copy(src, dst, "--no-progress", "--allow-extra")
    assert allowed.returncode == 0, allowed.stderr
    assert "verified" in allowed.stdout


def test_destination_of_another_model_is_refused(pair: tuple[str, str]) -> None:
    src, dst = pair
    fill(src, 3)
    fill(dst, 2, model=MODEL_B, seed=1)
    before = records(dst, MODEL_B)

    proc = _copy(src, dst, "--no-progress")
    assert proc.returncode == 1
    assert "synth:2" in proc.stderr and "Traceback" not in proc.stderr
    assert stored_model(dst).model_id == MODEL_B["model_id"]
    assert_same_records(records(dst, MODEL_B), before)


def test_missing_source_is_one_clear_line(tmp_path: Path) -> None:
    proc = _copy(str(tmp_path / "nothing"), str(tmp_path / "dst"), "--no-progress")
    assert proc.returncode == 1
    assert "no gallery at" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "dst").exists()


def test_help_explains_directions_resuming_verification_and_locking() -> None:
    proc = _copy("--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for fragment in (
        "postgresql:// URL",
        "up from one machine to PostgreSQL, and back",
        "resumes where it stopped",
        "never duplicating",
        "checksum",
        "little-endian float32",
        "--allow-extra",
        "locked while a process has it open",
        "may go on being served meanwhile",
        "counts may move",
    ):
        assert fragment in text, fragment
