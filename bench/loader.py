"""What feeds training: the loader's images/s per CPU core from raw folders and from prepared
shards (JPEG and raw), `alexnet prepare`'s images/s per core, and the training step alone.

The images are photograph-like JPEGs of ImageNet's typical size and weight (500x375, about
110 KB), in a class-per-folder set under the work folder. Rates are taken over an epoch
after its first batch (the workers' start is not counted).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench import photos

log = logging.getLogger(__name__)

CLASSES = 2
BATCH = 64


def textured_jpeg(seed: int) -> bytes:
    """A 500x375 photograph-like JPEG with ImageNet's typical size (about 110 KB): the
    bench's photo with fine texture (sensor-like noise) added, quality 93."""
    img = photos.photo(500, 375, seed)
    rng = np.random.default_rng(seed)
    pixels = np.asarray(img, np.float32) + rng.normal(0, 18, (375, 500, 3))
    return photos.jpeg(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), quality=93)


def make_set(root: Path, per_class: int, distinct: int = 100, val: int = 8) -> Path:
    """root/{train,val}/<class>/*.jpg: `per_class` training files per class, made from
    `distinct` different photographs (the others are hard links: the same decoding work)."""
    if (root / "train").is_dir():
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for c in range(CLASSES):
        for split, count in (("train", per_class), ("val", val)):
            folder = tmp / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(min(count, distinct)):
                (folder / f"{i:05d}.jpg").write_bytes(textured_jpeg(c * 100_000 + i))
            for i in range(distinct, count):
                os.link(folder / f"{i % distinct:05d}.jpg", folder / f"{i:05d}.jpg")
    tmp.rename(root)
    return root


def epoch_rate(loader) -> float:
    """Images/s of one pass over a loader (after its workers started)."""
    it = iter(loader)
    next(it)  # the workers have started
    n, start = 0, time.perf_counter()
    for batch in it:
        n += len(batch[-2])  # the labels, in a decoded and in an encoded batch alike
    return n / (time.perf_counter() - start)


def folder_loader(root: Path, workers: int):
    from training.data import ImageFolder256, make_loader

    return make_loader(ImageFolder256(root / "train"), batch_size=BATCH, workers=workers,
                       shuffle=True)  # fmt: skip


def shard_loader(root: Path, workers: int):
    from training import shards
    from training.shard_loader import make_shard_loader

    return make_shard_loader(root, "train", shards.read_prepared(root), batch_size=BATCH,
                             workers=workers, shuffle=True, device=torch.device("cpu"))  # fmt: skip


def encoded_loader(root: Path, workers: int):
    """JPEG shards as a CUDA run reads them: the workers deliver the files' bytes, and the
    GPU decodes (not timed here: nvJPEG's rate is `bench.gpu decode`'s)."""
    from training import shards
    from training.shard_loader import ShardLoader, ShardStream

    stream = ShardStream(root, "train", shards.read_prepared(root), batch_size=BATCH,
                         workers=workers, shuffle=True, decode=False)  # fmt: skip
    return ShardLoader(stream, pin_memory=False)


def train_step_rate(threads: int, steps: int = 3) -> float:
    """Images/s of forward + backward + SGD step of the `bn` network on this CPU."""
    from training.model import build_model

    torch.set_num_threads(threads)
    model = build_model("bn", 1000)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(BATCH, 3, 227, 227)
    y = torch.randint(0, 1000, (BATCH,))
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t)
    return BATCH / min(times[1:])


def run(work: Path, *, per_class: int = 1200, threads: int = 2) -> dict:
    """Every loader figure, in one run."""
    from training.prepare import prepare

    src = make_set(work / "photos", per_class)
    images = CLASSES * per_class
    out: dict = {
        "images": images,
        "jpeg_kb": round(
            sum(p.stat().st_size for p in (src / "train").rglob("*.jpg")) / images / 1024, 1
        ),
    }
    prepared = {}
    out["prepare"] = []
    for encoding in ("jpeg", "raw"):
        for workers in (1, 2):
            dst = work / f"prepared-{encoding}-{workers}"
            shutil.rmtree(dst, ignore_errors=True)
            log.info("prepare, %s, %d worker(s)", encoding, workers)
            start = time.perf_counter()
            prepare(src, dst, encoding=encoding, workers=workers, progress=False)
            rate = (images + CLASSES * 8) / (time.perf_counter() - start)
            out["prepare"].append({"encoding": encoding, "workers": workers,
                                   "images_per_s": rate, "per_core": rate / workers})  # fmt: skip
            prepared[encoding] = dst
    out["loader"] = []
    for source, make in (("folders", lambda w: folder_loader(src, w)),
                         ("jpeg shards", lambda w: shard_loader(prepared["jpeg"], w)),
                         ("raw shards", lambda w: shard_loader(prepared["raw"], w)),
                         ("jpeg shards, bytes for the GPU",
                          lambda w: encoded_loader(prepared["jpeg"], w))):  # fmt: skip
        for workers in (1, 2):
            log.info("loader, %s, %d worker(s)", source, workers)
            rate = epoch_rate(make(workers))
            out["loader"].append({"source": source, "workers": workers, "images_per_s": rate,
                                  "per_core": rate / workers})  # fmt: skip
    log.info("training step")
    out["train_step_images_per_s"] = train_step_rate(threads)
    per_core = {r["source"]: r["per_core"] for r in out["loader"] if r["workers"] == 1}
    out["jpeg_shards_vs_folders_per_core"] = per_core["jpeg shards"] / per_core["folders"]
    return out


def table(res: dict, gpu_rate: float = 10_000) -> list[str]:
    """The loader figures as Markdown, and the cores a GPU at `gpu_rate` images/s needs."""
    lines = [f"Loader ({res['images']} photograph-like 500x375 JPEGs, {res['jpeg_kb']} KB each; "
             f"batch {BATCH}):", "", "| source | workers | images/s | per core | cores for "
             f"{gpu_rate:,.0f} img/s |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    lines += [f"| {r['source']} | {r['workers']} | {r['images_per_s']:.0f} | "
              f"{r['per_core']:.0f} | {gpu_rate / r['per_core']:.0f} |"
              for r in res["loader"]]  # fmt: skip
    lines += [
        "",
        "| `alexnet prepare` | workers | images/s | per core |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {r['encoding']} | {r['workers']} | {r['images_per_s']:.0f} | "
              f"{r['per_core']:.0f} |" for r in res["prepare"]]  # fmt: skip
    lines += ["", f"Training step alone (bn, forward + backward + SGD, batch {BATCH}, this CPU): "
              f"{res['train_step_images_per_s']:.1f} images/s; JPEG shards vs raw folders per "
              f"core: {res['jpeg_shards_vs_folders_per_core']:.1f}x", ""]  # fmt: skip
    return lines
