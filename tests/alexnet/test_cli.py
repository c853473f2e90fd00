"""The `alexnet` command: subcommands and their help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alexnet.main import COMMANDS


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alexnet", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_subcommand() -> None:
    proc = _run("--help")
    assert proc.returncode == 0
    for name in COMMANDS:
        assert name in proc.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_subcommand_has_help_with_defaults(name: str) -> None:
    proc = _run(name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"alexnet {name}" in proc.stdout
    assert "%%" not in proc.stdout  # a description is not %-formatted; only help strings are


def test_train_help_states_the_papers_defaults() -> None:
    out = " ".join(_run("train", "--help").stdout.split())  # argparse wraps lines
    for fragment in (
        "default: 0.01",
        "default: 0.9",
        "default: 0.0005",
        "default: 128",
        "default: 90",
    ):
        assert fragment in out


def test_unknown_subcommand_names_the_choices() -> None:
    proc = _run("fly")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr and "train" in proc.stderr


def test_errors_are_one_clear_line_not_a_traceback(tmp_path) -> None:
    proc = _run(
        "train",
        "--data",
        str(tmp_path / "nope"),
        "--output",
        str(tmp_path / "run"),
        "--device",
        "cpu",
    )
    assert proc.returncode == 1
    assert "is not a folder" in proc.stderr and "Traceback" not in proc.stderr


def test_under_torchrun_only_rank_0_logs_below_warning(monkeypatch) -> None:
    import logging

    from alexnet.main import RankFilter

    def passes(level: int) -> bool:
        return RankFilter().filter(logging.LogRecord("x", level, __file__, 1, "m", None, None))

    monkeypatch.delenv("RANK", raising=False)  # no torchrun: one process, it logs
    assert passes(logging.INFO)
    monkeypatch.setenv("RANK", "0")
    assert passes(logging.INFO)
    monkeypatch.setenv("RANK", "3")
    assert not passes(logging.INFO) and passes(logging.WARNING) and passes(logging.ERROR)
