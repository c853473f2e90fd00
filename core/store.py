"""The model store: `model_store/<name>/<version>/` folders with a manifest (no torch here).

    model_store/
      imagenet/
        1/
          model.onnx          uint8 images [N, 256, 256, 3] -> probs [N, K], fc7 [N, 4096]
          model.int8.onnx     (optional) static QDQ quantization, for CPU
          model.fp16.onnx     (optional) for CUDA
          filters.png         (optional) the conv1 kernels as an image grid
          curves.png          (optional) the training run's loss / error / lr curves
          manifest.json       what the folder holds, with the sha256 of every file

A version is written once, into a hidden temporary folder renamed into place, and never
overwritten; adding a precision later rewrites only the manifest, atomically.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from core.constants import FC7_DIM, IMAGE_SIZE, INPUT_NAME, MODEL_FILES, OUTPUT_NAMES
from core.constants import MANIFEST_FILE as MANIFEST
from core.durable import fsync_path, write_json_atomic

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class TensorSpec(BaseModel):
    name: str
    dtype: str
    shape: list[int | str]


class ModelFile(BaseModel):
    file: str
    sha256: str
    bytes: int
    details: dict = Field(default_factory=dict)  # e.g. int8 agreement with fp32


class Manifest(BaseModel):
    """`manifest.json` (see docs/contract.md, "Exported model")."""

    format: int = 1
    name: str
    version: int
    arch: str
    num_classes: int
    labels: list[str]
    crop_size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    sha256: str  # of model.onnx
    files: dict[str, ModelFile]  # precision -> file
    source: dict  # checkpoint path, sha256, epoch; an ensemble: {"ensemble": n, "checkpoints"}
    created_at: str
    metrics: dict = Field(default_factory=dict)  # single_crop / ten_crop top-1 / top-5 error
    normalization: dict = Field(default_factory=dict)
    verification: dict = Field(default_factory=dict)
    # pictures of the model for people: "filters" (conv1 kernels), "curves" (training run)
    pictures: dict[str, ModelFile] = Field(default_factory=dict)
    # an ensemble's checkpoints, in order: checkpoint, sha256, epoch, arch, crop_size (its
    # probs average theirs; fc7, crop_size and normalization are the first's); [] for one
    members: list[dict] = Field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"


def contract_io(num_classes: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The input and outputs every exported model has."""
    inputs = [TensorSpec(name=INPUT_NAME, dtype="uint8", shape=["N", IMAGE_SIZE, IMAGE_SIZE, 3])]
    probs, fc7 = OUTPUT_NAMES
    outputs = [
        TensorSpec(name=probs, dtype="float32", shape=["N", num_classes]),
        TensorSpec(name=fc7, dtype="float32", shape=["N", FC7_DIM]),
    ]
    return inputs, outputs


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def versions(store: str | Path, name: str) -> list[int]:
    """The versions of `name` in the store, ascending."""
    folder = Path(store) / name
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / MANIFEST).exists()
    )


def next_version(store: str | Path, name: str) -> int:
    folder = Path(store) / name
    taken = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(taken, default=0) + 1


def parse_spec(spec: str) -> tuple[str, int | None]:
    """'name' or 'name:version' -> (name, version or None)."""
    name, _, version = spec.partition(":")
    if version and not version.isdigit():
        raise ValueError(f"invalid model version in {spec!r}: expected NAME or NAME:INTEGER")
    return check_name(name), int(version) if version else None


def resolve(store: str | Path, spec: str) -> Path:
    """The folder of 'name[:version]' (the latest version when none is given)."""
    name, version = parse_spec(spec)
    available = versions(store, name)
    if not available:
        known = list_names(store)
        raise FileNotFoundError(
            f"no model {name!r} in {store} (models there: {', '.join(known) or 'none'})"
        )
    if version is None:
        version = available[-1]
    if version not in available:
        raise FileNotFoundError(f"{name} has no version {version} (versions: {available})")
    return Path(store) / name / str(version)


def list_names(store: str | Path) -> list[str]:
    store = Path(store)
    if not store.is_dir():
        return []
    return sorted(p.name for p in store.iterdir() if p.is_dir() and versions(store, p.name))


def read_manifest(folder: str | Path) -> Manifest:
    path = Path(folder) / MANIFEST
    try:
        return Manifest.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder} has no {MANIFEST}") from None
    except ValueError as e:
        raise ValueError(f"{path} is not a valid manifest: {e}") from None


def list_models(store: str | Path) -> list[Manifest]:
    """Every version of every model in the store, by name then version."""
    return [
        read_manifest(Path(store) / n / str(v))
        for n in list_names(store)
        for v in versions(store, n)
    ]


def publish_version(
    store: str | Path,
    name: str,
    version: int | None,
    fill: Callable[[Path, int], Manifest],
) -> Path:
    """Create `store/name/version/` atomically.

    `fill(folder, version)` writes the model files into a hidden temporary folder and
    returns the manifest; the folder is renamed into place only if it returns. An existing
    version is never overwritten.

    Returns:
        the new version's folder.
    """
    check_name(name)
    parent = Path(store) / name
    parent.mkdir(parents=True, exist_ok=True)
    version = next_version(store, name) if version is None else version
    final = parent / str(version)
    if final.exists():
        raise FileExistsError(f"{final} exists: versions are never overwritten; omit --version "
                              f"to get the next one ({next_version(store, name)})")  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=parent))
    tmp.chmod(0o755)  # readable by a service running as another user
    try:
        manifest = fill(tmp, version)
        for path in tmp.iterdir():  # the model files, durable before they are published
            fsync_path(path)
        write_json_atomic(tmp / MANIFEST, manifest.model_dump())
        os.rename(tmp, final)  # atomic; fails if `final` appeared meanwhile and is not empty
        fsync_path(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def add_file(folder: Path, precision: str, source: Path, details: dict | None = None) -> Manifest:
    """Move `source` into a version folder as `precision` and list it in the manifest."""
    manifest = read_manifest(folder)
    if precision in manifest.files:
        raise FileExistsError(
            f"{manifest.id} already has a {precision} model; files are never overwritten"
        )
    target = folder / MODEL_FILES[precision]
    fsync_path(source)
    os.replace(source, target)
    manifest.files[precision] = ModelFile(
        file=target.name,
        sha256=sha256_file(target),
        bytes=target.stat().st_size,
        details=details or {},
    )
    write_json_atomic(folder / MANIFEST, manifest.model_dump())
    return manifest
