"""`alexnet prepare SRC DST`: every image decoded and brought to 256x256 once, into shards.

The paper "down-sampled the images to a fixed resolution of 256 x 256" once, before
training; training then reads small images instead of decoding full-size JPEGs in every
epoch. This writes each split of SRC in the format of `training.shards` (WebDataset tar
shards, JPEG of a chosen quality or raw uint8), with the project's one preprocessing
(`core.imaging.load_256`), in parallel processes, one shard per job:

- SRC is a class-per-folder set (SRC/train/<class>/*, SRC/val/<class>/*) or ImageNet's own
  ILSVRC2012 layout as `torchvision.datasets.ImageNet` understands it: SRC/train/<wnid>/*
  (the train archive's class folders), the flat SRC/val/*.JPEG, and the devkit
  (SRC/ILSVRC2012_devkit_t12.tar.gz, or its extracted folder, or torchvision's parsed
  SRC/meta.bin) for the synsets and the validation ground truth. Classes are the wnids in
  sorted order, as torchvision orders them.
- Resumable: a shard is written to a temporary name and renamed when whole, with a small
  `.npz` beside it (its count, unreadable files and pixel sums); a rerun keeps finished
  shards and writes the rest. The plan (the file list, shard size, encoding) is fixed at
  the first run, and a rerun with other settings is refused.
- Unreadable files are skipped and listed in prepared.json.
- The training split's mean image and RGB PCA are computed from the same pass and stored
  in stats.npz, so training reads no image twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core import constants as C
from core import store
from core.durable import TMP_PREFIX, write_atomic, write_json_atomic
from core.imaging import is_image_file, load_256
from training import shards
from training.data import ImageFolder256, statistics_from_sums

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
PLAN_FILE = ".plan.json"  # the settings of an unfinished run, checked when it resumes
DEVKIT_ARCHIVE = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"


@dataclass
class Source:
    """What to prepare: the classes, and (path, label) of every file of each split."""

    classes: list[str]
    items: dict[str, list[tuple[str, int]]]
    layout: str  # "folders" or "imagenet"
    class_names: dict[str, str] = field(default_factory=dict)  # wnid -> words (ImageNet)


def find_source(src: Path) -> Source:
    """Read SRC as ImageNet's layout when it has a flat val/ and a devkit, else as folders."""
    src, train = Path(src), ImageFolder256(Path(src) / "train")
    val = src / "val"
    files = sorted(val.iterdir()) if val.is_dir() else []
    flat = [p for p in files if p.is_file() and is_image_file(p)]  # ImageNet's val/ is flat
    if flat and (devkit := _devkit(src)) is not None:
        return find_imagenet(train, flat, devkit)
    val_set = ImageFolder256(val, classes=train.classes)
    return Source(classes=train.classes, layout="folders",
                  items={"train": train.folder.samples, "val": val_set.folder.samples})  # fmt: skip


def _devkit(src: Path) -> Path | None:
    for candidate in (src / "meta.bin", src / DEVKIT_ARCHIVE, src / DEVKIT_DIR):
        if candidate.exists():
            return candidate
    return None


def read_devkit(devkit: Path) -> tuple[dict[str, str], list[str]]:
    """(wnid -> class words, the wnid of each validation image in file-name order).

    `devkit` is torchvision's parsed meta.bin, the devkit archive or its extracted folder
    (data/meta.mat: the synsets; data/ILSVRC2012_validation_ground_truth.txt: one
    ILSVRC2012_ID per validation image).
    """
    if devkit.name == "meta.bin":
        wnid_to_classes, val_wnids = torch.load(devkit, weights_only=False)
        return {w: ", ".join(c) for w, c in wnid_to_classes.items()}, list(val_wnids)
    if devkit.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(devkit) as tar:
                tar.extractall(tmp, filter="data")
            return read_devkit(Path(tmp) / DEVKIT_DIR)
    import scipy.io

    synsets = scipy.io.loadmat(devkit / "data" / "meta.mat", squeeze_me=True)["synsets"]
    leaves = [s for s in synsets if int(s["num_children"]) == 0]  # the 1000 classes
    id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in leaves}
    names = {str(s["WNID"]): str(s["words"]) for s in leaves}
    truth = (devkit / "data" / "ILSVRC2012_validation_ground_truth.txt").read_text().split()
    return names, [id_to_wnid[int(i)] for i in truth]


