"""`alexnet quantize`: int8 and fp16 files, their agreement with fp32, refusal below the bar."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from alexnet.main import main as cli
from core import store
from core.durable import write_json_atomic
from core.model_loader import ModelLoadError, load_model
from tests.conftest import optimized_ops
from training.quantize import (
    AgreementTooLowError,
    agreement,
    check_agreement,
    quantize,
    wilson_lower_bound,
)


@pytest.fixture(scope="module")
def quantized(exported: Path, synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store_dir = tmp_path_factory.mktemp("qstore")
    shutil.copytree(exported.parent.parent, store_dir, dirs_exist_ok=True)
    rc = cli(["quantize", "tiny:1", "--store", str(store_dir), "--calibration", str(synth_root),
              "--min-agreement", "0"])  # fmt: skip
    assert rc == 0
    return store_dir


def test_int8_and_fp16_are_listed_with_their_checksums_and_agreement(quantized: Path) -> None:
    folder = quantized / "tiny" / "1"
    m = store.read_manifest(folder)
    assert set(m.files) == {"fp32", "int8", "fp16"}
    for entry in m.files.values():
        assert store.sha256_file(folder / entry.file) == entry.sha256
    assert m.files["int8"].file == "model.int8.onnx" and m.files["fp16"].file == "model.fp16.onnx"
    int8 = m.files["int8"].details
    assert int8["held_out_images"] == 24 and int8["calibration_images"] == 24
    assert 0 <= int8["top1_agreement"] <= 1
    assert m.files["int8"].bytes < m.files["fp32"].bytes / 3  # int8 weights
    assert m.files["fp16"].bytes < m.files["fp32"].bytes * 0.6
    # which provider measured each agreement: fp16 asks for CUDA, and this machine has no GPU
    assert {m.files[p].details["measured_on"] for p in ("int8", "fp16")} == {"CPUExecutionProvider"}


def test_int8_folds_each_relu_into_the_layer_before_it(quantized: Path, tmp_path: Path) -> None:
    """The quantizer quantizes the ReLUs' outputs, not the layers' (QUANTIZED_OPS), so
    onnxruntime runs conv + ReLU as one QLinearConv and fc6/fc7 + ReLU as one QGemm, with no
    float ReLU between them (fc8 stays float)."""
    folder = quantized / "tiny" / "1"
    assert "Relu" in {n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node}
    ops = optimized_ops(folder / "model.int8.onnx", tmp_path)
    assert "Relu" not in ops
    assert ops.count("QLinearConv") == 5 and ops.count("QGemm") == 2


def test_other_precisions_keep_the_contracts_io_and_follow_fp32(
    quantized: Path, synth_root: Path
) -> None:
    from training.quantize import collect_images

    images = collect_images(synth_root / "val", 8)
    fp32 = load_model(quantized, "tiny:1", precision="fp32", device="cpu")
    ref_probs, ref_fc7 = fp32.session.run(None, {"images": images})
    for precision in ("fp16", "int8"):
        loaded = load_model(quantized, "tiny:1", precision=precision, device="cpu")
        probs, fc7 = loaded.session.run(None, {"images": images})
        assert (
            probs.dtype == np.float32 and probs.shape == ref_probs.shape and fc7.shape == (8, 4096)
        )
        tol = 1e-2 if precision == "fp16" else 0.25
        assert np.abs(probs - ref_probs).max() < tol, precision
        rel = np.linalg.norm(fc7 - ref_fc7) / np.linalg.norm(ref_fc7)
        assert rel < (0.01 if precision == "fp16" else 0.2), (precision, rel)


def test_below_the_agreement_bar_the_int8_model_is_refused(
    quantized: Path, synth_root: Path, tmp_path: Path
) -> None:
    details = store.read_manifest(quantized / "tiny" / "1").files["int8"].details
    bound = details["top1_agreement_lower_bound"]
    assert 0 <= bound <= details["top1_agreement"]
    fresh = tmp_path / "store"
    shutil.copytree(quantized, fresh)
    folder = fresh / "tiny" / "1"
    (folder / "model.int8.onnx").unlink()
    m = store.read_manifest(folder)
    del m.files["int8"]
    write_json_atomic(folder / "manifest.json", m.model_dump())
    rc = cli(["quantize", "tiny:1", "--store", str(fresh), "--calibration", str(synth_root),
              "--precisions", "int8", "--min-agreement", str(bound + 1e-6)])  # fmt: skip
    assert rc == 1
    assert "int8" not in store.read_manifest(folder).files
    assert not (folder / "model.int8.onnx").exists()


def test_agreement_measures_top1_and_top5() -> None:
    ref = np.array([[0.5, 0.2, 0.1, 0.1, 0.05, 0.05], [0.1, 0.6, 0.1, 0.1, 0.05, 0.05]])
    same = agreement(ref, ref)
    assert same["top1_agreement"] == 1 and same["top5_overlap"] == 1
    swapped = agreement(ref, ref[:, ::-1].copy())
    assert swapped["top1_agreement"] == 0 and swapped["top5_overlap"] == pytest.approx(4 / 5)


def test_fp16_range_warnings_become_one_log_line(exported: Path, tmp_path: Path, caplog) -> None:
    """A trained model has weights below float16's smallest normal value: onnxconverter-common
    warns once per tensor; the conversion says it once, in the log."""
    import logging
    import warnings

    from training.quantize import convert_fp16

    out = tmp_path / "model.fp16.onnx"
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        convert_fp16(exported / "model.onnx", out)
    assert [str(w.message) for w in caught if "float32 number" in str(w.message)] == []
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fp16:")]
    assert len(lines) == 1 and "rounded" in lines[0], lines
    assert out.stat().st_size > 0


def test_the_bound_is_the_wilson_score_interval_of_scipy() -> None:
    """The one-sided 95% bound is the lower end of the two-sided 90% Wilson interval."""
    stats = pytest.importorskip("scipy.stats")
    for agree, n in [(80, 80), (79, 80), (200, 200), (196, 200), (195, 200), (7, 10), (0, 5)]:
        ci = stats.binomtest(agree, n).proportion_ci(confidence_level=0.90, method="wilson")
        assert wilson_lower_bound(agree, n, 0.95) == pytest.approx(ci.low, abs=1e-12)


def _details(agree: int, n: int) -> dict:
    return {"held_out_images": n, "top1_agreement": agree / n,
            "top1_agreement_lower_bound": wilson_lower_bound(agree, n, 0.95)}  # fmt: skip


def test_one_disagreement_is_no_reason_to_refuse_but_many_are() -> None:
    # the old rule (raw agreement >= 99% on 80 images) refused 79 of 80
    check_agreement(_details(79, 80), min_agreement=0.9, confidence=0.95)
    check_agreement(_details(196, 200), min_agreement=0.95, confidence=0.95)  # 98%
    with pytest.raises(AgreementTooLowError, match="more or more representative"):
        check_agreement(_details(186, 200), min_agreement=0.95, confidence=0.95)  # 93%
    # perfect agreement on too few images proves nothing: the message says to read more
    with pytest.raises(AgreementTooLowError, match="give more --images"):
        check_agreement(_details(24, 24), min_agreement=0.95, confidence=0.95)


def test_a_listed_file_is_checked_and_skipped_before_any_image_is_read(
    quantized: Path, tmp_path: Path
) -> None:
    fresh = tmp_path / "store"
    shutil.copytree(quantized, fresh)
    before = store.read_manifest(fresh / "tiny" / "1")
    # no calibration folder at all: reading one would fail
    after = quantize(fresh, "tiny:1", tmp_path / "absent", precisions=("int8", "fp16"))
    assert after.files == before.files
    with open(fresh / "tiny" / "1" / "model.int8.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"changed")
    with pytest.raises(ModelLoadError, match="corrupt or was changed"):
        quantize(fresh, "tiny:1", tmp_path / "absent", precisions=("int8",))


def test_a_file_that_gives_nan_is_not_added(overflowing_store: Path, tmp_path: Path) -> None:
    """Whatever the agreement bar: tiny:2 gives NaN for bright images, so its fp16 copy
    does (on any provider) and is refused, and the version stays as it was."""
    from PIL import Image

    bright = tmp_path / "bright"
    bright.mkdir()
    for i in range(8):
        Image.new("RGB", (64, 48), (200 + i, 200, 210)).save(bright / f"{i}.jpg")
    store_dir = tmp_path / "store"
    shutil.copytree(overflowing_store, store_dir)
    folder = store_dir / "tiny" / "2"
    with pytest.raises(AgreementTooLowError, match="fp16 gives NaN or infinite probabilities "
                       "for 4 of 4 held-out images on CPUExecutionProvider"):  # fmt: skip
        quantize(store_dir, "tiny:2", bright, images=8, min_agreement=0, precisions=("fp16",))
    assert set(store.read_manifest(folder).files) == {"fp32"}
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".onnx") == ["model.onnx"]
