"""A prepared image set: the paper's 256x256 images, written once, in WebDataset tar shards.

    DST/
      prepared.json          what the folder holds (PreparedSet below): classes, encoding,
                             the shards of each split with their image counts, the files
                             that could not be read
      stats.npz              mean (3, 256, 256), eigval (3,), eigvec (3, 3) columns, images:
                             the training split's mean image and RGB PCA (0..255 units)
      train/train-000000.tar ...
      val/val-000000.tar ...

Each shard is a plain POSIX tar (the WebDataset convention: the files of one sample share
a key): `KEY.jpg` (the 256x256 RGB image as JPEG) or `KEY.rgb` (its 196,608 raw bytes,
uint8 HWC), and `KEY.cls` (the label index in ASCII). KEY is the image's index in its
split's sorted file list (9 digits). The validation split is written in that order; the
training split in a seeded random order, so that every shard mixes the classes (a
reader that streams a few shards at a time through a shuffle buffer then sees them all,
instead of one or two classes at a time). A shard is
written to a temporary name and renamed when complete (`core.durable`): a shard on disk
is whole. `prepared.json` is written last, so a set is complete exactly when it exists.

Why WebDataset: plain tar files any tool can read, written and read sequentially (one
large read per shard instead of one open per image, which is what keeps GPUs fed from
network or spinning disks), split across ranks and workers by shard, and readable with
the `webdataset` package or `tarfile` alone.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, Field

from core import constants as C
from core.durable import write_atomic, write_json_atomic

PREPARED_FILE = "prepared.json"
STATS_FILE = "stats.npz"
ENCODINGS = {"jpeg": "jpg", "raw": "rgb"}  # encoding -> the sample's file extension
LABEL_EXT = "cls"
RAW_BYTES = C.IMAGE_SIZE * C.IMAGE_SIZE * 3


class SplitInfo(BaseModel):
    shards: list[str] = Field(default_factory=list)  # file names, in order, under DST/<split>/
    counts: list[int] = Field(default_factory=list)  # images in each shard
    skipped: list[str] = Field(default_factory=list)  # source files that could not be read

    @property
    def images(self) -> int:
        return sum(self.counts)


class PreparedSet(BaseModel):
    """`prepared.json`."""

    format: int = 1
    kind: str = "alexnet-prepared"
    encoding: str  # "jpeg" or "raw"
    jpeg_quality: int | None = None
    image_size: int = C.IMAGE_SIZE
    classes: list[str]
    splits: dict[str, SplitInfo]
    source: dict = Field(default_factory=dict)  # where it came from: path, layout
    created_at: str = ""


def is_prepared(root: str | Path) -> bool:
    """True when `root` holds a complete prepared set."""
    return (Path(root) / PREPARED_FILE).is_file()


def read_prepared(root: str | Path) -> PreparedSet:
    path = Path(root) / PREPARED_FILE
    try:
        prepared = PreparedSet.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{root} is not a prepared set (no {PREPARED_FILE})") from None
    except ValueError as e:
        raise ValueError(f"{path} is not a valid prepared set: {e}") from None
    if prepared.encoding not in ENCODINGS or prepared.image_size != C.IMAGE_SIZE:
        raise ValueError(f"{path}: unsupported encoding or image size")
    return prepared


def write_prepared(root: str | Path, prepared: PreparedSet) -> None:
    write_json_atomic(Path(root) / PREPARED_FILE, prepared.model_dump())


def read_stats(root: str | Path) -> dict[str, np.ndarray | int]:
    """The training split's statistics, as `training.data.pixel_statistics` gives them."""
    with np.load(Path(root) / STATS_FILE) as f:
        return {"mean": f["mean"], "eigval": f["eigval"], "eigvec": f["eigvec"],
                "images": int(f["images"])}  # fmt: skip


def write_stats(root: str | Path, stats: dict) -> None:
    def save(f) -> None:
        np.savez(f, **{k: np.asarray(v) for k, v in stats.items()})

    write_atomic(Path(root) / STATS_FILE, save)


def encode(image: np.ndarray, encoding: str, quality: int = 90) -> bytes:
    """A uint8 (256, 256, 3) RGB image as the bytes of a sample."""
    if encoding == "raw":
        return np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def decode(data: bytes, ext: str) -> torch.Tensor:
    """A sample's image bytes -> uint8 (3, 256, 256) (the inverse of `encode`), on the CPU
    and without extra copies: JPEG through libjpeg-turbo (`torchvision.io.decode_jpeg`, the
    decoder the GPU path falls back to), raw bytes as a view."""
    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    if ext == ENCODINGS["raw"]:
        if buffer.numel() != RAW_BYTES:
            raise ValueError(f"a raw sample has {buffer.numel()} bytes, expected {RAW_BYTES}")
        return buffer.view(C.IMAGE_SIZE, C.IMAGE_SIZE, 3).permute(2, 0, 1).contiguous()
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(buffer, mode=ImageReadMode.RGB)


def write_shard(path: str | Path, samples: Iterable[tuple[int, bytes, int]], encoding: str) -> int:
    """Write one shard durably (whole or not at all); returns its number of samples.

    Args:
        path: the shard file (DST/<split>/<split>-NNNNNN.tar).
        samples: (index in the split, encoded image bytes, label) in order.
        encoding: "jpeg" or "raw" (the extension of the image files).
    """
    import webdataset

    ext = ENCODINGS[encoding]
    count = 0

    def write(f) -> None:
        nonlocal count
        with webdataset.TarWriter(f, encoder=False, mtime=0) as sink:
            for index, data, label in samples:
                sink.write({"__key__": f"{index:09d}", ext: data,
                            LABEL_EXT: str(int(label)).encode()})  # fmt: skip
                count += 1

    write_atomic(path, write)
    return count


def read_shard(path: str | Path) -> Iterator[tuple[int, bytes, str, int]]:
    """(index, image bytes, extension, label) of every sample of a shard, in order."""
    import tarfile

    current: dict[str, bytes] = {}
    key = None
    with tarfile.open(path, "r|") as tar:  # a stream: one sequential read
        for member in tar:
            if not member.isfile():
                continue
            stem, _, ext = member.name.partition(".")
            if key is not None and stem != key:
                yield _sample(key, current)
                current = {}
            key = stem
            current[ext] = tar.extractfile(member).read()
    if key is not None:
        yield _sample(key, current)


def _sample(key: str, files: dict[str, bytes]) -> tuple[int, bytes, str, int]:
    ext = next((e for e in ENCODINGS.values() if e in files), None)
    if ext is None or LABEL_EXT not in files:
        raise ValueError(f"sample {key} lacks an image or a label (has {sorted(files)})")
    return int(key), files[ext], ext, int(files[LABEL_EXT])


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


def dump(prepared: PreparedSet) -> str:
    """The set in one line, for logs."""
    return json.dumps({s: info.images for s, info in prepared.splits.items()})
