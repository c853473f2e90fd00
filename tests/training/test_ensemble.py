"""Ensembles: several checkpoints exported as one graph and evaluated together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet.main import main as cli
from core import store
from core.model_loader import load_model
from tests.conftest import train_args
from training import export as export_module
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.data import ImageFolder256
from training.ensemble import centre_crop_probs, ten_crop_probs
from training.evaluate import evaluate_checkpoint
from training.export import export_run, reference_ten_crop, verification_inputs
from training.presets import normalize_from


@pytest.fixture(scope="module")
def members(
    trained_run: Path, synth_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """`trained_run` (bn, crop 227, mean image) and a torchvision-variant run (crop 224) whose
    checkpoint is given a per-channel mean / std: another arch, crop and normalization."""
    from training.train import train

    out = tmp_path_factory.mktemp("run-tv")
    train(train_args(synth_root, out, "--arch", "torchvision", "--epochs", "1",
                     "--batch-size", "12", "--seed", "1"))  # fmt: skip
    ckpt = load_checkpoint(out / "checkpoint.pt")
    ckpt["normalization"] = {"mean": [120.0, 115.0, 100.0], "std": [60.0, 58.0, 59.0]}
    second = out / "per-channel.pt"
    torch.save(ckpt, second)
    return [trained_run / "checkpoint.pt", second]


@pytest.fixture(scope="module")
def ensemble_store(
    members: list[Path], synth_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The two members exported as duo:1 with --data figures; the store folder."""
    store_dir = tmp_path_factory.mktemp("ens-store")
    export_run(members, store_dir=store_dir, name="duo", data=synth_root, workers=0,
               progress=False)  # fmt: skip
    return store_dir


