"""`alexnet prepare`: the 256x256 images written once, in shards, resumable."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet.main import main as cli
from core.imaging import load_256
from training import shards
from training.data import ImageFolder256, pixel_statistics
from training.prepare import PLAN_FILE, find_source, plan_record, prepare, training_order

REPO = Path(__file__).parents[2]


def hwc(image) -> np.ndarray:
    """A decoded sample (3, 256, 256) as `load_256` gives images: (256, 256, 3)."""
    return image.permute(1, 2, 0).numpy()


def samples_of(dst: Path, split: str) -> list[tuple[int, bytes, str, int]]:
    prepared = shards.read_prepared(dst)
    return [
        s for name in prepared.splits[split].shards for s in shards.read_shard(dst / split / name)
    ]


@pytest.fixture(scope="module")
def raw_set(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("prepared") / "raw"
    prepare(synth_root, dst, encoding="raw", shard_size=4, workers=2, progress=False)
    return dst


def test_raw_shards_hold_exactly_the_images_training_would_read(
    synth_root: Path, raw_set: Path
) -> None:
    for split in ("train", "val"):
        folder = ImageFolder256(synth_root / split)
        prepared = shards.read_prepared(raw_set)
        assert prepared.classes == folder.classes
        got = samples_of(raw_set, split)
        # every file once: val in sorted order, train in the seeded order that mixes classes
        order = training_order(len(folder), 0) if split == "train" else range(len(folder))
        assert [s[0] for s in got] == list(order)
        assert prepared.splits[split].images == len(folder) and not prepared.splits[split].skipped
        for index, data, ext, label in got:
            path, want_label = folder.folder.samples[index]
            assert label == want_label
            np.testing.assert_array_equal(hwc(shards.decode(data, ext)), load_256(path))


def test_the_stored_statistics_are_the_training_sets(synth_root: Path, raw_set: Path) -> None:
    want = pixel_statistics(ImageFolder256(synth_root / "train"), progress=False)
    got = shards.read_stats(raw_set)
    assert got["images"] == want["images"]
    np.testing.assert_allclose(got["mean"], want["mean"].numpy(), atol=1e-4)
    np.testing.assert_allclose(got["eigval"], want["eigval"].numpy(), rtol=1e-4)
    # eigenvectors are defined up to sign
    np.testing.assert_allclose(np.abs(got["eigvec"]), np.abs(want["eigvec"].numpy()), atol=1e-4)


def test_jpeg_shards_are_close_to_the_images(synth_root: Path, tmp_path: Path) -> None:
    rc = cli(["prepare", str(synth_root), str(tmp_path / "jpeg"), "--quality", "90",
              "--shard-size", "16", "--workers", "1", "--no-progress"])  # fmt: skip
    assert rc == 0
    folder = ImageFolder256(synth_root / "val")
    for index, data, ext, _ in samples_of(tmp_path / "jpeg", "val"):
        assert ext == "jpg"
        image = hwc(shards.decode(data, ext)).astype(int)
        same = np.abs(image - load_256(folder.folder.samples[index][0])).mean()
        other = np.abs(image - load_256(folder.folder.samples[index - 1][0])).mean()
        assert same < 8 and other > 4 * same  # JPEG at quality 90 of this very image
    assert not (tmp_path / "jpeg" / PLAN_FILE).exists()


def test_unreadable_files_are_skipped_and_listed(synth_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(synth_root, src)
    bad = src / "train" / sorted(p.name for p in (src / "train").iterdir())[0] / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    prepared = prepare(src, tmp_path / "dst", shard_size=8, workers=1, progress=False)
    assert prepared.splits["train"].skipped == [str(bad)]
    good = len(ImageFolder256(src / "train")) - 1
    assert prepared.splits["train"].images == good == len(samples_of(tmp_path / "dst", "train"))


def test_a_resumed_run_keeps_finished_shards_and_writes_the_same_set(
    synth_root: Path, raw_set: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "raw"
    shutil.copytree(raw_set, dst)  # then made to look like a run killed mid-way:
    # no prepared.json or stats yet, some shards missing, a half-written temporary file and
    # the plan the run recorded
    (dst / shards.PREPARED_FILE).unlink()
    (dst / shards.STATS_FILE).unlink()
    kept = sorted((dst / "train").glob("*.tar"))[:3]
    inodes = {p: p.stat().st_ino for p in kept}
    for tar in sorted((dst / "train").glob("*.tar"))[3:]:
        tar.unlink()
    (dst / "train" / ".tmp-0123-train-000004.tar").write_bytes(b"half")
    (dst / PLAN_FILE).write_text(json.dumps(_plan_of(synth_root, encoding="raw", shard_size=4)))
    prepare(synth_root, dst, encoding="raw", shard_size=4, workers=1, progress=False)
    assert {p: p.stat().st_ino for p in kept} == inodes  # not written again
    for tar in sorted((raw_set / "train").glob("*.tar")):
        assert (dst / "train" / tar.name).read_bytes() == tar.read_bytes()
    assert not list((dst / "train").glob(".tmp-*"))
    assert shards.read_prepared(dst).splits == shards.read_prepared(raw_set).splits


def _plan_of(src: Path, *, encoding: str, shard_size: int) -> dict:
    """The plan a first run with these settings records (what a rerun must match)."""
    return plan_record(find_source(src), encoding=encoding, quality=90, shard_size=shard_size,
                       seed=0)  # fmt: skip


def test_a_rerun_with_other_settings_is_refused(synth_root: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / PLAN_FILE).write_text(json.dumps(_plan_of(synth_root, encoding="raw", shard_size=4)))
    with pytest.raises(ValueError, match="shard_size"):
        prepare(synth_root, dst, encoding="raw", shard_size=5, workers=1, progress=False)


def test_sigkill_then_rerun_gives_a_complete_set(tmp_path: Path) -> None:
    """A real interruption: the process is killed after its first shard."""
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for c in ("a", "b"):
            (src / split / c).mkdir(parents=True)
            for i in range(n):  # large PNGs: slow enough to decode that the kill lands mid-run
                blocks = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(np.kron(blocks, np.ones((40, 40, 1), np.uint8))).save(
                    src / split / c / f"{i}.png", compress_level=1
                )
    dst = tmp_path / "dst"
    argv = [sys.executable, "-m", "alexnet", "prepare", str(src), str(dst), "--shard-size", "2",
            "--workers", "1", "--no-progress", "--encoding", "raw"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((dst / "train").glob("*.npz")) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not shards.is_prepared(dst), "the run finished before it could be killed"
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    prepared = shards.read_prepared(dst)
    assert prepared.splits["train"].images == 24 and prepared.splits["val"].images == 8
    assert [s[0] for s in samples_of(dst, "train")] == training_order(24, 0)


def _fake_devkit(path: Path, wnids: list[str], val_ids: list[int]) -> None:
    """ILSVRC2012_devkit_t12.tar.gz with data/meta.mat (synsets, one non-leaf) and the
    validation ground truth, as the real one lays them out."""
    import scipy.io

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "wordnet_height",
              "num_train_images"]  # fmt: skip
    rows = [(i + 1, w, f"class {w}", "", 0, 0, 10) for i, w in enumerate(wnids)]
    rows.append((len(wnids) + 1, "n99999999", "a parent", "", 2, 1, 0))
    synsets = np.array(rows, dtype=[(f, object) for f in fields])
    folder = path.parent / "ILSVRC2012_devkit_t12" / "data"
    folder.mkdir(parents=True)
    scipy.io.savemat(folder / "meta.mat", {"synsets": synsets})
    (folder / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{i}\n" for i in val_ids)
    )
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder.parent, arcname="ILSVRC2012_devkit_t12")
    shutil.rmtree(folder.parent)


def test_imagenet_layout_with_the_devkit(synth_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "imagenet"
    classes = sorted(p.name for p in (synth_root / "train").iterdir())
    wnids = [f"n0{1000000 + 7 * i}" for i in range(len(classes))]
    for name, wnid in zip(classes, wnids, strict=True):
        shutil.copytree(synth_root / "train" / name, src / "train" / wnid)
    # the flat val folder; the ground truth gives each file's ILSVRC2012_ID (1-based)
    (src / "val").mkdir()
    val = [(p, classes.index(p.parent.name)) for p in sorted((synth_root / "val").rglob("*.*"))]
    for k, (p, _) in enumerate(val):
        shutil.copy(p, src / "val" / f"ILSVRC2012_val_{k + 1:08d}{p.suffix.upper()}")
    _fake_devkit(src / "ILSVRC2012_devkit_t12.tar.gz", wnids, [label + 1 for _, label in val])

    prepared = prepare(src, tmp_path / "dst", encoding="raw", shard_size=5, workers=1,
                       progress=False)  # fmt: skip
    assert prepared.classes == sorted(wnids) and prepared.source["layout"] == "imagenet"
    assert prepared.source["class_names"][wnids[0]] == f"class {wnids[0]}"
    got = samples_of(tmp_path / "dst", "val")
    assert [label for *_, label in got] == [sorted(wnids).index(wnids[label]) for _, label in val]
    assert [index for index, *_ in got] == list(range(len(val)))
    for (_, data, ext, _), (path, _) in zip(got, val, strict=True):
        np.testing.assert_array_equal(hwc(shards.decode(data, ext)), load_256(path))


def test_training_shards_mix_the_classes(raw_set: Path) -> None:
    """Written in a seeded random order: a shard holds several classes, not one."""
    prepared = shards.read_prepared(raw_set)
    labels = [{label for *_, label in shards.read_shard(raw_set / "train" / name)}
              for name in prepared.splits["train"].shards]  # fmt: skip
    assert sum(len(s) for s in labels) / len(labels) > 2  # 4 classes, 4 images a shard
