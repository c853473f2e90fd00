"""`alexnet evaluate`: single-crop and ten-crop figures against an eager torchvision reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from alexnet.main import main as cli
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.data import ImageFolder256
from training.evaluate import ten_crop_probs
from training.presets import normalize_from


def _reference(model, image: torch.Tensor, mean: torch.Tensor, crop: int):
    """Per image, the plain way: five_crop + hflip of each patch, a loop, softmax, average."""
    x = image.float() - mean  # (3, 256, 256), the mean image subtracted
    five = TF.five_crop(x, [crop, crop])
    crops = [*five, *(TF.horizontal_flip(p) for p in five)]
    probs, fc7s = [], []
    for c in crops:
        logits, fc7 = model(c[None], return_fc7=True)
        probs.append(F.softmax(logits, 1)[0])
        fc7s.append(fc7[0])
    return torch.stack(probs).mean(0), torch.stack(fc7s).mean(0)


def test_ten_crop_path_matches_a_torchvision_reference(trained_run: Path, synth_root: Path) -> None:
    ckpt = load_checkpoint(trained_run / "checkpoint.pt")
    model = model_from_checkpoint(ckpt)
    normalize = normalize_from(ckpt["normalization"])
    ds = ImageFolder256(synth_root / "val", classes=ckpt["labels"])
    images = torch.stack([ds[i][0] for i in range(3)])
    with torch.no_grad():
        probs, fc7 = ten_crop_probs(model, images, normalize, ckpt["crop_size"])
        for i in range(3):
            ref_p, ref_f = _reference(
                model, images[i], ckpt["normalization"]["mean"], ckpt["crop_size"]
            )
            torch.testing.assert_close(probs[i], ref_p, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(fc7[i], ref_f, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))


def test_evaluate_command_reports_both_protocols(
    trained_run: Path, synth_root: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "eval.json"
    rc = cli(["evaluate", str(trained_run / "checkpoint.pt"), "--data", str(synth_root),
              "--device", "cpu",
              "--workers", "0", "--no-progress", "--json", str(out)])  # fmt: skip
    assert rc == 0
    results = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert "single_crop" in text and "ten_crop" in text
    # The single-crop pass is the same computation the training run logged for its last epoch.
    last = load_checkpoint(trained_run / "checkpoint.pt")["metrics"][-1]
    assert results["single_crop"]["top1_err"] == pytest.approx(last["val_top1_err"])
    # 4 classes: the five most probable are all of them, so there is no top-5 error to report
    assert results["single_crop"]["top5_err"] is None and last["val_top5_err"] is None
    for r in results.values():
        assert r["images"] == 12 and 0 <= r["top1_err"] <= 1 and r["top5_err"] is None
    assert "top-5 err" not in text.splitlines()[0]
    assert "no top-5 error: with 5 classes or fewer" in text


def test_evaluate_refuses_a_folder_with_other_classes(
    trained_run: Path, tmp_path: Path, synth_root: Path
) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(synth_root / "val", other / "val")
    shutil.move(str(next((other / "val").iterdir())), other / "val" / "zebra")
    rc = cli(["evaluate", str(trained_run / "checkpoint.pt"), "--data", str(other),
              "--device", "cpu",
              "--workers", "0", "--no-progress"])  # fmt: skip
    assert rc == 1


def test_evaluate_reads_a_prepared_set_as_its_folders(
    trained_run: Path, synth_root: Path, prepared_raw: Path
) -> None:
    """Raw shards hold the folders' very pixels: the figures are the same."""
    from training.evaluate import evaluate_checkpoint

    kwargs = dict(workers=0, device="cpu", progress=False)
    folders = evaluate_checkpoint(trained_run / "checkpoint.pt", synth_root, **kwargs)
    prepared = evaluate_checkpoint(trained_run / "checkpoint.pt", prepared_raw, **kwargs)
    for protocol, want in folders.items():
        got = prepared[protocol]
        assert got["images"] == want["images"] == 12
        assert got["top1_err"] == pytest.approx(want["top1_err"])
        assert got["top5_err"] is want["top5_err"] is None  # 4 classes
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    with pytest.raises(ValueError, match="no split 'test'"):
        evaluate_checkpoint(trained_run / "checkpoint.pt", prepared_raw, split="test", **kwargs)


@pytest.mark.parametrize("classes", [3, 5, 6, 8])
def test_top5_error_is_reported_only_above_five_classes(classes: int) -> None:
    """Two images: the first's class is the most probable, the second's the least. With more
    than five classes the second is a top-5 miss; with five or fewer there is no top-5 error
    (every class is in the top five), not a flat 0."""
    from training.evaluate import score

    labels = torch.tensor([0, 1])
    probs = torch.full((2, classes), 0.5 / (classes - 1))
    probs[0, 0] = 0.5
    probs[1, 1] = 0.01
    probs[1, 0] = 0.5
    probs = probs / probs.sum(1, keepdim=True)
    loader = [(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), labels, 0)]
    r = score(lambda _: probs, loader, device=torch.device("cpu"), progress=False)
    assert r["top1_err"] == 0.5 and r["images"] == 2
    assert r["top5_err"] == (0.5 if classes > 5 else None)
