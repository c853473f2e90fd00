"""`alexnet export`: the graph, its verification, the manifest and versioning."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from alexnet.main import main as cli
from core import store
from training import export as export_module
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.data import ImageFolder256
from training.export import ExportMismatchError, export_checkpoint, reference_ten_crop
from training.presets import normalize_from


def test_graph_has_the_contracts_input_and_outputs(exported: Path) -> None:
    model = onnx.load(str(exported / "model.onnx"), load_external_data=False)
    onnx.checker.check_model(model)
    (inp,) = model.graph.input
    assert inp.name == "images"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [256, 256, 3]
    outs = {o.name: o for o in model.graph.output}
    assert list(outs) == ["probs", "fc7"]
    for o in outs.values():
        assert o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert outs["probs"].type.tensor_type.shape.dim[1].dim_value == 4
    assert outs["fc7"].type.tensor_type.shape.dim[1].dim_value == 4096


def test_onnx_matches_eager_pytorch_on_real_images(
    exported: Path, trained_run: Path, synth_root: Path
) -> None:
    ckpt = load_checkpoint(trained_run / "checkpoint.pt")
    model, normalize = model_from_checkpoint(ckpt), normalize_from(ckpt["normalization"])
    ds = ImageFolder256(synth_root / "val", classes=ckpt["labels"])
    images = np.stack(
        [ds[i][0].permute(1, 2, 0).numpy() for i in range(0, len(ds), 2)]
    )  # (6, 256, 256, 3)
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    probs, fc7 = session.run(None, {"images": images})
    assert probs.shape == (len(images), 4) and fc7.shape == (len(images), 4096)
    for i, image in enumerate(images):
        ref_probs, ref_fc7 = reference_ten_crop(model, image, normalize, ckpt["crop_size"])
        np.testing.assert_allclose(probs[i], ref_probs, atol=export_module.PROBS_ATOL, rtol=0)
        np.testing.assert_allclose(
            fc7[i], ref_fc7, atol=export_module.FC7_ATOL, rtol=export_module.FC7_RTOL
        )
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)


def test_manifest_describes_the_version(exported: Path) -> None:
    m = store.read_manifest(exported)
    assert (m.name, m.version, m.arch, m.crop_size, m.num_classes) == ("tiny", 1, "bn", 227, 4)
    assert len(m.labels) == 4
    assert m.sha256 == store.sha256_file(exported / "model.onnx") == m.files["fp32"].sha256
    assert [t.name for t in m.inputs] == ["images"] and [t.name for t in m.outputs] == [
        "probs",
        "fc7",
    ]
    assert m.verification["images"] >= 4
    assert m.verification["max_abs_diff"]["probs"] <= export_module.PROBS_ATOL
    assert m.created_at and m.source == {"checkpoint": "test"}
    assert sorted(p.name for p in exported.iterdir()) == [
        "filters.png",
        "manifest.json",
        "model.onnx",
    ]


def test_versions_count_up_and_are_never_overwritten(
    exported: Path, trained_run: Path, tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    shutil.copytree(exported.parent.parent, store_dir)
    ckpt = load_checkpoint(trained_run / "checkpoint.pt")
    v2 = export_checkpoint(ckpt, store_dir=store_dir, name="tiny")
    assert v2 == store_dir / "tiny" / "2"
    before = (store_dir / "tiny" / "1" / "manifest.json").read_bytes()
    with pytest.raises(FileExistsError, match="never overwritten"):
        export_checkpoint(ckpt, store_dir=store_dir, name="tiny", version=1)
    assert (store_dir / "tiny" / "1" / "manifest.json").read_bytes() == before
    assert store.versions(store_dir, "tiny") == [1, 2]
    assert [p.name for p in (store_dir / "tiny").iterdir() if p.name.startswith(".")] == []


def test_a_model_that_disagrees_is_not_written(
    trained_run: Path, tmp_path: Path, monkeypatch
) -> None:
    """An exporter bug (here: the graph of a differently initialised network) must not land."""
    ckpt = load_checkpoint(trained_run / "checkpoint.pt")
    real_to_onnx = export_module.to_onnx

    def buggy_to_onnx(graph, path):
        torch.manual_seed(123)
        wrong = export_module.TenCropGraph(model_from_checkpoint({**ckpt, "model": _reinit(ckpt)}),
                                           graph.normalize, graph.crop_size)  # fmt: skip
        real_to_onnx(wrong, path)

    monkeypatch.setattr(export_module, "to_onnx", buggy_to_onnx)
    with pytest.raises(ExportMismatchError, match="differs from PyTorch"):
        export_checkpoint(ckpt, store_dir=tmp_path, name="tiny")
    assert list((tmp_path / "tiny").iterdir()) == []  # no version, no temporary folder


def _reinit(ckpt: dict) -> dict:
    from training.model import build_model

    return build_model(ckpt["arch"], ckpt["num_classes"]).state_dict()


def test_a_crash_while_writing_leaves_no_version(
    trained_run: Path, tmp_path: Path, monkeypatch
) -> None:
    def crash(graph, path):
        Path(path).write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "to_onnx", crash)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(
            load_checkpoint(trained_run / "checkpoint.pt"), store_dir=tmp_path, name="tiny"
        )
    assert list((tmp_path / "tiny").iterdir()) == []
    assert store.versions(tmp_path, "tiny") == []


def test_export_and_models_commands(
    trained_run: Path, synth_root: Path, tmp_path: Path, capsys
) -> None:
    rc = cli(["export", str(trained_run / "best.pt"), "--name", "cli-model",
              "--store", str(tmp_path),
              "--data", str(synth_root), "--workers", "0"])  # fmt: skip
    assert rc == 0
    m = store.read_manifest(tmp_path / "cli-model" / "1")
    assert {"single_crop", "ten_crop"} <= m.metrics.keys()
    assert m.metrics["ten_crop"]["images"] == 12
    assert m.source["sha256"] == store.sha256_file(trained_run / "best.pt")
    capsys.readouterr()
    assert cli(["models", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "cli-model:1" in out and "bn" in out and "fp32" in out
    ten_crop_top1 = f"{m.metrics['ten_crop']['top1_err']:.1%}"
    assert ten_crop_top1 in out


def test_invalid_names_are_refused(trained_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid model name"):
        export_checkpoint(
            load_checkpoint(trained_run / "checkpoint.pt"), store_dir=tmp_path, name="../evil"
        )
