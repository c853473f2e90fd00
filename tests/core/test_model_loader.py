"""The loader the service uses: checksums, the contract's input/outputs, precision choice."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from core import store
from core.durable import write_json_atomic
from core.model_loader import ModelLoadError, load_model


@pytest.fixture
def store_copy(exported: Path, tmp_path: Path) -> Path:
    """A private copy of the exported store (hard links: the tests replace, never edit, files)."""
    dst = tmp_path / "store"
    shutil.copytree(exported.parent.parent, dst, copy_function=shutil.copy2)
    return dst


def test_loads_fp32_on_cpu_and_reports_the_real_provider(exported: Path) -> None:
    loaded = load_model(exported.parent.parent, "tiny", device="cpu")
    assert loaded.id == "tiny:1" and loaded.precision == "fp32"
    assert loaded.provider == "CPUExecutionProvider"
    probs, fc7 = loaded.session.run(None, {"images": np.zeros((3, 256, 256, 3), np.uint8)})
    assert probs.shape == (3, 4) and fc7.shape == (3, 4096)


def test_auto_precision_without_a_gpu_is_fp32_or_int8(exported: Path) -> None:
    loaded = load_model(exported.parent.parent, "tiny:1")  # device auto: no GPU here
    assert loaded.provider == "CPUExecutionProvider" and loaded.precision == "fp32"


def test_auto_precision_picks_int8_on_cpu_when_present(store_copy: Path) -> None:
    folder = store_copy / "tiny" / "1"
    shutil.copy(
        folder / "model.onnx", folder / "int8-stand-in.onnx"
    )  # a valid model under another name
    store.add_file(folder, "int8", folder / "int8-stand-in.onnx")
    loaded = load_model(store_copy, "tiny", device="cpu")
    assert loaded.precision == "int8" and loaded.provider == "CPUExecutionProvider"
    assert load_model(store_copy, "tiny", precision="fp32", device="cpu").precision == "fp32"


def test_a_corrupt_file_is_refused(store_copy: Path) -> None:
    path = store_copy / "tiny" / "1" / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.unlink()
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="corrupt or was changed"):
        load_model(store_copy, "tiny", device="cpu")


def test_a_manifest_that_does_not_match_the_graph_is_refused(store_copy: Path) -> None:
    folder = store_copy / "tiny" / "1"
    m = store.read_manifest(folder)
    inputs, outputs = store.contract_io(5)  # the graph has 4 classes
    m = m.model_copy(update={"num_classes": 5, "labels": [*m.labels, "extra"], "outputs": outputs})
    write_json_atomic(folder / "manifest.json", m.model_dump())
    with pytest.raises(ModelLoadError, match="does not follow the contract.*probs"):
        load_model(store_copy, "tiny", device="cpu")


def test_broken_manifest_missing_versions_and_precisions(store_copy: Path) -> None:
    with pytest.raises(FileNotFoundError, match="models there: tiny"):
        load_model(store_copy, "other", device="cpu")
    with pytest.raises(FileNotFoundError, match="no version 7"):
        load_model(store_copy, "tiny:7", device="cpu")
    with pytest.raises(ModelLoadError, match="has no fp16 model"):
        load_model(store_copy, "tiny", precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="auto, fp32, fp16, int8"):
        load_model(store_copy, "tiny", precision="fp8", device="cpu")
    (store_copy / "tiny" / "1" / "manifest.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a valid manifest"):
        load_model(store_copy, "tiny", device="cpu")


def test_cuda_asked_for_without_a_gpu_runs_on_cpu_and_says_why(exported: Path, caplog) -> None:
    import logging

    from core.gpu import cuda_gpus

    gpus, why = cuda_gpus()
    if gpus:
        pytest.skip("this machine has a CUDA GPU")
    assert why  # the driver's answer, in words
    with caplog.at_level(logging.INFO, logger="core.model_loader"):
        loaded = load_model(exported.parent.parent, "tiny:1", device="cuda")
    assert loaded.provider == "CPUExecutionProvider"
    said = [r for r in caplog.records if r.name == "core.model_loader"]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert f"runs on the CPU (no CUDA GPU: {why})" in said[0].getMessage()
