"""`pip install -e .` (what `make install` runs) builds without setuptools' warning about an
editable install through a meta path finder ("Please be careful with folders in your working
directory..."), and the plain build still holds only the four packages and the page."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).parents[2]
PROJECT = ("pyproject.toml", "README.md", "core", "training", "service", "alexnet")


def build(tmp_path: Path, hook: str) -> tuple[Path, str]:
    """Run the build backend's `hook` (build_editable or build_wheel) on a copy of the project,
    as pip does; returns the wheel and everything the backend printed."""
    src = tmp_path / "src"
    src.mkdir()
    for name in PROJECT:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, src / name)
    out = tmp_path / "out"
    code = f"from setuptools import build_meta; print(build_meta.{hook}({str(out)!r}))"
    proc = subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=src,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / proc.stdout.split()[-1], proc.stdout + proc.stderr


def test_editable_install_warns_of_nothing(tmp_path: Path) -> None:
    wheel, said = build(tmp_path, "build_editable")
    assert "Editable installation" not in said and "meta path finder" not in said, said[-2000:]
    with zipfile.ZipFile(wheel) as z:
        (pth,) = [n for n in z.namelist() if n.endswith(".pth")]
        assert z.read(pth).decode().strip() == str((tmp_path / "src").resolve())


def test_the_wheel_holds_the_packages_and_the_page(tmp_path: Path) -> None:
    wheel, _ = build(tmp_path, "build_wheel")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"core", "training", "service", "alexnet"}
    assert "service/static/index.html" in names and "core/gpu.py" in names