def find_imagenet(train: ImageFolder256, val_files: list[Path], devkit: Path) -> Source:
    """ImageNet's layout: wnid class folders, and the flat validation files (sorted by name)
    labelled by the devkit's ground truth."""
    names, val_wnids = read_devkit(devkit)
    if unknown := sorted(set(train.classes) - set(names)):
        raise ValueError(f"{train.root} has folders that are not devkit synsets: {unknown[:5]}")
    if len(val_files) != len(val_wnids):
        raise ValueError(f"{val_files[0].parent} holds {len(val_files)} images but the devkit's "
                         f"ground truth lists {len(val_wnids)}")  # fmt: skip
    label = {wnid: i for i, wnid in enumerate(train.classes)}
    val = [(str(p), label[w]) for p, w in zip(val_files, val_wnids, strict=True) if w in label]
    return Source(classes=train.classes, items={"train": train.folder.samples, "val": val},
                  layout="imagenet", class_names={w: names[w] for w in train.classes})  # fmt: skip


@dataclass(frozen=True)
class ShardJob:
    split: str
    number: int
    folder: Path
    items: list[tuple[int, str, int]]  # (index in the split, path, label)
    encoding: str
    quality: int
    with_stats: bool

    @property
    def path(self) -> Path:
        return self.folder / shards.shard_name(self.split, self.number)

    @property
    def sidecar(self) -> Path:
        return self.path.with_suffix(".npz")

    def done(self) -> bool:
        return self.path.is_file() and self.sidecar.is_file()


def write_shard(job: ShardJob) -> dict:
    """Decode, resize, encode and write one shard, then its sidecar (run in a worker)."""
    total = np.zeros((3, C.IMAGE_SIZE, C.IMAGE_SIZE), np.float64) if job.with_stats else None
    moment = np.zeros((3, 3), np.float64)
    skipped: list[str] = []

    def samples():
        for index, path, label in job.items:
            try:
                image = load_256(path)
            except Exception as e:  # noqa: BLE001 - any decoder failure means "skip this file"
                log.warning("skipping unreadable image %s: %s", path, e)
                skipped.append(path)
                continue
            if total is not None:
                x = image.astype(np.float64).transpose(2, 0, 1)  # (3, 256, 256)
                total[...] += x
                pixels = x.reshape(3, -1)
                moment[...] += pixels @ pixels.T
            yield index, shards.encode(image, job.encoding, job.quality), label

    count = shards.write_shard(job.path, samples(), job.encoding)
    summary = {"count": count, "skipped": skipped}

    def save(f) -> None:
        sums = {"total": total, "moment": moment} if total is not None else {}
        np.savez(f, count=count, skipped=np.array(skipped, dtype=str), **sums)

    write_atomic(job.sidecar, save)
    return summary


def read_sidecar(job: ShardJob) -> dict:
    with np.load(job.sidecar) as f:
        out = {"count": int(f["count"]), "skipped": [str(s) for s in f["skipped"]]}
        if job.with_stats:
            out |= {"total": f["total"], "moment": f["moment"]}
    return out


def training_order(count: int, seed: int) -> list[int]:
    """The order the training images are written in: a permutation drawn from `seed`."""
    return np.random.default_rng(seed).permutation(count).tolist()


def plan(source: Source, dst: Path, *, encoding: str, quality: int, shard_size: int,
         seed: int = 0) -> list[ShardJob]:  # fmt: skip
    """The shards of every split: shard i holds images i*size .. (i+1)*size - 1 of the
    split's order (validation: sorted; training: `training_order`)."""
    jobs = []
    for split in SPLITS:
        items = [(i, str(path), label) for i, (path, label) in enumerate(source.items[split])]
        if split == "train":  # each shard a mix of every class, not one or two of them
            items = [items[i] for i in training_order(len(items), seed)]
        for number, start in enumerate(range(0, len(items), shard_size)):
            jobs.append(ShardJob(split, number, dst / split, items[start : start + shard_size],
                                 encoding, quality, with_stats=split == "train"))  # fmt: skip
    return jobs


def plan_record(source: Source, *, encoding: str, quality: int, shard_size: int, seed: int
                ) -> dict:  # fmt: skip
    """What a run records of its plan (the settings and a digest of each split's file list),
    and what a rerun must match."""
    files = {s: hashlib.sha256("\n".join(p for p, _ in source.items[s]).encode()).hexdigest()
             for s in SPLITS}  # fmt: skip
    return {"encoding": encoding, "quality": quality, "shard_size": shard_size, "seed": seed,
            "files": files}  # fmt: skip


def _check_plan(dst: Path, settings: dict) -> None:
    """Record the settings of a new run, or refuse to resume one made with others."""
    path = dst / PLAN_FILE
    if path.is_file():
        before = json.loads(path.read_text())
        if before != settings:
            changed = sorted(k for k in settings if before.get(k) != settings[k])
            raise ValueError(f"{dst} holds an unfinished prepare made with other settings "
                             f"({', '.join(changed)} differ): rerun it with the same ones, or "
                             "remove the folder")  # fmt: skip
    else:
        write_json_atomic(path, settings)


