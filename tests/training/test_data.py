"""Class-per-folder loading, skipping unreadable files, and the training-set statistics."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core.imaging import load_256
from training.data import ImageFolder256, collate_skipping, make_loader, pixel_statistics


def test_items_are_uint8_256_images_with_folder_labels(synth_root: Path) -> None:
    ds = ImageFolder256(synth_root / "train")
    assert ds.classes == sorted(p.name for p in (synth_root / "train").iterdir())
    assert len(ds) == 4 * 9
    image, label = ds[len(ds) - 1]
    assert image.shape == (3, 256, 256) and image.dtype == torch.uint8
    assert label == 3
    path = ds.folder.samples[len(ds) - 1][0]
    assert torch.equal(image, torch.from_numpy(load_256(path)).permute(2, 0, 1))


@pytest.fixture
def damaged_root(synth_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "damaged"
    shutil.copytree(synth_root, root)
    cls = sorted((root / "train").iterdir())[0]
    (cls / "garbage.jpg").write_bytes(b"definitely not a jpeg")
    good = next(p for p in sorted(cls.iterdir()) if p.suffix == ".png")
    (cls / "truncated.png").write_bytes(good.read_bytes()[:300])
    (cls / "empty.png").write_bytes(b"")
    return root


def test_unreadable_files_are_skipped_and_counted(damaged_root: Path, caplog) -> None:
    ds = ImageFolder256(damaged_root / "train")
    assert len(ds) == 4 * 9 + 3
    loader = make_loader(ds, batch_size=8, workers=0, shuffle=False)
    seen, skipped = 0, 0
    for images, labels, n_skipped in loader:
        assert images.shape[0] == labels.shape[0]
        seen += len(labels)
        skipped += n_skipped
    assert (seen, skipped) == (4 * 9, 3)
    assert sum("skipping unreadable image" in r.message for r in caplog.records) == 3
    assert any("garbage.jpg" in r.message for r in caplog.records)


def test_a_batch_of_only_unreadable_files_is_empty_not_an_error() -> None:
    images, labels, skipped = collate_skipping([(None, 0), (None, 1)])
    assert images.shape == (0, 3, 256, 256) and labels.shape == (0,) and skipped == 2


def test_bad_folders_fail_before_training(tmp_path: Path, synth_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        ImageFolder256(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a class-per-folder image set"):
        ImageFolder256(tmp_path / "empty")
    (tmp_path / "flat").mkdir()
    shutil.copy(next((synth_root / "train").rglob("*.png")), tmp_path / "flat" / "a.png")
    with pytest.raises(ValueError, match="not a class-per-folder image set"):
        ImageFolder256(tmp_path / "flat")  # images but no class folders
    one = tmp_path / "one" / "cats"
    one.mkdir(parents=True)
    shutil.copy(next((synth_root / "train").rglob("*.png")), one / "a.png")
    with pytest.raises(ValueError, match="need at least 2"):
        ImageFolder256(tmp_path / "one")
    with pytest.raises(ValueError, match="missing: \\['zebra'\\]"):
        ImageFolder256(
            synth_root / "val", classes=[*ImageFolder256(synth_root / "val").classes, "zebra"]
        )


def test_evaluation_loader_shards_without_repeats(synth_root: Path) -> None:
    ds = ImageFolder256(synth_root / "val")
    shards = [
        list(make_loader(ds, batch_size=5, workers=0, shuffle=False, rank=r, world_size=3).sampler)
        for r in range(3)
    ]
    assert sorted(i for s in shards for i in s) == list(range(len(ds)))


def test_pixel_statistics_match_a_direct_numpy_computation(synth_root: Path) -> None:
    ds = ImageFolder256(synth_root / "train")
    stats = pixel_statistics(ds, progress=False)
    images = np.stack(
        [load_256(p).astype(np.float64) for p, _ in ds.folder.samples]
    )  # (N, 256, 256, 3)
    np.testing.assert_allclose(
        stats["mean"].numpy(), images.mean(0).transpose(2, 0, 1), rtol=1e-5, atol=1e-3
    )
    cov = np.cov(images.reshape(-1, 3).T, bias=True)
    eigval, eigvec = np.linalg.eigh(cov)
    np.testing.assert_allclose(stats["eigval"].numpy(), eigval[::-1], rtol=1e-4)
    for i in range(3):  # eigenvectors up to sign
        got, want = stats["eigvec"][:, i].double().numpy(), eigvec[:, 2 - i]
        assert abs(abs(got @ want) - 1) < 1e-4
    assert stats["images"] == len(ds)


def test_pixel_statistics_subset_is_reproducible(synth_root: Path) -> None:
    ds = ImageFolder256(synth_root / "train")
    a = pixel_statistics(ds, max_images=10, seed=1, progress=False)
    b = pixel_statistics(ds, max_images=10, seed=1, progress=False)
    assert a["images"] == 10 and torch.equal(a["mean"], b["mean"])


# Every format the service accepts, as real files (the suffix a user's folder may give them),
# and what training must skip, naming each: a cut-off file, text, a format the service refuses.
READABLE = {"photo.jpg": "JPEG", "photo.jfif": "JPEG", "no-suffix": "JPEG", "shot.png": "PNG",
            "anim.gif": "GIF", "pic.webp": "WEBP", "scan.tiff": "TIFF", "scan.tif": "TIFF",
            "old.bmp": "BMP", "camera.mpo": "MPO"}  # fmt: skip
UNREADABLE = ("cut.png", "notes.txt", "raw.ppm")


@pytest.fixture(scope="module")
def formats_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/{train,val}/{red,blue}/: one file of each READABLE entry and each UNREADABLE one,
    plus a hidden .DS_Store; the GIF and the MPO have a second frame of another colour."""
    from PIL import Image

    root = tmp_path_factory.mktemp("formats")
    for split in ("train", "val"):
        for cls, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
            folder = root / split / cls
            folder.mkdir(parents=True)
            first, second = Image.new("RGB", (320, 280), colour), Image.new("RGB", (320, 280))
            for name, fmt in READABLE.items():
                frames = (
                    {"save_all": True, "append_images": [second]} if fmt in ("GIF", "MPO") else {}
                )
                first.save(folder / name, fmt, **frames)
            (folder / "cut.png").write_bytes((folder / "shot.png").read_bytes()[:200])
            (folder / "notes.txt").write_text("not a picture\n")
            first.save(folder / "raw.ppm", "PPM")  # Pillow reads it; the service refuses it
            (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


def test_training_reads_what_the_service_accepts_and_names_the_rest(
    formats_root: Path, caplog
) -> None:
    """Each file decodes to the very pixels the service makes of its bytes; each file the
    service refuses is skipped, counted and named; hidden files are said once, not read."""
    from service.decode import ImageError, decode

    ds = ImageFolder256(formats_root / "train")
    assert ds.classes == ["blue", "red"]
    names = sorted(Path(p).name for p, _ in ds.folder.samples)
    assert names == sorted([*READABLE, *UNREADABLE] * 2)  # every file but .DS_Store
    for i, (path, _) in enumerate(ds.folder.samples):
        data = Path(path).read_bytes()
        image, _ = ds[i]
        if Path(path).name in READABLE:
            pixels, fmt = decode(data, max_bytes=10**8, max_pixels=10**8)
            assert fmt == READABLE[Path(path).name]
            assert torch.equal(image, torch.from_numpy(pixels).permute(2, 0, 1)), path
            red = Path(path).parent.name == "red"  # an animation's first frame, not its second
            assert image[0 if red else 2].float().mean() > 200, path
        else:
            assert image is None, path
            with pytest.raises(ImageError):
                decode(data, max_bytes=10**8, max_pixels=10**8)
    caplog.clear()
    seen = skipped = 0
    for _, labels, n_skipped in make_loader(ds, batch_size=5, workers=0, shuffle=False):
        seen, skipped = seen + len(labels), skipped + n_skipped
    assert (seen, skipped) == (2 * len(READABLE), 2 * len(UNREADABLE))
    warned = [r.getMessage() for r in caplog.records if "skipping unreadable image" in r.message]
    assert sorted(Path(m.split()[3].rstrip(":")).name for m in warned) == sorted(UNREADABLE * 2)
    assert any("PPM images are not accepted" in m for m in warned)


def test_training_counts_what_it_skipped(formats_root: Path, tmp_path: Path, caplog) -> None:
    """A real epoch over the folder: metrics.jsonl's skipped_files counts every unreadable file
    of both splits, and the log says so."""
    import json

    from tests.conftest import train_args
    from training.train import train

    with caplog.at_level(logging.INFO):  # 26 training files: batches of 13 drop none
        train(train_args(formats_root, tmp_path / "run", "--arch", "bn", "--epochs", "1",
                         "--batch-size", "13"))  # fmt: skip
    (row,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
              .splitlines()]  # fmt: skip
    assert row["skipped_files"] == 2 * 2 * len(UNREADABLE)  # two splits, two classes
    assert f"epoch 0 skipped {row['skipped_files']} unreadable file(s)" in caplog.text
    assert "left out 2 hidden file(s)" in caplog.text
    assert "top-5" not in caplog.text  # 2 classes: no top-5 error to report
