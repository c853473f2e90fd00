"""Store layout helpers: names, versions, atomic publication."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import store


def _fill(folder: Path, version: int) -> store.Manifest:
    (folder / "model.onnx").write_bytes(b"x")
    inputs, outputs = store.contract_io(2)
    return store.Manifest(
        name="m", version=version, arch="bn", num_classes=2, labels=["a", "b"], crop_size=227,
        inputs=inputs, outputs=outputs, sha256="0", files={}, source={}, created_at=store.now_iso(),
    )  # fmt: skip


def test_publish_counts_versions_up(tmp_path: Path) -> None:
    assert store.publish_version(tmp_path, "m", None, _fill).name == "1"
    assert store.publish_version(tmp_path, "m", None, _fill).name == "2"
    assert store.publish_version(tmp_path, "m", 10, _fill).name == "10"
    assert store.versions(tmp_path, "m") == [1, 2, 10]
    assert store.resolve(tmp_path, "m") == tmp_path / "m" / "10"
    assert store.resolve(tmp_path, "m:2") == tmp_path / "m" / "2"
    assert [m.id for m in store.list_models(tmp_path)] == ["m:1", "m:2", "m:10"]


def test_failed_fill_leaves_nothing(tmp_path: Path) -> None:
    def fail(folder: Path, version: int) -> store.Manifest:
        (folder / "model.onnx").write_bytes(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.publish_version(tmp_path, "m", None, fail)
    assert list((tmp_path / "m").iterdir()) == []


@pytest.mark.parametrize("spec", ["../x", "a/b", "", ".hidden", "m:v1", "m:-1"])
def test_bad_specs_are_refused(tmp_path: Path, spec: str) -> None:
    with pytest.raises(ValueError):
        store.resolve(tmp_path, spec)