def prepare(
    src: str | Path,
    dst: str | Path,
    *,
    encoding: str = "jpeg",
    quality: int = 90,
    shard_size: int = 1000,
    workers: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> shards.PreparedSet:
    """Write SRC's train and val splits to DST as a prepared set; resume an unfinished one.

    Args:
        src: a class-per-folder set or ImageNet's layout (see the module docstring).
        dst: the prepared set's folder.
        encoding: "jpeg" (of `quality`) or "raw" (uint8, 192 KiB an image).
        quality: JPEG quality, 1-100.
        shard_size: images per shard.
        workers: processes (default: the CPUs).
        seed: draws the order the training images are written in (shards mix the classes).
        progress: show a progress bar with the rate and the time left.

    Returns:
        the prepared set's description (prepared.json).
    """
    src, dst = Path(src), Path(dst)
    if encoding not in shards.ENCODINGS:
        raise ValueError(f"Unknown encoding {encoding!r}. Only {', '.join(shards.ENCODINGS)} "
                         "are supported.")  # fmt: skip
    if not 1 <= quality <= 100 or shard_size < 1:
        raise ValueError(f"quality must be 1-100 and shard size >= 1 (got {quality}, {shard_size})")
    if shards.is_prepared(dst):
        log.info("%s is already prepared", dst)
        return shards.read_prepared(dst)
    source = find_source(src)
    dst.mkdir(parents=True, exist_ok=True)
    _check_plan(dst, plan_record(source, encoding=encoding, quality=quality,
                                 shard_size=shard_size, seed=seed))  # fmt: skip
    jobs = plan(source, dst, encoding=encoding, quality=quality, shard_size=shard_size, seed=seed)
    for split in SPLITS:
        (dst / split).mkdir(exist_ok=True)
        for leftover in (dst / split).glob(f"{TMP_PREFIX}*"):  # of a run that was killed
            leftover.unlink()
    results = run_jobs(jobs, workers or os.cpu_count() or 1, progress)
    return finish(dst, src, source, jobs, results, encoding=encoding, quality=quality, seed=seed)


def run_jobs(jobs: Sequence[ShardJob], workers: int, progress: bool) -> dict[Path, dict]:
    """Every shard's summary: read back for finished ones, written for the others."""
    results = {job.path: read_sidecar(job) for job in jobs if job.done()}
    todo = [job for job in jobs if job.path not in results]
    if results:
        log.info("resuming: %d of %d shards are done", len(results), len(jobs))
    total = sum(len(job.items) for job in jobs)
    with tqdm(total=total, initial=total - sum(len(j.items) for j in todo), unit="img",
              desc="prepare", disable=not progress) as bar:  # fmt: skip
        if workers == 1:
            for job in todo:
                write_shard(job)
                results[job.path] = read_sidecar(job)
                bar.update(len(job.items))
            return results
        with ProcessPoolExecutor(workers) as pool:
            futures = {pool.submit(write_shard, job): job for job in todo}
            for future in as_completed(futures):
                future.result()  # a worker's exception stops the run; finished shards stay
                job = futures[future]
                results[job.path] = read_sidecar(job)
                bar.update(len(job.items))
    return results


def finish(
    dst: Path,
    src: Path,
    source: Source,
    jobs: Sequence[ShardJob],
    results: dict[Path, dict],
    *,
    encoding: str,
    quality: int,
    seed: int,
) -> shards.PreparedSet:
    """stats.npz from the training shards' sums, then prepared.json (the set is complete)."""
    train = [results[j.path] for j in jobs if j.split == "train"]
    count = sum(r["count"] for r in train)
    if count == 0:
        raise ValueError(f"no readable training image in {source.layout} set")
    total = torch.from_numpy(sum(r["total"] for r in train))
    moment = torch.from_numpy(sum(r["moment"] for r in train))
    stats = statistics_from_sums(total, moment, count)
    shards.write_stats(dst, {k: v.numpy() if torch.is_tensor(v) else v for k, v in stats.items()})
    splits = {}
    for split in SPLITS:
        done = [(j, results[j.path]) for j in jobs if j.split == split]
        splits[split] = shards.SplitInfo(
            shards=[j.path.name for j, r in done if r["count"]],
            counts=[r["count"] for _, r in done if r["count"]],
            skipped=[path for _, r in done for path in r["skipped"]],
        )
    prepared = shards.PreparedSet(
        encoding=encoding, jpeg_quality=quality if encoding == "jpeg" else None,
        classes=source.classes, splits=splits, created_at=store.now_iso(),
        source={"path": str(src.resolve()), "layout": source.layout, "train_order_seed": seed,
                "class_names": source.class_names},
    )  # fmt: skip
    shards.write_prepared(dst, prepared)
    (dst / PLAN_FILE).unlink(missing_ok=True)
    return prepared