def _members_mean(paths: list[Path], images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eager PyTorch, member by member: mean of the ten-crop probs, the first member's fc7."""
    refs = []
    for path in paths:
        ckpt = load_checkpoint(path)
        model, normalize = model_from_checkpoint(ckpt), normalize_from(ckpt["normalization"])
        refs.append([reference_ten_crop(model, im, normalize, ckpt["crop_size"]) for im in images])
    probs = np.mean([[p for p, _ in member] for member in refs], axis=0)
    return probs, np.stack([f for _, f in refs[0]])


def test_exported_probs_are_the_members_mean_and_fc7_the_firsts(
    ensemble_store: Path, members: list[Path], synth_root: Path, exported: Path
) -> None:
    classes = load_checkpoint(members[0])["labels"]
    ds = ImageFolder256(synth_root / "val", classes=classes)
    images = np.stack([ds[i][0].permute(1, 2, 0).numpy() for i in range(0, len(ds), 3)])
    loaded = load_model(ensemble_store, "duo", precision="fp32", device="cpu")
    probs, fc7 = loaded.session.run(None, {"images": images})
    want_probs, want_fc7 = _members_mean(members, images)
    np.testing.assert_allclose(probs, want_probs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        fc7, want_fc7, atol=export_module.FC7_ATOL, rtol=export_module.FC7_RTOL
    )
    # the first member exported alone (conftest's tiny:1) gives the same fc7
    alone = load_model(exported.parent.parent, "tiny", precision="fp32", device="cpu")
    _, fc7_alone = alone.session.run(None, {"images": images})
    np.testing.assert_allclose(
        fc7, fc7_alone, atol=export_module.FC7_ATOL, rtol=export_module.FC7_RTOL
    )


def test_the_service_loader_serves_the_ensemble(ensemble_store: Path, members: list[Path]) -> None:
    loaded = load_model(ensemble_store, "duo", precision="auto", device="cpu")  # contract checked
    assert loaded.precision == "fp32" and loaded.manifest.num_classes == 4
    images = verification_inputs(3, seed=5)
    probs, fc7 = loaded.session.run(None, {"images": images})
    assert probs.shape == (3, 4) and fc7.shape == (3, 4096)
    np.testing.assert_allclose(probs, _members_mean(members, images)[0], atol=1e-5, rtol=0)


def test_manifest_lists_the_members(ensemble_store: Path, members: list[Path]) -> None:
    m = store.read_manifest(ensemble_store / "duo" / "1")
    assert m.arch == "bn+torchvision" and m.crop_size == 227  # the first member's crop
    assert [e["checkpoint"] for e in m.members] == [str(p.resolve()) for p in members]
    assert [e["sha256"] for e in m.members] == [store.sha256_file(p) for p in members]
    assert [(e["arch"], e["crop_size"]) for e in m.members] == [("bn", 227), ("torchvision", 224)]
    assert [e["epoch"] for e in m.members] == [load_checkpoint(p)["epoch"] for p in members]
    assert m.source == {"ensemble": 2, "checkpoints": [e["checkpoint"] for e in m.members]}
    assert m.verification["max_abs_diff"]["probs"] <= export_module.PROBS_ATOL
    assert m.metrics["ten_crop"]["images"] == 12


def _expected_errors(paths: list[Path], synth_root: Path) -> dict[str, tuple[float, float]]:
    """Top-1 / top-5 error of the members' averaged softmax, computed image by image."""
    ckpts = [load_checkpoint(p) for p in paths]
    ds = ImageFolder256(synth_root / "val", classes=ckpts[0]["labels"])
    wrong = {"single_crop": [0, 0], "ten_crop": [0, 0]}
    with torch.no_grad():
        for image, label in (ds[i][:2] for i in range(len(ds))):
            probs = {"single_crop": 0.0, "ten_crop": 0.0}
            for ckpt in ckpts:
                model, norm = model_from_checkpoint(ckpt), normalize_from(ckpt["normalization"])
                crop = ckpt["crop_size"]
                probs["single_crop"] += centre_crop_probs(model, image[None], norm, crop)[0]
                probs["ten_crop"] += ten_crop_probs(model, image[None], norm, crop)[0][0]
            for name, p in probs.items():
                top5 = (p / len(ckpts)).topk(min(5, len(p))).indices.tolist()
                wrong[name][0] += top5[0] != label
                wrong[name][1] += label not in top5
    # with 5 classes or fewer every class is in the top five: no top-5 error is reported
    has_top5 = len(ckpts[0]["labels"]) > 5
    return {name: (w1 / len(ds), w5 / len(ds) if has_top5 else None)
            for name, (w1, w5) in wrong.items()}  # fmt: skip


def test_evaluate_command_reports_the_ensembles_figures(
    members: list[Path], synth_root: Path, ensemble_store: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "eval.json"
    rc = cli(["evaluate", *map(str, members), "--data", str(synth_root), "--device", "cpu",
              "--workers", "0", "--no-progress", "--json", str(out)])  # fmt: skip
    assert rc == 0
    assert "single_crop" in capsys.readouterr().out
    results = json.loads(out.read_text())
    expected = _expected_errors(members, synth_root)
    for name, (top1, top5) in expected.items():
        assert results[name]["images"] == 12
        assert results[name]["top1_err"] == pytest.approx(top1)
        assert results[name]["top5_err"] == (None if top5 is None else pytest.approx(top5))
    # export --data recorded the same figures
    manifest = store.read_manifest(ensemble_store / "duo" / "1")
    for name in expected:
        assert manifest.metrics[name]["top1_err"] == pytest.approx(results[name]["top1_err"])


def test_members_with_other_labels_are_refused(
    members: list[Path], synth_root: Path, tmp_path: Path
) -> None:
    ckpt = load_checkpoint(members[1])
    swapped = tmp_path / "swapped.pt"
    torch.save({**ckpt, "labels": [*ckpt["labels"][1::-1], *ckpt["labels"][2:]]}, swapped)
    fewer = tmp_path / "fewer.pt"
    torch.save({**ckpt, "labels": ckpt["labels"][:3]}, fewer)
    store_dir = tmp_path / "store"
    with pytest.raises(ValueError, match=r"swapped\.pt .*class 0 .*another order"):
        export_run([members[0], members[1], swapped], store_dir=store_dir, name="bad")
    with pytest.raises(ValueError, match=r"fewer\.pt .*3 classes instead of 4"):
        evaluate_checkpoint([members[0], fewer], synth_root, device="cpu", workers=0)
    rc = cli(["export", str(members[0]), str(swapped), "--name", "bad", "--store", str(store_dir)])
    assert rc == 1
    assert not store_dir.exists() or not list(store_dir.rglob("*"))  # nothing written


def test_int8_keeps_every_members_fc8_in_float(ensemble_store: Path, members: list[Path]) -> None:
    import onnx
    from onnx import numpy_helper

    from training.quantize import classifier_gemms

    folder = store.resolve(ensemble_store, "duo")
    model = onnx.load(str(folder / "model.onnx"))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    kept = classifier_gemms(model)
    assert len(kept) == len(members)
    classes = store.read_manifest(folder).num_classes
    for name in kept:  # each an fc8: 4096 inputs -> the classes (Gemm's weight is (K, 4096))
        shape = weights[nodes[name].input[1]].shape
        assert sorted(shape) == sorted((classes, 4096)), shape
